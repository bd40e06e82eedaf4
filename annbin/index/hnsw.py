"""Approximate Hamming kNN on faiss's binary HNSW graph."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_int
from annbin.index._faiss import FaissBackedIndex, hnsw_params
from annbin.index.base import SearchResult
from annbin.index.registry import register


@register
class HNSWIndex(FaissBackedIndex):
    """Binary HNSW (``faiss.IndexBinaryHNSW`` behind ``IndexBinaryIDMap``); approximate.

    faiss's HNSW cannot remove ids or range-search, so ``remove_ids`` / ``range_search`` raise
    ``UnsupportedOperation``.

    Parameters
    ----------
    d : int
        Code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    M : int
        Graph degree (layer 0 keeps ``2 * M`` links), at least 2.
    ef_construction : int
        Beam width while building.
    ef_search : int
        Search beam width, settable per search (``params=``, passed to faiss as
        ``SearchParametersHNSW``, so concurrent searches may differ); widened to ``k`` if smaller.
    """

    variant = "hnsw"
    exact = False
    build_params = ("M", "ef_construction")
    search_params = ("ef_search",)

    def __init__(self, d: int, *, M: int = 32, ef_construction: int = 40, ef_search: int = 16) -> None:
        self.M = check_int(M, "M", minimum=2)
        self.ef_construction = check_int(ef_construction, "ef_construction", minimum=1)
        super().__init__(d)
        self.set_search_params(ef_search=ef_search)

    def _new_inner(self) -> Any:
        inner = faiss.IndexBinaryHNSW(self.d, self.M)
        inner.hnsw.efConstruction = self.ef_construction
        return inner

    def _adopt(self, index: Any) -> None:
        ef = self._inner.hnsw.efSearch
        super()._adopt(index)
        self._inner.hnsw.efSearch = ef

    def get_params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction}

    def get_search_params(self) -> dict[str, Any]:
        return {"ef_search": int(self._inner.hnsw.efSearch)}

    def _check_search_value(self, name: str, value: Any) -> Any:
        return check_int(value, name, minimum=1)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        if "ef_search" in params:
            self._inner.hnsw.efSearch = params["ef_search"]

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        # faiss's HNSW returns fewer than k results when ef_search < k: widen the beam to k
        return self._faiss_search(x, k, hnsw_params(self._effective_params()["ef_search"], k))

    def memory_bytes(self) -> int:
        """RAM bytes: codes, graph and id map; codes and links still mapped from a file
        (``load_index(mmap=True)``, before any write) are page cache, not counted."""
        h = self._inner.hnsw
        if self._mapped is not None:
            return self._ids_bytes() + int(h.levels.size() * 4 + h.offsets.size() * 8)
        graph = h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8
        return self.ntotal * self.code_size + self._ids_bytes() + int(graph)
