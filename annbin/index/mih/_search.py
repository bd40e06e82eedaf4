"""Batched exact kNN and range search over multi-index hashing tables (see ``_mih_tables``).

Search steps are numbered ``s = r * m + j``: step ``s`` probes table ``j`` (0-based) at substring
radius ``r``, i.e. every bucket whose key differs from the query's substring in exactly ``r`` bits.
Pigeonhole: a code at full distance ``D`` that none of steps ``0..s`` found has substring distance
``>= r + 1`` in tables ``0..j`` and ``>= r`` in tables ``j+1..m-1``, so ``D >= m * r + j + 1 = s + 1``
(the paper's "after radius r in tables 1..j, every item within m*r + j - 1 has been seen", with
1-based j). So after step ``s`` every code within distance ``s`` has been seen, and every unseen
code is at least ``s + 1`` away. A query whose current k-th distance is ``<= s + 1`` already has
its k distances exact, but an unseen code may still tie with the k-th: the tie rule (smallest
rows win at the k-th distance) needs every code at that distance seen, so a query finishes once
its k-th distance is ``<= s``, one step later, and candidates at the k-th distance are kept.
That step is the tie rule's price: on 1M clustered 64-bit codes (k=10, 1,000 queries, m=3) it
takes bucket lookups from 396 to 746 per query and the batch from 28 to 41 ms (1.47x, CPU time,
medians of 7, shared 2-core machine); keeping the tied candidates costs 2% of that.
(Probing radius ``D // m`` in only ``D % m`` tables is the classic off-by-one that misses codes:
exact matches with ``m = 2``.) Range search to radius ``R`` runs steps ``0..R``.

All active queries of a batch advance together, one step at a time: their bucket keys for the step
are one XOR of the query substrings with the precomputed popcount-``r`` masks, one random read per
key into the table's occupancy bitmap (one bit a bucket, so it stays in L2 cache; the XOR is split
into byte index and bit index, see ``occupancy_probes``) drops the empty buckets, which are most
of them at radius >= 2, a rank over those bits (a per-word count plus a popcount) finds each
non-empty bucket's start and end, ``np.repeat`` expands the non-empty buckets to candidate
positions, and candidates are verified with ``np.bitwise_count`` on codes stored in the table's
bucket order (contiguous reads) or on the index's shared codes through the table's rows. There is no per-query seen bitmap: a candidate is kept only if it
is within its query's current k-th distance (ties kept, see above), and the kept ones are merged
into the top-k, where a code found twice (from two tables, or already in the top-k) is dropped as
an exact duplicate key.
Where a step finds many more hits than ``k`` per query (large buckets in dense clusters, at radius
0 where no k-th distance filters them yet), a per-query distance histogram first cuts them at the
query's k-th nearest hit of that step (``_cap``), so the merge sorts far fewer keys.
The cost model behind the fallback is in ``_mih_cost``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from annbin.index.mih._cost import COSTS, Budget, CostModel, expected_step_costs
from annbin.index.mih._tables import MIHTable, occupancy_probes, popcount_masks

#: Most bucket probes made at once (bounds the size of temporaries).
LOOKUP_CHUNK = 1 << 17
#: Most candidates verified at once: temporaries stay cache-sized and off fresh mmap'd pages.
CANDIDATE_CHUNK = 1 << 17
#: A step's hits are cut at each query's k-th nearest hit of the step (``_cap``) when there are more
#: than this many per query and k (dense buckets); fewer hits are cheaper to sort as they are.
CAP_MIN_HITS = 4


class _Batch:
    """State of one batch of queries: top-k as packed int64 keys ``query << shift | dist << 32 | row``.

    The query index in the high bits makes the keys of one query a contiguous, sorted run once all
    keys are sorted together (the merge is one sort), and a code found twice an exact duplicate key.
    The top-k are the k smallest keys: by (distance, row), so ties go to the smallest rows.
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
        dist <<= 32  # in place (dist is consumed): 0.98-1.01x in mih_micro.py, no measurable gain
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
        best = keys.take(keys.searchsorted(aff << shift)[:, None] + _arange(k))
        self.top[aff] = best
        self.kth[aff] = (best[:, k - 1] >> 32) & self.dist_mask

    def result(self) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """Distances (int32) and rows of the top-k, ``(nq, k)`` each, in no particular order."""
        return ((self.top >> 32) & self.dist_mask).astype(np.int32), self.top & 0xFFFFFFFF


def probe_buckets(table: MIHTable, sub: NDArray[np.int64], masks: NDArray[np.int64], r: int,
           ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Probe the buckets ``sub[i] ^ masks`` of each query ``i`` (``sub`` int64 ``(nq,)``;
    ``masks = popcount_masks(table.length, r)``).

    Returns the non-empty buckets only, grouped by query: ``base`` and size ``cnt`` (int64), and
    per query the number of candidates ``per_query`` and the end of its group in ``base`` /
    ``cnt``, ``group_end`` (both ``(nq,)``). ``base`` is a bucket's start in the table minus
    where its candidates start in the concatenation of all buckets' candidates, so that
    candidate ``i`` of the concatenation sits at ``base[its bucket] + i`` (one ``np.repeat``
    and an add expand the buckets; no second cumsum).
    """
    nq, nmasks = sub.size, masks.size
    # the (cached) occupancy bits first: most probes at radius >= 2 find an empty bucket
    mhi, lot = occupancy_probes(table.length, r)
    hi = ((sub >> 3)[:, None] ^ mhi[None, :]).ravel()  # byte of the bit
    lo = lot.take(sub & 7, axis=0).ravel()  # bit in the byte, uint8
    # mode="clip" on the probe's takes (indices valid by construction): 1.00-1.03x whole-search speed
    # at 64 and 128 bits over two runs of benchmarks/mih_micro.py (1M codes), i.e. at most a little
    bit = table.occupancy.take(hi, mode="clip")
    np.right_shift(bit, lo, out=bit)
    bit &= 1
    nonempty = bit.view(bool).nonzero()[0]
    keys = hi.take(nonempty, mode="clip")
    keys <<= 3
    keys |= lo.take(nonempty, mode="clip")
    # a non-empty bucket's rank among the non-empty ones: the count before its 64-bucket word plus
    # the set bits up to it in that word (itself included, so one past its rank)
    word = keys >> 6
    below = table.occupancy64.take(word, mode="clip")
    keys &= 63
    np.subtract(63, keys, out=keys)
    np.left_shift(below, keys.view(np.uint64), out=below)  # keys are 0..63: the same bits as uint64
    rank = table.ranks.take(word, mode="clip")
    rank += np.bitwise_count(below)
    rank -= 1
    packed = table.buckets.take(rank, mode="clip")  # start << 32 | count
    cnt = packed & 0xFFFFFFFF
    packed >>= 32  # the bucket's start
    bounds = nonempty.searchsorted(_arange(nq + 1) * nmasks)  # each query's buckets: bounds[i]..bounds[i + 1]
    ends = np.zeros(cnt.size + 1, dtype=np.int64)
    cnt.cumsum(out=ends[1:])
    at = ends.take(bounds)
    per_query = at[1:] - at[:-1]
    group_end = bounds[1:]
    packed -= ends[:-1]  # bucket start minus where its candidates start in the concatenation
    return packed, cnt, per_query, group_end


def verify_candidates(table: MIHTable, xw: NDArray[np.uint64], base: NDArray[np.int64], cnt: NDArray[np.int64],
            per_query: NDArray[np.int64], thr: NDArray[np.int64] | int, offset: int, total: int,
            ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Verify non-empty buckets probed for queries ``xw`` ``(nq, W)``: ``cnt`` candidates each,
    the ``i``-th candidate of the concatenation at position ``base[bucket] + offset + i``
    (``probe_buckets``'s ``base``, sliced: ``offset`` candidates come before the slice).

    The buckets are grouped by query, ``per_query`` candidates each (``total`` in all). Returns
    (query index, distance, row) of the candidates whose distance is ``< thr[query]`` (or ``< thr``,
    one threshold for all).
    """
    nq, nwords = xw.shape
    # positions of all candidates: each bucket's range [lo, lo + cnt), concatenated
    pos: NDArray[np.signedinteger] = base.repeat(cnt)  # int64 positions, or int32 rows of a shared table (below)
    pos += _arange(offset + total, start=offset)
    if table.shared:  # codes stored once, in insertion order
        pos = table.rows.take(pos, mode="clip")
    # distances summed in uint8 / uint16, not int64: 1.00-1.04x whole-search speed at 128 bits (mih_micro.py)
    dtype = np.uint8 if nwords * 64 < 255 else np.uint16
    # mode="clip" here buys no measurable speed (0.93-1.06x, mih_micro.py); the cost calibration
    # (_mih_calibrate) times this kernel on positions past its small table's end, which clip allows
    if nwords == 1:
        g = table.words.reshape(-1).take(pos, mode="clip")
        np.bitwise_xor(g, xw[:, 0].repeat(per_query), out=g)
        dist = np.bitwise_count(g)
    else:  # whole codes at once: one cache line per candidate, not one per word
        g = table.words.take(pos, axis=0, mode="clip")
        np.bitwise_xor(g, xw.repeat(per_query, axis=0), out=g)
        bits = np.bitwise_count(g)
        dist = bits[:, 0].astype(dtype)
        for w in range(1, nwords):
            dist += bits[:, w]
    if not isinstance(thr, np.ndarray):
        hit = (dist < thr).nonzero()[0]
    else:
        hit = (dist < thr.astype(dtype).repeat(per_query)).nonzero()[0]
    q = _arange(nq).repeat(per_query).take(hit)
    return q, dist.take(hit).astype(np.int64), _rows(table, pos.take(hit))


# views of one cached arange instead of a new one per call: 0.94-1.02x whole-search speed over two
# runs of mih_micro.py, no gain beyond the noise; a cheap habit, kept
_ARANGE = np.arange(1 << 17, dtype=np.int64)
_ARANGE.setflags(write=False)


def _arange(stop: int, start: int = 0) -> NDArray[np.int64]:
    """``np.arange(start, stop)`` (int64), read-only: a view of a cached array while ``stop`` is small."""
    return _ARANGE[start:stop] if stop <= _ARANGE.size else np.arange(start, stop, dtype=np.int64)


def _rows(table: MIHTable, pos: NDArray[np.signedinteger]) -> NDArray[np.int64]:
    """Insertion-order rows of positions read by ``verify_candidates`` (already rows for a shared table)."""
    return pos.astype(np.int64, copy=False) if table.shared else table.rows.take(pos).astype(np.int64)


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




def _drop(over: NDArray[np.bool_], base: NDArray[np.int64], cnt: NDArray[np.int64], per_query: NDArray[np.int64],
          group_end: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """``probe_buckets``'s output without the buckets of the queries flagged in ``over``."""
    sizes = np.diff(group_end, prepend=0)
    keep = np.repeat(~over, sizes)
    sizes[over] = 0
    lo = base + np.cumsum(cnt) - cnt
    lo, cnt = lo[keep], cnt[keep]
    return lo - (np.cumsum(cnt) - cnt), cnt, np.where(over, 0, per_query), np.cumsum(sizes)


def _verify_all(table: MIHTable, xw: NDArray[np.uint64], base: NDArray[np.int64], cnt: NDArray[np.int64],
                per_query: NDArray[np.int64], group_end: NDArray[np.int64], thr: NDArray[np.int64] | int,
                dead: NDArray[np.bool_] | None = None,
                ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]]:
    """``verify_candidates`` over groups of queries holding at most CANDIDATE_CHUNK candidates (one query may
    exceed it); yields (query index, distance, row) per group, query indices into ``xw``, without
    the rows flagged in ``dead`` (removed codes still in the tables: tested on hits only)."""
    nq = xw.shape[0]
    before = per_query.cumsum()  # candidates of queries 0..i
    total = int(before[-1])
    cuts = [0]
    if total > CANDIDATE_CHUNK:
        at = np.searchsorted(before, np.arange(CANDIDATE_CHUNK, total, CANDIDATE_CHUNK), side="right")
        cuts += sorted({int(c) for c in at if 0 < c < nq})
    cuts.append(nq)
    for a, b in zip(cuts[:-1], cuts[1:]):
        e0 = int(group_end[a - 1]) if a else 0
        e1 = int(group_end[b - 1])
        if e1 > e0:
            offset = int(before[a - 1]) if a else 0
            part = thr[a:b] if isinstance(thr, np.ndarray) else thr
            q, dist, rows = verify_candidates(table, xw[a:b], base[e0:e1], cnt[e0:e1], per_query[a:b], part, offset,
                                    int(before[b - 1]) - offset)
            if dead is not None and q.size:
                live = ~dead.take(rows)
                q, dist, rows = q[live], dist[live], rows[live]
            if q.size:
                yield q + a, dist, rows


def _step(batch: _Batch, table: MIHTable, j: int, r: int, masks: NDArray[np.int64], A: NDArray[np.int64], step: int,
          guard: Budget | None, nactive: int) -> None:
    """Probe ``table`` (index ``j``) at radius ``r`` (``masks``) for active queries ``A``; candidates go to ``batch.pending``."""
    base, cnt, per_query, group_end = probe_buckets(table, batch.xs[A, j], masks, r)
    if guard is not None:
        over = guard.over(batch.kth, batch.sentinel, A, step, per_query, nactive)
        if over is not None:
            base, cnt, per_query, group_end = _drop(over, base, cnt, per_query, group_end)
    batch.lookups += A.size * masks.size
    batch.candidates += int(per_query.sum())
    # keep candidates at the k-th distance too: a smaller row among them wins the tie.
    # Nothing merged yet: every k-th distance is the sentinel, above any distance.
    thr = batch.kth.take(A) + 1 if batch.merged else batch.sentinel
    for q, dist, rows in _verify_all(table, batch.xw[A], base, cnt, per_query, group_end, thr, batch.dead):
        # threshold over all of A, not the group's own queries: sized per group it also fired on
        # steps with a few crowded queries, where the histogram costs more than it saves (A/B 0.963x)
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


def range_search(tables: list[MIHTable], n: int, d: int, xw: NDArray[np.uint64], xs: NDArray[np.int64], radius: int,
                 budget: float = math.inf, costs: CostModel = COSTS, dead: NDArray[np.bool_] | None = None,
                 ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64], NDArray[np.bool_]]:
    """Every row within distance ``<= radius`` (but those in ``dead``): steps ``0..radius``
    (pigeonhole, see module doc).

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
        left = np.cumsum(expected_step_costs(tables, n, words, radius + 1, costs)[::-1])[::-1]  # steps s..radius
    found_q, found_d, found_r = [], [], []
    active = np.arange(nq)
    for step in range(radius + 1):
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
                ahead = now + (left[step + 1] if step < radius else 0.0)
                over = (ahead > budget) | (spent[A] > 2 * budget)
                if over.any():
                    fallback[A[over]] = True
                    base, cnt, per_query, group_end = _drop(over, base, cnt, per_query, group_end)
            for q, dist, rows in _verify_all(table, xw[A], base, cnt, per_query, group_end, int(radius) + 1, dead):
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
