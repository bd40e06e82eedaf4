"""Exact range search over multi-index hashing tables: every code at distance ``< radius``.

faiss's convention, the one ``BinaryIndex.range_search`` promises, holds here too. By the pigeonhole
bound (see ``_search``) every code within distance ``s`` has been seen after step ``s``, so a range
search runs steps ``0 .. radius - 1`` with the step kernels of ``_probe`` and keeps the candidates
at distance ``< radius``. Whether MIH or a flat scan answers is decided once per call from the
expected cost of those steps, and per query where buckets turn out fuller than that estimate.
The same steps, with a ``SelfJoin``, find every pair of stored codes within the radius (``join``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from annbin.index._results import RangeResult
from annbin.index.mih._blocks import map_blocks, query_blocks, splice_ranges
from annbin.index.mih._cost import COSTS, CostModel, expected_step_costs, range_cost
from annbin.index.mih._probe import LOOKUP_CHUNK, after_own, drop_queries, probe_buckets, verify_all
from annbin.index.mih._store import MIHStore
from annbin.index.mih._tables import MIHTable, extract_substrings, popcount_masks, to_words


@dataclass(frozen=True)
class SelfJoin:
    """What turns a range search into a self-join: the queries are stored codes (no tombstones), and
    each pair of rows is reported once, from its smaller row, by the step that first finds it.

    Parameters
    ----------
    rows : ndarray of int64, shape (nq,)
        Each query's own row.
    positions : list of ndarray of int32, shape (n,)
        Per table, where every row sits in its bucket order (``MIHTable.positions``).
    words : ndarray of uint64, shape (n, W)
        Every stored code in row order (``to_words``).
    masks : ndarray of uint64, shape (m, W)
        Each table's substring bits over ``words`` (``substring_masks``).
    """

    rows: NDArray[np.int64]
    positions: list[NDArray[np.int32]]
    words: NDArray[np.uint64]
    masks: NDArray[np.uint64]

    def first_found(self, q: NDArray[np.int64], rows: NDArray[np.int64], step: int) -> NDArray[np.bool_]:
        """Which hits (query index ``q``, row ``rows``) step ``step`` finds before any other: a pair is
        found at step ``r * m + t`` for each table ``t`` whose substrings lie ``r`` bits apart, so the
        first is the smallest (substring distance, table)."""
        m, nwords = self.masks.shape
        g = self.words.take(self.rows.take(q), axis=0)
        g ^= self.words.take(rows, axis=0)
        masks = self.masks
        if nwords == 1:  # 1-D: a sum over an axis of length one costs a loop per hit
            g, masks = g[:, 0], masks[:, 0]
        first = np.full(q.size, step, dtype=np.int64)
        for t in range(m):
            bits = np.bitwise_count(g & masks[t])
            sub = bits.sum(axis=1, dtype=np.int64) if nwords > 1 else bits.astype(np.int64)
            sub *= m
            sub += t
            np.minimum(first, sub, out=first)
        found: NDArray[np.bool_] = first == step
        return found


def range_hits(tables: list[MIHTable], n: int, xw: NDArray[np.uint64], xs: NDArray[np.int64], radius: int,
               fallback: NDArray[np.bool_], budget: float = math.inf, costs: CostModel = COSTS,
               dead: NDArray[np.bool_] | None = None, join: SelfJoin | None = None,
               ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]]:
    """Every row at distance ``< radius`` (but those in ``dead``) from queries ``xw`` (uint64 words) /
    ``xs`` (substrings), by steps ``0 .. radius - 1``: yields (query index, distance, row) as the
    steps verify them, a row found by several tables once per table (with ``join``: every pair of
    rows once, the query's row the smaller, see ``SelfJoin``).

    Queries whose buckets turn out to hold more than the uniform estimate promised (skewed data), so
    that the steps still to come would cost more than ``budget`` ns, are flagged in ``fallback``
    (bool ``(nq,)``, set in place) and probed no further, for a brute-force range search: hits
    yielded for them before are partial.
    """
    nq, words = xw.shape
    m = len(tables)
    guarded = budget < math.inf
    if guarded:
        spent = np.zeros(nq)
        left = np.cumsum(expected_step_costs(tables, n, words, radius, costs)[::-1])[::-1]  # steps s..radius - 1
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
            if join is not None and r == 0:  # rows above the query's in its own bucket: no pair read twice
                base, cnt, per_query, group_end = after_own(base, cnt, group_end, join.positions[j].take(join.rows.take(A)))
            if guarded:
                now = per_query * costs.candidate_cost(words) + costs.step / active.size
                spent[A] += masks.size * costs.lookup + now
                ahead = now + (left[step + 1] if step + 1 < radius else 0.0)
                over = (ahead > budget) | (spent[A] > 2 * budget)
                if over.any():
                    fallback[A[over]] = True
                    base, cnt, per_query, group_end = drop_queries(over, base, cnt, per_query, group_end)
            for q, dist, rows in verify_all(table, xw[A], base, cnt, per_query, group_end, int(radius), dead):
                q = A.take(q)
                if join is not None and r:  # (radius 0: after_own kept the rows above the query's only)
                    above = rows > join.rows.take(q)
                    q, dist, rows = q[above], dist[above], rows[above]
                if join is not None and step:  # (nothing comes before step 0)
                    first = join.first_found(q, rows, step)
                    q, dist, rows = q[first], dist[first], rows[first]
                yield q, dist, rows
        active = active[~fallback[active]]


def range_search(tables: list[MIHTable], n: int, d: int, xw: NDArray[np.uint64], xs: NDArray[np.int64], radius: int,
                 budget: float = math.inf, costs: CostModel = COSTS, dead: NDArray[np.bool_] | None = None,
                 ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64], NDArray[np.bool_]]:
    """Every row at distance ``< radius`` (but those in ``dead``) from queries ``xw`` (uint64
    words) / ``xs`` (substrings), by ``range_hits``.

    Returns ``(lims, D, rows, fallback)``, grouped by query, unsorted within a query; the queries
    flagged in ``fallback`` (``range_hits``) are left empty, for a brute-force range search.
    """
    nq = xw.shape[0]
    fallback = np.zeros(nq, dtype=bool)
    found = list(range_hits(tables, n, xw, xs, radius, fallback, budget, costs, dead))
    lims = np.zeros(nq + 1, dtype=np.int64)
    if not found:
        return lims, np.empty(0, np.int32), np.empty(0, np.int64), fallback
    q = np.concatenate([f[0] for f in found])
    key = (q << 32) | np.concatenate([f[2] for f in found])
    order = np.argsort(key, kind="stable")
    key, dist = key[order], np.concatenate([f[1] for f in found])[order]
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
    if range_cost(tuple(t.length for t in tables), store.nmain, -(-d // 64), radius, nq, costs) > budget:
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
