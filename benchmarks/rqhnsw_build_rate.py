"""How fast rq-hnsw (rabitqlib's HNSW over 2-bit codes) builds: all rows in one add (rabitqlib's
``build``) against a first block and then adds of ``--chunk`` rows (rabitqlib's ``add``, what a
streamed build does), with hnswlib (M=16, efC=100) on the same rows in the same process. 2 threads
each, on the first N rows of ``m2v_mpnet_10m``; prints vectors/s and the ratios.

    python benchmarks/rqhnsw_build_rate.py --n 200000 --chunk 50000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from annbin.embed.floats import make_float_index  # noqa: E402

from _data import load_prefix  # noqa: E402


def main() -> None:
    import hnswlib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    args = ap.parse_args()
    x, _, _ = load_prefix("m2v_mpnet_10m", args.n)
    rates = {}
    for how, step in (("one add", args.n), (f"adds of {args.chunk:,}", args.chunk)):
        stage = make_float_index("rq-hnsw", x.shape[1], "ip")
        stage.num_threads, stage.progress = 2, False
        t = time.perf_counter()
        for lo in range(0, args.n, step):
            stage.add(x[lo:lo + step])
        rates[how] = args.n / (time.perf_counter() - t)
    peer = hnswlib.Index(space="ip", dim=x.shape[1])
    peer.init_index(args.n, M=16, ef_construction=100)
    peer.set_num_threads(2)
    t = time.perf_counter()
    peer.add_items(x)
    hnsw = args.n / (time.perf_counter() - t)
    print(f"n={args.n:,}, 2 threads: hnswlib {hnsw:,.0f} vectors/s", flush=True)
    for how, rate in rates.items():
        print(f"rq-hnsw, {how}: {rate:,.0f} vectors/s ({rate / hnsw:.2f}x hnswlib's)", flush=True)


if __name__ == "__main__":
    main()
