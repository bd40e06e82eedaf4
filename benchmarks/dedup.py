"""The exact near-duplicate join, ``annbin.near_duplicates``, against what a user would run instead.

Every pair ``i < j`` at Hamming distance ``< radius``, on one process, same data, same thread count:

- ``annbin``: ``annbin.near_duplicates(codes, radius, num_threads=t)`` (method ``"auto"``).
- ``faiss-flat``: ``faiss.IndexBinaryFlat`` holding every code, ``range_search`` of blocks of
  ``--block`` codes against it, pairs with ``j > i`` kept (exact). A full self-join is quadratic
  (~1,000 s for 1M codes on one core here), so it is timed on ``--flat-blocks`` blocks spread evenly
  over the rows and scaled linearly to all ``n`` rows (a scan costs the same for every query); the
  table says "scaled". Those blocks' pairs must equal annbin's pairs with ``i`` in them, or the run
  aborts: that is the exactness check. A triangular join (each block against the rows after it)
  would at best halve the flat time: the ``tri`` ratio column divides by that ideal.
- ``faiss-mhash``: ``faiss.IndexBinaryMultiHash(d, nhash, b)`` with ``nflip``, ``range_search`` of
  every code (approximate in general). ``--mhash`` lists the settings tried; ``nhash`` tables of
  ``b`` bits with ``nhash >= radius`` and ``nflip = 0`` cannot miss a pair (pigeonhole), so one of
  the defaults reaches 100%; its recall against annbin's pairs is reported.
- ``pynear-mih``: ``pynear.MIHBinaryIndex(m)``, ``searchKNN_arrays(codes, k, radius - 1)``, results
  at distance ``< radius`` with ``j > i`` kept; a k-NN search, so it misses pairs of items with more
  than ``k - 1`` near copies: its recall is reported.

With ``--peer-blocks N`` (used at 10M, where a full pass of either hash peer takes tens of
minutes) a hash peer's build is timed in full and its search on N evenly spread blocks, scaled to
all rows like faiss-flat's; its recall is then over the exact pairs whose first row is in those blocks.

Timings are medians of ``--repeats`` rounds; each round runs every method back to back (so drift
on a shared machine hits all alike). Build time is included for the hash peers (annbin's join
builds its own tables inside the call). Memory: ``annbin`` is also run in a child process that
loads the codes from a ``.npy`` and reports the rise of its peak RSS (``resource.getrusage``) over
the join, and the peak of ``tracemalloc`` (numpy's allocations) over it, beside the output's size.

Datasets (``--datasets``):
  text64        64-bit ``annbin.simhash`` (shingle 3) of the sentences of ``dedup_texts``
                (``datasets/build_dedup_texts.py``: 554,952 real English sentences, duplicates kept)
  minilm64/128  the shipped ``minilm_wordnet`` base (20,000 x 384 float16), projected to 64 / 128
                bits by seeded random hyperplanes (SimHash of vectors, as ``annbin bench
                --project-bits``; ``annbin.bench.dedup.read_input``)
  m2v64/128     the same projection of ``m2v_mpnet_500k``'s 500,000 x 768 base (when built)
  clustered1M, clustered10M
                ``n / 4`` uniformly random 64-bit centres; each code a random centre with 0-3
                random bits flipped (the number drawn uniformly; a position drawn twice flips
                once), ``numpy.random.default_rng(0)``

``--sweep`` reports, per dataset, the first radius at which ``method="auto"`` picks the scan
(``last_join_stats()`` read after a call stopped by ``max_pairs=0``: the choice without the join)
and, up to ``--sweep-time-n`` codes, the radius at which forced MIH actually becomes slower than
the forced scan (MIH timed at radius 1, 2, ... until it is).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/dedup.py --quick
    OMP_WAIT_POLICY=PASSIVE python benchmarks/dedup.py --datasets text64,minilm64,minilm128,clustered1M --sweep
    OMP_WAIT_POLICY=PASSIVE python benchmarks/dedup.py --datasets clustered10M --repeats 1 --flat-blocks 2 --peer-blocks 8 --mhash 4/16/0 --sweep --sweep-time-n 0
    OMP_WAIT_POLICY=PASSIVE python benchmarks/dedup.py --datasets text64,minilm64,minilm128,clustered200k --limit 100000 --sweep --repeats 1 --no-memory
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP: idle threads must not spin

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import annbin  # noqa: E402
from annbin.bench.dedup import read_input  # noqa: E402
from annbin.bench.groundtruth import cache_dir  # noqa: E402

MAX_PAIRS = 500_000_000
MINILM = Path(annbin.__file__).parent / "bench" / "data" / "minilm_wordnet" / "base.npy"


# ------------------------------------------------------------------------------------- data

def clustered(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 8)`` uint8: copies of ``n // 4`` random 64-bit centres with 0-3 bits flipped."""
    rng = np.random.default_rng(seed)
    nc = max(1, n // 4)
    centres = rng.integers(0, 2**64 - 1, size=nc, dtype=np.uint64, endpoint=True)
    codes = centres[rng.integers(0, nc, size=n)]
    flips = rng.integers(0, 4, size=n)
    for t in range(3):
        bit = np.left_shift(np.uint64(1), rng.integers(0, 64, size=n).astype(np.uint64))
        codes ^= np.where(flips > t, bit, np.uint64(0))
    return codes.view(np.uint8).reshape(n, 8)


def load_dataset(name: str, quick: bool, limit: int | None = None) -> tuple[np.ndarray, dict]:
    t0 = time.perf_counter()
    info: dict = {}
    if name == "text64":
        path = cache_dir() / "datasets" / "dedup_texts" / "texts.txt"
        if not path.exists():
            sys.exit(f"{path} missing: run python datasets/build_dedup_texts.py")
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]
        lines = lines[:100_000] if quick else lines
        lines = lines[:limit] if limit else lines
        t1 = time.perf_counter()
        codes = annbin.simhash(lines, shingle=3, bits=64)
        info["simhash_s"] = round(time.perf_counter() - t1, 2)
        info["distinct_texts"] = len(set(lines))
    elif name.startswith(("minilm", "m2v")):
        bits = int(name.removeprefix("minilm").removeprefix("m2v"))
        path = MINILM if name.startswith("minilm") else cache_dir() / "datasets" / "m2v_mpnet_500k" / "base.npy"
        if not path.exists():
            sys.exit(f"{path} missing (annbin datasets build m2v_mpnet_500k)")
        codes, _ = read_input(path, project_bits=bits)
        if quick:
            codes = codes[:20_000]
    elif name.startswith("clustered"):
        n = int(float(name.removeprefix("clustered").replace("M", "e6").replace("k", "e3")))
        codes = clustered(n)
    else:
        sys.exit(f"unknown dataset {name!r}")
    codes = codes[:limit] if limit else codes
    info["load_s"] = round(time.perf_counter() - t0, 2)
    info["distinct_codes"] = int(np.unique(codes.view(np.dtype((np.void, codes.shape[1])))).shape[0])
    return np.ascontiguousarray(codes), info


# ------------------------------------------------------------------------------------- methods

def set_threads(t: int) -> None:
    faiss.omp_set_num_threads(t)
    for lib in _pynear_gomp():
        lib.omp_set_num_threads(t)


def _pynear_gomp() -> list:
    try:
        import pynear
    except ImportError:
        return []
    libs = Path(pynear.__file__).parent.parent / "pynear.libs"
    return [ctypes.CDLL(str(p)) for p in sorted(libs.glob("libgomp*.so*"))]


def keys(pairs: np.ndarray, n: int) -> np.ndarray:
    return np.sort(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])


def run_annbin(codes: np.ndarray, radius: int, threads: int, method: str = "auto") -> tuple[float, np.ndarray, np.ndarray]:
    gc.collect()
    t0 = time.perf_counter()
    pairs, dist = annbin.near_duplicates(codes, radius, num_threads=threads, max_pairs=MAX_PAIRS, method=method)
    return time.perf_counter() - t0, pairs, dist


def flat_blocks(n: int, block: int, nblocks: int) -> list[tuple[int, int]]:
    if nblocks * block >= n:
        return [(s, min(n, s + block)) for s in range(0, n, block)]
    starts = np.linspace(0, n - block, nblocks).astype(np.int64)
    return [(int(s), int(s) + block) for s in starts]


def run_flat(codes: np.ndarray, radius: int, blocks: list[tuple[int, int]]) -> tuple[float, float, np.ndarray]:
    """(seconds scaled to all rows, seconds measured, pairs found in the blocks)."""
    n, d = codes.shape[0], codes.shape[1] * 8
    index = faiss.IndexBinaryFlat(d)
    index.add(codes)
    found, spent, queries = [], 0.0, 0
    for s, e in blocks:
        t0 = time.perf_counter()
        lims, _, ids = index.range_search(codes[s:e], radius)
        rows = np.repeat(np.arange(s, e, dtype=np.int64), np.diff(lims).astype(np.int64))
        keep = ids > rows
        found.append(np.stack([rows[keep], ids[keep]], axis=1))
        spent += time.perf_counter() - t0
        queries += e - s
    return spent * n / queries, spent, np.concatenate(found)


def _search_blocks(search, blocks: list[tuple[int, int]], n: int, radius: int) -> tuple[float, np.ndarray]:
    """(search seconds scaled to all ``n`` rows, pairs ``j > i`` at distance < radius found for the blocks' rows)."""
    found, spent, queries = [], 0.0, 0
    for s, e in blocks:
        t0 = time.perf_counter()
        rows, ids, dist = search(s, e)
        keep = (dist < radius) & (ids > rows)
        found.append(np.stack([rows[keep], ids[keep].astype(np.int64)], axis=1))
        spent += time.perf_counter() - t0
        queries += e - s
    return spent * n / queries, np.concatenate(found)


def run_mhash(codes: np.ndarray, radius: int, nhash: int, b: int, nflip: int, blocks: list[tuple[int, int]]) -> tuple[float, np.ndarray]:
    """(build + search seconds, the search scaled to all rows; pairs found for the blocks' rows)."""
    n, d = codes.shape[0], codes.shape[1] * 8
    t0 = time.perf_counter()
    index = faiss.IndexBinaryMultiHash(d, nhash, b)
    index.nflip = nflip
    index.add(codes)
    build = time.perf_counter() - t0

    def search(s: int, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lims, dist, ids = index.range_search(codes[s:e], radius)
        return np.repeat(np.arange(s, e, dtype=np.int64), np.diff(lims).astype(np.int64)), ids, dist

    seconds, found = _search_blocks(search, blocks, n, radius)
    return build + seconds, found


def run_pynear(codes: np.ndarray, radius: int, m: int, k: int, blocks: list[tuple[int, int]]) -> tuple[float, np.ndarray]:
    """As ``run_mhash``, for pynear's MIHBinaryIndex (a k-NN search within radius - 1)."""
    import pynear

    n = codes.shape[0]
    t0 = time.perf_counter()
    index = pynear.MIHBinaryIndex(m=m)
    index.set(codes)
    build = time.perf_counter() - t0

    def search(s: int, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, dist = index.searchKNN_arrays(codes[s:e], k, radius - 1)
        ids, dist = np.asarray(ids), np.asarray(dist)
        return np.broadcast_to(np.arange(s, e, dtype=np.int64)[:, None], ids.shape), ids, dist

    seconds, found = _search_blocks(search, blocks, n, radius)
    return build + seconds, found


def in_blocks(exact_keys: np.ndarray, blocks: list[tuple[int, int]], n: int) -> np.ndarray:
    """The exact pairs whose first row lies in one of the blocks."""
    inside = np.zeros(n, bool)
    for s, e in blocks:
        inside[s:e] = True
    return exact_keys[inside[exact_keys // n]]


def recall(found: np.ndarray, exact_keys: np.ndarray, n: int) -> tuple[float, int]:
    """(share of the exact pairs found, pairs found that are not exact pairs)."""
    got = np.unique(keys(found, n))
    hit = np.isin(got, exact_keys, assume_unique=True)
    return (float(hit.sum()) / max(1, exact_keys.size)), int((~hit).sum())


# ------------------------------------------------------------------------------------- memory

def _vm(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS: resident now; VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory_child(path: str, radius: int, threads: int) -> None:
    codes = np.load(path)
    annbin.near_duplicates(codes[:1000], radius, num_threads=threads)  # imports and first-call set-up
    gc.collect()
    # Reset the peak-RSS mark to the RSS now (Linux: "5" > clear_refs), so the peak after the join is
    # the join's own; ru_maxrss cannot be reset and already holds the imports' peak.
    Path("/proc/self/clear_refs").write_text("5")
    before = _vm("VmRSS")
    tracemalloc.start()
    pairs, dist = annbin.near_duplicates(codes, radius, num_threads=threads, max_pairs=MAX_PAIRS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"rss_rise": _vm("VmHWM") - before, "traced_peak": peak, "codes": codes.nbytes,
                      "output": pairs.nbytes + dist.nbytes, "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def measure_memory(codes: np.ndarray, radius: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.npy"
        np.save(path, codes)
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(path), str(radius), str(threads)],
                              capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- sweep

def auto_path(codes: np.ndarray, radius: int, threads: int) -> dict:
    """The path method="auto" picks at ``radius``, without running the join: ``max_pairs=0`` stops it
    at its first pair, after the choice (``last_join_stats`` holds the choice from the start)."""
    try:
        annbin.near_duplicates(codes, radius, num_threads=threads, max_pairs=0)
    except ValueError:
        pass
    return join_stats()


def fallback_radius(codes: np.ndarray, max_radius: int, threads: int) -> tuple[int | None, list[dict]]:
    """The first radius at which method="auto" picks the scan, and its pick at each radius before."""
    rows, found = [], None
    for radius in range(1, max_radius + 1):
        stats = auto_path(codes, radius, threads)
        rows.append({"radius": radius, "method": stats.get("method"), "m": stats.get("m")})
        if stats.get("method") == "scan":
            found = radius
            break
    return found, rows


def crossover_radius(codes: np.ndarray, max_radius: int, threads: int) -> tuple[int | None, float, list[tuple[int, float]]]:
    """The first radius at which forced MIH is slower than the forced scan (timed once, at
    ``max_radius``: a scan's time hardly depends on the radius), with MIH's time per radius."""
    scan_s = run_annbin(codes, max_radius, threads, "scan")[0]
    times = []
    for radius in range(1, max_radius + 1):
        mih_s = run_annbin(codes, radius, threads, "mih")[0]
        times.append((radius, round(mih_s, 3)))
        if mih_s > scan_s:
            return radius, scan_s, times
    return None, scan_s, times


def join_stats() -> dict:
    """What this thread's last near_duplicates call did (its path, tables, codes it scanned)."""
    from annbin.index.mih.join import last_join_stats

    return dict(last_join_stats() or {})


# ------------------------------------------------------------------------------------- main

def fmt_s(x: float) -> str:
    return f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def run_dataset(name: str, args: argparse.Namespace) -> dict:
    codes, info = load_dataset(name, args.quick, args.limit)
    n, d = codes.shape[0], codes.shape[1] * 8
    radius = args.radius
    print(f"\n## {name}: n={n:,} d={d}  ({json.dumps(info)})", flush=True)
    blocks = flat_blocks(n, args.block, args.flat_blocks)
    sampled = sum(e - s for s, e in blocks) < n
    mh_settings = [tuple(int(v) for v in s.split("/")) for s in args.mhash.split(",")] if args.mhash else []
    times: dict[str, list[float]] = {}
    exact_keys = None
    pairs_n = 0
    mh_recall: dict[str, tuple[float, int]] = {}
    py_recall: tuple[float, int] | None = None
    for rep in range(args.repeats):
        for t in args.threads:
            set_threads(t)
            sec, pairs, _ = run_annbin(codes, radius, t)
            times.setdefault(f"annbin t={t}", []).append(sec)
            if exact_keys is None:
                exact_keys, pairs_n = keys(pairs, n), pairs.shape[0]
                info["annbin_path"] = {k: join_stats().get(k) for k in ("method", "m", "scan_queries", "blocks")}
                if not (pairs[:, 0] < pairs[:, 1]).all():
                    sys.exit("annbin returned a pair with i >= j")
            elif pairs.shape[0] != pairs_n:
                sys.exit(f"annbin's pair count changed between runs: {pairs_n} then {pairs.shape[0]}")
            del pairs
        set_threads(args.threads[0])
        est, spent, flat_pairs = run_flat(codes, radius, blocks)
        times["faiss-flat" + (" (scaled)" if sampled else "")] = times.get("faiss-flat" + (" (scaled)" if sampled else ""), []) + [est]
        if rep == 0:  # exactness: annbin's pairs whose i lies in the flat blocks == flat's pairs
            ours = in_blocks(exact_keys, blocks, n)
            if not np.array_equal(ours, np.unique(keys(flat_pairs, n))):
                sys.exit(f"{name}: annbin's pairs differ from faiss-flat's on the sampled rows")
            print(f"exact: annbin's {ours.size:,} pairs from {sum(e - s for s, e in blocks):,} sampled rows == faiss-flat's", flush=True)
        if rep == 0:
            peer_blocks = flat_blocks(n, args.block, args.peer_blocks) if args.peer_blocks else flat_blocks(n, args.block, n)
            scaled = " (scaled)" if sum(e - s for s, e in peer_blocks) < n else ""
            peer_keys = in_blocks(exact_keys, peer_blocks, n)
        for nhash, b, nflip in mh_settings:
            if nhash * b > d:
                continue
            label = f"faiss-mhash {nhash}x{b} nflip={nflip}" + scaled
            sec, found = run_mhash(codes, radius, nhash, b, nflip, peer_blocks)
            times.setdefault(label, []).append(sec)
            if rep == 0:
                mh_recall[label] = recall(found, peer_keys, n)
        if args.pynear and (d // 8) % args.pynear_m == 0 and d // 8 // args.pynear_m <= 8:  # pynear's MIH: substrings of <= 8 bytes
            try:
                sec, found = run_pynear(codes, radius, args.pynear_m, args.pynear_k, peer_blocks)
            except ImportError:
                args.pynear = False
            else:
                times.setdefault(f"pynear-mih m={args.pynear_m} k={args.pynear_k}" + scaled, []).append(sec)
                if rep == 0:
                    py_recall = recall(found, peer_keys, n)
    base = statistics.median(times[f"annbin t={args.threads[0]}"])
    print(f"pairs at distance < {radius}: {pairs_n:,}; annbin auto ran {info['annbin_path']}; "
          f"median of {args.repeats} round(s), {args.threads[0]} thread(s) for the peers")
    print(f"{'method':<34}{'seconds':>12}{'x annbin':>10}{'tri':>8}  recall")
    for label, vals in times.items():
        med = statistics.median(vals)
        rec = mh_recall.get(label) or (py_recall if label.startswith("pynear") else None)
        rtext = "exact" if label.startswith(("annbin", "faiss-flat")) else (f"{rec[0]:.4f} (+{rec[1]} wrong)" if rec else "")
        tri = f"{med / 2 / base:,.1f}" if label.startswith("faiss-flat") else ""
        print(f"{label:<34}{fmt_s(med):>12}{med / base:>10,.1f}{tri:>8}  {rtext}", flush=True)
    if len(args.threads) > 1:
        one, two = (statistics.median(times[f"annbin t={t}"]) for t in args.threads[:2])
        print(f"annbin threads {args.threads[0]} -> {args.threads[1]}: {one / two:.2f}x")
    row = {"dataset": name, "n": n, "d": d, "radius": radius, "pairs": pairs_n, "info": info,
           "seconds": {k: statistics.median(v) for k, v in times.items()}, "flat_sampled": sampled,
           "mhash_recall": mh_recall, "pynear_recall": py_recall}
    if args.memory:
        mem = measure_memory(codes, radius, args.threads[0])
        mib = 1 << 20
        tables = mem["rss_rise"] - mem["output"]
        print(f"memory: codes {mem['codes'] / mib:.1f} MiB, output {mem['output'] / mib:.1f} MiB, peak RSS rise over the join "
              f"{mem['rss_rise'] / mib:.1f} MiB (= {tables / mib / (n / 1e6):.1f} MiB per million codes beyond the output), "
              f"tracemalloc peak {mem['traced_peak'] / mib:.1f} MiB")
        row["memory"] = mem
    if args.sweep:
        r, sweep = fallback_radius(codes, args.sweep_max, args.threads[0])
        print(f"auto falls back to the scan at radius {r} (searched 1..{args.sweep_max}): "
              + ", ".join(f"r={s['radius']} {s['method']}" + (f"(m={s['m']})" if s["m"] else "") for s in sweep))
        if n <= args.sweep_time_n:
            cross, scan_s, mih_times = crossover_radius(codes, r or args.sweep_max, args.threads[0])
            print(f"  measured: forced MIH is first slower than the forced scan ({scan_s:.2f} s) at radius {cross}; MIH seconds by radius: "
                  + ", ".join(f"{rr}: {sec}" for rr, sec in mih_times))
            row["crossover_radius"], row["scan_s"], row["mih_by_radius"] = cross, scan_s, mih_times
        row["fallback_radius"], row["sweep"] = r, sweep
    return row


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="text64,minilm64,minilm128,clustered1M")
    ap.add_argument("--quick", action="store_true", help="small: text64 (first 100k), minilm64 and clustered200k, 1 repeat")
    ap.add_argument("--radius", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="annbin's thread counts; the first is also the peers'")
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--flat-blocks", type=int, default=4, help="faiss-flat blocks timed and scaled to all rows")
    ap.add_argument("--peer-blocks", type=int, default=0, help="time the hash peers' searches on this many blocks and scale (0: all rows)")
    ap.add_argument("--mhash", default="4/16/0,2/32/1", help="faiss IndexBinaryMultiHash settings nhash/b/nflip, comma-separated")
    ap.add_argument("--pynear", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--pynear-m", type=int, default=4)
    ap.add_argument("--pynear-k", type=int, default=32)
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--sweep", action="store_true", help="find the radius where method='auto' falls back to the scan")
    ap.add_argument("--sweep-max", type=int, default=40)
    ap.add_argument("--sweep-time-n", type=int, default=200_000, help="measure where forced MIH becomes slower than the scan, up to this many codes")
    ap.add_argument("--limit", type=int, default=None, help="keep only each dataset's first N codes")
    ap.add_argument("--out", type=Path, default=None, help="append one JSON row per dataset here")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.quick:
        args.datasets, args.repeats = "text64,minilm64,clustered200k", 1
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    for name in args.datasets.split(","):
        row = run_dataset(name, args)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
