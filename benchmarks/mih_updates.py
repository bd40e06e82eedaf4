"""MIHIndex under updates: adds to the scanned tail, rebuilds past ``tail_fraction``, vs a static index.

Issue 13's example: build 1M clustered 64-bit codes (``mih_vs_flat``'s generator and defaults), then
100 rounds of: add 1,000 new codes (drawn from the same mixture), search 1,000 fresh queries (k=10).
The same searches run on a static index of the first 1M codes, interleaved round by round in this
process (both single-thread), so drift on a shared machine hits both alike. Reported: the total of
the updated index (adds, searches and the rebuilds they trigger) over the static index's searches;
the target is < 3x. Every ``--check-every``-th round (and the last) the updated index's D and I are
checked against an exhaustive faiss scan under the tie rule (the run aborts on any difference).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_updates.py --tail-fractions 0.02,0.05,0.1
    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_updates.py --memory 64,128,256   # memory_bytes() only

Prints its figures (it does not edit RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP: idle threads must not spin

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from annbin import MIHIndex  # noqa: E402
from annbin.index._faiss import exact_knn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mih_vs_flat import DEFAULT_FLIP, Config, make_data  # noqa: E402


def run(fraction: float, args: argparse.Namespace) -> dict:
    n, rounds, batch, nq, k = args.n, args.rounds, args.batch, args.nq, args.k
    cfg = Config("clustered", 64, n + rounds * batch)  # the base and the adds: one draw of one mixture
    codes, queries = make_data(cfg, nq * (rounds + args.warmup), DEFAULT_FLIP[64], args.centres, args.seed)
    static = MIHIndex(64, num_threads=1)
    static.add(codes[:n])
    static.build()
    dynamic = MIHIndex(64, num_threads=1, tail_fraction=fraction)
    dynamic.add(codes[:n])
    t0 = time.perf_counter()
    dynamic.build()
    build_s = time.perf_counter() - t0
    for w in range(args.warmup):
        warm = queries[(rounds + w) * nq :][:nq]
        static.search(warm, k)
        dynamic.search(warm, k)
    check = faiss.IndexBinaryFlat(64) if args.check_every else None
    if check is not None:
        check.add(codes[:n])
    t_dyn, t_static, rebuild_rounds, tails = [], [], [], []
    for r in range(rounds):
        new = codes[n + r * batch :][:batch]
        q = queries[r * nq :][:nq]
        before = dynamic.rebuilds
        t0 = time.perf_counter()
        dynamic.add(new)
        D, I = dynamic.search(q, k)
        t_dyn.append(time.perf_counter() - t0)
        tails.append(dynamic.last_search_stats["tail_codes"])
        if dynamic.rebuilds != before:
            rebuild_rounds.append(r)
        t0 = time.perf_counter()
        static.search(q, k)
        t_static.append(time.perf_counter() - t0)
        if check is not None:
            check.add(new)
            if (r + 1) % args.check_every == 0 or r == rounds - 1:
                rD, rI = exact_knn(check, q, k, ids=np.arange(check.ntotal, dtype=np.int64))
                if not (np.array_equal(D, rD) and np.array_equal(I, rI)):
                    bad = int(np.flatnonzero((D != rD).any(axis=1) | (I != rI).any(axis=1))[0])
                    raise SystemExit(f"EXACTNESS FAILURE in round {r}, query {bad}: {D[bad]} {I[bad]} vs {rD[bad]} {rI[bad]}")
    plain = [t for i, t in enumerate(t_dyn) if i not in rebuild_rounds]
    return {"fraction": fraction, "dyn": sum(t_dyn), "static": sum(t_static), "ratio": sum(t_dyn) / sum(t_static),
            "rebuilds": len(rebuild_rounds), "rebuild_s": sum(t_dyn[i] for i in rebuild_rounds),
            "round_ms": 1e3 * statistics.median(plain) if plain else float("nan"),
            "static_ms": 1e3 * statistics.median(t_static), "max_tail": max(tails), "build_s": build_s,
            "checked": (rounds // args.check_every + (rounds % args.check_every != 0)) if args.check_every else 0}


def memory(bits: list[int], args: argparse.Namespace) -> None:
    print("| codes | N | m | memory_bytes() | codes alone |\n|---|---|---|---|---|")
    for d in bits:
        codes, _ = make_data(Config("clustered", d, args.n), 1, DEFAULT_FLIP.get(d, 0.08), args.centres, args.seed)
        index = MIHIndex(d)
        index.add(codes)
        index.build()
        print(f"| {d}-bit clustered | {args.n:,} | {index.effective_m} | {index.memory_bytes() / 2**20:.1f} MiB "
              f"| {codes.nbytes / 2**20:.1f} MiB |", flush=True)
        del index, codes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="codes built before the updates")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000, help="codes added per round")
    parser.add_argument("--nq", type=int, default=1000, help="queries searched per round")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="untimed query sets each index answers first")
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-every", type=int, default=10, help="check exactness every N rounds (0: never)")
    parser.add_argument("--tail-fractions", default="0.05", help="comma-separated tail_fraction values, one run each")
    parser.add_argument("--memory", default="", help="instead: print memory_bytes() at --n codes of these bit lengths, e.g. 64,128,256")
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(1)
    if args.memory:
        memory([int(b) for b in args.memory.split(",")], args)
        return
    print(f"{args.n:,} clustered 64-bit codes built, then {args.rounds} x (add {args.batch:,}, search {args.nq:,} "
          f"queries, k={args.k}); single thread; load average {os.getloadavg()[0]:.1f} at start\n")
    print("| tail_fraction | updated total s | static total s | ratio (target < 3) | rebuilds | s in rebuild rounds "
          "| median round ms (no rebuild) | static median ms | largest tail | rounds checked exact |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fraction in (float(f) for f in args.tail_fractions.split(",")):
        r = run(fraction, args)
        print(f"| {fraction:g} | {r['dyn']:.2f} | {r['static']:.2f} | **{r['ratio']:.2f}x** | {r['rebuilds']} | {r['rebuild_s']:.2f} "
              f"| {r['round_ms']:.1f} | {r['static_ms']:.1f} | {r['max_tail']:,} | {r['checked']} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
