"""near_duplicates (the MIH self-join) against a faiss-flat blocked self-join, and over threads.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_join.py --radius 4 --repeats 3 --flat-blocks 2
    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_join.py --threads 1,2 --rounds 5 --no-flat
    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_join.py --switch     # where method="auto" turns to the scan

Data (seeded): ``--centres`` random 64-bit centres, ``--copies`` near copies of each with 0 to
``--max-flips`` bits flipped (uniformly many, at random places), shuffled: 1M codes by default.

- near_duplicates at ``--radius`` (distance < radius), ``method="auto"``, one thread
  (``faiss.omp_set_num_threads(1)``): median of ``--repeats`` wall-clock runs.
- faiss-flat: ``IndexBinaryFlat`` over all codes, ``range_search`` of blocks of ``--flat-block``
  queries (all codes against all, one thread). ``--flat-blocks B`` times the first B blocks only
  and scales the time linearly to all codes (says so); 0 runs them all. The pairs agree: every
  timed query's neighbours (itself excluded) equal those near_duplicates reports for it.
  ``--check-index`` counts every pair once more by another exact path (``MIHIndex.range_search``
  of all codes, each query's own row dropped).
- ``--threads 1,2``: rounds of near_duplicates with each thread count in turn (order alternating),
  the median of the per-round ratios over one thread; pairs checked equal. Beside it, in the same
  rounds, a control: the same thread counts on a GIL-free numpy kernel (``np.bitwise_count`` of
  20M words, one run per thread) says how much parallelism the machine gives just then (a busy
  shared box gives none, whatever the code).
- ``--switch``: the smallest radius at which ``method="auto"`` takes the scan for this data's
  size, by the cost model calibrated in this process (``join_plan``; nothing is joined).

Prints its figures (it does not edit RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP: idle threads must not spin

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from annbin import MIHIndex, near_duplicates  # noqa: E402
from annbin.index.mih.join import join_plan, last_join_stats  # noqa: E402


def make_codes(centres: int, copies: int, max_flips: int, seed: int) -> np.ndarray:
    """``centres * copies`` 64-bit codes: each centre's copies with 0..max_flips random bits flipped."""
    rng = np.random.default_rng(seed)
    bits = np.unpackbits(rng.integers(0, 256, (centres, 8), dtype=np.uint8), axis=1).repeat(copies, axis=0)
    flips = rng.integers(0, max_flips + 1, len(bits))
    rows = np.arange(len(bits))
    for f in range(max_flips):  # a repeated place flips back: a copy has at most `flips` bits changed
        sel = flips > f
        bits[rows[sel], rng.integers(0, 64, int(sel.sum()))] ^= 1
    return np.packbits(bits, axis=1)[rng.permutation(len(bits))]


def flat_join(codes: np.ndarray, radius: int, block: int, blocks: int) -> tuple[float, list[tuple[int, np.ndarray, np.ndarray]]]:
    """Seconds of the first ``blocks`` blocks of a faiss-flat self-join (all blocks if 0), and per
    block its first row, lims and ids."""
    flat = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    flat.add(codes)
    starts = list(range(0, len(codes), block))
    if blocks:
        starts = starts[:blocks]
    out, seconds = [], 0.0
    for a in starts:
        t = time.perf_counter()
        lims, _, ids = flat.range_search(codes[a : a + block], radius)
        seconds += time.perf_counter() - t
        out.append((a, lims.astype(np.int64), ids))
    return seconds, out


def check_against_flat(pairs: np.ndarray, found: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
    """Each timed query's neighbours (itself excluded) are the ones ``pairs`` give it."""
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0] * (1 << 32) + both[:, 1], kind="stable")]
    for a, lims, ids in found:
        nq = len(lims) - 1
        q = np.arange(a, a + nq).repeat(np.diff(lims))
        keep = ids != q
        flat_keys = np.sort(q[keep] * (1 << 32) + ids[keep])
        lo, hi = np.searchsorted(both[:, 0], [a, a + nq])
        mine = both[lo:hi, 0] * (1 << 32) + both[lo:hi, 1]
        if not np.array_equal(flat_keys, mine):
            raise AssertionError(f"pairs differ from faiss-flat's in the block at row {a}")


_CONTROL = np.random.default_rng(1).integers(0, 2**62, 20_000_000, dtype=np.int64)


def numpy_control(threads: int) -> float:
    """Seconds for ``threads`` threads each to popcount 20M words (GIL-free numpy) at once."""
    workers = [threading.Thread(target=lambda: np.bitwise_count(_CONTROL).sum()) for _ in range(threads)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--centres", type=int, default=100_000)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--max-flips", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flat-block", type=int, default=16384)
    parser.add_argument("--flat-blocks", type=int, default=2, help="faiss-flat blocks timed (0: all)")
    parser.add_argument("--no-flat", action="store_true")
    parser.add_argument("--check-index", action="store_true", help="count every pair by MIHIndex.range_search too")
    parser.add_argument("--threads", default="", help="e.g. 1,2: thread counts compared in interleaved rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--switch", action="store_true")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    codes = make_codes(args.centres, args.copies, args.max_flips, args.seed)
    n = len(codes)
    print(f"{n:,} codes of 64 bits ({args.centres:,} centres x {args.copies} copies, 0-{args.max_flips} bits flipped)")
    if args.switch:
        plans = {r: join_plan(n, 64, r) for r in range(1, 66)}
        switch = next((r for r, plan in plans.items() if plan[0] == "scan"), None)
        print(f"auto: MIH up to radius {switch - 1 if switch else 65}, the scan from radius {switch} "
              f"(m by radius: {', '.join(f'{r}:{plans[r][1]}' for r in plans if plans[r][0] == 'mih')})")
        return
    near_duplicates(codes[:20_000], args.radius)  # calibrates the cost model (once per process), untimed
    times, pairs = [], None
    for _ in range(args.repeats):
        t = time.perf_counter()
        pairs, dist = near_duplicates(codes, args.radius, num_threads=1)
        times.append(time.perf_counter() - t)
    stats = last_join_stats()
    mine = statistics.median(times)
    print(f"near_duplicates radius < {args.radius}: {len(pairs):,} pairs, median {mine:.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times)}); {stats}")
    if args.check_index:  # every pair, by another exact path: MIHIndex.range_search of all codes
        index = MIHIndex(64, m="formula")
        index.add(codes)
        lims, _, _ = index.range_search(codes, args.radius)
        ordered = int(lims[-1]) - n  # each code finds itself
        if ordered != 2 * len(pairs):
            raise AssertionError(f"MIHIndex.range_search finds {ordered // 2:,} pairs, near_duplicates {len(pairs):,}")
        print(f"pair count checked over all {n:,} codes against MIHIndex.range_search: {len(pairs):,}")
    if not args.no_flat:
        seconds, found = flat_join(codes, args.radius, args.flat_block, args.flat_blocks)
        timed = sum(len(lims) - 1 for _, lims, _ in found)
        total = seconds * n / timed
        check_against_flat(pairs, found)
        scaled = f" (timed {timed:,} of {n:,} queries, scaled linearly)" if timed < n else ""
        print(f"faiss-flat blocked self-join: {total:.1f} s{scaled}; pairs agree on the queries timed; "
              f"near_duplicates is {total / mine:.1f}x faster")
    if args.threads:
        counts = [int(t) for t in args.threads.split(",")]
        secs: dict[int, list[float]] = {c: [] for c in counts}
        control: dict[int, list[float]] = {c: [] for c in counts}
        ref = pairs
        for r in range(args.rounds):
            for c in counts if r % 2 == 0 else counts[::-1]:
                t = time.perf_counter()
                got, _ = near_duplicates(codes, args.radius, num_threads=c)
                secs[c].append(time.perf_counter() - t)
                if not np.array_equal(got, ref):
                    raise AssertionError(f"pairs with {c} threads differ")
                control[c].append(numpy_control(c))
        for c in counts:
            ratio = statistics.median(b / s for b, s in zip(secs[counts[0]], secs[c]))
            # the control does c times the work with c threads: its speed-up is c * t(1) / t(c)
            room = statistics.median(c / counts[0] * b / s for b, s in zip(control[counts[0]], control[c]))
            print(f"threads {c}: median {statistics.median(secs[c]):.2f} s, {ratio:.2f}x {counts[0]} thread(s) "
                  f"(per round: {', '.join(f'{s:.2f}' for s in secs[c])}); GIL-free numpy control {room:.2f}x")


if __name__ == "__main__":
    main()
