"""First stages on ``rabitqlib``, the RaBitQ authors' library: HNSW and SymQG over RaBitQ codes.

Float vectors in, float queries in, faiss's float convention out (``annbin.embed.float_base``): ``D``
float32 ``(nq, k)``, *estimated* inner products descending (``"ip"``) or estimated squared L2
ascending (``"l2"``); ``I`` int64; missing ``I = -1``, ``D = -inf`` / ``+inf``. Both are
``rescorable``: ``BinaryEmbeddingIndex`` rescores their top ``k * oversample`` with the floats.

- ``"rq-hnsw:M=16,nbits=2,ef_construction=100,ef_search=48"``: ``RQHNSW``, rabitqlib's
  ``HnswIndex``: an HNSW graph walked with ``nbits``-bit extended-RaBitQ estimates (its own random
  rotation). Any number of adds, before and after searches; ``remove_ids`` marks deletions.
- ``"rq-symqg:max_degree=32,ef_construction=200,ef_search=48"``: ``RQSymQG``, rabitqlib's
  ``SymqgIndex``, the fastest graph measured here, built once from one ``add`` (about 2x the
  floats' RAM).

rabitqlib is imported on first use (``rabitqlib_available``); ``annbin.BinaryEmbeddingIndex``
falls back to faiss's ``rabitq-hnsw`` where it is missing. ``save`` embeds rabitqlib's own file in
annbin's checksummed format. Searches release the GIL and take ``ef`` per call, so one index
serves many threads; ``add``, ``remove_ids`` and ``reset`` must not run beside them.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import check_int, resolve_threads
from annbin._extras import require
from annbin._io import write_index_file
from annbin._progress import elapsed_bar
from annbin.embed.float_base import FloatIndex, FloatResult
from annbin.index.registry import register

__all__ = ["RQHNSW", "RQBase", "RQSymQG", "nearest_centroid", "rabitqlib_available"]

_log = logging.getLogger("annbin")
_SAMPLE = 16_384  # rows k-means sees: the centroids only centre RaBitQ's codes, a sample is plenty
_PROGRESS_ROWS = 100_000  # adds at least this big show an elapsed-time bar


def rabitqlib_available() -> bool:
    """True when ``rabitqlib`` imports here (a manylinux x86-64 wheel) and the CPU has the SIMD its
    kernels need (AVX2 and FMA, or AVX-512; its own message otherwise, at the first search)."""
    try:
        import rabitqlib  # noqa: F401
    except (ImportError, OSError):  # OSError: a wheel whose shared library cannot load here
        return False
    return _cpu_ok()


@functools.lru_cache(maxsize=4)  # read once a process, not at every BinaryEmbeddingIndex()
def _cpu_ok(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return True  # not Linux: rabitqlib ships no wheel there, so the import above already failed
    if flags is None:
        return True  # no x86 flags line (ARM: NEON is always there)
    return ("avx2" in flags and "fma" in flags) or "avx512f" in flags



class RQBase(FloatIndex):
    """Shared plumbing: rabitqlib metric, score conversion, file round trip through a temp file."""

    exact = False
    rescorable = True
    payload = "rabitqlib"
    default_oversample = 2  # 2-bit estimates rank well enough that 2 x k reaches the recall target (docs/defaults.md)
    search_params = ("ef_search",)
    _lib_class: ClassVar[str] = ""
    _min_dim: ClassVar[int] = 64  # rabitqlib's rotator's smallest size: smaller vectors are zero-padded
    num_threads = -1  # build threads (-1 = all cores); a search uses ``search_threads``
    search_threads = 1  # one query block per thread is the caller's choice (BinaryEmbeddingIndex)

    def __init__(self, dim: int, *, metric: str = "ip", **search: int) -> None:
        # fail at construction, not at the first add; a core dependency where its wheels exist
        require("rabitqlib", package="rabitqlib", extra="peers", purpose=f"{self.variant!r}")

        super().__init__(dim, metric=metric)
        self._index: Any = None
        self._lock = threading.Lock()  # add / remove / reset / save against each other
        self._size: tuple[int, int] | None = None  # (stored points, file bytes) of the last measure
        self.progress: bool | None = None  # None: a bar for adds of _PROGRESS_ROWS rows or more
        self.set_search_params(**search)

    @staticmethod
    def _check_nbits(nbits: int) -> int:
        nbits = check_int(nbits, "nbits", minimum=1)
        if nbits > 9:
            raise ValueError(f"nbits must be in 1..9 (rabitqlib's RaBitQ), got {nbits}")
        return nbits

    def _add(self, x: NDArray[np.float32]) -> None:
        """The first add builds the index from all its rows (``_build``), later ones grow it
        (``_grow``), under the lock and, from ``_PROGRESS_ROWS`` rows, an elapsed-time bar."""
        n, x = x.shape[0], self._pad(x)
        show = self.progress if self.progress is not None else n >= _PROGRESS_ROWS
        with self._lock, elapsed_bar(f"add {self.variant} ({n:,} vectors)", show):
            if self._index is None:
                self._index = self._build(x)
            else:
                self._grow(x)

    @abstractmethod
    def _build(self, x: NDArray[np.float32]) -> Any:
        """A new rabitqlib index over ``x`` (padded), the first add's rows."""

    @abstractmethod
    def _grow(self, x: NDArray[np.float32]) -> None:
        """Add ``x`` (padded) to the built index, or raise where the variant cannot grow."""

    def _check_search_value(self, name: str, value: Any) -> Any:
        return check_int(value, name, minimum=1)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        for name, value in params.items():
            setattr(self, name, value)

    def get_search_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.search_params}

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.num_points)

    @property
    def is_trained(self) -> bool:
        """False until the first ``add`` built the graph (give it all the data at once: one build
        is faster than a build and adds, and SymQG takes no later adds)."""
        return self._index is not None

    def _scores(self, q: NDArray[np.float32], dist: NDArray[np.float32]) -> NDArray[np.float32]:
        # rabitqlib's "ip" distance is 1 - <q, x>; its "l2" is the squared distance
        return (1.0 - dist).astype(np.float32) if self.metric == "ip" else dist.astype(np.float32, copy=False)

    @property
    def _lib_dim(self) -> int:
        return max(self.dim, self._min_dim)

    def _pad(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Zero columns up to rabitqlib's smallest dimension: inner products and L2 unchanged."""
        if x.shape[1] >= self._min_dim:
            return x
        return np.ascontiguousarray(np.pad(x, ((0, 0), (0, self._min_dim - x.shape[1]))))

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        ef = max(self._effective_params()["ef_search"], k)
        ids, dist = self._lib_search(self._pad(q), k, ef)
        I = ids.astype(np.int64)
        I[ids == np.iinfo(np.uint32).max] = -1  # rabitqlib pads with UINT32_MAX
        return self._scores(q, dist), I

    def _lib_search(self, q: NDArray[np.float32], k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        return tuple(self._index.search(q, k, ef=ef, num_threads=self.search_threads))

    def _file_bytes(self) -> int:
        """rabitqlib's saved size: codes, factors, graph links, centroids (cached per size)."""
        if self._index is None:
            return 0
        stored = int(self._index.num_stored_points)
        if self._size is None or self._size[0] != stored:
            with tempfile.TemporaryDirectory() as tmp:
                self._index.save(str(Path(tmp) / "x"))
                self._size = (stored, sum(f.stat().st_size for f in Path(tmp).iterdir()))  # with any sidecar
        return self._size[1]

    def memory_bytes(self) -> int:
        """RAM of the codes, factors and graph: rabitqlib's saved size, scaled to the allocated
        capacity (capacity grows with each add exactly to the rows held)."""
        if self._index is None:
            return 0
        stored = max(1, int(self._index.num_stored_points))
        return int(self._file_bytes() * max(int(self._index.max_elements), stored) / stored)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically to ``path`` (annbin's format; rabitqlib's file as its bytes, and any
        sidecar it writes beside it, e.g. ``IvfIndex``'s centroid graph ``.hnsw``, as one more array)."""
        arrays = {self.payload: np.zeros(0, np.uint8)}
        with self._lock:
            if self._index is not None:
                with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
                    self._index.save(str(Path(tmp) / "lib"))
                    for f in Path(tmp).iterdir():  # "lib" itself and "lib.<sidecar>"
                        arrays[self.payload + f.name[3:]] = np.fromfile(f, np.uint8)
                arrays.update(self._extra_arrays())
        header = {"variant": self.variant, "dim": self.dim, "metric": self.metric, "ntotal": self.ntotal,
                  "params": self.get_params(), "search_params": self.get_search_params()}
        write_index_file(path, header, arrays)

    def _extra_arrays(self) -> dict[str, NDArray[Any]]:
        """Arrays a variant saves beside rabitqlib's files (named ``<payload>.<name>``; ``_adopt_payload``
        gets them back among ``sidecars``)."""
        return {}

    def _adopt_payload(self, blob: NDArray[np.uint8], path: Path, sidecars: dict[str, NDArray[Any]] | None = None) -> None:
        import rabitqlib

        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            blob.tofile(Path(tmp) / "lib")
            for suffix, data in (sidecars or {}).items():
                data.tofile(Path(tmp) / f"lib{suffix}")
            try:
                index = getattr(rabitqlib, self._lib_class).load(str(Path(tmp) / "lib"))
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"rabitqlib cannot read the stored index: {str(exc).splitlines()[0]}") from None
        if int(index.dim) != self._lib_dim or str(index.metric) != self._lib_metric():
            raise ValueError(f"stored rabitqlib index has (dim, metric) {(int(index.dim), str(index.metric))}, expected {(self._lib_dim, self._lib_metric())}")
        self._index = index

    def _lib_metric(self) -> str:
        return "ip" if self.metric == "ip" else "l2"

    def reset(self) -> None:
        """Drop every vector (the next add builds a new index)."""
        with self._lock:
            self._index, self._size = None, None


@register
class RQHNSW(RQBase):
    """HNSW over ``nbits``-bit RaBitQ codes (``rabitqlib.HnswIndex``), walked with its estimates.

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1 (below 64, zero-padded to rabitqlib's smallest).
    metric : {"ip", "l2"}
        ``"ip"`` (default) or ``"l2"``; scores are estimates (see the module docstring).
    M : int
        Build parameter: graph degree, >= 2 (default 16).
    ef_construction : int
        Build parameter: beam width of the graph build, >= 1 (default 100).
    nbits : int
        Build parameter: bits a dimension of the codes, 1..9 (default 2: the fastest to the recall
        target after the default ``2 x k`` float rescore on the sets measured, docs/defaults.md).
    clusters : int
        Build parameter: k-means centroids the codes are centred on, >= 1 (default 16), fitted on
        a sample of at most 16k rows of the first add.
    seed : int
        Build parameter: seed of the sample, k-means and rabitqlib's rotation, >= 0 (default 100).
    ef_search : int
        Search parameter: beam width of a search, >= 1 (default 48; a search uses at least ``k``).

    The first add builds the graph with ``num_threads`` threads (-1: all cores), later adds insert
    into it; an add of 100k rows or more shows an elapsed-time bar (``progress``: True / False to
    force it).
    """

    variant = "rq-hnsw"
    build_params = ("M", "ef_construction", "nbits", "clusters", "seed")
    _lib_class = "HnswIndex"

    def __init__(self, dim: int, *, metric: str = "ip", M: int = 16, ef_construction: int = 100, nbits: int = 2,
                 clusters: int = 16, seed: int = 100, ef_search: int = 48) -> None:
        super().__init__(dim, metric=metric, ef_search=ef_search)
        self.M = check_int(M, "M", minimum=2)
        self.ef_construction = check_int(ef_construction, "ef_construction", minimum=1)
        self.nbits = self._check_nbits(nbits)
        self.clusters = check_int(clusters, "clusters", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)

    def get_params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "nbits": self.nbits, "clusters": self.clusters, "seed": self.seed}

    def _grow(self, x: NDArray[np.float32]) -> None:
        # one call, not chunks: one build is faster than a build and adds of the same rows
        self._index.resize(int(self._index.num_stored_points) + x.shape[0])  # exact capacity: RAM is what is held
        self._index.add(x, num_threads=resolve_threads(self.num_threads))

    def _build(self, x: NDArray[np.float32]) -> Any:
        import rabitqlib

        n = x.shape[0]
        clusters = min(self.clusters, n)
        sample = x if n <= _SAMPLE else x[np.sort(np.random.default_rng(self.seed).choice(n, _SAMPLE, replace=False))]
        km = faiss.Kmeans(x.shape[1], clusters, niter=10, seed=self.seed)  # rabitqlib's k-means needs dim >= 64
        km.train(np.ascontiguousarray(sample))
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        ids = nearest_centroid(x, centroids)
        index = rabitqlib.HnswIndex(self._lib_dim, n, M=self.M, ef_construction=self.ef_construction, nbits=self.nbits,
                                    metric=self._lib_metric(), random_seed=self.seed)
        index.build(x, centroids, ids, num_threads=resolve_threads(self.num_threads))
        return index

    def remove_ids(self, ids: ArrayLike) -> int:
        """Mark ``ids`` deleted (rabitqlib keeps them in the graph as waypoints); returns how
        many were newly removed. Unknown ids are ignored."""
        return remove_lib_ids(self, ids)


def remove_lib_ids(stage: RQBase, ids: ArrayLike) -> int:
    """``remove_ids`` of the rabitqlib indexes that have one: newly removed count, unknown ids ignored."""
    sel = np.unique(np.asarray(ids, dtype=np.int64).ravel())
    if stage._index is None or sel.size == 0:
        return 0
    sel = sel[(sel >= 0) & (sel < int(stage._index.num_stored_points))]
    with stage._lock:
        return int(stage._index.remove(sel.astype(np.uint32)))


@register
class RQSymQG(RQBase):
    """SymphonyQG graph (``rabitqlib.SymqgIndex``): RaBitQ codes laid out beside each node's
    neighbours, so a hop reads one block. The fastest graph measured here, at about 2x the
    floats' RAM. Built once, from the first ``add`` (a second ``add`` raises ``ValueError``;
    ``reset`` and add everything again).

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1 (below 64, zero-padded to rabitqlib's smallest).
    metric : {"ip", "l2"}
        ``"ip"`` (default) or ``"l2"``; scores are estimates (see the module docstring).
    max_degree : int
        Build parameter: neighbours a node, a positive multiple of 32 (default 32).
    ef_construction : int
        Build parameter: beam width of the graph build, >= 1 (default 200).
    ef_search : int
        Search parameter: beam width of a search, >= 1 (default 48; a search uses at least ``k``).
    """

    variant = "rq-symqg"
    build_params = ("max_degree", "ef_construction")
    _lib_class = "SymqgIndex"

    def __init__(self, dim: int, *, metric: str = "ip", max_degree: int = 32, ef_construction: int = 200, ef_search: int = 48) -> None:
        super().__init__(dim, metric=metric, ef_search=ef_search)
        self.max_degree = check_int(max_degree, "max_degree", minimum=4)
        if self.max_degree % 32:
            raise ValueError(f"max_degree must be a multiple of 32 (SymQG's fast-scan blocks), got {max_degree}")
        self.ef_construction = check_int(ef_construction, "ef_construction", minimum=1)

    def get_params(self) -> dict[str, Any]:
        return {"max_degree": self.max_degree, "ef_construction": self.ef_construction}

    def check_add(self, n: int) -> None:
        if self._index is not None and n:
            raise ValueError("rq-symqg is built once, from its first add, and this one is built: reset() and add every vector at once, or use rq-hnsw")

    def _build(self, x: NDArray[np.float32]) -> Any:
        import rabitqlib

        index = rabitqlib.SymqgIndex(self._lib_dim, self.max_degree, metric=self._lib_metric())
        index.build(x, self.ef_construction, num_threads=resolve_threads(self.num_threads))
        return index

    def _grow(self, x: NDArray[np.float32]) -> None:
        self.check_add(x.shape[0])  # raises: a SymQG graph is built once

    def _lib_search(self, q: NDArray[np.float32], k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        want = k
        while True:
            try:
                ids, dist = self._index.search_batch(q, want, max(ef, want), num_threads=self.search_threads)
                break
            except RuntimeError:  # SymQG cannot always reach k when k nears ntotal: ask for fewer, pad
                if want == 1:
                    raise
                want = max(1, want // 2)
        if want < k:
            pad = ((0, 0), (0, k - want))
            ids = np.pad(ids, pad, constant_values=np.iinfo(np.uint32).max)
            dist = np.pad(dist, pad, constant_values=np.inf if self.metric == "l2" else 2.0)  # ip: 1 - dist = -1
        return ids, dist



def nearest_centroid(x: NDArray[np.float32], centroids: NDArray[np.float32]) -> NDArray[np.uint32]:
    """Index of the nearest centroid (L2) of each row, in blocks whose (rows, clusters) score
    matrix stays near 64 MiB, whatever the number of centroids."""
    out = np.empty(x.shape[0], np.uint32)
    half = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    step = max(256, (1 << 24) // max(1, centroids.shape[0]))
    for lo in range(0, x.shape[0], step):
        scores = x[lo:lo + step] @ centroids.T
        scores -= half
        out[lo:lo + step] = np.argmax(scores, axis=1)
    return out
