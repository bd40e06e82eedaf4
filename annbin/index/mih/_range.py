"""Exact range search over multi-index hashing tables: every code at distance ``< radius``.

faiss's convention, the one ``BinaryIndex.range_search`` promises, holds here too. By the pigeonhole
bound (see ``_search``) every code within distance ``s`` has been seen after step ``s``, so a range
search runs steps ``0 .. radius - 1`` with the step kernels of ``_probe`` and keeps the candidates
at distance ``< radius``. Whether MIH or a flat scan answers is decided once per call from the
expected cost of those steps, and per query where buckets turn out fuller than that estimate.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from annbin.index._results import RangeResult
from annbin.index.mih._blocks import map_blocks, query_blocks, splice_ranges
from annbin.index.mih._cost import COSTS, CostModel, expected_step_costs
from annbin.index.mih._probe import LOOKUP_CHUNK, drop_queries, probe_buckets, verify_all
from annbin.index.mih._store import MIHStore
from annbin.index.mih._tables import MIHTable, extract_substrings, popcount_masks, to_words


def range_search(tables: list[MIHTable], n: int, d: int, xw: NDArray[np.uint64], xs: NDArray[np.int64], radius: int,
                 budget: float = math.inf, costs: CostModel = COSTS, dead: NDArray[np.bool_] | None = None,
                 ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64], NDArray[np.bool_]]:
    """Every row at distance ``< radius`` (but those in ``dead``) from queries ``xw`` (uint64
    words) / ``xs`` (substrings), by steps ``0 .. radius - 1``.

    Returns ``(lims, D, rows, fallback)``, grouped by query, unsorted within a query. Queries whose
    buckets turn out to hold more than the uniform estimate promised (skewed data), so that the
    steps still to come would cost more than ``budget`` ns, are flagged in ``fallback`` and left
    empty, for a brute-force range search.
    """
    nq, words = xw.shape
    m = len(tables)
    fallback = np.zeros(nq, dtype=bool)
    guarded = budget < math.inf
    if guarded:
        spent = np.zeros(nq)
        left = np.cumsum(expected_step_costs(tables, n, words, radius, costs)[::-1])[::-1]  # steps s..radius - 1
    found_q, found_d, found_r = [], [], []
    active = np.arange(nq)
    for step in range(radius):
        r, j = divmod(step, m)
        table = tables[j]
        masks = popcount_masks(table.length, r)
        if masks.size == 0:
            continue
        chunk = max(1, LOOKUP_CHUNK // masks.size)
        for a in range(0, active.size, chunk):
            A = active[a : a + chunk]
            base, cnt, per_query, group_end = probe_buckets(table, xs[A, j], masks, r)
            if guarded:
                now = per_query * costs.candidate_cost(words) + costs.step / active.size
                spent[A] += masks.size * costs.lookup + now
                ahead = now + (left[step + 1] if step + 1 < radius else 0.0)
                over = (ahead > budget) | (spent[A] > 2 * budget)
                if over.any():
                    fallback[A[over]] = True
                    base, cnt, per_query, group_end = drop_queries(over, base, cnt, per_query, group_end)
            for q, dist, rows in verify_all(table, xw[A], base, cnt, per_query, group_end, int(radius), dead):
                found_q.append(A[q])
                found_d.append(dist)
                found_r.append(rows)
        active = active[~fallback[active]]
    lims = np.zeros(nq + 1, dtype=np.int64)
    if not found_q:
        return lims, np.empty(0, np.int32), np.empty(0, np.int64), fallback
    q = np.concatenate(found_q)
    key = (q << 32) | np.concatenate(found_r)
    order = np.argsort(key, kind="stable")
    key, dist = key[order], np.concatenate(found_d)[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]  # a code found from several tables counts once
    first &= ~fallback[key >> 32]  # partial results of queries handed to brute force
    key, dist = key[first], dist[first]
    np.cumsum(np.bincount(key >> 32, minlength=nq), out=lims[1:])
    return lims, dist.astype(np.int32), key & 0xFFFFFFFF, fallback


def range_main(store: MIHStore, tables: list[MIHTable], layout: tuple[NDArray[np.int64], NDArray[np.int64]],
               x: NDArray[np.uint8], radius: int, budget: float, costs: CostModel, threads: int) -> tuple[RangeResult, int]:
    """Range search (``< radius``, ids) of queries ``x`` ``(nq, d // 8)`` uint8 over ``store``'s live
    main codes, by the ``tables`` (substrings at ``layout``) or, where MIH is predicted to cost
    more than ``budget`` ns a query, by the flat scan. Returns the result, grouped by query, and
    how many queries the scan answered."""
    nq, d = x.shape[0], store.d
    # every step 0 .. radius - 1 is needed: predict their cost on uniform buckets
    expected = expected_step_costs(tables, store.nmain, -(-d // 64), radius, costs).sum() + radius * costs.step / nq
    if expected > budget:
        return store.range_scan(x, radius, threads), nq
    xw, xs = to_words(x), extract_substrings(x, *layout)
    parts = map_blocks(lambda a, b: range_search(tables, store.nmain, d, xw[a:b], xs[a:b], radius, budget, costs,
                                                 dead=store.dead),
                       query_blocks(nq, nq, threads), threads)
    sizes = np.concatenate([np.diff(p[0]) for p in parts])
    D = np.concatenate([p[1] for p in parts])
    I = store.ids_of(np.concatenate([p[2] for p in parts]))
    fallback = np.concatenate([p[3] for p in parts])
    if fallback.any():  # skewed buckets: those queries by brute force, spliced back in query order
        flims, fD, fI = store.range_scan(x[fallback], radius, threads)
        spliced = splice_ranges(nq, [(np.flatnonzero(~fallback), sizes[~fallback], D, I),
                                     (np.flatnonzero(fallback), np.diff(flims), fD, fI)])
        return spliced, int(fallback.sum())
    return (np.concatenate([[0], np.cumsum(sizes)]), D, I), 0
