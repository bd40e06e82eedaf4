"""Measuring a search: exact float kNN, recall per query, and wall-clock timing.

The one home of these for both ``annbin.embed.tune`` (library) and ``annbin.bench`` (harness).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_k, check_metric

__all__ = ["float_knn", "recall_per_query", "time_batch", "time_per_query"]


def float_knn(base: NDArray[np.float32], queries: NDArray[np.float32], k: int, metric: str, *,
              query_block: int = 4096, base_block: int = 1 << 16, progress: bool = False
              ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact kNN by faiss ``IndexFlatIP``/``IndexFlatL2``: ``(D, I)``, ``(nq, k)`` float32/int64.

    ``base`` ``(n, dim)`` and ``queries`` ``(nq, dim)`` are float32. Blocked over queries and,
    past ``base_block`` rows, over the database (each block's results merged with
    ``faiss.ResultHeap``), so extra memory stays ``O(base_block * dim + nq * k)``. ``ip``: D
    descending; ``l2``: squared distances ascending. ``progress``: a tqdm bar (with ETA) that
    advances per query block of each database block.
    """
    import faiss

    check_metric(metric)
    n, nq = base.shape[0], queries.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the database size), got {k}")
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    make = faiss.IndexFlatIP if metric == "ip" else faiss.IndexFlatL2
    blocks = range(0, n, base_block)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=nq * len(blocks), desc=f"ground truth ({n:,} x {nq:,}, exact {metric})", unit="q", unit_scale=True)
    heap = faiss.ResultHeap(nq, k, keep_max=metric == "ip") if len(blocks) > 1 else None
    try:
        for b in blocks:  # database blocks outside: each is copied into faiss once
            index = make(base.shape[1])
            index.add(base[b:b + base_block])
            kk = min(k, index.ntotal)
            D = np.empty((nq, kk), dtype=np.float32)
            I = np.empty((nq, kk), dtype=np.int64)
            for s in range(0, nq, query_block):
                e = min(nq, s + query_block)
                D[s:e], I[s:e] = index.search(queries[s:e], kk)
                if bar is not None:
                    bar.update(e - s)
            if heap is not None:
                heap.add_result(D, np.where(I >= 0, I + b, -1))
    finally:
        if bar is not None:
            bar.close()
    if heap is None:
        return D, I
    heap.finalize()
    return heap.D, heap.I


def recall_per_query(found: NDArray[np.int64], truth: NDArray[np.int64], k: int) -> NDArray[np.float64]:
    """Fraction of each query's true top-k ids found in its returned top-k, ``(nq,)`` float64.

    ``found`` and ``truth`` are int64 ``(nq, >= k)``; ``-1`` in ``found`` never counts as a hit.
    """
    k = check_k(k)
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found has {found.shape[0]} queries, truth has {truth.shape[0]}")
    if truth.shape[1] < k or found.shape[1] < k:
        raise ValueError(f"need at least k={k} columns, got found {found.shape}, truth {truth.shape}")
    f, t = found[:, :k], truth[:, :k]
    hits = ((f[:, :, None] == t[:, None, :]) & (f[:, :, None] >= 0)).any(axis=2)
    return cast("NDArray[np.float64]", hits.mean(axis=1))  # numpy types mean() Any


def time_batch(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    """Median wall seconds of ``runs`` calls of ``fn`` and the last call's result."""
    times, result = [], None
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def time_per_query(fn: Callable[[int], Any], n: int, progress: Any = None) -> NDArray[np.float64]:
    """Seconds of ``fn(i)`` for i in range(n), one query at a time (latency mode)."""
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t0
        if progress is not None:
            progress.update(1)
    return out
