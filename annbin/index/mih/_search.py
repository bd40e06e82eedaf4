"""Batched exact kNN over multi-index hashing tables (see ``_tables``; one step's kernels in ``_probe``).

Search steps are numbered ``s = r * m + j``: step ``s`` probes table ``j`` (0-based) at substring
radius ``r``, i.e. every bucket whose key differs from the query's substring in exactly ``r`` bits.
Pigeonhole: a code at full distance ``D`` that none of steps ``0..s`` found has substring distance
``>= r + 1`` in tables ``0..j`` and ``>= r`` in tables ``j+1..m-1``, so ``D >= m * r + j + 1 = s + 1``
(the paper's "after radius r in tables 1..j, every item within m*r + j - 1 has been seen", with
1-based j). So after step ``s`` every code within distance ``s`` has been seen, and every unseen
code is at least ``s + 1`` away. A query whose current k-th distance is ``<= s + 1`` already has
its k distances exact, but an unseen code may still tie with the k-th: the tie rule (smallest
rows win at the k-th distance) needs every code at that distance seen, so a query finishes once
its k-th distance is ``<= s``, one step later, and candidates at the k-th distance are kept
(what that step costs: benchmarks/RESULTS.md). (Probing radius ``D // m`` in only ``D % m``
tables is the classic off-by-one that misses codes: exact matches with ``m = 2``.) Range search
(``_range``) runs the same steps up to its radius.

All active queries of a batch advance together, one step at a time (``_probe``). There is no
per-query seen bitmap: a candidate is kept only if it is within its query's current k-th distance
(ties kept, see above), and the kept ones are merged into the top-k, where a code found twice (from
two tables, or already in the top-k) is dropped as an exact duplicate key.
Where a step finds many more hits than ``k`` per query (large buckets in dense clusters, at radius
0 where no k-th distance filters them yet), a per-query distance histogram first cuts them at the
query's k-th nearest hit of that step (``_cap``), so the merge sorts far fewer keys.
The cost model behind the fallback is in ``_cost``.
"""

from __future__ import annotations

import math
import time

import numpy as np
from numpy.typing import NDArray

from annbin.index.mih._cost import COSTS, Budget, CostModel
from annbin.index.mih._probe import LOOKUP_CHUNK, arange, drop_queries, probe_buckets, verify_all
from annbin.index.mih._tables import MIHTable, popcount_masks

#: A step's hits are cut at each query's k-th nearest hit of the step (``_cap``) when there are more
#: than this many per query and k (dense buckets); fewer hits are cheaper to sort as they are.
CAP_MIN_HITS = 4


class _Batch:
    """State of one batch of queries: top-k as packed int64 keys ``query << shift | dist << 32 | row``.

    The query index in the high bits makes the keys of one query a contiguous, sorted run once all
    keys are sorted together (the merge is one sort), and a code found twice an exact duplicate key.
    The top-k are the k smallest keys: by (distance, row), so ties go to the smallest rows.

    Parameters
    ----------
    xw : ndarray of uint64, shape (nq, ceil(d / 64))
        The queries as 64-bit words (``to_words``).
    xs : ndarray of int64, shape (nq, m)
        The queries' substring values (``extract_substrings``).
    k : int
        Results per query, ``1 <= k <=`` the live rows searched.
    d : int
        Code length in bits.
    """

    def __init__(self, xw: NDArray[np.uint64], xs: NDArray[np.int64], k: int, d: int) -> None:
        nq = xw.shape[0]
        self.xw, self.xs, self.k = xw, xs, k
        self.sentinel = d + 1  # larger than any distance; its slots stay distinct keys
        self.shift = 32 + (d + 1).bit_length()
        if self.shift + max(nq, 1).bit_length() > 63:
            raise ValueError(f"query batch of {nq} too large for d={d}")
        self.dist_mask = (1 << (d + 1).bit_length()) - 1
        self.top = (np.arange(nq, dtype=np.int64)[:, None] << self.shift) | (self.sentinel << 32) | np.arange(k, dtype=np.int64)
        self.kth = np.full(nq, self.sentinel, dtype=np.int64)
        self.lookups = self.candidates = 0  # work counters, for benchmarks
        self.pending: list[NDArray[np.int64]] = []  # keys of candidates not merged yet
        self.merged = False  # whether any k-th distance is below the sentinel yet
        self.dead: NDArray[np.bool_] | None = None  # rows to skip (tombstones)

    def add(self, q: NDArray[np.int64], dist: NDArray[np.int64], rows: NDArray[np.int64]) -> None:
        """Queue candidates (each within its query's k-th distance) for the next merge; ``dist`` is consumed."""
        keys = q << self.shift
        dist <<= 32  # in place, as dist is consumed (no measurable gain: mih_micro.py)
        keys |= dist
        keys |= rows
        self.pending.append(keys)

    def pending_size(self) -> int:
        """Candidates found and not merged yet."""
        return sum(part.size for part in self.pending)

    def flush(self) -> None:
        """Merge the pending candidates into the top-k."""
        if not self.pending:
            return
        new = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        self.pending = []
        self.merged = True
        k, shift = self.k, self.shift
        touched = np.zeros(self.top.shape[0], dtype=bool)
        touched[new >> shift] = True
        aff = touched.nonzero()[0]
        keys = np.concatenate([self.top.take(aff, axis=0).ravel(), new])
        keys.sort()
        keep = np.ones(keys.size, dtype=bool)
        np.not_equal(keys[1:], keys[:-1], out=keep[1:])  # the same code found again (another table or radius)
        keys = keys[keep]
        best = keys.take(keys.searchsorted(aff << shift)[:, None] + arange(k))
        self.top[aff] = best
        self.kth[aff] = (best[:, k - 1] >> 32) & self.dist_mask

    def result(self) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """Distances (int32) and rows of the top-k, ``(nq, k)`` each, in no particular order."""
        return ((self.top >> 32) & self.dist_mask).astype(np.int32), self.top & 0xFFFFFFFF


def knn_search(tables: list[MIHTable], n: int, d: int, xw: NDArray[np.uint64], xs: NDArray[np.int64], k: int,
               budget: float = math.inf, costs: CostModel = COSTS, stats: dict[str, int] | None = None,
               steps: list[dict[str, float]] | None = None, dead: NDArray[np.bool_] | None = None,
               ) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.bool_]]:
    """Exact k nearest rows (1 <= k <= rows not in ``dead``) for queries ``xw`` (uint64 words) /
    ``xs`` (substrings). ``dead``: bool ``(n,)``, rows to skip (tombstones), or None.

    Returns ``(D, rows, fallback)``: int32 ``(nq, k)``, int64 ``(nq, k)``: each row's k smallest
    (distance, row) pairs (ties at the k-th distance go to the smallest rows, whatever the order in
    which the steps found them), in no particular order within a row, and a bool mask of the queries given up on because finishing them was predicted
    to cost more than ``budget`` ns (or had already cost that much); they must be answered by
    brute force instead, and their rows of D / rows are meaningless. ``steps``, if given, gets one
    record per search step (profiling): radius, table, active queries, lookups, candidates, seconds.
    """
    nq, words = xw.shape
    m = len(tables)
    batch = _Batch(xw, xs, k, d)
    batch.dead = dead
    guard = Budget(tables, n, d, k, words, budget, costs, nq) if budget < math.inf else None
    active = np.arange(nq)
    step = 0
    while active.size:
        r, j = divmod(step, m)
        table = tables[j]
        masks = popcount_masks(table.length, r)
        if steps is not None:
            started, work = time.perf_counter(), (batch.lookups, batch.candidates)
        if masks.size:
            if guard is not None:
                guard.start_step(masks.size, active.size)
            chunk = max(1, LOOKUP_CHUNK // masks.size)
            for a in range(0, active.size, chunk):
                _step(batch, table, j, r, masks, active[a : a + chunk], step, guard, active.size)
        # at radius 0 nothing is known yet and every candidate is kept: merge once the pending ones
        # could fill each active query's top-k, so later tables' candidates are filtered
        if r > 0 or j == m - 1 or batch.pending_size() >= k * active.size:
            batch.flush()
        if steps is not None:
            steps.append({"step": step, "radius": r, "table": j, "active": int(active.size),
                          "lookups": batch.lookups - work[0], "candidates": batch.candidates - work[1],
                          "seconds": time.perf_counter() - started})
        if guard is not None and guard.dropped:
            active = active[~guard.fallback[active]]
        active = active[batch.kth[active] > step]  # unseen codes are >= step + 1 away: cannot beat or tie kth
        step += 1
    # a query may stop on a k-th distance that pending candidates would only lower (a radius-0 step
    # that did not merge): stopping stays right, but those candidates must still be merged
    batch.flush()
    if stats is not None:
        stats["lookups"] = stats.get("lookups", 0) + batch.lookups
        stats["candidates"] = stats.get("candidates", 0) + batch.candidates
    fallback = guard.fallback if guard is not None else np.zeros(nq, dtype=bool)
    return (*batch.result(), fallback)


def _step(batch: _Batch, table: MIHTable, j: int, r: int, masks: NDArray[np.int64], A: NDArray[np.int64], step: int,
          guard: Budget | None, nactive: int) -> None:
    """Probe ``table`` (index ``j``) at radius ``r`` (``masks``) for active queries ``A``; candidates go to ``batch.pending``."""
    base, cnt, per_query, group_end = probe_buckets(table, batch.xs[A, j], masks, r)
    if guard is not None:
        over = guard.over(batch.kth, batch.sentinel, A, step, per_query, nactive)
        if over is not None:
            base, cnt, per_query, group_end = drop_queries(over, base, cnt, per_query, group_end)
    batch.lookups += A.size * masks.size
    batch.candidates += int(per_query.sum())
    # keep candidates at the k-th distance too: a smaller row among them wins the tie.
    # Nothing merged yet: every k-th distance is the sentinel, above any distance.
    thr = batch.kth.take(A) + 1 if batch.merged else batch.sentinel
    for q, dist, rows in verify_all(table, batch.xw[A], base, cnt, per_query, group_end, thr, batch.dead):
        # threshold over all of A, not the group's own queries: sized per group it also fired on
        # steps with a few crowded queries, where the histogram costs more than it saves
        if q.size > CAP_MIN_HITS * batch.k * A.size:
            q, dist, rows = _cap(q, dist, rows, batch.k, A.size, batch.sentinel)
        batch.add(A.take(q), dist, rows)


def _cap(q: NDArray[np.int64], dist: NDArray[np.int64], rows: NDArray[np.int64], k: int, nq: int, sentinel: int,
         ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Drop the hits of one step that lie beyond their query's k-th nearest hit of that step.

    One step reads each code at most once per query (a code sits in one bucket of the table, and
    a query's buckets at one radius are distinct), so a query's ``k`` nearest hits of the step are
    ``k`` distinct codes: nothing farther can make its top-k. A distance histogram per query (no
    sort) finds that k-th distance; it keeps the merge's sort small when buckets are large (dense
    clusters, radius 0, where nothing filters the hits yet).
    """
    width = sentinel + 1
    cum = np.bincount(q * width + dist, minlength=nq * width).reshape(nq, width).cumsum(axis=1)
    kth = (cum < k).sum(axis=1)  # smallest distance with k hits at or below it (sentinel + 1: fewer than k hits)
    keep = (dist <= kth.take(q)).nonzero()[0]
    return q.take(keep), dist.take(keep), rows.take(keep)
