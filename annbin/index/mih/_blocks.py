"""How ``MIHIndex`` spreads a batch of queries over threads, and splices per-block results back.

Query blocks are independent (each has its own top-k state) and numpy releases the GIL in its heavy
calls, so blocks run on a thread pool; results do not depend on the number of threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

#: Fewest queries a block is cut to when spreading a batch over threads: a step's fixed numpy
#: overhead (mostly holding the GIL) would dominate smaller blocks.
MIN_THREAD_BLOCK = 256

_T = TypeVar("_T")


def query_blocks(nq: int, cap: int, threads: int) -> list[tuple[int, int]]:
    """Query blocks ``[a, b)`` of at most ``cap`` queries; with threads, at least one per thread
    (while each keeps ``MIN_THREAD_BLOCK`` queries) and a multiple of them, of equal size."""
    count = -(-nq // cap)
    if threads > 1:
        count = max(count, min(threads, nq // MIN_THREAD_BLOCK))
        if count > threads:
            count = -(-count // threads) * threads
    size = -(-nq // count)
    return [(a, min(nq, a + size)) for a in range(0, nq, size)]


def map_blocks(fn: Callable[[int, int], _T], blocks: list[tuple[int, int]], threads: int) -> list[_T]:
    """``fn(a, b)`` for each block, in order, on up to ``threads`` threads."""
    if threads == 1 or len(blocks) == 1:
        return [fn(a, b) for a, b in blocks]
    with ThreadPoolExecutor(max_workers=min(threads, len(blocks))) as pool:
        return list(pool.map(lambda ab: fn(*ab), blocks))


RangePart = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]


def splice_ranges(nq: int, parts: Sequence[RangePart]) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
    """Range results of ``nq`` queries from parts ``(queries, sizes, D, I)``: each part answers the
    ``queries`` it names (ascending), ``sizes[i]`` results for ``queries[i]``, grouped by query.
    Returns ``(lims, D, I)`` grouped by query; within a query, the parts' results in part order."""
    qid = np.concatenate([np.repeat(queries, sizes) for queries, sizes, _, _ in parts])
    order = np.argsort(qid, kind="stable")
    lims = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(np.bincount(qid, minlength=nq), out=lims[1:])
    return lims, np.concatenate([p[2] for p in parts])[order], np.concatenate([p[3] for p in parts])[order]
