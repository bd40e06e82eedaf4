"""Datasets: float base vectors, float queries, a metric, and exact float ground truth.

A ``Dataset`` gives ``get_database()`` ``(n, dim)`` float32, ``get_queries()`` ``(nq, dim)``
float32 and ``get_groundtruth(k)``: the exact float kNN ``(D, I)``, ``(nq, k)`` float32 and int64,
computed with faiss (``IndexFlatIP`` / ``IndexFlatL2``, blocked over queries and database) and
cached on disk. Metric ``"ip"``: D are inner products, descending (cosine where the vectors are
normalized); ``"l2"``: D are squared Euclidean distances, ascending.

The cache (``cache_dir()``) holds ``gt-<fingerprint>-<metric>-k<K>.npz``, ``K = max(k, 100)``, so
one file serves every k up to 100; the fingerprint hashes the data, so a changed dataset gets a
new key, and a file failing its checks is recomputed. ``Dataset.gt_source`` says where the last
``get_groundtruth`` came from.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_metric
from annbin.bench import formats as _formats
from annbin.bench.groundtruth import cache_dir, float_knn, read_cached, scores_for_ids, write_cached

__all__ = ["GT_MIN_K", "ArrayDataset", "Dataset"]

GT_MIN_K = 100  # cache at least this many neighbours so one file serves k = 1..100


class Dataset(ABC):
    """Base class: subclasses implement ``_load() -> (base, queries)`` (any numeric dtype).

    Arrays are loaded once, on first use, checked (2-D, same dim, finite) and kept as read-only
    float32, normalized when ``normalize`` is set.
    """

    name: str = "dataset"
    metric: str = "l2"
    description: str = ""
    normalize: bool = False

    def __init__(self) -> None:
        self._base: NDArray[np.float32] | None = None
        self._queries: NDArray[np.float32] | None = None
        self._fingerprint: str | None = None
        self.gt_source: str | None = None  # "file", "cache", "computed" or "recomputed" (bad cache)
        self._gt_ids: NDArray[Any] | None = None  # neighbour ids shipped with the data, (nq, K)

    @abstractmethod
    def _load(self) -> tuple[Any, Any]:
        """Read the raw ``(base, queries)`` arrays."""

    def load(self) -> Dataset:
        """Read and check the arrays now (else on first use); returns self."""
        if self._base is None:
            try:
                check_metric(self.metric)
            except ValueError as exc:
                raise ValueError(f"{self.name}: {exc}") from None
            base, queries = self._load()
            base = _formats.as_vectors(base, f"{self.name}: database")
            queries = _formats.as_vectors(queries, f"{self.name}: queries")
            if base.shape[1] != queries.shape[1]:
                raise ValueError(f"{self.name}: database has dim {base.shape[1]}, queries have dim {queries.shape[1]}")
            ids = self._gt_ids
            if ids is not None and (ids.ndim != 2 or ids.shape[0] != queries.shape[0] or ids.dtype.kind not in "iu"
                                    or ((ids < 0) | (ids >= base.shape[0])).any()):
                raise ValueError(f"{self.name}: its neighbour ids must be ({queries.shape[0]}, K) in "
                                 f"0..{base.shape[0] - 1}, got {ids.dtype} {ids.shape}")
            if self.normalize:
                base = _formats.normalize_rows(base, f"{self.name}: database")
                queries = _formats.normalize_rows(queries, f"{self.name}: queries")
            base.flags.writeable = queries.flags.writeable = False  # the fingerprint must stay true
            self._base, self._queries = base, queries
        return self

    def get_database(self) -> NDArray[np.float32]:
        """Base vectors, ``(n, dim)`` float32, read-only."""
        return self.load()._base  # type: ignore[return-value]

    def get_queries(self) -> NDArray[np.float32]:
        """Query vectors, ``(nq, dim)`` float32, read-only."""
        return self.load()._queries  # type: ignore[return-value]

    @property
    def n(self) -> int:
        return int(self.get_database().shape[0])

    @property
    def nq(self) -> int:
        return int(self.get_queries().shape[0])

    @property
    def dim(self) -> int:
        return int(self.get_database().shape[1])

    def fingerprint(self) -> str:
        """sha256 (hex) of the metric, shapes and float32 bytes of base and queries."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"annbin-dataset-v1\0" + self.metric.encode() + b"\0")
            for x in (self.get_database(), self.get_queries()):
                h.update(f"{x.shape[0]}x{x.shape[1]}:float32\0".encode())
                h.update(x.data)  # C-contiguous float32, hashed without a copy
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def groundtruth_cache_path(self, k: int) -> Path:
        """The cache file that holds (or will hold) the ground truth for ``k``."""
        return cache_dir() / f"gt-{self.fingerprint()[:32]}-{self.metric}-k{self._cache_k(k)}.npz"

    def _cache_k(self, k: int) -> int:
        return min(self.n, max(k, GT_MIN_K))

    def get_groundtruth(self, k: int, *, progress: bool = False) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact float kNN of the queries: ``(D, I)``, ``(nq, k)`` float32 and int64.

        ``ip``: inner products, descending; ``l2``: squared distances, ascending. Uses the
        file's own neighbours when it ships at least k of them, else the disk cache, else faiss.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n:
            raise ValueError(f"{self.name}: k must be an integer in 1..{self.n}, got {k!r}")
        k = int(k)
        ids = self._gt_ids
        if ids is not None and ids.shape[1] >= k:
            self.gt_source = "file"
            ids = np.ascontiguousarray(ids[:, :k], dtype=np.int64)
            return scores_for_ids(self.get_database(), self.get_queries(), ids, self.metric), ids
        path, K = self.groundtruth_cache_path(k), self._cache_k(k)
        cached = read_cached(path, fingerprint=self.fingerprint(), metric=self.metric, n=self.n, nq=self.nq, k=K)
        if cached is not None:
            self.gt_source = "cache"
            return np.ascontiguousarray(cached[0][:, :k]), np.ascontiguousarray(cached[1][:, :k])
        self.gt_source = "recomputed" if path.exists() else "computed"
        D, I = float_knn(self.get_database(), self.get_queries(), K, self.metric, progress=progress)
        write_cached(path, D, I, fingerprint=self.fingerprint(), metric=self.metric)
        return np.ascontiguousarray(D[:, :k]), np.ascontiguousarray(I[:, :k])

    def info(self) -> dict[str, Any]:
        """``{name, n, nq, dim, metric, description}`` (loads the data)."""
        return {"name": self.name, "n": self.n, "nq": self.nq, "dim": self.dim,
                "metric": self.metric, "description": self.description}

    def __repr__(self) -> str:
        shape = f"n={self.n}, nq={self.nq}, dim={self.dim}, " if self._base is not None else ""
        return f"{type(self).__name__}({self.name!r}, {shape}metric={self.metric!r})"


class ArrayDataset(Dataset):
    """A dataset over arrays already in memory: ``base`` ``(n, dim)``, ``queries`` ``(nq, dim)``."""

    def __init__(self, base: NDArray[Any], queries: NDArray[Any], *, metric: str = "l2",
                 normalize: bool = False, name: str = "arrays", description: str = "") -> None:
        super().__init__()
        self.name, self.metric, self.normalize, self.description = name, metric, normalize, description
        self._arrays: tuple[Any, Any] | None = (base, queries)

    def _load(self) -> tuple[Any, Any]:
        arrays, self._arrays = self._arrays, None  # keep no second copy once loaded
        return arrays  # type: ignore[return-value]
