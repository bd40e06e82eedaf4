"""Batched exact kNN and range search over multi-index hashing tables (see ``_mih_tables``).

Search steps are numbered ``s = r * m + j``: step ``s`` probes table ``j`` (0-based) at substring
radius ``r``, i.e. every bucket whose key differs from the query's substring in exactly ``r`` bits.
Pigeonhole: an item at full distance ``D`` that none of steps ``0..s`` found has substring distance
``>= r + 1`` in tables ``0..j`` and ``>= r`` in tables ``j+1..m-1``, so ``D >= m * r + j + 1 = s + 1``.
Hence after step ``s`` every item within distance ``s`` has been seen, and a query whose current
k-th distance is ``<= s`` is finished: its distances are exact. (Stopping at ``s = D - 1``
instead, or probing radius ``D // m`` in only ``D % m`` tables, is the classic off-by-one that
misses items.)

All active queries of a batch advance together, one step at a time: their bucket keys for the step
are one XOR of query substrings with precomputed popcount-``r`` masks, bucket ranges come from one
gather of the offsets, ``np.repeat`` expands them to candidate positions, and candidates are
verified with ``np.bitwise_count`` on codes stored in the table's bucket order (contiguous reads).
Rather than a per-query seen bitmap, a candidate is kept only if it beats the query's current k-th
distance; the few that do are merged into the query's top-k, where a code found again (it can
only still be there if it is in the top-k) is dropped as an exact duplicate key.

Cost model: each step is priced from its exact bucket sizes; the remaining steps up to the current
k-th distance are priced on uniform buckets. A query whose spent plus predicted cost exceeds its
budget (``ratio`` times a faiss-flat scan) leaves the batch and is answered by brute force.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from annbin.index._mih_tables import MIHTable, popcount_masks

#: Most bucket probes made at once (bounds the size of temporaries).
LOOKUP_CHUNK = 1 << 17
#: Most candidates verified at once: temporaries stay cache-sized and off fresh mmap'd pages.
CANDIDATE_CHUNK = 1 << 17
# byte order of the int32 halves of a table's packed bucket bounds
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)


@dataclass(frozen=True)
class CostModel:
    """Rough single-thread costs in nanoseconds, measured on a 2-core x86 box (numpy 2, faiss 1.15).

    Only ratios matter: they decide when a query is cheaper to answer by a faiss-flat scan.
    """

    lookup: float = 12.0  # one bucket probe (key, two offset reads, expansion)
    candidate: float = 10.0  # one candidate of one 64-bit word
    candidate_word: float = 3.0  # each further word of a candidate
    step: float = 60_000.0  # fixed numpy overhead of one step for the whole batch
    flat_code: float = 0.75  # faiss IndexBinaryFlat, one code of one word, k = 10
    flat_word: float = 0.45  # each further word

    def candidate_cost(self, words: int) -> float:
        return self.candidate + self.candidate_word * (words - 1)

    def flat_cost(self, n: int, words: int) -> float:
        return n * (self.flat_code + self.flat_word * (words - 1))


COSTS = CostModel()


def expected_step_costs(tables: list[MIHTable], n: int, words: int, nsteps: int, costs: CostModel = COSTS) -> NDArray[np.float64]:
    """Expected per-query cost of steps ``0..nsteps-1`` on uniformly filled buckets."""
    m = len(tables)
    out = np.zeros(nsteps)
    cand = costs.candidate_cost(words)
    for s in range(nsteps):
        r, j = divmod(s, m)
        length = tables[j].length
        if r <= length:
            probes = math.comb(length, r)
            out[s] = probes * (costs.lookup + cand * n / 2.0**length)
    return out


class _Batch:
    """State of one batch of queries: top-k as packed int64 keys ``dist << 32 | row``."""

    def __init__(self, xw: NDArray[np.uint64], xs: NDArray[np.int64], k: int, d: int) -> None:
        nq = xw.shape[0]
        self.xw, self.xs, self.k = xw, xs, k
        self.sentinel = d + 1  # larger than any distance; its slots stay distinct keys
        self.shift = 32 + (d + 1).bit_length()
        if self.shift + max(nq, 1).bit_length() > 63:
            raise ValueError(f"query batch of {nq} too large for d={d}")
        self.top = np.empty((nq, k), dtype=np.int64)
        self.top[:] = (self.sentinel << 32) | np.arange(k, dtype=np.int64)
        self.kth = np.full(nq, self.sentinel, dtype=np.int64)

        self.pending: list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]] = []

    def flush(self) -> None:
        """Merge the pending candidates (each beat its query's k-th distance when found) into the top-k."""
        if not self.pending:
            return
        q, dist, rows = (np.concatenate(parts) for parts in zip(*self.pending))
        self.pending = []
        k, shift = self.k, self.shift
        touched = np.zeros(self.top.shape[0], dtype=bool)
        touched[q] = True
        aff = np.flatnonzero(touched)
        old = (aff[:, None] << shift) | self.top[aff]
        keys = np.concatenate([old.ravel(), (q << shift) | (dist << 32) | rows])
        keys.sort()
        keep = np.ones(keys.size, dtype=bool)
        keep[1:] = keys[1:] != keys[:-1]  # the same code found again (another table or radius)
        keys = keys[keep]
        starts = np.searchsorted(keys, aff << shift)
        best = keys[starts[:, None] + np.arange(k)] & ((1 << shift) - 1)
        self.top[aff] = best
        self.kth[aff] = best[:, k - 1] >> 32


def _probe(table: MIHTable, sub: NDArray[np.int64], masks: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Packed bucket bounds and bucket sizes, ``(nq, len(masks))`` each, for query substrings ``sub``."""
    packed = np.take(table.bounds, sub[:, None] ^ masks[None, :], mode="clip")
    halves = packed.view(np.int32)
    return packed, halves[:, _HI::2] - halves[:, _LO::2]


def _verify(table: MIHTable, xw: NDArray[np.uint64], packed: NDArray[np.int64], cnt: NDArray[np.int32],
            per_query: NDArray[np.int64], thr: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Verify the buckets ``packed``/``cnt`` ``(nq, M)`` probed for queries ``xw`` ``(nq, W)``.

    Returns (query index, distance, row) of the candidates whose distance is ``< thr[query]``.
    """
    cnt = cnt.ravel()
    nonempty = np.flatnonzero(cnt > 0)
    cnt = cnt[nonempty]
    lo = np.take(packed, nonempty, mode="clip") & 0xFFFFFFFF
    ends = np.cumsum(cnt)
    # positions of all candidates: each bucket's range [lo, lo + cnt), concatenated
    pos = np.repeat(lo - (ends - cnt), cnt)
    pos += np.arange(ends[-1])
    if xw.shape[1] == 1:
        dist = np.bitwise_count(np.take(table.words[:, 0], pos, mode="clip") ^ np.repeat(xw[:, 0], per_query))
    else:
        diff = np.bitwise_count(np.take(table.words, pos, axis=0, mode="clip") ^ np.repeat(xw, per_query, axis=0))
        dist = diff.sum(axis=1, dtype=np.int32)
    hit = np.flatnonzero(dist < np.repeat(thr.astype(dist.dtype), per_query))
    if 32 * hit.size > dist.size:  # many hits (nothing known yet): tag every candidate with its query
        q = np.repeat(np.arange(per_query.size), per_query)[hit]
    else:  # few hits: find each one's query by binary search
        q = np.searchsorted(np.cumsum(per_query), hit, side="right")
    return q, dist[hit].astype(np.int64), table.rows[pos[hit]].astype(np.int64)


def knn_search(tables: list[MIHTable], n: int, d: int, xw: NDArray[np.uint64], xs: NDArray[np.int64], k: int,
               budget: float = math.inf, costs: CostModel = COSTS) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.bool_]]:
    """Exact k nearest rows (1 <= k <= n) for queries ``xw`` (uint64 words) / ``xs`` (substrings).

    Returns ``(D, rows, fallback)``: int32 ``(nq, k)``, int64 ``(nq, k)`` in no particular order
    within a row, and a bool mask of the queries that exceeded ``budget`` (ns) and must be
    answered by brute force instead (their rows of D / rows are meaningless).
    """
    nq, words = xw.shape
    m = len(tables)
    batch = _Batch(xw, xs, k, d)
    fallback = np.zeros(nq, dtype=bool)
    spent = np.zeros(nq)
    cum = np.cumsum(expected_step_costs(tables, n, words, d + 2, costs))
    cand_cost = costs.candidate_cost(words)
    active = np.arange(nq)
    step = 0
    while active.size:
        r, j = divmod(step, m)
        table = tables[j]
        masks = popcount_masks(table.length, r)
        if masks.size:
            chunk = max(1, LOOKUP_CHUNK // masks.size)
            for a in range(0, active.size, chunk):
                _step(batch, table, j, masks, active[a : a + chunk], step, spent, fallback, cum, budget, cand_cost, costs)
        if r > 0 or j == m - 1:  # at radius 0 almost every candidate is kept: one merge for the round
            batch.flush()
        active = active[~fallback[active]]
        active = active[batch.kth[active] > step + 1]  # unseen codes are >= step + 1 away: cannot beat kth
        step += 1
    top = batch.top
    return (top >> 32).astype(np.int32), top & 0xFFFFFFFF, fallback


def _step(batch: _Batch, table: MIHTable, j: int, masks: NDArray[np.int64], A: NDArray[np.int64], step: int,
          spent: NDArray[np.float64], fallback: NDArray[np.bool_], cum: NDArray[np.float64], budget: float,
          cand_cost: float, costs: CostModel) -> None:
    packed, cnt = _probe(table, batch.xs[A, j], masks)
    per_query = cnt.sum(axis=1, dtype=np.int64)
    if budget < math.inf:
        spent[A] += masks.size * costs.lookup + per_query * cand_cost + costs.step / A.size
        kth = batch.kth[A]
        # cost still to come if the current k-th distance were final; unknown until k are found
        ahead = np.where(kth < batch.sentinel, cum[np.minimum(kth - 1, cum.size - 1)] - cum[step], 0.0)
        over = spent[A] + ahead > budget
        if over.any():
            fallback[A[over]] = True
            keep = ~over
            A, packed, cnt, per_query = A[keep], packed[keep], cnt[keep], per_query[keep]
    if A.size == 0:
        return
    # verify in groups of queries holding at most CANDIDATE_CHUNK candidates (one query may exceed it)
    ends = np.cumsum(per_query)
    if ends[-1] == 0:
        return
    cuts = np.unique(np.searchsorted(ends, np.arange(CANDIDATE_CHUNK, ends[-1], CANDIDATE_CHUNK), side="right"))
    bounds = [0, *[int(c) for c in cuts if 0 < c < A.size], A.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if per_query[a:b].sum() == 0:
            continue
        q, dist, rows = _verify(table, batch.xw[A[a:b]], packed[a:b], cnt[a:b], per_query[a:b], batch.kth[A[a:b]])
        if q.size:
            batch.pending.append((A[a:b][q], dist, rows))


def range_search(tables: list[MIHTable], xw: NDArray[np.uint64], xs: NDArray[np.int64], radius: int) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
    """Every row within distance ``<= radius``: probes steps ``0..radius`` (pigeonhole, see module doc).

    Returns ``(lims, D, rows)`` grouped by query, unsorted within a query.
    """
    nq = xw.shape[0]
    m = len(tables)
    found_q, found_d, found_r = [], [], []
    thr = np.full(nq, radius + 1, dtype=np.int64)
    queries = np.arange(nq)
    for step in range(radius + 1):
        r, j = divmod(step, m)
        table = tables[j]
        masks = popcount_masks(table.length, r)
        if masks.size == 0:
            continue
        chunk = max(1, LOOKUP_CHUNK // masks.size)
        for a in range(0, nq, chunk):
            A = queries[a : a + chunk]
            packed, cnt = _probe(table, xs[A, j], masks)
            per_query = cnt.sum(axis=1, dtype=np.int64)
            if per_query.sum() == 0:
                continue
            q, dist, rows = _verify(table, xw[A], packed, cnt, per_query, thr[A])
            found_q.append(A[q])
            found_d.append(dist)
            found_r.append(rows)
    lims = np.zeros(nq + 1, dtype=np.int64)
    if not found_q:
        return lims, np.empty(0, np.int32), np.empty(0, np.int64)
    q = np.concatenate(found_q)
    key = (q << 32) | np.concatenate(found_r)
    order = np.argsort(key, kind="stable")
    key, dist = key[order], np.concatenate(found_d)[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]  # a code found from several tables counts once
    key, dist = key[first], dist[first]
    np.cumsum(np.bincount(key >> 32, minlength=nq), out=lims[1:])
    return lims, dist.astype(np.int32), key & 0xFFFFFFFF
