"""Where multi-index hashing pays: MIHIndex vs faiss.IndexBinaryFlat on real short codes and on
small-radius range search (near-duplicate detection).

Two parts, both exact, both timed against faiss-flat in this one process:

1. kNN on real codes: the sign bits of the first 64 / 128 dimensions of real embeddings
   (``m2v_mpnet_500k``: model2vec, PCA to 768 dims, so the first dims are the top principal
   components, *not* a Matryoshka-trained prefix; ``minilm_wordnet``: MiniLM, dims in no order).
   Thresholds: ``sign`` (bit = x > 0) or ``median`` (bit = x > the base's per-dimension median:
   centred, every bit balanced).
2. Range search, faiss's rule (distance < radius): the clustered generator of
   ``benchmarks/mih_vs_flat.py`` (imported, same seeds) at 1M and 10M codes, and the real codes.

Per config and repeat both methods first answer the query set once untimed (each timed in its own
steady state, not right after the other evicted its data), then once timed; the order of the two
alternates between repeats. Medians over ``--repeats``; ratio = flat time / MIH time. MIH answers are
checked against faiss's: kNN distances equal, range results the same (id, distance) sets; the run
aborts on any difference. Threads: 1 by default for both (``faiss.omp_set_num_threads``; MIH's
``num_threads``, which also runs its fallback scans).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_where_it_pays.py --repeats 3

Writes ``benchmarks/results/mih_where_it_pays.md`` (tables) and ``.jsonl`` (one row per config).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP: idle threads must not spin

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from mih_vs_flat import machine, make_data, parse_configs  # noqa: E402

from annbin import MIHIndex  # noqa: E402
from annbin.bench.datasets import get_dataset  # noqa: E402
from annbin.quantize import binarize, fit_thresholds  # noqa: E402

OUT = Path(__file__).with_name("results")
#: radii (faiss's rule: distance < radius) per code length; ~1.5-11% of the bits
DEFAULT_RADII = {64: (1, 3, 5, 7), 128: (1, 5, 9, 13)}
FLIP = {64: 0.10, 128: 0.085}  # mih_vs_flat's DEFAULT_FLIP: 10th neighbour near 10% of the bits at 1M


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=1)
def _floats(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's base and queries (float32), loaded once for all its code widths and thresholds."""
    ds = get_dataset(name)
    return ds.get_database(), ds.get_queries()


def real_codes(name: str, d: int, threshold: str, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """``(base, queries)`` uint8 codes: bits of the first ``d`` dims of dataset ``name``."""
    base_all, queries_all = _floats(name)
    base = np.ascontiguousarray(base_all[:, :d], dtype=np.float32)
    queries = np.ascontiguousarray(queries_all[:nq, :d], dtype=np.float32)
    t = fit_thresholds(base, "median") if threshold == "median" else None
    return binarize(base, t), binarize(queries, t)


def interleaved(fns: dict[str, object], repeats: int) -> dict[str, tuple[list[float], object]]:
    """Time each ``fn()`` ``repeats`` times, interleaved (order alternating), after one untimed
    call each round; ``{name: (seconds per repeat, last result)}``."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    last: dict[str, object] = {}
    for rep in range(repeats):
        order = list(fns) if rep % 2 == 0 else list(fns)[::-1]
        for name in order:
            fns[name]()  # type: ignore[operator]  # warm-up: its own data in cache
            t = time.perf_counter()
            last[name] = fns[name]()  # type: ignore[operator]
            times[name].append(time.perf_counter() - t)
    return {name: (times[name], last[name]) for name in fns}


def range_sets(lims: np.ndarray, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range results as (query, id)-sorted ids and distances, for comparing as sets."""
    lims = lims.astype(np.int64)  # faiss gives uint64
    qid = np.repeat(np.arange(lims.size - 1), np.diff(lims))
    order = np.lexsort((I, qid))
    return np.stack([qid[order], I[order].astype(np.int64)]), D[order].astype(np.int64)


def _with_stats(mih: MIHIndex, search, stats: list[dict]):  # type: ignore[no-untyped-def]
    """``search`` that also appends MIH's ``last_search_stats`` to ``stats`` after each call."""

    def run():  # type: ignore[no-untyped-def]
        out = search()
        stats.append(dict(mih.last_search_stats or {}))
        return out

    return run


def build(xb: np.ndarray, d: int, threads: int) -> tuple[faiss.IndexBinaryFlat, MIHIndex, float]:
    flat = faiss.IndexBinaryFlat(d)
    flat.add(xb)
    mih = MIHIndex(d, num_threads=threads)
    t = time.perf_counter()
    mih.add(xb)
    mih.build()
    return flat, mih, time.perf_counter() - t


def knn_row(label: str, xb: np.ndarray, xq: np.ndarray, d: int, args: argparse.Namespace) -> dict:
    flat, mih, build_s = build(xb, d, args.threads)
    stats: list[dict] = []
    fns = {"flat": lambda: flat.search(xq, args.k), "mih": _with_stats(mih, lambda: mih.search(xq, args.k), stats)}
    if args.never:  # what the fallback saves: MIH made to finish every query itself
        fns["never"] = lambda: mih.search(xq, args.k, params={"fallback": "never"})
    res = interleaved(fns, args.repeats)
    (t_flat, (D_flat, _)), t_mih = res["flat"], res["mih"][0]
    for name in fns.keys() - {"flat"}:
        D = res[name][1][0]
        bad = np.flatnonzero((D_flat != D).any(axis=1))
        if bad.size:
            raise SystemExit(f"EXACTNESS FAILURE (kNN, {label}, {name}): {bad.size} queries differ, e.g. query {bad[0]}: "
                             f"MIH {D[bad[0]].tolist()} vs faiss {D_flat[bad[0]].tolist()}")
    kth = D_flat[:, args.k - 1].astype(float)
    timed = stats[1::2]  # every other call was a warm-up
    row = {
        "part": "knn", "codes": label, "d": d, "n": len(xb), "nq": len(xq), "k": args.k, "m": mih.effective_m,
        "kth_p10_p50_p90": np.percentile(kth, [10, 50, 90]).tolist(),
        "mih_qps": len(xq) / statistics.median(t_mih), "flat_qps": len(xq) / statistics.median(t_flat),
        "ratios": [f / m for f, m in zip(t_flat, t_mih)],
        "fallback_share": statistics.median(s["fallback_queries"] for s in timed) / len(xq),
        "lookups_per_q": statistics.median(s["lookups"] for s in timed) / len(xq),
        "build_s": build_s, "mih_bytes": mih.memory_bytes(), "exact": True,
    }
    row["ratio"] = statistics.median(t_flat) / statistics.median(t_mih)
    if args.never:
        row["never_ratio"] = statistics.median(t_flat) / statistics.median(res["never"][0])
    return row


def range_rows(label: str, xb: np.ndarray, query_sets: dict[str, np.ndarray], d: int, radii: tuple[int, ...],
               args: argparse.Namespace) -> list[dict]:
    """Range search rows for each named query set and radius, over one pair of indexes."""
    flat, mih, build_s = build(xb, d, args.threads)
    rows = []
    for (qname, xq), r in ((item, r) for item in query_sets.items() for r in radii):
        stats: list[dict] = []
        res = interleaved({"flat": lambda: flat.range_search(xq, r),  # noqa: B023  # called in this iteration
                           "mih": _with_stats(mih, lambda: mih.range_search(xq, r), stats)}, args.repeats)  # noqa: B023
        (t_flat, ref), (t_mih, got) = res["flat"], res["mih"]
        (keys_f, d_f), (keys_m, d_m) = range_sets(*ref), range_sets(*got)
        if keys_f.shape != keys_m.shape or not (keys_f == keys_m).all() or not (d_f == d_m).all():
            raise SystemExit(f"EXACTNESS FAILURE (range, {label}, radius {r}): MIH {keys_m.shape[1]} results "
                             f"vs faiss {keys_f.shape[1]}")
        sizes = np.diff(ref[0].astype(np.int64))
        timed = stats[1::2]
        row = {
            "part": "range", "codes": label, "d": d, "n": len(xb), "queries": qname, "nq": len(xq), "radius": r, "m": mih.effective_m,
            "results_mean": float(sizes.mean()), "results_median": float(np.median(sizes)),
            "queries_with_results": float((sizes > 0).mean()),
            "mih_qps": len(xq) / statistics.median(t_mih), "flat_qps": len(xq) / statistics.median(t_flat),
            "ratios": [f / m for f, m in zip(t_flat, t_mih)],
            "fallback_share": statistics.median(s["fallback_queries"] for s in timed) / len(xq),
            "build_s": build_s, "mih_bytes": mih.memory_bytes(), "exact": True,
        }
        row["ratio"] = statistics.median(t_flat) / statistics.median(t_mih)
        rows.append(row)
        log(f"range {label}, {qname} r<{r}: MIH {row['mih_qps']:,.0f} q/s, flat {row['flat_qps']:,.0f} q/s, {row['ratio']:.2f}x, "
            f"fallback {row['fallback_share']:.0%}, {row['results_mean']:.1f} results/q; same sets as faiss")
    return rows


def _n(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def knn_table(rows: list[dict]) -> str:
    never = all("never_ratio" in r for r in rows)
    head = ("| codes | d | N | m | 10th-NN dist p10 / p50 / p90 (bits) | p50 % of d | MIH q/s | flat q/s "
            "| MIH / flat (per repeat) | fallback | lookups / q | exact |" + (" MIH never falling back / flat |" if never else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["kth_p10_p50_p90"]
        lines.append(f"| {r['codes']} | {r['d']} | {_n(r['n'])} | {r['m']} | {p[0]:.0f} / {p[1]:.0f} / {p[2]:.0f} "
                     f"| {p[1] / r['d']:.0%} | {r['mih_qps']:,.0f} | {r['flat_qps']:,.0f} "
                     f"| **{r['ratio']:.2f}x** ({', '.join(f'{x:.2f}' for x in r['ratios'])}) "
                     f"| {r['fallback_share']:.0%} | {r['lookups_per_q']:,.0f} | yes |"
                     + (f" {r['never_ratio']:.2f}x |" if never else ""))
    return "\n".join(lines)


def range_table(rows: list[dict]) -> str:
    head = ("| codes | d | N | queries | radius (dist <) | results / q (mean, median) | queries with a result "
            "| MIH q/s | flat q/s | MIH / flat (per repeat) | fallback | same sets |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['codes']} | {r['d']} | {_n(r['n'])} | {r['nq']} {r['queries']} | {r['radius']} "
                     f"| {r['results_mean']:,.1f}, {r['results_median']:,.0f} | {r['queries_with_results']:.0%} "
                     f"| {r['mih_qps']:,.0f} | {r['flat_qps']:,.0f} "
                     f"| **{r['ratio']:.1f}x** ({', '.join(f'{x:.1f}' for x in r['ratios'])}) "
                     f"| {r['fallback_share']:.0%} | yes |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", default="m2v_mpnet_500k,minilm_wordnet", help="datasets for the real codes (comma-separated; '' for none)")
    parser.add_argument("--bits", default="64,128", help="code lengths for the real codes: the first BITS dims")
    parser.add_argument("--thresholds", default="sign,median", help="sign (x > 0) and/or median (x > per-dim median of the base)")
    parser.add_argument("--synthetic", default="64:1M,64:10M,128:1M", help="clustered range-search configs, mih_vs_flat's BITS:N form")
    parser.add_argument("--radii", default="", help="override radii for every code length, e.g. 1,3,5,7")
    parser.add_argument("--real-range", default="m2v_mpnet_500k", help="real datasets that also get range search")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (medians)")
    parser.add_argument("--nq", type=int, default=1000, help="queries (real sets: at most their own)")
    parser.add_argument("--nq-large", type=int, default=200, help="queries for configs of 5M codes and up (faiss scans them all)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--centres", type=int, default=1000, help="clustered generator: centres at every N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="threads for both methods")
    parser.add_argument("--never", action="store_true", help="also time kNN with fallback='never' (what falling back saves)")
    parser.add_argument("--name", default="mih_where_it_pays", help="output file stem under benchmarks/results/")
    args = parser.parse_args(argv)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print("warning: OMP_WAIT_POLICY is not PASSIVE; spinning OpenMP threads distort the timings", file=sys.stderr)
    faiss.omp_set_num_threads(args.threads)
    bits = [int(b) for b in args.bits.split(",") if b]
    radii = {d: tuple(int(r) for r in args.radii.split(",")) if args.radii else DEFAULT_RADII.get(d, DEFAULT_RADII[64]) for d in (64, 128, 256)}
    started, load0 = datetime.datetime.now(datetime.timezone.utc), os.getloadavg()
    knn, rng_rows = [], []
    for name in filter(None, args.real.split(",")):
        for thr in filter(None, args.thresholds.split(",")):
            for d in bits:
                label = f"{name} {thr} [:{d}]"
                log(f"{label}: loading")
                xb, xq = real_codes(name, d, thr, args.nq)
                knn.append(knn_row(label, xb, xq, d, args))
                r = knn[-1]
                log(f"kNN {label}: 10th NN median {r['kth_p10_p50_p90'][1]:.0f}/{d}, MIH {r['mih_qps']:,.0f} q/s, "
                    f"flat {r['flat_qps']:,.0f} q/s, {r['ratio']:.2f}x, fallback {r['fallback_share']:.0%}; exact")
                if name in args.real_range.split(",") and thr == "sign":
                    # held-out texts (new items vs the collection) and a sample of the base itself
                    # (near-duplicates within the collection: each query finds at least itself)
                    sample = np.random.default_rng(args.seed).choice(len(xb), len(xq), replace=False)
                    rng_rows += range_rows(label, xb, {"held-out": xq, "from the base": xb[np.sort(sample)]}, d, radii[d], args)
                del xb, xq
                gc.collect()
    for cfg in parse_configs(args.synthetic):
        nq = args.nq_large if cfg.n >= 5_000_000 else args.nq
        label = f"clustered ({args.centres:,} centres, flip {FLIP.get(cfg.d, 0.08)})"
        log(f"{cfg.label}: generating {cfg.n:,} codes")
        xb, xq = make_data(cfg, nq, FLIP.get(cfg.d, 0.08), args.centres, args.seed)
        rng_rows += range_rows(label, xb, {"fresh": xq}, cfg.d, radii[cfg.d], args)
        del xb, xq
        gc.collect()
    command = "OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_where_it_pays.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    run = (f"Run {started:%Y-%m-%d %H:%M} UTC; {machine()}; load average {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end "
           f"(shared machine: medians of {args.repeats} interleaved repeats; compare ratios, not q/s); {args.threads} thread(s) each.")
    head = [f"Command: `{command.strip()}`  ", run, ""]
    if knn:
        head += [f"kNN, k={args.k}, real codes:", "", knn_table(knn), ""]
    if rng_rows:
        head += ["Range search (faiss's rule: distance < radius):", "", range_table(rng_rows), ""]
    text = "\n".join(head)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / f"{args.name}.md").write_text(text)
    with open(OUT / f"{args.name}.jsonl", "a") as f:
        extra = {"command": command.strip(), "started": f"{started:%Y-%m-%dT%H:%M}Z", "repeats": args.repeats, "threads": args.threads}
        f.writelines(json.dumps({**row, **extra}) + "\n" for row in knn + rng_rows)
    log(f"wrote {OUT / args.name}.md and .jsonl")


if __name__ == "__main__":
    main()
