"""The float arithmetic of a rescore: exact scores of gathered rows, and the best ``k`` of each query."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

ScoreResult = tuple[NDArray[np.float32], NDArray[np.int64]]

_BLOCK = 1 << 16  # gathered values per block of queries: 256 KiB of float32 stays in cache

__all__ = ["ScoreResult", "float_scores", "top_k"]


def float_scores(store: np.ndarray, q: NDArray[np.float32], rows: NDArray[np.int64], metric: str) -> NDArray[np.float32]:
    """Exact ``<x, q>`` (``"ip"``) or ``|x - q|^2`` (``"l2"``), float32 ``(nq, c)``, of the rows
    ``(nq, c)`` of ``store`` (float ``(n, dim)``, RAM or memory-mapped) for queries ``(nq, dim)``."""
    if isinstance(store, np.memmap):
        store = store.view(np.ndarray)  # same pages, without np.memmap's per-slice Python overhead
    nq, c = rows.shape
    dim = q.shape[1]
    out = np.empty((nq, c), np.float32)
    step = max(1, _BLOCK // max(1, c * dim))
    for lo in range(0, nq, step):
        hi = min(nq, lo + step)
        docs = np.asarray(store[rows[lo:hi].ravel()], dtype=np.float32).reshape(hi - lo, c, dim)
        if metric == "ip":
            out[lo:hi] = (docs @ q[lo:hi, :, None])[..., 0]  # batched matmul: BLAS, unlike einsum
        else:
            diff = docs - q[lo:hi, None, :]
            out[lo:hi] = np.einsum("qcd,qcd->qc", diff, diff)
    return out


def top_k(scores: NDArray[np.float32], ids: NDArray[np.int64], k: int, metric: str) -> ScoreResult:
    """Best ``k`` of each row by score (``"ip"``: descending, ``"l2"``: ascending), ties by smaller
    id; ids ``-1`` go last with the worst score; rows shorter than ``k`` are padded."""
    valid = ids >= 0
    worst = np.float32(-np.inf) if metric == "ip" else np.float32(np.inf)
    scores = np.where(valid, scores, worst)
    key = -scores if metric == "ip" else scores
    order = np.lexsort((np.where(valid, ids, np.iinfo(np.int64).max), key), axis=-1)[:, :k]
    S = np.take_along_axis(scores, order, axis=1)
    I = np.where(np.take_along_axis(valid, order, axis=1), np.take_along_axis(ids, order, axis=1), -1)
    if S.shape[1] < k:
        pad = k - S.shape[1]
        S = np.pad(S, ((0, 0), (0, pad)), constant_values=worst)
        I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
    return S.astype(np.float32, copy=False), I.astype(np.int64, copy=False)
