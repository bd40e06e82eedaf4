"""Exact brute force on ``faiss.IndexBinaryFlat``: the reference every other variant is held to."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin.index._faiss import FaissBackedIndex, exact_knn, faiss_range_search
from annbin.index.base import RangeResult, SearchResult
from annbin.index.registry import register


@register
class FlatIndex(FaissBackedIndex):
    """Exact Hamming kNN by linear scan (faiss ``IndexBinaryFlat`` behind ``IndexBinaryIDMap``).

    Ties: at the k-th distance the smallest ids win, whatever order they were added in
    (``exact_knn``).

    Parameters
    ----------
    d : int
        Code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    """

    variant = "flat"
    exact = True

    def __init__(self, d: int) -> None:
        super().__init__(d)

    def _new_inner(self) -> Any:
        return faiss.IndexBinaryFlat(self.d)

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        return exact_knn(self._index, x, k)

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        return faiss_range_search(self._index, x, radius)

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def memory_bytes(self) -> int:
        """RAM bytes: codes and id map; codes still mapped from a file (``load_index(mmap=True)``,
        before any write) are page cache, not counted."""
        codes = 0 if self._mapped is not None else self.ntotal * self.code_size
        return codes + self._ids_bytes()
