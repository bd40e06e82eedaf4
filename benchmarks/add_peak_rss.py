"""Peak RSS of the default ``BinaryEmbeddingIndex`` while adding a large set in chunks (issue 20).

The floats go to the index's memory-mapped file, so RAM should hold the codes and graph
(``memory_bytes()``) plus about one chunk of floats in flight. Run in a fresh process (peak RSS is
per process); the base is read chunk by chunk from the dataset's memory-mapped float16 file.

    python benchmarks/add_peak_rss.py --dataset m2v_mpnet_500k --chunk 50000
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import annbin  # noqa: E402
from annbin.bench.datasets import built_dir, data_dir  # noqa: E402


def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="m2v_mpnet_500k")
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    # the set's float16 file, memory-mapped: get_dataset would read (and fingerprint) it all first
    path = next((d / args.dataset / "base.npy" for d in (built_dir(), data_dir()) if (d / args.dataset / "base.npy").is_file()), None)
    if path is None:
        raise SystemExit(f"{args.dataset}: no base.npy under {built_dir()} or {data_dir()} (annbin datasets build {args.dataset})")
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        offset = f.tell()
    n, dim = shape

    def read_rows(lo: int, hi: int) -> np.ndarray:
        """Rows by plain reads, not a memory map: mapped file pages would count in RSS as if held."""
        return np.fromfile(path, dtype=dtype, count=(hi - lo) * dim, offset=offset + lo * dim * dtype.itemsize).reshape(hi - lo, dim)

    index = annbin.BinaryEmbeddingIndex(threads=args.threads)
    start, t0 = rss_mib(), time.perf_counter()
    worst = 0.0
    for lo in range(0, n, args.chunk):
        chunk = read_rows(lo, min(n, lo + args.chunk)).astype(np.float32)  # cos normalizes it
        index.add(chunk)
        del chunk
        worst = max(worst, peak_mib())
        print(f"  {min(n, lo + args.chunk):>9,} rows  RSS {rss_mib():8.0f} MiB (anonymous {rss_mib('RssAnon'):6.0f}, file {rss_mib('RssFile'):6.0f})"
              f"  peak {peak_mib():8.0f} MiB", flush=True)
    held = index.memory_bytes() / 2**20
    chunk_mib = args.chunk * dim * 4 / 2**20
    print(f"{args.dataset}: {n:,} x {dim} in chunks of {args.chunk:,} ({chunk_mib:.0f} MiB of float32), {time.perf_counter() - t0:.0f} s")
    print(f"start RSS {start:.0f} MiB; peak {worst:.0f} MiB = start + {worst - start:.0f} MiB")
    print(f"codes + graph (memory_bytes) {held:.0f} MiB; + one chunk = {held + chunk_mib:.0f} MiB; "
          f"peak over start / (codes + graph + chunk) = {(worst - start) / (held + chunk_mib):.2f}")
    print(f"floats on disk: {index.disk_bytes() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
