"""One search step's kernels, shared by kNN (``_search``) and range search (``_range``): probe a
table's buckets for a batch of queries, then verify the candidates found.

A step probes every bucket whose key differs from a query's substring in exactly ``r`` bits: one
XOR of the query substrings with the precomputed popcount-``r`` masks gives the keys, one random
read per key into the table's occupancy bitmap (one bit a bucket, so it stays in L2 cache; the
XOR is split into byte index and bit index, see ``occupancy_probes``) drops the empty buckets,
which are most of them at radius >= 2, a rank over those bits (a per-word count plus a popcount)
finds each non-empty bucket's start and count, ``np.repeat`` expands the non-empty buckets to
candidate positions, and candidates are verified with ``np.bitwise_count`` on codes stored in the
table's bucket order (contiguous reads) or on the index's shared codes through the table's rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from annbin.index.mih._tables import MIHTable, occupancy_probes

#: Most bucket probes made at once (bounds the size of temporaries).
LOOKUP_CHUNK = 1 << 17
#: Most candidates verified at once: temporaries stay cache-sized and off fresh mmap'd pages.
CANDIDATE_CHUNK = 1 << 17

Probed = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]

# views of one cached arange instead of a new one per call: no gain beyond the noise
# (mih_micro.py), a cheap habit kept
_ARANGE = np.arange(1 << 17, dtype=np.int64)
_ARANGE.setflags(write=False)


def arange(stop: int, start: int = 0) -> NDArray[np.int64]:
    """``np.arange(start, stop)`` (int64), read-only: a view of a cached array while ``stop`` is small."""
    return _ARANGE[start:stop] if stop <= _ARANGE.size else np.arange(start, stop, dtype=np.int64)


def probe_buckets(table: MIHTable, sub: NDArray[np.int64], masks: NDArray[np.int64], r: int) -> Probed:
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
    # mode="clip": no bounds checks (the indices are valid by construction); at most 1.03x (mih_micro.py)
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
    bounds = nonempty.searchsorted(arange(nq + 1) * nmasks)  # each query's buckets: bounds[i]..bounds[i + 1]
    ends = np.zeros(cnt.size + 1, dtype=np.int64)
    cnt.cumsum(out=ends[1:])
    at = ends.take(bounds)
    per_query = at[1:] - at[:-1]
    group_end = bounds[1:]
    packed -= ends[:-1]  # bucket start minus where its candidates start in the concatenation
    return packed, cnt, per_query, group_end


def after_own(base: NDArray[np.int64], cnt: NDArray[np.int64], group_end: NDArray[np.int64], own: NDArray[np.integer]) -> Probed:
    """``probe_buckets``'s output at radius 0 for queries that are stored, live codes (so each has
    one non-empty bucket, its own) cut to the positions after each query's own position ``own``
    (int ``(nq,)``, in the table's bucket order). Rows ascend within a bucket, so what is left are
    the bucket's rows above the query's: a self-join reads each pair from its smaller row only."""
    start = base + (np.cumsum(cnt) - cnt)  # each bucket's start in the table
    start += cnt  # ... its end
    first = own.astype(np.int64) + 1
    cnt = start - first
    return first - (np.cumsum(cnt) - cnt), cnt, cnt.copy(), group_end


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
    pos += arange(offset + total, start=offset)
    if table.shared:  # codes stored once, in insertion order
        pos = table.rows.take(pos, mode="clip")
    # distances summed in uint8 / uint16, not int64: 1.00-1.04x at 128 bits (mih_micro.py)
    dtype = np.uint8 if nwords * 64 < 255 else np.uint16
    # mode="clip" (no speed gain here): the cost calibration times this kernel on positions past
    # its small table's end
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
    q = arange(nq).repeat(per_query).take(hit)
    return q, dist.take(hit).astype(np.int64), _rows(table, pos.take(hit))


def _rows(table: MIHTable, pos: NDArray[np.signedinteger]) -> NDArray[np.int64]:
    """Insertion-order rows of positions read by ``verify_candidates`` (already rows for a shared table)."""
    return pos.astype(np.int64, copy=False) if table.shared else table.rows.take(pos).astype(np.int64)


def drop_queries(over: NDArray[np.bool_], base: NDArray[np.int64], cnt: NDArray[np.int64], per_query: NDArray[np.int64],
                 group_end: NDArray[np.int64]) -> Probed:
    """``probe_buckets``'s output without the buckets of the queries flagged in ``over``."""
    sizes = np.diff(group_end, prepend=0)
    keep = np.repeat(~over, sizes)
    sizes[over] = 0
    lo = base + np.cumsum(cnt) - cnt
    lo, cnt = lo[keep], cnt[keep]
    return lo - (np.cumsum(cnt) - cnt), cnt, np.where(over, 0, per_query), np.cumsum(sizes)


def verify_all(table: MIHTable, xw: NDArray[np.uint64], base: NDArray[np.int64], cnt: NDArray[np.int64],
               per_query: NDArray[np.int64], group_end: NDArray[np.int64], thr: NDArray[np.int64] | int,
               dead: NDArray[np.bool_] | None = None,
               ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]]:
    """``verify_candidates`` over groups of queries holding at most CANDIDATE_CHUNK candidates (one
    query may exceed it); yields (query index, distance, row) per group, query indices into ``xw``,
    without the rows flagged in ``dead`` (removed codes still in the tables: tested on hits only)."""
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
