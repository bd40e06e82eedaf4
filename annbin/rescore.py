"""Two-phase search: Hamming candidates from any ``BinaryIndex``, reranked by float scores.

``RescoredIndex(inner, oversample=4, ...)`` asks ``inner`` for ``k * oversample`` candidates by
Hamming distance, scores them against the float query and returns the best ``k``:

- ``mode="float"``: score = float query . float document vector (``metric="ip"``), or squared L2
  distance (``metric="l2"``). The vectors are a ``(n, dim)`` float array in RAM, or a path to a
  ``.npy`` file opened with ``np.load(mmap_mode="r")`` (or an ``np.memmap``): then only the codes
  live in RAM and the operating system pages in the few rows each query touches.
- ``mode="asymmetric"``: score = float query . ±1 document bits (bit 1 -> +1, bit 0 -> -1, the
  first ``dim`` bits of each code in annbin's MSB-first order; see ``annbin.quantize``). No float
  documents; it needs the documents' codes (``codes=``, RAM or ``.npy`` path), since not every
  index can hand back its stored codes.

**Rows are ids**: the document with id ``i`` in ``inner`` is row ``i`` of ``vectors`` / ``codes``
(so add to ``inner`` with the default sequential ids, or with ids that are row numbers).
``BinaryEmbeddingIndex`` keeps a row -> user id map on top of this, for arbitrary ids.

Results follow faiss's float conventions: ``(scores, ids)``, float32 ``(nq, k)`` and int64
``(nq, k)``; for ``"ip"`` scores descending, for ``"l2"`` distances ascending; ties by smaller id;
missing results ``id = -1`` with score ``-inf`` (``"ip"``) or ``+inf`` (``"l2"``). Queries are
float ``(nq, dim)`` and binarized inside with the same ``thresholds`` as the documents.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import as_codes, as_floats, check_int, check_k
from annbin.index.base import BinaryIndex
from annbin.quantize import binarize, code_size_for

Mode = Literal["float", "asymmetric"]
Metric = Literal["ip", "l2"]
ScoreResult = tuple[NDArray[np.float32], NDArray[np.int64]]

MODES: tuple[str, ...] = ("float", "asymmetric")
METRICS: tuple[str, ...] = ("ip", "l2")
_BLOCK = 1 << 16  # gathered values per block of queries: 256 KiB of float32 stays in cache

__all__ = ["RescoredIndex", "open_store", "MODES", "METRICS"]


def open_store(store: Any, *, name: str, kind: Literal["float", "codes"]) -> np.ndarray:
    """A document store: a 2-D array, or a ``.npy`` path opened memory-mapped (read-only).

    ``kind="float"``: float16/32/64 ``(n, dim)``; ``kind="codes"``: uint8 ``(n, code_size)``.
    In-RAM float arrays are checked for NaN/inf; memory-mapped ones are not (that would read the
    whole file).
    """
    if isinstance(store, (str, os.PathLike)):
        try:
            store = np.load(os.fspath(store), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot open {name} file {os.fspath(store)!r} as a .npy array: {exc}") from None
    if not isinstance(store, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a path to a .npy file, got {type(store).__name__}")
    if kind == "codes":
        return as_codes(store, name=name) if not isinstance(store, np.memmap) else _check_mmap(store, np.uint8, name)
    if isinstance(store, np.memmap):
        return _check_mmap(store, np.floating, name)
    return as_floats(store, name=name)


def _check_mmap(arr: np.memmap, dtype: Any, name: str) -> np.memmap:
    if not np.issubdtype(arr.dtype, dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name if dtype is np.uint8 else 'float'}, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {arr.shape}")
    return arr


def _ram_bytes(arr: np.ndarray | None) -> int:
    if arr is None or isinstance(arr, np.memmap):
        return 0
    return int(arr.nbytes)


class RescoredIndex:
    """Hamming candidates from ``inner``, reranked by float scores (see the module docstring).

    ``inner``: any ``BinaryIndex`` whose ids are row numbers of the store. ``oversample``:
    candidates per result (``k * oversample`` are fetched; >= 1). ``vectors``: float documents for
    ``mode="float"``; ``codes``: uint8 documents for ``mode="asymmetric"``; each an array or a
    ``.npy`` path (memory-mapped). ``thresholds``: what the documents were binarized with (None =
    0.0, a scalar, or ``(dim,)``). ``dim``: float dimension, needed only in asymmetric mode when
    ``thresholds`` does not give it (default ``inner.d``).
    """

    def __init__(
        self,
        inner: BinaryIndex,
        *,
        oversample: int = 4,
        vectors: ArrayLike | str | os.PathLike[str] | None = None,
        codes: NDArray[np.uint8] | str | os.PathLike[str] | None = None,
        mode: Mode = "float",
        thresholds: ArrayLike | None = None,
        metric: Metric = "ip",
        dim: int | None = None,
    ) -> None:
        if not isinstance(inner, BinaryIndex):
            raise TypeError(f"inner must be an annbin BinaryIndex (use annbin.from_faiss for faiss ones), got {type(inner).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if mode == "asymmetric" and metric != "ip":
            raise ValueError(f"asymmetric mode scores by inner product: metric must be 'ip', got {metric!r}")
        self.inner, self.mode, self.metric = inner, mode, metric
        self.oversample = check_int(oversample, "oversample", minimum=1)
        self._vectors: np.ndarray | None = None
        self._codes: np.ndarray | None = None
        t = None if thresholds is None else np.asarray(thresholds)
        if mode == "float":
            if vectors is None:
                raise ValueError("mode='float' needs vectors= (an (n, dim) float array or a .npy path)")
            self._vectors = open_store(vectors, name="vectors", kind="float")
            self.dim = self._vectors.shape[1]
            if dim is not None and int(dim) != self.dim:
                raise ValueError(f"dim mismatch: dim={dim} but vectors have shape {self._vectors.shape}")
        else:
            if codes is None:
                raise ValueError("mode='asymmetric' needs codes= (the documents' (n, d // 8) uint8 codes, row = id)")
            self._codes = open_store(codes, name="codes", kind="codes")
            if self._codes.shape[1] != inner.code_size:
                raise ValueError(f"codes width mismatch: expected (n, {inner.code_size}), got shape {self._codes.shape}")
            self.dim = check_int(dim, "dim", minimum=1) if dim is not None else (t.shape[0] if t is not None and t.ndim == 1 else inner.d)
        if code_size_for(self.dim) != inner.code_size:
            raise ValueError(
                f"float dimension {self.dim} gives {code_size_for(self.dim) * 8}-bit codes, but the index has d={inner.d} bits"
            )
        binarize(np.zeros((1, self.dim), np.float32), t)  # validates thresholds: shape, dtype, finite
        self.thresholds = None if t is None else t.astype(np.float32)
        if inner.ntotal:
            self._check_rows(inner.get_ids())

    # --- properties ------------------------------------------------------------------------
    @property
    def d(self) -> int:
        """Code length in bits."""
        return self.inner.d

    @property
    def ntotal(self) -> int:
        return self.inner.ntotal

    def __len__(self) -> int:
        return self.ntotal

    @property
    def search_params(self) -> tuple[str, ...]:
        return ("oversample",) + tuple(self.inner.search_params)

    @property
    def spec(self) -> str:
        return f"{self.inner.spec}+rescore:mode={self.mode},oversample={self.oversample}"

    def __repr__(self) -> str:
        return f"<RescoredIndex {self.spec} dim={self.dim} ntotal={self.ntotal}>"

    @property
    def _store(self) -> np.ndarray:
        store = self._vectors if self.mode == "float" else self._codes
        if store is None:  # pragma: no cover - guarded in __init__
            raise RuntimeError("no document store")
        return store

    def memory_bytes(self) -> int:
        """RAM held: the inner index plus in-RAM vectors / codes (memory-mapped ones count 0)."""
        t = 0 if self.thresholds is None else int(self.thresholds.nbytes)
        return int(self.inner.memory_bytes()) + _ram_bytes(self._store) + t

    def disk_bytes(self) -> int:
        """Bytes of the document store that stay on disk (memory-mapped), else 0."""
        store = self._store
        return int(store.nbytes) if _ram_bytes(store) == 0 else 0

    # --- parameters ------------------------------------------------------------------------
    def set_search_params(self, **params: Any) -> None:
        """``oversample`` and the inner index's search parameters (e.g. ``ef_search``)."""
        rest = dict(params)
        if "oversample" in rest:
            oversample = check_int(rest.pop("oversample"), "oversample", minimum=1)
        else:
            oversample = self.oversample
        self.inner.set_search_params(**rest)
        self.oversample = oversample

    def get_search_params(self) -> dict[str, Any]:
        return {"oversample": self.oversample, **self.inner.get_search_params()}

    # --- search ----------------------------------------------------------------------------
    def search(self, x: ArrayLike, k: int, *, params: dict[str, Any] | None = None) -> ScoreResult:
        """Top ``k`` for float queries ``(nq, dim)``: ``(scores float32, ids int64)``, ``(nq, k)``.

        ``params`` sets search parameters (``oversample``, inner ones) for this call only.
        """
        q = as_floats(x, self.dim, name="queries")
        k = check_k(k)
        saved = None
        if params:
            saved = self.get_search_params()
            self.set_search_params(**params)
        try:
            _, cand = self.inner.search(binarize(q, self.thresholds), k * self.oversample)
        finally:
            if saved is not None:
                self.set_search_params(**saved)
        return self._rerank(q, cand, k)

    def rerank(self, x: ArrayLike, candidates: ArrayLike, k: int) -> ScoreResult:
        """Score candidate ids ``(nq, c)`` int (``-1`` = none) for float queries ``(nq, dim)``.

        Returns the best ``k`` as ``search`` does; for callers that fetch candidates themselves.
        """
        q = as_floats(x, self.dim, name="queries")
        cand = np.asarray(candidates)
        if not np.issubdtype(cand.dtype, np.integer):
            raise TypeError(f"candidates must be integer ids, got dtype {cand.dtype}")
        if cand.ndim != 2 or cand.shape[0] != q.shape[0]:
            raise ValueError(f"candidates must have shape ({q.shape[0]}, c), got {cand.shape}")
        return self._rerank(q, cand.astype(np.int64, copy=False), check_k(k))

    def _rerank(self, q: NDArray[np.floating], cand: NDArray[np.int64], k: int) -> ScoreResult:
        valid = cand >= 0
        if valid.any():
            self._check_rows(cand[valid])
        scores = self._scores(q.astype(np.float32, copy=False), np.where(valid, cand, 0))
        worst = np.float32(-np.inf) if self.metric == "ip" else np.float32(np.inf)
        scores = np.where(valid, scores, worst)
        key = -scores if self.metric == "ip" else scores
        order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), key), axis=-1)[:, :k]
        S = np.take_along_axis(scores, order, axis=1)
        I = np.take_along_axis(cand, order, axis=1)
        if S.shape[1] < k:  # fewer candidates than k (only when k * oversample was clipped)
            pad = k - S.shape[1]
            S = np.pad(S, ((0, 0), (0, pad)), constant_values=worst)
            I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
        return S.astype(np.float32, copy=False), I.astype(np.int64, copy=False)

    def _scores(self, q: NDArray[np.float32], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        nq, c = rows.shape
        out = np.empty((nq, c), np.float32)
        step = max(1, _BLOCK // max(1, c * self.dim))
        store = self._store
        qsum = q.sum(axis=1, dtype=np.float32)
        for lo in range(0, nq, step):
            hi = min(nq, lo + step)
            gathered = store[rows[lo:hi].ravel()]  # a memmap reads only these rows
            if self.mode == "float":
                docs = np.asarray(gathered, dtype=np.float32).reshape(hi - lo, c, self.dim)
                if self.metric == "ip":
                    out[lo:hi] = (docs @ q[lo:hi, :, None])[..., 0]  # batched matmul: BLAS, unlike einsum
                else:
                    diff = docs - q[lo:hi, None, :]
                    out[lo:hi] = np.einsum("qcd,qcd->qc", diff, diff)
            else:
                # q . (2b - 1) = 2 (q . b) - sum(q), with b the 0/1 bits
                bits = np.unpackbits(np.asarray(gathered), axis=1, count=self.dim).astype(np.float32)
                qb = (bits.reshape(hi - lo, c, self.dim) @ q[lo:hi, :, None])[..., 0]
                out[lo:hi] = 2.0 * qb - qsum[lo:hi, None]
        return out

    def _check_rows(self, ids: NDArray[np.int64]) -> None:
        n = self._store.shape[0]
        top = int(ids.max()) if ids.size else -1
        if top >= n:
            what = "vectors" if self.mode == "float" else "codes"
            raise ValueError(
                f"id {top} has no row in {what} ({n} rows): ids of the inner index must be row numbers of {what}"
            )
