"""The work of ``near_duplicates`` (``join``): its two paths over blocks of query codes, how a
block's pairs are packed, and the running count that enforces ``max_pairs``.

- ``MIHJoin``: tables over all codes, built once (on the threads); ``block(a, b)`` runs the range
  search steps with a ``SelfJoin`` for the codes ``a .. b - 1`` (``_range.range_hits``), and sends
  any code whose buckets are far fuller than expected to the scan (``method="auto"`` only).
- ``scan_pairs``: faiss range searches of some codes over the codes from the first of them on.
- ``Packing``: one int64 per pair (row in the block, other row, distance), so a block's sort is its
  (i, j) order and the final order by distance is one radix sort (``unpack``).
- ``Tally``: the count of pairs found so far, shared by the blocks: past ``max_pairs`` it raises.
- ``run_blocks``: blocks in order, or on a thread pool (numpy releases the GIL in its heavy calls).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin.index._faiss import omp_threads
from annbin.index.mih._blocks import map_blocks, query_blocks
from annbin.index.mih._cost import COSTS, CostModel
from annbin.index.mih._range import SelfJoin, range_hits
from annbin.index.mih._tables import build_tables, extract_substrings, substring_layout, substring_masks, to_words

#: Codes joined as one block of queries: large enough that a step's numpy calls run on long arrays
#: (and release the GIL for most of their time, so blocks scale over threads), small enough that
#: a block's probes and hits stay far below the codes' own memory.
JOIN_BLOCK = 1 << 14
#: Most results one faiss range search may return (12 bytes each: 192 MiB): the scan's queries per
#: call are cut to ``SCAN_RESULTS // codes scanned``, so that a radius matching everything fails
#: on ``max_pairs`` instead of running out of memory.
SCAN_RESULTS = 1 << 24


class Packing:
    """One int64 per pair of a block of rows ``[a, b)``: ``(i - a, j, distance)`` in that order of
    significance, so a sort of a block's keys is its (i, j) order.

    Parameters
    ----------
    n, d, radius : int
        Codes, bits per code, and the (clamped, >= 1) radius: distances are below it.
    """

    def __init__(self, n: int, d: int, radius: int) -> None:
        self.dbits = (radius - 1).bit_length()
        self.jbits = max(1, (n - 1).bit_length())
        self.shift = self.jbits + self.dbits
        self.block = min(JOIN_BLOCK, 1 << (63 - self.shift))  # (i - a) fits the bits left
        self.dtype = np.uint8 if radius <= 256 else np.uint16 if radius <= 65536 else np.int32

    def pack(self, i: NDArray[np.int64], j: NDArray[np.int64], dist: NDArray[np.integer]) -> NDArray[np.int64]:
        """Keys of pairs ``(a + i, j)`` at ``dist`` (``i`` relative to the block's first row)."""
        key = i << self.shift
        key |= j << self.dbits
        key |= dist
        return key

    def unpack(self, blocks: list[tuple[int, int]], keys: list[NDArray[np.int64]]) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Pairs (int64 ``(npairs, 2)``) and distances (int32) sorted by (distance, i, j) from each
        block's keys in (i, j) order (blocks ascending); the keys are consumed."""
        total = sum(k.size for k in keys)
        pairs = np.empty((total, 2), dtype=np.int64)
        dist = np.empty(total, dtype=self.dtype)
        at = 0
        for a, _ in blocks:
            key = keys.pop(0)  # freed block by block
            end = at + key.size
            np.right_shift(key, self.shift, out=pairs[at:end, 0])
            pairs[at:end, 0] += a
            np.right_shift(key, self.dbits, out=pairs[at:end, 1])
            pairs[at:end, 1] &= (1 << self.jbits) - 1
            dist[at:end] = key & ((1 << self.dbits) - 1)
            at = end
        # a stable sort of small integers is a radix sort: (i, j) order kept within each distance
        order = np.argsort(dist, kind="stable")
        return pairs.take(order, axis=0), dist.take(order).astype(np.int32)


class Tally:
    """The running count of pairs found, shared by the blocks; more than ``max_pairs`` raises (in
    the block that passed it and, after that, in every other)."""

    def __init__(self, max_pairs: int, radius: int, n: int) -> None:
        self.max_pairs, self.radius, self.n = max_pairs, radius, n
        self.count = 0
        self.over = False
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        """Count ``count`` more pairs (fewer, if negative: partial results withdrawn)."""
        with self._lock:
            self.count += count
            if self.count > self.max_pairs:
                self.over = True
            if self.over:
                raise ValueError(f"radius {self.radius} yields more than max_pairs={self.max_pairs:,} pairs among "
                                 f"{self.n:,} codes ({self.count:,} found so far): lower the radius or raise max_pairs")


def run_blocks(run: Callable[[int, int], NDArray[np.int64]], blocks: list[tuple[int, int]], threads: int,
               progress: bool) -> list[NDArray[np.int64]]:
    """``run(a, b)`` for every block, on up to ``threads`` threads; the results in block order."""
    from tqdm.auto import tqdm

    out: list[NDArray[np.int64] | None] = [None] * len(blocks)
    with tqdm(total=len(blocks), disable=not progress, desc="near_duplicates", unit="block") as bar:
        if threads == 1 or len(blocks) == 1:
            for b, (lo, hi) in enumerate(blocks):
                out[b] = run(lo, hi)
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=min(threads, len(blocks))) as pool:
                futures = {pool.submit(run, lo, hi): b for b, (lo, hi) in enumerate(blocks)}
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in done:
                        exc = f.exception()
                        if exc is not None:  # max_pairs passed: the blocks not started yet never start
                            for p in pending:
                                p.cancel()
                            raise exc
                        out[futures[f]] = f.result()
                        bar.update(1)
    return [k for k in out if k is not None]


class MIHJoin:
    """The MIH path: tables over all codes, built once; ``block(a, b)`` joins rows ``[a, b)`` with
    the rows after each of them.

    Parameters
    ----------
    x : ndarray of uint8, shape (n, d // 8)
        The codes.
    m, radius : int
        Tables, and the radius (>= 1).
    packing, tally :
        How a block's pairs are packed, and the shared running count.
    costs : CostModel or None
        With a model (``method="auto"``), a code whose buckets turn out much fuller than expected
        goes to the scan; None: none ever does.
    stats : dict
        The call's stats: ``scan_queries`` is counted here.
    threads : int
        Threads that build the tables.
    """

    def __init__(self, x: NDArray[np.uint8], m: int, radius: int, packing: Packing, tally: Tally,
                 costs: CostModel | None, stats: dict[str, Any], threads: int) -> None:
        n, d = x.shape[0], 8 * x.shape[1]
        self.x, self.n, self.d, self.radius, self.packing, self.tally, self.costs = x, n, d, radius, packing, tally, costs
        self.stats, self._lock = stats, threading.Lock()
        starts, lengths = substring_layout(d, m)
        self.words, self.subs = to_words(x), np.empty((n, m), dtype=np.int64)

        def extract(a: int, b: int) -> None:
            self.subs[a:b] = extract_substrings(x[a:b], starts, lengths)

        # the set-up (substrings, tables, positions) is about a fifth of a 1M-code join at radius 4: threaded too
        map_blocks(extract, query_blocks(n, JOIN_BLOCK, threads), threads)
        self.tables = build_tables(self.words, self.subs, lengths, threads)
        self.positions = map_blocks(lambda t, _: self.tables[t].positions(), [(t, t + 1) for t in range(m)], threads)
        self.masks = substring_masks(d, starts, lengths)

    def block(self, a: int, b: int) -> NDArray[np.int64]:
        """Packed keys, sorted, of every pair ``(i, j)``, ``a <= i < b``, ``i < j``, within the radius."""
        rows = np.arange(a, b, dtype=np.int64)
        fallback = np.zeros(b - a, dtype=bool)
        budget = np.inf if self.costs is None else self.costs.flat_cost(self.n - a, self.d)
        join = SelfJoin(rows, self.positions, self.words, self.masks)
        parts = []
        for q, dist, found in range_hits(self.tables, self.n, self.words[a:b], self.subs[a:b], self.radius, fallback,
                                         budget, COSTS if self.costs is None else self.costs, join=join):
            parts.append(self.packing.pack(q, found, dist))
            self.tally.add(q.size)
        keys = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        if fallback.any():  # skewed buckets: those codes by the scan (their partial hits withdrawn first)
            partial = fallback.take(keys >> self.packing.shift)
            keys = keys[~partial]
            self.tally.add(-int(partial.sum()))
            scanned = np.flatnonzero(fallback) + a
            keys = np.concatenate([keys, scan_pairs(self.x, scanned, a, self.radius, self.packing, self.tally, 1)])
            with self._lock:
                self.stats["scan_queries"] += int(scanned.size)
        keys.sort()
        return keys


def scan_pairs(x: NDArray[np.uint8], rows: NDArray[np.int64], a: int, radius: int, packing: Packing, tally: Tally,
               threads: int) -> NDArray[np.int64]:
    """Packed keys (relative to row ``a``, unsorted) of the pairs ``(i, j)``, ``i`` in ``rows``
    (ascending, ``>= a``), ``j > i``, within the radius, by faiss range searches of the codes
    ``rows`` over the codes from ``rows[0]`` on, on ``threads`` OpenMP threads."""
    if rows.size == 0:
        return np.empty(0, dtype=np.int64)
    first = int(rows[0])
    flat = faiss.IndexBinaryFlat(8 * x.shape[1])
    flat.add(x[first:])  # every j > i for every i in rows
    per_call = max(threads, SCAN_RESULTS // (x.shape[0] - first))
    parts = []
    with omp_threads(threads):
        for c in range(0, rows.size, per_call):
            i = rows[c : c + per_call]
            lims, D, J = flat.range_search(x.take(i, axis=0), radius)
            i = i.repeat(np.diff(lims).astype(np.int64))
            J += first
            keep = J > i
            i -= a
            parts.append(packing.pack(i[keep], J[keep], D[keep].astype(np.int64)))
            tally.add(parts[-1].size)
    return np.concatenate(parts)
