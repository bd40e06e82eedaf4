"""Peer libraries' indexes in annbin's float shape, so ``annbin bench`` runs them beside annbin's.

Each is a ``FloatIndex`` built from a spec string (``make_float_index``), searched with faiss's
float convention (``D`` float32 ``(nq, k)``: scores descending for ``"ip"``, squared L2 distances
ascending for ``"l2"``; ``I`` int64; missing results ``-1`` with ``D = -inf`` / ``+inf``):

- ``faiss-hnsw-sq8:M=16,ef_construction=100,ef=64`` (faiss-cpu): faiss ``IndexHNSWSQ``, 8-bit codes;
- ``usearch:dtype=i8,M=16,ef_construction=128,ef=64`` (usearch): usearch's HNSW over int8 vectors;
- ``scann:num_leaves=0,avq_threshold=0.2,leaves_to_search=20,reorder=100`` (scann): a tree of
  sqrt(n) leaves (``num_leaves=0``), anisotropic hashing, exact reorder: ann-benchmarks' config;
- ``rabitqlib-hnsw:M=16,ef_construction=100,nbits=5,ef_search=64`` (rabitqlib): the RaBitQ
  authors' HNSW over RaBitQ codes, ranked by their estimates alone (no float rescoring);
- ``rabitqlib-symqg:max_degree=32,ef_construction=200,ef_search=48`` (rabitqlib): SymphonyQG.
  Both are ``annbin.embed.rqlib``'s first stages, run as a rabitqlib user runs them.

Each imports its library in ``__init__``; without it, ``MissingExtraError`` (an ``ImportError``)
names ``pip install 'annbin[peers]'``, and ``annbin bench`` skips the row with one line.

``"ip"`` on the usearch peer ranks by cosine, which equals inner-product order only on unit
vectors (what ``annbin bench`` gives for ``"ip"`` data): it checks that added vectors are unit
length. ScaNN builds from all vectors at once: it holds added vectors until the first search
(``annbin bench`` times that search as part of the build) and cannot add after that
(``ValueError``); SymphonyQG builds at its first add and cannot add after it.
``num_threads`` (-1 = all cores) sets build and search threads; faiss follows OpenMP.
``memory_bytes`` is each library's serialized size: a lower bound on its RAM, as for hnswlib.
"""

from __future__ import annotations

import math
import tempfile
import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_int, resolve_threads
from annbin._extras import require
from annbin.embed.float_base import FloatIndex, FloatResult
from annbin.embed.rqlib import RQHNSW, RQSymQG
from annbin.index.registry import register

__all__ = ["FaissHNSWSQ8", "RaBitQLibHNSW", "RaBitQLibSymQG", "ScaNN", "USearch"]

PEERS_EXTRA = "peers"
_UNIT_TOL = 1e-3  # |norm^2 - 1| allowed where "ip" relies on unit vectors (float32 rounding of normalized data)


def _import(module: str, cls: type[FloatIndex]) -> Any:
    """The peer's library, or ``MissingExtraError``: "... needs <dist>: pip install 'annbin[peers]'"."""
    return require(module, package=str(cls.peer), extra=PEERS_EXTRA, purpose=f"the {cls.variant!r} peer index")



def _ordered(D: NDArray[Any], I: NDArray[Any], metric: str, valid: NDArray[np.bool_] | None = None) -> FloatResult:
    """Results as faiss gives them: float32 D sorted (scores descending / distances ascending),
    int64 I, ``-1`` where ``valid`` is False (those sort last)."""
    D = np.asarray(D, dtype=np.float32)
    I = np.asarray(I).astype(np.int64)
    worst = -np.inf if metric == "ip" else np.inf
    bad = ~np.isfinite(D) if valid is None else ~valid | ~np.isfinite(D)
    D, I = np.where(bad, worst, D), np.where(bad, -1, I)
    order = np.argsort(-D if metric == "ip" else D, axis=1, kind="stable")
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def _check_unit(x: NDArray[np.float32], variant: str) -> None:
    norms = np.einsum("ij,ij->i", x, x)
    if np.abs(norms - 1.0).max() > _UNIT_TOL:
        raise ValueError(f"{variant!r} with metric 'ip' ranks by distance, which is inner-product order only for unit vectors: normalize them")


class _Peer(FloatIndex):
    """Search parameters as a dict of positive ints; a lock for libraries whose beam is index state."""

    exact = False
    #: the library that runs it, as ``annbin bench`` rows name it (``"library"``)
    library: ClassVar[str] = ""

    def __init__(self, dim: int, *, metric: str, search: dict[str, Any]) -> None:
        super().__init__(dim, metric=metric)
        self._lock = threading.Lock()
        self._search_values: dict[str, Any] = {}
        self.set_search_params(**search)

    def get_search_params(self) -> dict[str, Any]:
        return dict(self._search_values)

    def _check_search_value(self, name: str, value: Any) -> Any:
        return check_int(value, name, minimum=1)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        self._search_values.update(params)


class _BuiltOnce(_Peer):
    """Libraries that build from all vectors at once: vectors are held until the first search."""

    def __init__(self, dim: int, *, metric: str, search: dict[str, Any]) -> None:
        super().__init__(dim, metric=metric, search=search)
        self._held: list[NDArray[np.float32]] = []
        self._n = 0
        self._lib: Any = None
        self._bytes, self._bytes_at = 0, -1

    @property
    def ntotal(self) -> int:
        return self._n

    def check_add(self, n: int) -> None:
        if self._lib is not None and n:
            raise ValueError(f"{self.variant!r} builds once, from every vector added before its first search, and is built: make a new index to add more")

    def _add(self, x: NDArray[np.float32]) -> None:
        self.check_add(x.shape[0])
        self._held.append(np.array(x, dtype=np.float32))  # a copy: the caller may reuse its array
        self._n += x.shape[0]

    def _built(self) -> Any:
        with self._lock:
            if self._lib is None:
                data = np.concatenate(self._held)
                self._held = []
                self._lib = self._build(data)
            return self._lib

    @abstractmethod
    def _build(self, data: NDArray[np.float32]) -> Any:
        """The library's index over all held vectors."""

    def _save(self, lib: Any, path: Path) -> None:
        """Write the built library index to ``path`` (a file or a new directory)."""
        lib.save(str(path))

    def memory_bytes(self) -> int:
        """Size of what the library saves (cached per ``ntotal``); builds the index if it is not built."""
        if self._bytes_at != self.ntotal:
            lib = self._built()
            with tempfile.TemporaryDirectory(prefix="annbin-peer-") as tmp:
                path = Path(tmp) / "index"
                self._save(lib, path)
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                self._bytes, self._bytes_at = sum(p.stat().st_size for p in files), self.ntotal
        return self._bytes


@register
class FaissHNSWSQ8(_Peer):
    """faiss ``IndexHNSWSQ`` over 8-bit scalar-quantized vectors (trained on the first add)."""

    variant = "faiss-hnsw-sq8"
    peer = "faiss-cpu"
    library = "faiss"
    build_params = ("M", "ef_construction")
    search_params = ("ef",)

    def __init__(self, dim: int, *, metric: str = "ip", M: int = 16, ef_construction: int = 100, ef: int = 64) -> None:
        faiss = _import("faiss", type(self))
        self.M = check_int(M, "M", minimum=2)
        self.ef_construction = check_int(ef_construction, "ef_construction", minimum=1)
        kind = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        super().__init__(dim, metric=metric, search={"ef": ef})
        self._faiss = faiss
        self._index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_8bit, self.M, kind)
        self._index.hnsw.efConstruction = self.ef_construction

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def get_params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction}

    def _add(self, x: NDArray[np.float32]) -> None:
        if not self._index.is_trained:
            self._index.train(x)  # per-dimension min/max of the 8-bit codes
        self._index.add(x)

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        params = self._faiss.SearchParametersHNSW(efSearch=max(self._effective_params()["ef"], k))
        D, I = self._index.search(q, k, params=params)
        return _ordered(D, I, self.metric, I >= 0)

    def memory_bytes(self) -> int:
        """faiss's serialized size: 8-bit codes, ranges, graph links."""
        return int(self._faiss.serialize_index(self._index).size)


@register
class USearch(_Peer):
    """usearch's HNSW. ``dtype``: storage (``i8``, ``f16``, ``f32``); ``M``: connectivity;
    ``ef_construction``: expansion_add; ``ef``: expansion_search (index state in usearch: a call
    sets it under a lock, so searches of one index take turns, each multithreaded).

    ``"ip"`` runs usearch's ``cos`` (unit vectors checked): ``D = 1 - distance``. ``"l2"`` runs
    ``l2sq``; with ``i8`` usearch scales by 127 and clips, so components must lie in [-1, 1] and
    ``D`` is usearch's distance / 127².
    """

    variant = "usearch"
    peer = "usearch"
    library = "usearch"
    build_params = ("dtype", "M", "ef_construction")
    search_params = ("ef",)

    def __init__(self, dim: int, *, metric: str = "ip", dtype: str = "i8", M: int = 16, ef_construction: int = 128, ef: int = 64) -> None:
        usearch_index = _import("usearch.index", type(self))
        if dtype not in ("i8", "f16", "f32"):
            raise ValueError(f"dtype must be 'i8', 'f16' or 'f32', got {dtype!r}")
        self.dtype, self.M = dtype, check_int(M, "M", minimum=2)
        self.ef_construction = check_int(ef_construction, "ef_construction", minimum=1)
        super().__init__(dim, metric=metric, search={"ef": ef})
        self._index = usearch_index.Index(ndim=self.dim, metric="cos" if metric == "ip" else "l2sq", dtype=dtype,
                                          connectivity=self.M, expansion_add=self.ef_construction, expansion_search=ef)

    @property
    def ntotal(self) -> int:
        return len(self._index)

    def get_params(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "M": self.M, "ef_construction": self.ef_construction}

    def _add(self, x: NDArray[np.float32]) -> None:
        if self.metric == "ip":
            _check_unit(x, self.variant)
        elif self.dtype == "i8" and np.abs(x).max() > 1.0:
            raise ValueError("usearch with dtype 'i8' and metric 'l2' clips components outside [-1, 1]: use dtype=f16 or f32")
        n0 = self.ntotal
        self._index.add(np.arange(n0, n0 + x.shape[0], dtype=np.uint64), x, threads=resolve_threads(self.num_threads))

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        with self._lock:
            before = self._index.expansion_search
            self._index.expansion_search = max(self._effective_params()["ef"], k)
            try:
                m = self._index.search(q, k, threads=resolve_threads(self.num_threads))
            finally:
                self._index.expansion_search = before
        # one query comes back as ``Matches`` (1-D, found results only), more as ``BatchMatches``
        keys, dist = np.atleast_2d(m.keys), np.atleast_2d(m.distances)
        counts = np.atleast_1d(m.counts) if hasattr(m, "counts") else np.full(keys.shape[0], keys.shape[1])
        keys, dist = np.pad(keys, ((0, 0), (0, k - keys.shape[1]))), np.pad(dist, ((0, 0), (0, k - dist.shape[1])))
        D = 1.0 - dist if self.metric == "ip" else dist / (127.0**2 if self.dtype == "i8" else 1.0)
        return _ordered(D, keys, self.metric, np.arange(k)[None, :] < np.asarray(counts)[:, None])

    def memory_bytes(self) -> int:
        """usearch's serialized length: vectors and graph (its ``memory_usage`` counts reserved capacity)."""
        return int(self._index.serialized_length)


@register
class ScaNN(_BuiltOnce):
    """ScaNN as ann-benchmarks configures it: a k-means tree of ``num_leaves`` (0: round(sqrt(n))),
    anisotropic hashing with 2 dimensions per 4-bit block (``avq_threshold``), exact reorder of
    the ``reorder`` best. Search: ``leaves_to_search``, ``reorder``. ``"ip"`` is dot product."""

    variant = "scann"
    peer = "scann"
    library = "scann"
    build_params = ("num_leaves", "avq_threshold")
    search_params = ("leaves_to_search", "reorder")

    def __init__(self, dim: int, *, metric: str = "ip", num_leaves: int = 0, avq_threshold: float = 0.2,
                 leaves_to_search: int = 20, reorder: int = 100) -> None:
        self._scann = _import("scann", type(self))
        self.num_leaves = check_int(num_leaves, "num_leaves", minimum=0)
        if not 0.0 < float(avq_threshold) <= 1.0:
            raise ValueError(f"avq_threshold must be in (0, 1], got {avq_threshold!r}")
        self.avq_threshold = float(avq_threshold)
        super().__init__(dim, metric=metric, search={"leaves_to_search": leaves_to_search, "reorder": reorder})

    def get_params(self) -> dict[str, Any]:
        return {"num_leaves": self.num_leaves, "avq_threshold": self.avq_threshold}

    def _build(self, data: NDArray[np.float32]) -> Any:
        n = data.shape[0]
        leaves = min(self.num_leaves or max(1, round(math.sqrt(n))), n)
        builder = self._scann.scann_ops_pybind.builder(data, 10, "dot_product" if self.metric == "ip" else "squared_l2")
        builder = builder.tree(num_leaves=leaves, num_leaves_to_search=min(self._search_values["leaves_to_search"], leaves),
                               training_sample_size=n, spherical=self.metric == "ip", quantize_centroids=True)
        builder = builder.score_ah(2, anisotropic_quantization_threshold=self.avq_threshold).reorder(self._search_values["reorder"])
        builder.set_n_training_threads(resolve_threads(self.num_threads))
        searcher = builder.build()
        searcher.set_num_threads(resolve_threads(self.num_threads))
        return searcher

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        searcher, p = self._built(), self._effective_params()
        run = searcher.search_batched if resolve_threads(self.num_threads) == 1 else searcher.search_batched_parallel
        I, D = run(q, final_num_neighbors=k, pre_reorder_num_neighbors=max(p["reorder"], k), leaves_to_search=p["leaves_to_search"])
        return _ordered(D, I, self.metric)  # ScaNN pads missing results with NaN

    def _save(self, lib: Any, path: Path) -> None:
        """ScaNN's serialized artifacts (``memory_bytes``): float dataset (for reorder), AH codes, codebook, tree."""
        path.mkdir()
        lib.serialize(str(path))


@register
class RaBitQLibHNSW(RQHNSW):
    """The RaBitQ authors' HNSW (rabitqlib) over ``nbits``-bit RaBitQ codes, ranked by its
    estimates alone: what a rabitqlib user gets without float rescoring. The same index as
    annbin's ``rq-hnsw`` first stage (``annbin.embed.rqlib``), at 5 bits by default and not rescored."""

    variant = "rabitqlib-hnsw"
    peer = "rabitqlib"
    library = "rabitqlib"
    rescorable = False

    def __init__(self, dim: int, *, metric: str = "ip", M: int = 16, ef_construction: int = 100, nbits: int = 5,
                 clusters: int = 16, seed: int = 100, ef_search: int = 64) -> None:
        super().__init__(dim, metric=metric, M=M, ef_construction=ef_construction, nbits=nbits, clusters=clusters,
                         seed=seed, ef_search=ef_search)


@register
class RaBitQLibSymQG(RQSymQG):
    """SymphonyQG (rabitqlib): a graph of ``max_degree`` whose neighbours' RaBitQ codes sit with
    each vertex, ranked by its own estimates (annbin's ``rq-symqg``, not rescored). Built once."""

    variant = "rabitqlib-symqg"
    peer = "rabitqlib"
    library = "rabitqlib"
    rescorable = False
