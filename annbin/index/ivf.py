"""Approximate Hamming kNN with inverted lists: faiss's ``IndexBinaryIVF`` (binary k-means)."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import as_codes, check_int
from annbin._training import TRAIN_POINTS_PER_LIST, default_nlist
from annbin.index._faiss import (
    FaissBackedIndex,
    InvertedListCodes,
    faiss_range_search,
    ivf_ids,
    ivf_params,
    train_on_sample,
)
from annbin.index.base import BinaryIndex, RangeResult, SearchResult
from annbin.index.registry import register


@register
class IVFIndex(FaissBackedIndex):
    """Binary IVF on a bare ``faiss.IndexBinaryIVF``; approximate.

    Parameters
    ----------
    d : int
        Code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    nlist : int or None
        Number of inverted lists (k-means centroids); ``None`` picks ``default_nlist(n)`` from the
        size of the first ``add``.
    nprobe : int
        Lists visited per query, a search parameter (``nprobe >= nlist`` is exhaustive); a call's
        ``params=`` reach faiss as ``SearchParametersIVF``, so concurrent searches may differ.

    Notes
    -----
    Training: the index is untrained (``is_trained`` False) until ``train(codes)`` is called or
    the first ``add``, which trains k-means on a seeded random sample of at most
    ``64 * nlist`` of its codes (faiss converts training codes to floats, so a large batch is
    subsampled first). That first batch must hold at least ``nlist`` codes. Later adds are only
    assigned to lists: add a representative batch first. ``reset`` keeps the training.
    Supports ``remove_ids`` and ``range_search`` (over the ``nprobe`` lists visited, so it may
    miss items).

    ``get_codes`` finds each id's list and offset through a map built on first use (4-16 bytes
    per code, plus 8 per list) and reads every touched list through a zero-copy view: about 10 us
    per list touched on top of the gather, so a batch touching all lists of a 1M index costs tens
    of ms (see ``InvertedListCodes``), no extra copy of the codes.

    Unlike flat and HNSW this variant is not wrapped in ``IndexBinaryIDMap2``: the IVF stores
    user ids in its lists itself, and faiss's IDMap ``remove_ids`` assumes an inner index that
    renumbers like a flat one, which corrupts the id map around an IVF.
    """

    variant = "ivf"
    exact = False
    build_params = ("nlist",)
    search_params = ("nprobe",)

    def __init__(self, d: int, *, nlist: int | None = None, nprobe: int = 8) -> None:
        self.nlist = None if nlist is None else check_int(nlist, "nlist", minimum=1)
        self._nprobe = check_int(nprobe, "nprobe", minimum=1)
        BinaryIndex.__init__(self, d)
        self._inner = self._index = self._new_inner()

    def _new_inner(self) -> Any:
        inner = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(self.d), self.d, self.nlist or 1)
        inner.nprobe = self._nprobe
        return inner

    def _adopt(self, index: Any) -> None:
        if not isinstance(index, faiss.IndexBinaryIVF):
            raise ValueError(f"stored faiss index is {type(index).__name__}, expected IndexBinaryIVF")
        self._inner = self._index = index
        index.nprobe = self._nprobe

    @property
    def is_trained(self) -> bool:
        return bool(self._inner.is_trained) and self.nlist is not None

    def to_faiss(self) -> Any:
        """The underlying ``faiss.IndexBinaryIVF`` (shared, not copied); it holds annbin's ids."""
        return self._index

    def get_ids(self) -> NDArray[np.int64]:
        return ivf_ids(self._inner)

    def _build_code_map(self) -> InvertedListCodes:
        return InvertedListCodes(self._inner, self.get_ids())

    def train(self, codes: NDArray[np.uint8]) -> None:
        """Train the lists on codes ``(n, d // 8)`` uint8 (all of them; no subsampling)."""
        codes = as_codes(codes, self.code_size)
        if self.ntotal:
            raise ValueError(f"cannot retrain an IVF index holding {self.ntotal} codes; reset() it first")
        self._train(codes, None)

    def _train(self, codes: NDArray[np.uint8], cap: int | None) -> None:
        if self.nlist is None:
            self.nlist = default_nlist(codes.shape[0])
            self._inner = self._index = self._new_inner()
        train_on_sample(self._index, codes, cap)

    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        if not self.is_trained:
            nlist = self.nlist or default_nlist(codes.shape[0])
            self._train(codes, nlist * TRAIN_POINTS_PER_LIST)
        super()._add(codes, ids)

    def get_params(self) -> dict[str, Any]:
        return {"nlist": self.nlist}

    def get_search_params(self) -> dict[str, Any]:
        return {"nprobe": int(self._inner.nprobe)}

    def _check_search_value(self, name: str, value: Any) -> Any:
        return check_int(value, name, minimum=1)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        if "nprobe" in params:
            self._nprobe = params["nprobe"]
            self._inner.nprobe = self._nprobe

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        return self._faiss_search(x, k, ivf_params(self._effective_params()["nprobe"]))

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        return faiss_range_search(self._index, x, radius)

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def memory_bytes(self) -> int:
        # codes and ids in the lists, plus the centroids
        return self.ntotal * (self.code_size + 8) + (self.nlist or 0) * self.code_size + self._code_map_bytes()
