"""Peak memory of ``load_index`` for a ~200 MB flat index, read (``mmap=False``) vs mapped (``mmap=True``).

Each load runs in a fresh subprocess that reports, from ``/proc/self/status``, its resident memory
before the load (``VmRSS``, after imports) and its peak after (``VmHWM``), plus ``RssAnon`` (the
process's own memory; mapped file pages are ``RssFile``, reclaimable page cache) after the load
and after one search. The two modes alternate, ``--repeats`` times each; medians are printed.

    python benchmarks/mmap_load.py [--n 1600000] [--d 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = """
import json, sys, numpy as np
from annbin.index.registry import load_index

def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out

path, mmap = sys.argv[1], sys.argv[2] == "1"
before = status()
index = load_index(path, mmap=mmap)
loaded = status()
index.search(np.zeros((1, index.code_size), np.uint8), 10)
searched = status()
print(json.dumps({"before": before, "loaded": loaded, "searched": searched, "ntotal": index.ntotal}))
"""


def measure(path: Path, mmap: bool) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), "1" if mmap else "0"], capture_output=True, text=True, check=True, env=env)
    r = json.loads(out.stdout)
    mib = 1 << 20
    return {
        "peak_over_start_mib": (r["loaded"]["VmHWM"] - r["before"]["VmRSS"]) / mib,
        "anon_after_load_mib": (r["loaded"]["RssAnon"] - r["before"]["RssAnon"]) / mib,
        "anon_after_search_mib": (r["searched"]["RssAnon"] - r["before"]["RssAnon"]) / mib,
        "file_after_search_mib": (r["searched"]["RssFile"] - r["before"]["RssFile"]) / mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_600_000)
    parser.add_argument("--d", type=int, default=1024, help="bits per code")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from annbin import make_index

    with tempfile.TemporaryDirectory(prefix="annbin-mmap-") as tmp:
        path = Path(tmp) / "flat.annbin"
        index = make_index("flat", d=args.d)
        rng = np.random.default_rng(0)
        for a in range(0, args.n, 200_000):
            index.add(rng.integers(0, 256, (min(200_000, args.n - a), args.d // 8), dtype=np.uint8))
        index.save(str(path))
        del index
        size = path.stat().st_size / (1 << 20)
        rows: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for mmap in (False, True):
                rows[mmap].append(measure(path, mmap))
    print(f"flat index: n={args.n:,}, d={args.d} bits, file {size:.0f} MiB (codes {args.n * args.d / 8 / (1 << 20):.0f} MiB + ids {args.n * 8 / (1 << 20):.0f} MiB)")
    print(f"{'mode':<10} {'peak-start':>11} {'anon load':>10} {'anon search':>12} {'file pages':>11}   (MiB, median of {args.repeats})")
    for mmap in (False, True):
        med = {k: statistics.median(r[k] for r in rows[mmap]) for k in rows[mmap][0]}
        print(f"{'mmap' if mmap else 'read':<10} {med['peak_over_start_mib']:>11.0f} {med['anon_after_load_mib']:>10.0f} "
              f"{med['anon_after_search_mib']:>12.0f} {med['file_after_search_mib']:>11.0f}")


if __name__ == "__main__":
    main()
