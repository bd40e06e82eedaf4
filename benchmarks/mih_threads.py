"""MIH's num_threads: 2 threads vs 1 on one index, interleaved, with faiss-flat's 2 vs 1 beside it.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_threads.py --config 64:1M --rounds 7

Each round answers one fresh batch of queries with every setting, in turn (order alternating), so
a busy neighbouring core weighs on all of them alike; the figure is the median of per-round ratios.
Results are checked equal across thread counts every round (the same (D, I) for any count).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting made 2 threads slower than 1 here

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mih_vs_flat import DEFAULT_FLIP, make_data, parse_configs  # noqa: E402

from annbin import MIHIndex  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="64:1M", help="one mih_vs_flat config, e.g. 64:1M or 128:1M")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    cfg = parse_configs(args.config)[0]
    # queries drawn with the base (same mixture), a fresh batch a round plus one for warm-up
    base, xq = make_data(cfg, args.nq * (args.rounds + 1), DEFAULT_FLIP.get(cfg.d, 0.1), 1000, 0)
    batches = [xq[r * args.nq : (r + 1) * args.nq] for r in range(args.rounds + 1)]
    index = MIHIndex(d=cfg.d)
    index.add(base)
    index.build()
    flat = faiss.IndexBinaryFlat(cfg.d)
    flat.add(base)

    def mih(x: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        D, I = index.search(x, args.k, params={"num_threads": threads})
        return D, I

    def scan(x: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        faiss.omp_set_num_threads(threads)
        D, I = flat.search(x, args.k)
        return D, I

    runs = [("mih", 1, mih), ("mih", 2, mih), ("flat", 1, scan), ("flat", 2, scan)]
    for _name, threads, fn in runs:  # warm-up on the spare batch
        fn(batches[-1], threads)
    secs: dict[tuple[str, int], list[float]] = {(name, t): [] for name, t, _ in runs}
    for r in range(args.rounds):
        x = batches[r]
        answers = {}
        for name, threads, fn in runs if r % 2 == 0 else runs[::-1]:
            t0 = time.perf_counter()
            answers[(name, threads)] = fn(x, threads)
            secs[(name, threads)].append(time.perf_counter() - t0)
        for name in ("mih", "flat"):
            assert np.array_equal(answers[(name, 1)][0], answers[(name, 2)][0]), f"{name}: distances differ across thread counts"
        assert np.array_equal(answers[("mih", 1)][1], answers[("mih", 2)][1]), "mih: ids differ across thread counts"
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {t}t {secs[(n, t)][-1] * 1e3:.1f} ms" for n, t, _ in runs), file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"\n{cfg.label}, k={args.k}, {args.nq} queries a round, {args.rounds} rounds, load {load:.1f} on {os.cpu_count()} cores, m={index.effective_m}\n")
    print("| index | 1 thread ms | 2 threads ms | 2 threads / 1, speed (median of rounds) |")
    print("|---|---:|---:|---:|")
    for name in ("mih", "flat"):
        one, two = secs[(name, 1)], secs[(name, 2)]
        ratio = statistics.median(a / b for a, b in zip(one, two))
        print(f"| {name} | {statistics.median(one) * 1e3:.1f} | {statistics.median(two) * 1e3:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
