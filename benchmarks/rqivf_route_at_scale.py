"""rq-ivf's ``route`` at the list count of 10M vectors (nlist = 4 sqrt(10M) = 12,649): a scan of every
centroid costs nlist x dim for each vector an add routes and each query, a graph over the centroids
does not grow with nlist. One k-means (3 iterations: routing cost does not depend on centroid
quality); rabitqlib's ``IvfIndex`` with the graph route built on the first N rows of
``m2v_mpnet_10m`` (2 threads); the scan route routes a build's adds so slowly at this nlist (a 500k
build had not ended after 6 minutes) that it gets only the first 65,536 rows, which are routed by
annbin's blocked scan as in ``rq-ivf``, and a graph-route index on the same rows is timed beside
it. Queries/s on 1 thread at nprobe 32 / 64, the indexes timed in turn; recall@10 of the 20 best
candidates for the index over N rows.

    python benchmarks/rqivf_route_at_scale.py --n 500000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import rabitqlib  # noqa: E402

from annbin.embed.rqlib import nearest_centroid  # noqa: E402

from _data import load_prefix  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--nlist", type=int, default=12_649)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    x, q, truth = load_prefix("m2v_mpnet_10m", args.n)
    t = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], args.nlist, niter=3, seed=0, spherical=True, min_points_per_centroid=1)
    km.train(x[np.random.default_rng(0).choice(args.n, 16 * args.nlist, replace=False)])
    centroids = np.ascontiguousarray(km.centroids)
    print(f"k-means {time.perf_counter() - t:.0f} s", flush=True)
    first = nearest_centroid(x[:65_536], centroids)
    built = {}
    for route in ("hnsw", "flat"):  # the scan routes the build's adds too slowly here: it gets the first rows only
        rows = args.n if route == "hnsw" else 65_536
        index = rabitqlib.IvfIndex(x.shape[1], 65_536, args.nlist, 2, metric="ip", initializer=route)
        t = time.perf_counter()
        index.build(x[:65_536], centroids, first, num_threads=2, fast_quantization=True)
        for lo in range(65_536, rows, 250_000):
            index.add(x[lo:min(rows, lo + 250_000)], num_threads=2, fast_quantization=True)
        took = time.perf_counter() - t
        built[route] = index
        print(f"route={route}: build of {rows:,} rows {took:.1f} s ({rows / took:,.0f} vectors/s)", flush=True)
    small = rabitqlib.IvfIndex(x.shape[1], 65_536, args.nlist, 2, metric="ip", initializer="hnsw")
    small.build(x[:65_536], centroids, first, num_threads=2, fast_quantization=True)
    built["hnsw, first rows"] = small  # the same rows as the scan's: the routes' search cost side by side
    for rnd in range(args.rounds):
        for route, index in built.items():
            for nprobe in (32, 64):
                t = time.perf_counter()
                ids = np.asarray(index.search(q, 20, nprobe, num_threads=1)[0]).astype(np.int64)
                qps = len(q) / (time.perf_counter() - t)
                hit = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]) if route == "hnsw" else float("nan")
                print(f"round {rnd} route={route} nprobe={nprobe}: recall@10 of 20 candidates {hit:.3f}, {qps:,.0f} q/s", flush=True)


if __name__ == "__main__":
    main()
