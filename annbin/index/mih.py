"""Exact multi-index hashing (work in progress: a correct brute-force placeholder for now)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin.index.base import BinaryIndex, RangeResult, SearchResult


class MIHIndex(BinaryIndex):
    """Exact Hamming kNN by multi-index hashing (placeholder: brute force)."""

    variant = "mih"
    exact = True
    build_params = ("m",)
    search_params = ()

    def __init__(self, d: int, *, m: int | None = None) -> None:
        super().__init__(d)
        self.m = m
        self._codes = np.empty((0, self.code_size), np.uint8)
        self._ids = np.empty(0, np.int64)

    @property
    def ntotal(self) -> int:
        return int(self._ids.size)

    def get_ids(self) -> NDArray[np.int64]:
        return self._ids.copy()

    def memory_bytes(self) -> int:
        return int(self._codes.nbytes + self._ids.nbytes)

    def get_params(self) -> dict[str, Any]:
        return {"m": self.m}

    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        self._codes = np.concatenate([self._codes, codes])
        self._ids = np.concatenate([self._ids, ids])

    def _dist(self, x: NDArray[np.uint8]) -> NDArray[np.int32]:
        return np.bitwise_count(x[:, None, :] ^ self._codes[None]).sum(axis=2, dtype=np.int32)

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        dist = self._dist(x)
        order = np.lexsort((np.broadcast_to(self._ids, dist.shape), dist), axis=1)[:, :k]
        return np.take_along_axis(dist, order, axis=1), self._ids[order]

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        dist = self._dist(x)
        q, j = np.nonzero(dist <= radius)
        lims = np.zeros(x.shape[0] + 1, np.int64)
        lims[1:] = np.cumsum(np.bincount(q, minlength=x.shape[0]))
        return lims, dist[q, j], self._ids[j]

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        keep = ~np.isin(self._ids, ids)
        removed = int(keep.size - keep.sum())
        self._codes, self._ids = self._codes[keep], self._ids[keep]
        return removed

    def _reset(self) -> None:
        self._codes = np.empty((0, self.code_size), np.uint8)
        self._ids = np.empty(0, np.int64)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self._codes, "ids": self._ids}

    @classmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        obj = cls(d, **params)
        obj._codes, obj._ids = arrays["codes"], arrays["ids"]
        return obj
