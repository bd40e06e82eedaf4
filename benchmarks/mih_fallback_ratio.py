"""MIH's fallback_ratio on data it was not tuned on: real sign bits (first 64 / 128 dims of
m2v_mpnet_500k, built by `annbin datasets build m2v_mpnet_500k`), SimHash and uniform 128-bit codes.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_fallback_ratio.py

Prints MIH's speed over faiss-flat (1 thread, thread CPU time, medians of 3 interleaved rounds of
1,000 queries, k=10) for fallback_ratio 1 (the default), 2, 4 and fallback="never", with the number
of queries of the last round that went to the flat scan.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mih_vs_flat import make_data, parse_configs  # noqa: E402

from annbin import MIHIndex  # noqa: E402
from annbin.bench.datasets import get_dataset  # noqa: E402


def main() -> None:
    faiss.omp_set_num_threads(1)
    sets = {}
    ds = get_dataset("m2v_mpnet_500k")
    xb, xq = np.asarray(ds.get_database()), np.asarray(ds.get_queries())
    for bits in (64, 128):
        sets[f"real sign bits, first {bits} dims, 500k"] = (np.packbits(xb[:, :bits] > 0, axis=1), np.packbits(xq[:, :bits] > 0, axis=1))
    del xb
    for label in ("lsh128:1M", "rand128:1M"):
        sets[label] = make_data(parse_configs(label)[0], 1000, 0.085, 1000, 0)
    modes = [("ratio 1", {"fallback_ratio": 1.0}), ("ratio 2", {"fallback_ratio": 2.0}), ("ratio 4", {"fallback_ratio": 4.0}),
             ("never", {"fallback": "never"})]
    print("| codes | m | " + " | ".join(m for m, _ in modes) + " |")
    print("|---|---|" + "---:|" * len(modes))
    for name, (base, queries) in sets.items():
        d = base.shape[1] * 8
        index = MIHIndex(d=d, num_threads=1)
        index.add(base)
        index.build()
        flat = faiss.IndexBinaryFlat(d)
        flat.add(base)
        secs: dict[str, list[float]] = {m: [] for m, _ in modes} | {"flat": []}
        fell: dict[str, int] = {}
        for _, params in modes:
            index.search(queries, 10, params=params)
        for r in range(3):
            for m, params in modes if r % 2 == 0 else modes[::-1]:
                t0 = time.thread_time()
                index.search(queries, 10, params=params)
                secs[m].append(time.thread_time() - t0)
                fell[m] = index.last_search_stats["fallback_queries"] if index.last_search_stats else 0
            t0 = time.thread_time()
            flat.search(queries, 10)
            secs["flat"].append(time.thread_time() - t0)
        flat_s = statistics.median(secs["flat"])
        cells = [f"{flat_s / statistics.median(secs[m]):.2f}x ({fell[m]} fell back)" for m, _ in modes]
        print(f"| {name} | {index.effective_m} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
