"""Queries/s of a 2-shard MIH index on a local Ray vs the same MIH index in one process.

Both are exact; the script checks that their distances are equal. It also measures what sharding
costs per batch: an empty round trip to every shard, and a search over tiny shards (where the
index's own work is negligible) against the same tiny index in process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/sharded_vs_single.py            # 1M 64-bit codes
    python benchmarks/sharded_vs_single.py --n 100000 --repeats 3 --no-write  # a quick look

Rows (one JSON object per measurement) are printed and, unless ``--no-write``, appended to
``--jsonl`` and written as a table into the "Sharded" section of ``benchmarks/RESULTS.md``
(only that section is replaced; the rest of the file is kept).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads: idle OpenMP threads must not spin
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import annbin  # noqa: E402

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- sharded:begin -->", "<!-- sharded:end -->"


def clustered_codes(rng: np.random.Generator, n: int, d: int, centres: np.ndarray, flip: float) -> np.ndarray:
    """``n`` codes of ``d`` bits: a random centre with each bit flipped with probability ``flip``."""
    out = np.empty((n, d // 8), np.uint8)
    for start in range(0, n, 200_000):  # in chunks: the unpacked bits are 8x the codes
        m = min(200_000, n - start)
        bits = centres[rng.integers(0, centres.shape[0], size=m)]
        bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
        out[start : start + m] = np.packbits(bits, axis=1)
    return out


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median seconds of ``repeats`` calls after one warm-up call; also every time and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def timed_pair(fa: Callable[[], Any], fb: Callable[[], Any], repeats: int) -> tuple[float, float, list[float], list[float]]:
    """Like ``timed`` for two functions run in alternation, so background load hits both alike."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb), ta, tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="database codes")
    ap.add_argument("--d", type=int, default=64, help="bits per code")
    ap.add_argument("--nq", type=int, default=1_000, help="queries per batch")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--clusters", type=int, default=1_000)
    ap.add_argument("--flips", default="0.05,0.15", help="bit-flip probabilities around a centre, one data set each "
                    "(0.05: the 10th neighbour ~3 bits away, MIH's best case; 0.15: ~10 bits, MIH works hard)")
    ap.add_argument("--flat-d", type=int, default=384, help="also compare flat on random codes of this many bits (0: skip)")
    ap.add_argument("--flat-nq", type=int, default=100, help="queries per batch for the flat comparison")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jsonl", type=Path, default=HERE / "results" / "sharded_vs_single.jsonl")
    ap.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print rows only")
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="warning")
    common = {
        "bench": "sharded_vs_single", "n": args.n, "d": args.d, "nq": args.nq, "k": args.k, "repeats": args.repeats,
        "cpus": os.cpu_count(), "machine": platform.machine(), "annbin": annbin.__version__, "ray": ray.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    rows: list[dict[str, Any]] = []

    def row(**fields: Any) -> None:
        rows.append({**common, **fields, "loadavg_1min": round(os.getloadavg()[0], 2)})  # others' load shows here
        print(json.dumps(rows[-1]), flush=True)

    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 2, size=(args.clusters, args.d), dtype=np.uint8)
    for i, flip in enumerate(float(f) for f in args.flips.split(",")):
        base = clustered_codes(rng, args.n, args.d, centres, flip)
        queries = clustered_codes(rng, args.nq, args.d, centres, flip)
        data = f"clustered(clusters={args.clusters},flip={flip})"
        compare(args, "mih", base, queries, data, row, extras=(i == 0))
    if args.flat_d:  # the regime of long codes (MIH falls back to a scan there): exact flat, random codes
        base = rng.integers(0, 256, size=(args.n, args.flat_d // 8), dtype=np.uint8)
        queries = rng.integers(0, 256, size=(args.flat_nq, args.flat_d // 8), dtype=np.uint8)
        compare(args, "flat", base, queries, "uniform random", row, batches=False)
    ray.shutdown()
    if not args.no_write:
        write_rows(rows, args.jsonl, args.results_md)


def compare(args: argparse.Namespace, spec: str, base: np.ndarray, queries: np.ndarray, data: str, row: Callable[..., None], *,
            batches: bool = True, extras: bool = False) -> None:
    """Single vs sharded ``spec`` on one data set; smaller batches too; with ``extras``, overheads and persistence."""
    import faiss

    from annbin.distributed import ShardedIndex

    d = base.shape[1] * 8
    k, nq = args.k, queries.shape[0]
    single = annbin.make_index(spec, d)  # in this process; faiss (MIH's scan fallback) keeps its threads
    t0 = time.perf_counter()
    single.add(base)
    D_single, _ = single.search(queries, k)  # MIH builds its tables lazily, at the first search
    build_single = time.perf_counter() - t0
    sharded = ShardedIndex(spec, d, shards=args.shards)
    sharded.ping()  # actors up before the clock starts
    t0 = time.perf_counter()
    sharded.add(base)
    D_sharded, _ = sharded.search(queries, k)
    build_sharded = time.perf_counter() - t0
    if not np.array_equal(D_sharded, D_single):
        raise SystemExit(f"sharded and single {spec} distances differ: sharding is broken")
    med_s, med_h, t_s, t_h = timed_pair(lambda: single.search(queries, k), lambda: sharded.search(queries, k), args.repeats)
    med_single = med_s
    kth = float(np.median(D_single[:, -1]))
    row(data=data, bits=d, nq=nq, index=single.spec, where="one process", faiss_threads=faiss.omp_get_max_threads(), build_s=round(build_single, 3),
        kth_distance_median=kth, median_s=round(med_s, 5), qps=round(nq / med_s, 1), times_s=[round(t, 5) for t in t_s])
    row(data=data, bits=d, nq=nq, index=sharded.spec, where=f"{args.shards} Ray actors", shard_sizes=sharded.shard_sizes.tolist(),
        build_s=round(build_sharded, 3), kth_distance_median=kth, median_s=round(med_h, 5), qps=round(nq / med_h, 1),
        times_s=[round(t, 5) for t in t_h], distances_equal=True)
    # the bound for parallel shards: one shard's share of the data, searched in this process on one
    # thread, as a shard's actor runs it (Ray sets OMP_NUM_THREADS=1 for an actor that reserves no CPU)
    part = annbin.make_index(spec, d)
    part.add(base[: base.shape[0] // args.shards])
    part.search(queries, k)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        med_p, _, _ = timed(lambda p=part: p.search(queries, k), args.repeats)  # bound now: part is deleted below
    finally:
        faiss.omp_set_num_threads(threads)
    row(data=data, bits=d, nq=nq, index=part.spec, where=f"1/{args.shards} of the codes, one process", median_s=round(med_p, 5),
        bound_speedup=round(med_single / med_p, 2))  # shards fully parallel, no overhead
    del part
    for b in (1, 10, 100) if batches else ():  # smaller batches: the fixed cost per batch shows
        med_s, med_h, _, _ = timed_pair(lambda b=b: single.search(queries[:b], k), lambda b=b: sharded.search(queries[:b], k), args.repeats)
        row(data=data, index=f"{spec} vs sharded", where="batch size", batch=b, single_median_s=round(med_s, 6),
            sharded_median_s=round(med_h, 6), single_qps=round(b / med_s, 1), sharded_qps=round(b / med_h, 1))
    if extras:
        overheads(args, base, queries, sharded, single, row)
    sharded.close()


def overheads(args: argparse.Namespace, base: np.ndarray, queries: np.ndarray, sharded: Any, single: Any, row: Callable[..., None]) -> None:
    """The fixed cost per batch, and save/load times."""
    from annbin.distributed import ShardedIndex

    med, _, _ = timed(sharded.ping, max(args.repeats, 21))
    row(index=sharded.spec, where="overhead", what="empty round trip to every shard (ping)", median_s=round(med, 6))
    tiny_codes = base[: 100 * args.shards]  # flat: a scan of 100 codes is next to no work
    tiny_single = annbin.make_index("flat", args.d)
    tiny_single.add(tiny_codes)
    tiny = ShardedIndex("flat", args.d, shards=args.shards)
    tiny.add(tiny_codes)
    med_s, med_h, _, _ = timed_pair(lambda: tiny_single.search(queries, args.k), lambda: tiny.search(queries, args.k), max(args.repeats, 21))
    row(index=tiny.spec, where="overhead", what=f"search of {args.nq} queries over {tiny_codes.shape[0]} codes",
        single_median_s=round(med_s, 6), sharded_median_s=round(med_h, 6), overhead_s=round(med_h - med_s, 6))
    tiny.close()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sharded.save(tmp)
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = ShardedIndex.load(tmp)
        loaded.search(queries[:1], args.k)
        load_s = time.perf_counter() - t0
        loaded.close()
    row(index=sharded.spec, where="persistence", save_s=round(save_s, 3), load_and_first_search_s=round(load_s, 3),
        memory_bytes_sharded=sharded.memory_bytes(), memory_bytes_single=single.memory_bytes())


def write_rows(rows: list[dict[str, Any]], jsonl: Path, results_md: Path) -> None:
    """Append rows to the JSON Lines file; replace only the Sharded section of RESULTS.md."""
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with jsonl.open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    c = rows[0]
    searches = [r for r in rows if r.get("where") in ("one process",) or str(r.get("where", "")).endswith("Ray actors")]
    batches = [r for r in rows if r.get("where") == "batch size"]
    ping = next(r for r in rows if str(r.get("what", "")).startswith("empty"))
    tiny = next(r for r in rows if str(r.get("what", "")).startswith("search of"))
    persist = next(r for r in rows if r.get("where") == "persistence")
    lines = [
        BEGIN,
        "## Sharded",
        "",
        f"`python benchmarks/sharded_vs_single.py` ({c['date']}): {c['n']:,} codes; clustered = {c['d']}-bit codes "
        f"near random centres (each bit flipped with probability `flip`), queries from the same distribution; "
        f"k={c['k']}; medians of {c['repeats']} runs after a warm-up, single and sharded runs alternating; {c['cpus']} CPUs, Ray {c['ray']} "
        f"on the same machine, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; 1-minute load average during the run "
        f"{min(r['loadavg_1min'] for r in rows)}-{max(r['loadavg_1min'] for r in rows)} (other work shared the machine). "
        "Both exact: the distances are checked equal.",
        "",
        "| data | bits | index | where | batch | queries/s | s / batch | median 10th-NN distance | build s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in searches:
        kth = r.get("kth_distance_median", "")
        lines.append(f"| {r['data']} | {r['bits']} | `{r['index']}` | {r['where']} | {r['nq']} | {r['qps']:,.0f} | {r['median_s']:.4f} | {kth} | {r['build_s']:.2f} |")
    bounds = [r for r in rows if str(r.get("where", "")).startswith("1/")]
    lines += ["", "Speed-up of the sharded index (queries/s sharded / one process), and its bound: one process's time "
              "over the time to search one shard's share of the codes on one thread (shards fully parallel, no overhead):"]
    for single, sharded, bound in zip(searches[::2], searches[1::2], bounds):
        lines.append(f"- {single['bits']}-bit {single['data']}, `{single['index'].split(':')[0]}`, batch {single['nq']}: "
                     f"**{sharded['qps'] / single['qps']:.2f}x** ({sharded['qps']:,.0f} vs {single['qps']:,.0f} queries/s); "
                     f"bound {bound['bound_speedup']:.2f}x ({bound['median_s']:.4f} s for {bound['where'].split(',')[0]})")
    lines += ["", "Smaller batches (MIH, same data; the fixed cost per batch dominates):", "",
              "| data | batch | one process q/s | sharded q/s | one process s | sharded s |", "|---|---:|---:|---:|---:|---:|"]
    for b in batches:
        lines.append(f"| {b['data']} | {b['batch']} | {b['single_qps']:,.0f} | {b['sharded_qps']:,.0f} | {b['single_median_s']:.6f} | {b['sharded_median_s']:.6f} |")
    lines += [
        "",
        "Overhead per batch:",
        f"- empty round trip to every shard (`ping`): **{ping['median_s'] * 1e3:.2f} ms**",
        f"- {tiny['what']} (flat, next to no index work): {tiny['sharded_median_s'] * 1e3:.2f} ms sharded vs "
        f"{tiny['single_median_s'] * 1e3:.2f} ms in one process, so **{tiny['overhead_s'] * 1e3:.2f} ms** per batch "
        "(queries into the object store, one call per shard, results back, merge)",
        f"- save: {persist['save_s']:.2f} s; load + first search (MIH tables rebuilt): {persist['load_and_first_search_s']:.2f} s; "
        f"memory: {persist['memory_bytes_sharded'] / 2**20:.1f} MiB over all shards vs {persist['memory_bytes_single'] / 2**20:.1f} MiB in one index",
        END,
    ]
    section = "\n".join(lines)
    text = results_md.read_text(encoding="utf-8") if results_md.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = results_md.with_name(f".{results_md.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, results_md)


if __name__ == "__main__":
    main()
