"""Three-stage binary search vs hnswlib on float vectors, in one process, one thread.

Run::

    python benchmarks/asymmetric_vs_hnswlib.py                          # shipped MiniLM set
    python benchmarks/asymmetric_vs_hnswlib.py --dataset NAME --repeats 5

Every method is an ``annbin.BinaryEmbeddingIndex`` (codes in RAM, float vectors memory-mapped from
a ``.npy``) or hnswlib (M=16, float vectors in RAM). Timing: each round runs every configuration
once on the whole query batch, in turn (interleaved, so drift hits all alike); queries/s is
``nq / median CPU seconds`` of the rounds (every search runs on the calling thread, so CPU time is
what it costs, and unlike wall time it does not grow when other processes share the cores).
recall@10 is id overlap with exact float search. For each annbin row at recall >= --target, the
matched hnswlib row is the cheapest ef whose recall is at least as high; ``vs hnswlib`` is the
ratio of queries/s. ``floats/q`` is ``last_search_stats["vectors_read_per_query"]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # numpy's BLAS (rotation, rescoring) on one thread too; set before import

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import annbin  # noqa: E402
from annbin.embed.floats import FloatHNSW  # noqa: E402

from _data import load  # noqa: E402

DEFAULT_METHODS = (
    # name, spec, options, search-parameter sweep
    ("rabitq-hnsw itq", "rabitq-hnsw:M=16,ef_construction=100,build=float",
     {"rotation": "itq", "oversample": 3}, [{"ef_search": e} for e in (16, 24, 32, 48, 64, 96)]),
    ("rabitq-hnsw 2-bit itq", "rabitq-hnsw:M=16,ef_construction=100,nb_bits=2,build=float",
     {"rotation": "itq", "oversample": 3}, [{"ef_search": e} for e in (16, 24, 32, 48, 64, 96)]),
    ("rabitq-hnsw 2-bit random", "rabitq-hnsw:M=16,ef_construction=100,nb_bits=2,build=float",
     {"rotation": "random", "oversample": 3}, [{"ef_search": e} for e in (16, 32, 64, 96, 128, 160, 192, 256)]),
    ("rabitq-hnsw random", "rabitq-hnsw:M=16,ef_construction=100,build=float",
     {"rotation": "random", "oversample": 3}, [{"ef_search": e} for e in (16, 24, 32, 48, 64, 96)]),
    ("rabitq-hnsw M=12 itq", "rabitq-hnsw:M=12,ef_construction=100,build=float",
     {"rotation": "itq", "oversample": 3}, [{"ef_search": e} for e in (24, 32, 48, 64, 96)]),
    ("rabitq-hnsw", "rabitq-hnsw:M=16,ef_construction=100,build=float",
     {"oversample": 3}, [{"ef_search": e} for e in (32, 48, 64)]),
    ("flat+asym itq", "flat", {"rotation": "itq", "thresholds": "mean", "rerank": "asymmetric",
                               "oversample": 20, "rerank_oversample": 3}, [{}]),
    ("flat+asym", "flat", {"rerank": "asymmetric", "oversample": 20, "rerank_oversample": 3}, [{}]),
    ("flat+asym 2-bit itq", "flat", {"rotation": "itq", "thresholds": "mean", "rerank": "asymmetric", "rerank_bits": 2,
                                     "oversample": 20, "rerank_oversample": 3}, [{}]),
    ("flat+rescore (Hamming top 3k)", "flat", {"oversample": 3}, [{}]),
    ("flat codes only itq", "flat", {"rotation": "itq", "thresholds": "mean", "rerank": "asymmetric", "rescore": None,
                                     "oversample": 20}, [{}]),
    ("flat codes only 2-bit itq", "flat", {"rotation": "itq", "thresholds": "mean", "rerank": "asymmetric", "rescore": None,
                                           "rerank_bits": 2, "oversample": 20}, [{}]),
    ("hnsw+asym itq", "hnsw:M=16,ef_construction=100", {"rotation": "itq", "thresholds": "mean", "rerank": "asymmetric",
                                                        "oversample": 10, "rerank_oversample": 3},
     [{"ef_search": e} for e in (100, 200)]),
)
HNSWLIB_EF = (10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 160, 192, 256)


def recall(I: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / ref.shape[1] for a, b in zip(I, ref)]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="minilm_wordnet")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median)")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--only", default=None, help="comma-separated method names to run (default all)")
    ap.add_argument("--dims", type=int, default=None,
                    help="keep the first N dimensions (renormalized): a smaller model from a Matryoshka / PCA-ordered one")
    ap.add_argument("--hnswlib-efc", type=int, default=200, help="hnswlib's ef_construction (annbin's graphs use 100)")
    ap.add_argument("--cache", default=None, help="folder to keep built indexes in between runs (hnswlib's and annbin's)")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1, help="threads for building (searches use 1)")
    args = ap.parse_args(argv)
    ds, base, queries, gt = load(args.dataset, dims=args.dims, max_queries=args.max_queries, k=args.k)
    n, dim = base.shape
    k = args.k
    configs: list[tuple[str, str, Any, dict[str, Any], float, float]] = []  # name, setting, fn, stats, bytes/vec, build s
    with tempfile.TemporaryDirectory() as tmp:
        faiss.omp_set_num_threads(args.build_threads)  # builds on every core; searches on one (below)
        t0 = time.perf_counter()
        hl = FloatHNSW(dim, metric=ds.metric, M=16, ef_construction=args.hnswlib_efc, num_threads=args.build_threads)
        cached = Path(args.cache) / f"hnswlib-{ds.name}-M16-efc{args.hnswlib_efc}.bin" if args.cache else None
        if cached is not None and cached.exists():
            hl._index.load_index(str(cached), max_elements=n)  # a benchmark shortcut: build time not remeasured
        else:
            hl.add(base)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                hl._index.save_index(str(cached))
        hl.num_threads = 1
        hl_build = time.perf_counter() - t0
        for ef in HNSWLIB_EF:
            configs.append((f"hnswlib M=16 efC={args.hnswlib_efc}", f"ef={ef}", lambda q, ef=ef: hl.search(q, k, params={"ef": ef}), {},
                            hl.memory_bytes() / n, hl_build))
        wanted = set(args.only.split(",")) if args.only else None
        for i, (name, spec, options, sweep) in enumerate(DEFAULT_METHODS):
            if wanted and name not in wanted:
                continue
            faiss.omp_set_num_threads(args.build_threads)
            t0 = time.perf_counter()
            store = None if "rescore" in options and options["rescore"] is None else Path(tmp) / f"v{i}.npy"
            saved = Path(args.cache) / f"annbin-{ds.name}-{name.replace(' ', '_')}" if args.cache else None
            if saved is not None and (saved / "embedding.annbin").exists():
                index = annbin.BinaryEmbeddingIndex.load(saved, mmap=store is not None)  # vectors stay memory-mapped
            else:
                index = annbin.BinaryEmbeddingIndex(spec, metric=ds.metric, store_vectors=store, **options)
                index.add(base)
                if saved is not None:
                    index.save(saved)
            index.search(queries[:1], 1)
            build = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)
            for params in sweep:
                setting = ",".join(f"{key}={v}" for key, v in {**{o: options[o] for o in ("oversample", "rerank_oversample") if o in options}, **params}.items())
                index.search(queries, k, params=params)
                stats = dict(index.last_search_stats)
                configs.append((name, setting, lambda q, index=index, params=params: index.search(q, k, params=params),
                                stats, index.memory_bytes() / n, build))
            print(f"built {name} in {build:.1f} s", file=sys.stderr)
        recalls = [recall(fn(queries)[1], gt) for _, _, fn, _, _, _ in configs]
        times: list[list[float]] = [[] for _ in configs]
        for _ in range(args.repeats):
            for j, (_, _, fn, _, _, _) in enumerate(configs):
                c0 = time.process_time()
                fn(queries)
                times[j].append(time.process_time() - c0)
    qps = [len(queries) / statistics.median(t) for t in times]
    hl_rows = [(r, q) for (name, *_), r, q in zip(configs, recalls, qps) if name.startswith("hnswlib")]

    print(f"dataset={ds.name} n={n} dim={dim} nq={len(queries)} k={k} metric={ds.metric} threads=1 faiss={faiss.__version__} "
          f"repeats={args.repeats} load={os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"| method | setting | recall@{k} | floats/q | queries/s | vs hnswlib at >= its recall | B/vec RAM | build s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, setting, _, stats, bpv, build), r, q in zip(configs, recalls, qps):
        match = "-"
        if not name.startswith("hnswlib") and r >= args.target:
            peers = [pq for pr, pq in hl_rows if pr >= r]
            match = f"{q / max(peers):.2f}x" if peers else "(no hnswlib ef reaches it)"
        reads = stats.get("vectors_read_per_query")
        print(f"| {name} | {setting} | {r:.3f} | {'-' if reads is None else f'{reads:.0f}'} | {q:,.0f} | {match} | {bpv:,.0f} | {build:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
