"""What every search returns, and the (distance, id) orders annbin sorts results into."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

SearchResult = tuple[NDArray[np.int32], NDArray[np.int64]]
#: a variant's ``_get_codes`` answer: codes ``(m, d // 8)`` uint8 (zero where not found) and which ids
#: were found (bool ``(m,)``, or None when all were)
CodesResult = tuple[NDArray[np.uint8], NDArray[np.bool_] | None]
RangeResult = tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]
_PACK_LIMIT = (1 << 32) - 1  # ids below this pack with their distance into one sort key


def sort_results(D: NDArray[np.int32], I: NDArray[np.int64]) -> SearchResult:
    """Order each row by (distance, id); missing results (INT32_MAX, -1) stay last."""
    if D.size == 0:
        return D, I
    if I.max() < _PACK_LIMIT and D.min() >= 0:
        # One int64 key per result, distance in the high bits and id + 1 in the low 32: a plain
        # row sort then orders by (distance, id), ~10x faster than lexsort on the hot path.
        key = (D.astype(np.int64) << 32) | (I + 1)
        key.sort(axis=1)
        return (key >> 32).astype(np.int32), (key & 0xFFFFFFFF) - 1
    order = np.lexsort((I, D), axis=-1)
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def sort_ranges(lims: NDArray[np.int64], D: NDArray[np.int32], I: NDArray[np.int64]) -> RangeResult:
    """Order each query's range-search segment by (distance, id)."""
    if D.size == 0:
        return lims, D, I
    qid = np.repeat(np.arange(lims.size - 1), np.diff(lims))
    order = np.lexsort((I, D, qid))
    return lims, D[order], I[order]
