"""Self-calibration of multi-index hashing: cost constants and the number of substrings, measured.

Two things about MIH depend on the machine and the data, not on a formula:

- **Cost constants** (``CostModel``): what a bucket probe, a candidate and a search step cost
  against a faiss-flat scan decides which queries go to the scan. ``calibrated_costs()`` times
  small kernels of the real code paths (``probe_buckets``, ``verify_candidates``, a small
  ``knn_search``, the fallback's faiss scan ``exact_knn``) once per process (cached), taking
  turns, each the fastest of a few runs in thread CPU time (see ``_fastest``).
- **m**: the paper's ``d / log2(n)`` (``default_m``) assumes uniformly filled buckets; on
  clustered codes the best ``m`` varies with how near the neighbours are (the m-sweeps in
  benchmarks/RESULTS.md). ``choose_m`` walks from the formula's ``m`` to its neighbours while the
  measured search time falls; ``MIHIndex`` measures a sample of its own codes as queries
  (``measure_m``).

``ANNBIN_MIH_CALIBRATE=0`` in the environment turns both off (reference constants, formula ``m``):
for reproducible runs. ``MIHIndex(cost_model=...)`` and an explicit ``m`` do so per index.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import fields, replace
from functools import cache, partial
from typing import Any, TypeVar

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin.index._faiss import exact_knn, omp_threads
from annbin.index.mih._cost import COSTS, CostModel

# probe_buckets and verify_candidates are the kernels the lookup and candidate constants price:
# timed directly, not through a search whose mix of work would have to be untangled
from annbin.index.mih._probe import probe_buckets, verify_candidates
from annbin.index.mih._search import knn_search
from annbin.index.mih._tables import (
    MAX_SUBSTRING_BITS,
    build_tables,
    default_m,
    extract_substrings,
    popcount_masks,
    substring_layout,
    to_words,
)

#: Environment variable: ``0`` (or ``false``/``no``/``off``) disables measuring, process-wide.
CALIBRATE_ENV = "ANNBIN_MIH_CALIBRATE"
#: ``m`` is measured only for at least this many codes: below it a flat scan costs under ~0.1 ms a
#: query and building several candidate tables costs more than a better ``m`` can save.
MEASURE_M_MIN_N = 100_000
#: Sample queries (stored codes) searched per candidate ``m``; k of the sample search (plus one:
#: each query finds itself at distance 0, so its k + 1 nearest are k neighbours, as a fresh query's).
MEASURE_M_QUERIES = 500
MEASURE_M_K = 10
#: ... cut (for every candidate alike) to take about this long when the first candidate's warm-up
#: search was slower, but to no fewer than MEASURE_M_MIN_QUERIES: with far neighbours (uniform
#: codes) the full sample made measuring cost many plain builds.
MEASURE_M_SEARCH_S = 0.1
MEASURE_M_MIN_QUERIES = 100
#: Timed searches (later candidates: timed pairs, see ``measure_m``) per candidate, after a warm-up.
MEASURE_M_REPEATS = 3
#: Farthest ``m`` from the formula's that ``choose_m`` tries.
MEASURE_M_SPAN = 3
#: A calibrated constant is kept within this factor of the reference (``COSTS``): a kernel run that
#: another process slowed tenfold must not send every query to the scan.
CLAMP = 8.0
_S = TypeVar("_S")


def calibration_enabled() -> bool:
    """False when ``ANNBIN_MIH_CALIBRATE`` says ``0`` / ``false`` / ``no`` / ``off``."""
    return os.environ.get(CALIBRATE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _fastest(kernels: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Thread CPU seconds of the fastest of ``repeats`` calls of each kernel, after one untimed call.

    Thread CPU time, not wall time: on a loaded machine wall times vary far more between runs.
    The kernels take turns (one call of each per round): a busy neighbouring core (an SMT sibling)
    slows the popcount-bound flat scan far more than the memory-bound probes, so MIH and flat
    kernels are timed side by side and their ratio, the one thing the model uses, holds.
    """
    for fn in kernels.values():
        fn()
    best = dict.fromkeys(kernels, math.inf)
    for _ in range(repeats):
        for name, fn in kernels.items():
            t = time.thread_time()
            fn()
            best[name] = min(best[name], time.thread_time() - t)
    return best


def measure_costs(repeats: int = 3) -> CostModel:
    """Time the kernels behind each ``CostModel`` constant on this machine (single thread), in ns.

    lookup: ``probe_buckets`` at radius 2 of a table of 19-bit substrings a quarter full (as 1M codes fill
    21/22-bit tables), bucket reads included; candidate / candidate_word: ``verify_candidates`` of 2**17
    candidates in buckets of 8 at random places, of 1 and 2 words; step: a small ``knn_search`` of
    one query, less its probes and candidates; flat_*: the fallback's scan (``exact_knn``, k = 10,
    so faiss keeps ``tie_margin(10)`` results) of 2**16 random codes of 64, 128 and 72 bits for 32
    queries (random, not clustered: the fallback's queries are the ones with far neighbours, and
    those scan slower). Each constant is kept within ``CLAMP`` times the reference.
    """
    rng = np.random.default_rng(0)
    n, bits = 1 << 17, 19
    codes = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    starts, lengths = np.array([0], dtype=np.int64), np.array([bits], dtype=np.int64)
    (table2,) = build_tables(to_words(codes), extract_substrings(codes, starts, lengths), lengths)
    table1 = replace(table2, words=table2.words[:1])

    masks = popcount_masks(bits, 2)
    nq = (1 << 17) // masks.size  # one chunk of probes (LOOKUP_CHUNK)
    sub = rng.integers(0, 1 << bits, nq, dtype=np.int64)

    nb, per, vq = 1 << 14, 8, 256
    total = nb * per
    cnt = np.full(nb, per, dtype=np.int64)
    base = rng.integers(0, n - per, nb) - np.arange(nb, dtype=np.int64) * per  # as probe_buckets's base
    per_query = np.full(vq, total // vq, dtype=np.int64)
    xw = to_words(rng.integers(0, 256, (vq, 16), dtype=np.uint8))
    thr = np.full(vq, 20, dtype=np.int64)  # few hits among random codes, as late in a search

    small = codes[:4096, :8]
    s_starts, s_lengths = substring_layout(64, 8)
    tables = build_tables(to_words(small), extract_substrings(small, s_starts, s_lengths), s_lengths)
    q = small[:1].copy()
    q[0, 0] ^= 0x0F  # 4 bits from a stored code: a few steps
    qw, qs = to_words(q), extract_substrings(q, s_starts, s_lengths)
    record: list[dict[str, float]] = []
    stats: dict[str, int] = {}

    def search() -> None:
        record.clear()
        stats.clear()
        knn_search(tables, 4096, 64, qw, qs, 10, stats=stats, steps=record)

    fq, fn = 32, 1 << 16
    ids = np.arange(fn, dtype=np.int64)
    flat = {}
    for d in (64, 128, 72):
        flat[d] = faiss.IndexBinaryFlat(d)
        flat[d].add(rng.integers(0, 256, (fn, d // 8), dtype=np.uint8))
    fx = {d: rng.integers(0, 256, (fq, d // 8), dtype=np.uint8) for d in flat}

    kernels: dict[str, Callable[[], object]] = {
        "lookup": lambda: probe_buckets(table2, sub, masks, 2),
        "one": lambda: verify_candidates(table1, xw[:, :1], base, cnt, per_query, thr, 0, total),
        "two": lambda: verify_candidates(table2, xw, base, cnt, per_query, thr, 0, total),
        "step": search,
    }
    for d, index in flat.items():
        kernels[f"flat{d}"] = partial(exact_knn, index, fx[d], 10, ids)
    with omp_threads(1):
        t = _fastest(kernels, repeats)
    lookup = t["lookup"] / (nq * masks.size)
    one, two = t["one"] / total, t["two"] / total
    work = stats["lookups"] * lookup + stats["candidates"] * one
    step = max(t["step"] - work, t["step"] / 2) / max(1, len(record))  # probes and candidates: a small share
    f64, f128, f72 = (t[f"flat{d}"] / (fq * fn) for d in (64, 128, 72))
    ns = 1e9
    measured = CostModel(lookup=lookup * ns, candidate=one * ns, candidate_word=max(two - one, 0.0) * ns,
                         step=step * ns, flat_code=f64 * ns, flat_word=max(f128 - f64, 0.0) * ns, flat_odd_code=f72 * ns)
    return clamp(measured)


def clamp(costs: CostModel, factor: float = CLAMP) -> CostModel:
    """``costs`` with every constant within ``factor`` times the reference's (``COSTS``)."""
    return CostModel(**{f.name: min(max(getattr(costs, f.name), getattr(COSTS, f.name) / factor),
                                    getattr(COSTS, f.name) * factor) for f in fields(CostModel)})


@cache
def calibrated_costs() -> CostModel:
    """This process's cost model: ``measure_costs()`` on first call, then cached (the reference
    ``COSTS`` when ``ANNBIN_MIH_CALIBRATE=0``)."""
    return measure_costs() if calibration_enabled() else COSTS


def m_range(d: int) -> tuple[int, int]:
    """Smallest and largest valid ``m`` for ``d``-bit codes (substrings of 1 to 24 bits)."""
    return -(-d // MAX_SUBSTRING_BITS), d


def planned_m(m: int | str | None, d: int, n: int, choice: dict[str, Any] | None) -> int | None:
    """The ``m`` a build of ``n`` codes uses for ``MIHIndex(m=m)``, or None where it must be measured.

    An int is itself; ``"formula"``, and ``None`` below ``MEASURE_M_MIN_N`` codes (or with
    calibration off), the formula; ``None`` from there on, the measured ``choice`` while ``n`` is
    within 2x of the ntotal it was measured at (the best ``m`` moves with ``log2(n)``: slowly).
    """
    if isinstance(m, int):
        return m
    if m == "formula" or n < MEASURE_M_MIN_N or not calibration_enabled():
        return default_m(d, n)
    if choice is not None and choice["ntotal"] // 2 <= n <= 2 * choice["ntotal"]:
        return int(choice["m"])
    return None


def measure_m(d: int, codes: NDArray[np.uint8], build: Callable[[int], _S], install: Callable[[_S], object],
              search: Callable[[NDArray[np.uint8], int], object]) -> tuple[dict[str, Any], _S]:
    """Measure the best ``m`` for the stored ``codes`` ``(n, d // 8)`` uint8 (``choose_m`` from the
    formula's ``m``). ``build(m)`` builds (and installs) the index's tables for ``m`` and returns
    them, ``install(built)`` puts built tables back in place, ``search(x, k)`` searches the installed
    ones (single thread). The queries are ``MEASURE_M_QUERIES`` stored codes (seeded by ``n``; fewer
    where searching them is slow, ``MEASURE_M_SEARCH_S``), k = ``MEASURE_M_K + 1`` (each finds
    itself first).

    Times are thread CPU seconds. The first candidate counts the median of ``MEASURE_M_REPEATS``
    searches after a warm-up; each later one is timed in turns with the fastest so far, and counts
    that one's time times the median of their paired ratios: the machine's state (a busy
    neighbouring core) changes over the seconds a build takes, and candidates timed one after the
    other chose a worse ``m``; a pair timed in turns sees the same state.

    Returns ``{"m", "ntotal", "seconds"}`` and the winner's ``build`` result, ready to search: that
    saves building it once more (seconds at 1M codes). Only the fastest so far is kept: the peak
    holds two candidates' tables.
    """
    n = codes.shape[0]
    rng = np.random.default_rng(n)
    sample = codes[rng.choice(n, min(n, MEASURE_M_QUERIES), replace=False)]  # random order: any prefix is a sample
    k = min(n, MEASURE_M_K + 1)
    best: dict[str, Any] = {"seconds": math.inf, "built": None}

    def once() -> float:
        t = time.thread_time()
        search(sample, k)
        return time.thread_time() - t

    def measure(m: int) -> float:
        nonlocal sample
        built = build(m)
        warm = once()
        if best["built"] is None:
            if warm > MEASURE_M_SEARCH_S:
                sample = sample[: max(MEASURE_M_MIN_QUERIES, int(len(sample) * MEASURE_M_SEARCH_S / warm))]
            seconds = float(np.median([once() for _ in range(MEASURE_M_REPEATS)]))
        else:
            ratios = []
            for _ in range(MEASURE_M_REPEATS):
                new = once()
                install(best["built"])
                ratios.append(new / max(once(), 1e-9))
                install(built)
            seconds = best["seconds"] * float(np.median(ratios))
        if seconds < best["seconds"]:
            best.update(seconds=seconds, built=built)
        return seconds

    lo, hi = m_range(d)
    m, seconds = choose_m(min(max(default_m(d, n), lo), hi), measure, lo=lo, hi=hi)
    install(best["built"])
    return {"m": m, "ntotal": n, "seconds": seconds}, best["built"]


def choose_m(start: int, measure: Callable[[int], float], *, lo: int, hi: int, span: int = MEASURE_M_SPAN,
             ) -> tuple[int, dict[int, float]]:
    """The ``m`` with the smallest measured time, found by walking from ``start``.

    Measures ``start`` and its neighbours ``start - 1`` and ``start + 1``, then keeps stepping in
    the direction of the fastest while that improves, at most ``span`` from ``start`` and within
    ``[lo, hi]``. ``measure(m)`` returns seconds. Returns the chosen ``m`` (the argmin of the
    times) and every time measured, by ``m``.
    """
    if not lo <= start <= hi:
        raise ValueError(f"start m={start} outside [{lo}, {hi}]")
    times = {m: float(measure(m)) for m in (start, start - 1, start + 1) if lo <= m <= hi}
    best = min(times, key=times.__getitem__)
    while best != start and abs(best - start) < span:
        nxt = best + (1 if best > start else -1)
        if not lo <= nxt <= hi or nxt in times:
            break
        times[nxt] = float(measure(nxt))
        if times[nxt] >= times[best]:
            break
        best = nxt
    return min(times, key=times.__getitem__), times
