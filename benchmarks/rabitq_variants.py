"""RaBitQ float-in variants (annbin.embed.rabitq) beside hnswlib on the shipped set: recall@10 and q/s.

Run::

    python benchmarks/rabitq_variants.py                 # minilm_wordnet: 20k x 384, 1k queries, ip
    python benchmarks/rabitq_variants.py --repeats 7 --no-float-queries

Every variant alone (no float rescoring), recall@10 as plain id overlap with exact float search.
Builds and searches on one thread (faiss OpenMP, hnswlib ``num_threads=1``, numpy's BLAS),
``OMP_WAIT_POLICY=PASSIVE``. Queries/s: all queries in one call; the settings are timed in turn
within each repeat (interleaved, so drift on a shared machine hits all alike), medians of
``--repeats``; "cpu" is this process's CPU time (steady when other jobs share the cores), "wall"
the elapsed time. ``qb=0`` (float queries) is ~100x slower in faiss 1.15, so those rows are timed
on the first 100 queries (recall still on all). B/vec: ``memory_bytes() / n``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # set before numpy/faiss load their thread pools

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from annbin.bench.datasets import get_dataset  # noqa: E402
from annbin.embed.floats import FloatHNSW, make_float_index  # noqa: E402

K = 10
# (build spec, [search params, ...]); qb=0 rows are the slow float-query path
BUILDS: list[tuple[str, list[dict[str, Any]]]] = [
    ("float-hnsw:M=16,ef_construction=200", [{"ef": 16}, {"ef": 32}, {"ef": 64}]),
    ("rabitq", [{"qb": 4}, {"qb": 8}, {"qb": 0}]),
    ("ivf-rabitq:nlist=256,fastscan=false", [{"nprobe": p, "qb": 4} for p in (8, 16, 32, 64)] + [{"nprobe": 16, "qb": 0}]),
    ("ivf-rabitq:nlist=256,fastscan=true", [{"nprobe": p, "qb": 4} for p in (8, 16, 32, 64)]),
    ("ivf-rabitq:fastscan=false", [{"nprobe": p, "qb": 4} for p in (16, 32)]),  # default nlist: 512 at 20k
    ("rabitq-hnsw:build=float", [{"ef_search": e, "qb": 4} for e in (16, 32, 64, 128)] + [{"ef_search": 64, "qb": 0}]),
    ("rabitq-hnsw:build=codes", [{"ef_search": e, "qb": 4} for e in (16, 32, 64, 128)]),
]


def recall(I: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(I, ref)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="minilm_wordnet")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-float-queries", action="store_true", help="skip the slow qb=0 rows")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    ds = get_dataset(args.dataset)
    base, queries = ds.get_database(), ds.get_queries()
    truth = ds.get_groundtruth(K)[1][:, :K]
    print(f"{ds.name}: {base.shape[0]} x {base.shape[1]}, {queries.shape[0]} queries, metric {ds.metric}, "
          f"faiss {faiss.__version__}, 1 thread, k={K}, {args.repeats} interleaved repeats (medians)")

    runs: list[dict[str, Any]] = []
    for spec, searches in BUILDS:
        t0 = time.perf_counter()
        if spec.startswith("float-hnsw"):
            index: Any = FloatHNSW(base.shape[1], metric=ds.metric, M=16, ef_construction=200, num_threads=1)
        else:
            index = make_float_index(spec, base.shape[1], ds.metric)
        index.add(base)
        index.search(queries[:1], 1)  # rabitq-hnsw:build=float builds its graph here
        build_s = time.perf_counter() - t0
        for params in searches:
            if args.no_float_queries and params.get("qb") == 0:
                continue
            I = index.search(queries, K, params=params)[1]
            qs = queries[:100] if params.get("qb") == 0 else queries
            build = ",".join(f"{k}={v}" for k, v in index.get_params().items())
            runs.append({"spec": f"{index.variant}:{build}" if build else index.variant,
                         "params": params, "index": index, "qs": qs, "recall": recall(I, truth), "build_s": build_s,
                         "bpv": index.memory_bytes() / base.shape[0], "cpu": [], "wall": []})
        print(f"built {index.spec} in {build_s:.1f} s", flush=True)

    for _ in range(args.repeats):
        for run in runs:
            c0, t0 = time.process_time(), time.perf_counter()
            run["index"].search(run["qs"], K, params=run["params"])
            run["cpu"].append(time.process_time() - c0)
            run["wall"].append(time.perf_counter() - t0)

    print()
    print("| index (build) | search | recall@10 | q/s cpu | q/s wall | build s | B/vec |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for run in runs:
        nq = run["qs"].shape[0]
        search = ",".join(f"{k}={v}" for k, v in run["params"].items())
        flag = " (100 q)" if nq < queries.shape[0] else ""
        print(f"| {run['spec']} | {search}{flag} | {run['recall']:.4f} | {nq / statistics.median(run['cpu']):,.0f} | "
              f"{nq / statistics.median(run['wall']):,.0f} | {run['build_s']:.1f} | {run['bpv']:.1f} |")


if __name__ == "__main__":
    main()
