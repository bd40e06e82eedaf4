"""One shard's figures for the sharded float pipeline, and sharded vs unsharded search in one process.

Three builds of the default ``BinaryEmbeddingIndex`` (rq-hnsw, 2-bit codes, float rescoring) over
the first ``shards x n_per_shard`` rows of a real dataset:

- **one shard** (``n_per_shard`` rows, in this process): build s, ``memory_bytes``, ``disk_bytes``
  (the memory-mapped floats), the saved directory's bytes, queries/s on one search thread;
- **sharded** (``ShardedEmbeddingIndex``, ``shards`` Ray actors, rows in turn): build s, the sums;
- **unsharded** (one ``BinaryEmbeddingIndex`` of all the rows, in this process): build s.

The sharded and unsharded searches are timed in alternation (batches of ``nq`` queries, k=10,
medians), recall@k against exact float kNN of the same rows. ``docs/distributed.md`` derives its
1B x 768 sizing from these rows.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/sharded_embedding.py            # 2 x 100k of m2v_mpnet_500k
    python benchmarks/sharded_embedding.py --n-per-shard 10000 --repeats 3    # a quick look

Rows (one JSON object each) are printed and, with ``--jsonl PATH``, appended there. Without the
m2v set built (``datasets/build_m2v_mpnet_500k.py``) it uses the shipped ``minilm_wordnet``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads: idle OpenMP threads must not spin
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from sharded_vs_single import timed, timed_pair  # noqa: E402

import annbin  # noqa: E402
from annbin._measure import float_knn, recall_per_query  # noqa: E402


def rows_of(name: str, n: int, nq: int) -> tuple[str, np.ndarray, np.ndarray]:
    """``(dataset name, first n base rows, first nq queries)``, float32, unit length."""
    from annbin.bench.datasets import get_dataset

    try:
        ds = get_dataset(name)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"{name} not available ({exc}); using the shipped minilm_wordnet", flush=True)
        ds = get_dataset("minilm_wordnet")
    base = np.array(ds.get_database()[:n], dtype=np.float32)  # a copy: normalized in place below
    queries = np.array(ds.get_queries()[:nq], dtype=np.float32)
    for x in (base, queries):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return ds.name, base, queries


def build(index: Any, base: np.ndarray, chunk: int) -> float:
    """Seconds to add ``base`` in chunks of ``chunk`` rows and run one search (nothing deferred)."""
    t0 = time.perf_counter()
    for lo in range(0, base.shape[0], chunk):
        index.add(base[lo : lo + chunk])
    index.search(base[:1], 10)
    return time.perf_counter() - t0


def dir_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="m2v_mpnet_500k")
    ap.add_argument("--n-per-shard", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--nq", type=int, default=1_000, help="queries per batch")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=50_000, help="rows per add call")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--jsonl", type=Path, default=None, help="also append the rows to this file")
    args = ap.parse_args()

    import ray
    from threadpoolctl import threadpool_limits

    from annbin.distributed import ShardedEmbeddingIndex

    name, base, queries = rows_of(args.dataset, args.shards * args.n_per_shard, args.nq)
    n, k = base.shape[0], args.k
    _, truth = float_knn(base, queries, k, "ip")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="warning")
    common = {"bench": "sharded_embedding", "dataset": name, "n": n, "dim": base.shape[1], "nq": queries.shape[0], "k": k,
              "repeats": args.repeats, "cpus": os.cpu_count(), "machine": platform.machine(), "annbin": annbin.__version__,
              "ray": ray.__version__, "date": time.strftime("%Y-%m-%d")}

    def row(**fields: Any) -> None:
        line = {**common, **fields, "loadavg_1min": round(os.getloadavg()[0], 2)}  # others' load shows here
        print(json.dumps(line), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")

    # one shard, as an actor holds it; searched on one thread, as an actor that reserves no CPU runs
    part = annbin.BinaryEmbeddingIndex()
    part_build = build(part, base[: args.n_per_shard], args.chunk)
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        med, times, _ = timed(lambda p=part: p.search(queries, k), args.repeats)  # bound now: part is deleted below
        part.save(tmp)
        saved = dir_bytes(tmp)
        row(what="one shard", spec=part.spec, rows=part.ntotal, build_s=round(part_build, 1), memory_bytes=part.memory_bytes(),
            disk_bytes=part.disk_bytes(), saved_dir_bytes=saved, ram_bytes_per_vector=round(part.memory_bytes() / part.ntotal, 1),
            saved_bytes_per_vector=round(saved / part.ntotal, 1), search_threads=1, median_s=round(med, 4), qps=round(queries.shape[0] / med, 1),
            times_s=[round(t, 4) for t in times])
    del part

    sharded = ShardedEmbeddingIndex(shards=args.shards)
    sharded.ping()  # actors up before the clock starts
    sharded_build = build(sharded, base, args.chunk)
    single = annbin.BinaryEmbeddingIndex()
    single_build = build(single, base, args.chunk)
    S_sh, I_sh = sharded.search(queries, k)
    S_one, I_one = single.search(queries, k)
    med_one, med_sh, t_one, t_sh = timed_pair(lambda: single.search(queries, k), lambda: sharded.search(queries, k), args.repeats)
    ping, _, _ = timed(sharded.ping, 21)
    row(what="unsharded", spec=single.spec, rows=single.ntotal, build_s=round(single_build, 1), memory_bytes=single.memory_bytes(),
        disk_bytes=single.disk_bytes(), recall=round(float(recall_per_query(I_one, truth, k).mean()), 4), median_s=round(med_one, 4),
        qps=round(queries.shape[0] / med_one, 1), times_s=[round(t, 4) for t in t_one])
    row(what=f"{args.shards} shards (Ray actors)", spec=sharded.spec, rows=sharded.ntotal, shard_sizes=sharded.shard_sizes.tolist(),
        build_s=round(sharded_build, 1), memory_bytes=sharded.memory_bytes(), disk_bytes=sharded.disk_bytes(),
        recall=round(float(recall_per_query(I_sh, truth, k).mean()), 4), median_s=round(med_sh, 4), qps=round(queries.shape[0] / med_sh, 1),
        times_s=[round(t, 4) for t in t_sh], ping_median_s=round(ping, 5))
    sharded.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
