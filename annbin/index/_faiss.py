"""Shared plumbing for variants that are thin wrappers over a faiss binary index.

The faiss index is always wrapped in ``IndexBinaryIDMap`` so user ids survive and can be listed
(not ``IDMap2``: its reverse hash map costs ~32 bytes a vector, and annbin never reconstructs by id).
faiss's ``range_search`` keeps distances ``< radius``; annbin promises ``<= radius``, hence ``+ 1``.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import INT32_MAX
from annbin.index.base import BinaryIndex, RangeResult, SearchResult


class FaissBackedIndex(BinaryIndex):
    """Base for variants whose storage is a ``faiss.IndexBinaryIDMap`` around an inner index."""

    def __init__(self, d: int) -> None:
        super().__init__(d)
        self._inner = self._new_inner()
        self._index = faiss.IndexBinaryIDMap(self._inner)

    def _new_inner(self) -> Any:
        raise TypeError(f"{type(self).__name__} must define _new_inner")

    def _adopt(self, index: Any) -> None:
        """Take a deserialized ``IndexBinaryIDMap`` as storage.

        The proxy faiss returned owns the C++ object, so it is kept as is (a downcast copy would
        not own it, and the object would be freed with the original proxy).
        """
        if not isinstance(index, faiss.IndexBinaryIDMap):
            raise ValueError(f"stored faiss index is {type(index).__name__}, expected IndexBinaryIDMap")
        self._index = index
        self._inner = faiss.downcast_IndexBinary(index.index)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def get_ids(self) -> NDArray[np.int64]:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def to_faiss(self) -> Any:
        """The underlying ``faiss.IndexBinaryIDMap`` (shared, not copied)."""
        return self._index

    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        self._index.add_with_ids(codes, ids)

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        D, I = self._index.search(x, k)
        I = I.astype(np.int64, copy=False)
        # faiss leaves slots it could not fill at I = -1 but not always D = INT32_MAX (binary
        # HNSW writes INT32_MIN there, which would sort first): normalize them
        return np.where(I < 0, INT32_MAX, D).astype(np.int32, copy=False), I

    def _reset(self) -> None:
        self._index.reset()

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"faiss": faiss.serialize_index_binary(self._index)}

    @classmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        obj = cls(d, **params)
        try:
            obj._adopt(faiss.deserialize_index_binary(arrays["faiss"]))
        except RuntimeError as exc:
            raise ValueError(f"faiss could not read the stored index: {str(exc).splitlines()[0]}") from None
        if obj._index.d != d:
            raise ValueError(f"stored faiss index has d={obj._index.d}, header says d={d}")
        return obj

    def _ids_bytes(self) -> int:
        return self.ntotal * 8


def faiss_range_search(index: Any, x: NDArray[np.uint8], radius: int) -> RangeResult:
    """Run faiss's ``< radius`` range search as annbin's ``<= radius``."""
    # a radius past d bits matches everything; clipping keeps radius + 1 inside faiss's C int
    lims, D, I = index.range_search(x, min(radius, index.d) + 1)
    return lims.astype(np.int64), D.astype(np.int32), I.astype(np.int64)
