"""Where an rq-ivf query's time goes: rabitqlib's per-query scan of every centroid against the scan
of the lists, on the first N rows of ``m2v_mpnet_10m``, with hnswlib (M=16, efC=100, ef=64) on the
same rows in the same process as the peer.

For each nlist: ms a query (1 thread, 1,000 queries a call, best of 3 rounds) at nprobe 1 (one list
of ~N/nlist codes: the centroid scan is nearly all of it) and at nprobe 16 / 32; beside them the same
routing done for the whole batch by one BLAS product (what a routed-query API would cost).

    python benchmarks/rqivf_query_cost.py --n 200000 --nlists 1024,2048,4096
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from annbin.embed.floats import make_float_index  # noqa: E402

from _data import load_prefix  # noqa: E402


def best_ms(fn, queries: int, rounds: int) -> float:
    """Best of ``rounds`` calls of ``fn``, in ms a query."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) / queries * 1e3


def main() -> None:
    import hnswlib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--nlists", default="1024,2048,4096")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    x, q, _ = load_prefix("m2v_mpnet_10m", args.n)
    peer = hnswlib.Index(space="ip", dim=x.shape[1])
    peer.init_index(args.n, M=16, ef_construction=100)
    peer.set_num_threads(2)
    peer.add_items(x)
    peer.set_num_threads(1)
    peer.set_ef(64)
    hnsw_ms = best_ms(lambda: peer.knn_query(q, 10), len(q), args.rounds)
    print(f"n={args.n:,}: hnswlib ef=64 {hnsw_ms:.3f} ms a query", flush=True)
    for nlist in (int(v) for v in args.nlists.split(",")):
        stage = make_float_index(f"rq-ivf:nlist={nlist}", x.shape[1], "ip")
        stage.num_threads, stage.progress = 2, False
        stage.add(x)
        centroids = stage._centroids
        blas_ms = best_ms(lambda c=centroids: np.argpartition(-(q @ c.T), 32, axis=1)[:, :32], len(q), args.rounds)
        row = [f"nlist={nlist} (~{args.n // nlist} codes a list): batch BLAS routing {blas_ms:.3f} ms"]
        for nprobe in (1, 16, 32):
            ms = best_ms(lambda s=stage, p=nprobe: s.search(q, 20, params={"nprobe": p}), len(q), args.rounds)
            row.append(f"nprobe={nprobe} {ms:.3f} ms ({ms / hnsw_ms:.2f}x hnswlib's)")
        print("; ".join(row), flush=True)


if __name__ == "__main__":
    main()
