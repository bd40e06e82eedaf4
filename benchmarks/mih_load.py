"""MIHIndex: a load costs less than a build. Build + first search vs save, then load + first search.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_load.py --n 1000000 --repeats 3

1M uniformly random 64-bit codes (seeded). Per repeat: ``MIHIndex(d=64)``, ``add``, ``build()``
and a first search (timed together), then ``save`` (untimed) and ``annbin.load`` + the same first
search (timed together). The first search is ``--nq`` stored codes as queries: a range search at
``--radius`` (near-duplicates, MIH's use; the default) or, with ``--k``, a kNN search. Single thread
(``num_threads=1``); the cost model is calibrated before the first repeat, so neither side pays
for it. Prints the median of each and their ratio (load over build); it does not edit RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP: idle threads must not spin

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import annbin  # noqa: E402
from annbin.index.mih._calibrate import calibrated_costs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--k", type=int, default=None, help="time a kNN search with this k instead of a range search")
    parser.add_argument("--m", default=None, help="an explicit m (default: MIHIndex's own choice, measured at build)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    codes = np.random.default_rng(0).integers(0, 256, (args.n, args.d // 8), dtype=np.uint8)
    queries = codes[: args.nq].copy()
    m = None if args.m is None else (args.m if args.m == "formula" else int(args.m))
    calibrated_costs()

    def first_search(index: annbin.MIHIndex) -> object:
        if args.k is not None:
            return index.search(queries, args.k, params={"num_threads": 1})
        index.set_search_params(num_threads=1)
        return index.range_search(queries, args.radius)

    built, loaded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mih.annbin"
        for r in range(args.repeats):
            t = time.perf_counter()
            index = annbin.MIHIndex(d=args.d, m=m)
            index.add(codes)
            index.build()
            first = first_search(index)
            built.append(time.perf_counter() - t)
            index.save(str(path))
            del index
            t = time.perf_counter()
            again = annbin.load(path)
            second = first_search(again)
            loaded.append(time.perf_counter() - t)
            assert again.rebuilds == 0
            for a, b in zip(first, second):  # type: ignore[call-overload]
                np.testing.assert_array_equal(a, b)
            del again
            print(f"repeat {r}: build + search {built[-1]:.3f} s, load + search {loaded[-1]:.3f} s")
    b, ld = statistics.median(built), statistics.median(loaded)
    what = f"kNN k={args.k}" if args.k is not None else f"range radius<{args.radius}"
    print(f"n={args.n} d={args.d} first search: {args.nq} queries, {what}")
    print(f"median build + first search {b:.3f} s; load + first search {ld:.3f} s; ratio {ld / b:.3f}")


if __name__ == "__main__":
    main()
