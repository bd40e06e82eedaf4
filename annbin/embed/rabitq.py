"""faiss's RaBitQ family under the float-in interface (``annbin.embed.float_base``).

Float vectors in, float queries in, faiss's float convention out (see ``annbin.embed.float_base``):
``D`` float32 ``(nq, k)``, *estimated* inner products descending (``"ip"``) or estimated squared
L2 ascending (``"l2"``); ``I`` int64; missing results ``I = -1``, ``D = -inf`` / ``+inf``.
Vectors are stored as 1-bit RaBitQ codes plus per-vector factors; a query is quantized to ``qb``
bits (``qb=0``: kept as floats, far slower in faiss for a sliver of recall; figures in
benchmarks/RESULTS.md). Variants, built with ``make_float_index``:

- ``"rabitq:qb=4"``: ``RaBitQFlat``, a scan of all codes (``faiss.IndexRaBitQ``).
- ``"ivf-rabitq:nlist=256,nprobe=16,qb=4,fastscan=false"``: ``RaBitQIVF`` (``IndexIVFRaBitQ`` /
  ``IndexIVFRaBitQFastScan``), codes of residuals in inverted lists.
- ``"rabitq-hnsw:M=16,ef_construction=100,build=float,ef_search=64,qb=4"``: ``RaBitQHNSW``, an HNSW
  graph walked with the RaBitQ estimate (``IndexHNSWRaBitQ``).

faiss does the metric itself where it can: ``IndexRaBitQ`` and ``IndexIVFRaBitQ`` take
``METRIC_INNER_PRODUCT``; ``IndexHNSWRaBitQ`` is L2-only (see ``RaBitQHNSW``). faiss's RaBitQ has no
random rotation, and none is added here: one gained no recall and cost speed. Every variant trains on its first
``add`` (the codes' centroid; IVF's k-means), so give it a representative first batch. Threads
follow ``faiss.omp_set_num_threads``. ``save`` / ``annbin.load`` use annbin's checksummed file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError, check_int
from annbin._io import write_index_file
from annbin._progress import elapsed_bar
from annbin._training import TRAIN_POINTS_PER_LIST, default_nlist, training_sample
from annbin.embed.asymmetric import check_qb
from annbin.embed.float_base import FloatIndex, FloatResult
from annbin.index.registry import register

__all__ = ["RaBitQFlat", "RaBitQHNSW", "RaBitQIVF"]

_UNIT_TOL = 1e-3  # |norm - 1| allowed for "ip" on the L2-only HNSW (float16-stored embeddings pass)
_PROGRESS_ROWS = 100_000  # graph builds at least this big show an elapsed-time bar
_BUILT = ("rabitq-hnsw:build=float builds its graph once, from every vector added before the first search or save, "
          "and this one is built; add all vectors first, or use build=codes to add later")


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


class _RaBitQIndex(FloatIndex):
    """Shared plumbing: training on the first add, per-call params, save, memory."""

    exact = False
    rescorable = True
    payload = "faiss"
    _faiss_type: ClassVar[str] = ""  # class name of the faiss index a saved file must hold

    def __init__(self, dim: int, *, metric: str = "ip") -> None:
        super().__init__(dim, metric=metric)
        self._index: Any = None  # the faiss index; None until it can be made (IVF: nlist known)

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        """False until the first ``add`` trained the index (``bench`` then adds everything at once)."""
        return self._index is not None and bool(self._index.is_trained)

    def _check_search_value(self, name: str, value: Any) -> Any:
        if name == "qb":
            return check_qb(value)
        return check_int(value, name, minimum=1)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        for name, value in params.items():
            setattr(self, name, value)

    def get_search_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.search_params}

    def _add(self, x: NDArray[np.float32]) -> None:
        if not self.is_trained:
            self._train(x)
        self._index.add(x)

    def _train(self, x: NDArray[np.float32]) -> None:
        self._index.train(x)  # IndexRaBitQ: the centroid of the codes (a mean: all rows are cheap)

    def _state(self) -> Any:
        """The faiss index to serialize, or None when there is nothing trained to keep."""
        return self._index if self.is_trained else None

    def memory_bytes(self) -> int:
        """faiss's serialized size: codes with their factors, ids and centroids (IVF), graph links
        (HNSW). A slight lower bound on RAM (allocator slack, search scratch are not counted)."""
        state = self._state()
        return 0 if state is None else int(faiss.serialize_index(state).size)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically to ``path`` (annbin's format; the faiss index as its serialized bytes)."""
        state = self._state()
        blob = np.zeros(0, np.uint8) if state is None else faiss.serialize_index(state)
        header = {"variant": self.variant, "dim": self.dim, "metric": self.metric, "ntotal": self.ntotal,
                  "params": self.get_params(), "search_params": self.get_search_params()}
        write_index_file(path, header, {self.payload: blob})

    def _adopt_payload(self, blob: NDArray[np.uint8], path: Path) -> None:
        try:
            stored = faiss.deserialize_index(blob)
        except RuntimeError as exc:
            raise ValueError(f"faiss cannot read the stored index: {str(exc).splitlines()[0]}") from None
        self._adopt(stored)

    def _adopt(self, index: Any) -> None:
        """Take a deserialized faiss index as this one's (``ValueError`` if it does not fit)."""
        expected = (self._expected_type(), self.dim, self._metric_type())
        got = (type(index).__name__, int(index.d), int(index.metric_type))
        if got != expected:
            raise ValueError(f"stored faiss index is (type, d, metric) {got}, expected {expected}")
        self._index = index

    def _expected_type(self) -> str:
        return self._faiss_type

    def _metric_type(self) -> int:
        return _faiss_metric(self.metric)


@register
class RaBitQFlat(_RaBitQIndex):
    """Scan of all 1-bit RaBitQ codes (``faiss.IndexRaBitQ``, ``"ip"`` native).

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1.
    metric : {"ip", "l2"}
        ``"ip"`` (default) or ``"l2"``; scores are estimates (see the module docstring).
    qb : int
        Search parameter: query bits, 0..8 (default 4; 0: the query kept as floats).
    """

    variant = "rabitq"
    search_params = ("qb",)
    _faiss_type = "IndexRaBitQ"

    def __init__(self, dim: int, *, metric: str = "ip", qb: int = 4) -> None:
        super().__init__(dim, metric=metric)
        self.qb = check_qb(qb)
        self._index = faiss.IndexRaBitQ(self.dim, _faiss_metric(self.metric))

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        params = faiss.RaBitQSearchParameters()
        params.qb = self._effective_params()["qb"]
        D, I = self._index.search(q, k, params=params)
        return D, I.astype(np.int64, copy=False)


@register
class RaBitQIVF(_RaBitQIndex):
    """Inverted lists of RaBitQ codes of residuals (``IndexIVFRaBitQ``, ``"ip"`` native).

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1.
    metric : {"ip", "l2"}
        ``"ip"`` (default) or ``"l2"``; scores are estimates (see the module docstring).
    nlist : int or None
        Build parameter: number of inverted lists, >= 1 (default None:
        ``annbin.index.ivf.default_nlist`` of the first add, about ``4 * sqrt(n)``).
    fastscan : bool
        Build parameter: ``IndexIVFRaBitQFastScan``, a 4-bit-LUT SIMD scan that needs ``qb >= 1``
        (default False: the plain scan was faster at equal recall, benchmarks/RESULTS.md).
    nprobe : int
        Search parameter: lists visited a query, >= 1 (default 16).
    qb : int
        Search parameter: query bits, 0..8 (default 4; 0: the query kept as floats).

    The first add trains k-means on a seeded sample of at most ``64 * nlist`` of its rows and must
    hold at least ``nlist``; later adds are only assigned.
    """

    variant = "ivf-rabitq"
    build_params = ("nlist", "fastscan")
    search_params = ("nprobe", "qb")

    def __init__(self, dim: int, *, metric: str = "ip", nlist: int | None = None, fastscan: bool = False,
                 nprobe: int = 16, qb: int = 4) -> None:
        super().__init__(dim, metric=metric)
        self.nlist = None if nlist is None else check_int(nlist, "nlist", minimum=1)
        if not isinstance(fastscan, (bool, np.bool_)):
            raise InputTypeError(f"fastscan must be a bool, got {type(fastscan).__name__}")
        self.fastscan = bool(fastscan)
        self.set_search_params(nprobe=nprobe, qb=qb)

    def _check_search_value(self, name: str, value: Any) -> Any:
        value = super()._check_search_value(name, value)
        if name == "qb" and value == 0 and self.fastscan:
            # faiss's fast-scan reads qb=0 as "use the index default" (8 bits), not float queries
            raise ValueError("ivf-rabitq with fastscan=true needs qb in 1..8 (fast-scan quantizes the query)")
        return value

    def get_params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "fastscan": self.fastscan}

    def _expected_type(self) -> str:
        return "IndexIVFRaBitQFastScan" if self.fastscan else "IndexIVFRaBitQ"

    def _train(self, x: NDArray[np.float32]) -> None:
        nlist = self.nlist or default_nlist(x.shape[0])
        if x.shape[0] < nlist:
            raise ValueError(f"ivf-rabitq trains k-means on its first add: it needs at least nlist={nlist} vectors, got {x.shape[0]}; add more at once or lower nlist")
        cap = nlist * TRAIN_POINTS_PER_LIST
        x = training_sample(x, cap)  # k-means cost grows with the sample; 64 per list is plenty
        quantizer: Any = faiss.IndexFlatIP(self.dim) if self.metric == "ip" else faiss.IndexFlatL2(self.dim)
        cls = faiss.IndexIVFRaBitQFastScan if self.fastscan else faiss.IndexIVFRaBitQ
        index = cls(quantizer, self.dim, nlist, _faiss_metric(self.metric))
        index.own_fields = True  # faiss's Python layer keeps no reference to this quantizer
        quantizer.this.disown()
        index.train(x)
        self._index, self.nlist = index, nlist

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        call = self._effective_params()
        params = faiss.IVFRaBitQSearchParameters()
        params.nprobe, params.qb = call["nprobe"], call["qb"]
        D, I = self._index.search(q, k, params=params)
        return D, I.astype(np.int64, copy=False)

    def _adopt(self, index: Any) -> None:
        super()._adopt(index)
        if int(index.nlist) != self.nlist:
            raise ValueError(f"stored faiss index has nlist={index.nlist}, header says {self.nlist}")


@register
class RaBitQHNSW(_RaBitQIndex):
    """HNSW over 1-bit RaBitQ codes, walked with the asymmetric RaBitQ estimate (``IndexHNSWRaBitQ``).

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1.
    metric : {"ip", "l2"}
        ``"ip"`` (default; see the note on L2 below) or ``"l2"``.
    M : int
        Build parameter: graph degree, >= 2 (default 16).
    ef_construction : int
        Build parameter: beam width of the graph build, >= 1 (default 100).
    nb_bits : int
        Build parameter: bits a dimension of the codes, 1..9 (default 1); more is faiss's extended
        RaBitQ, a sharper estimate during the walk for ``nb_bits * dim / 8`` more bytes a vector.
    build : {"float", "codes"}
        Build parameter. ``"float"`` (default): ``faiss.IndexHNSWFlat`` builds the graph once on
        the float vectors of all adds (when: see Costs), then it is kept over the codes and the
        floats dropped; an ``add`` after that raises ``ValueError`` (the floats to link new nodes
        are gone; the graph is never patched), and ``check_add`` says so before a caller writes.
        ``"codes"``: faiss builds the graph itself from the codes (symmetric RaBitQ distances,
        slightly lower recall); every ``add`` inserts into it.
    ef_search : int
        Search parameter: beam width of a search, >= 1 (default 64; faiss uses at least ``k``).
    qb : int
        Search parameter: query bits, 0..8 (default 4; 0: the query kept as floats).

    Costs, ``build="float"``: an ``add`` only copies its vectors (``4 * dim`` bytes a vector, held
    until the build); the build is one HNSW construction over all of them (the whole cost of the
    graph, paid by the first ``search`` or ``save`` unless ``BinaryEmbeddingIndex.build()`` ran
    first; a tqdm bar of the time elapsed for 100,000 vectors or more, or as the ``progress``
    attribute says); every later ``search`` walks the graph only. ``build="codes"``: each ``add``
    pays its HNSW inserts; nothing is deferred. faiss ignores ``RaBitQSearchParameters`` here, so
    ``qb`` is set on the graph's storage for each search, under a lock: searches of one index run
    one at a time (each is OpenMP-parallel).

    faiss's ``IndexHNSWRaBitQ`` is L2-only. For ``metric="ip"`` the stored vectors must be unit
    norm (checked, ``ValueError``): L2 order is then inner-product order, and the score returned
    is ``(|q|^2 + 1 - l2_est) / 2``, which is the RaBitQ inner-product estimate itself, except that
    faiss clamps a negative L2 estimate to 0: near-duplicates then score ``(|q|^2 + 1) / 2`` and tie.
    """

    variant = "rabitq-hnsw"
    build_params = ("M", "ef_construction", "nb_bits", "build")
    search_params = ("ef_search", "qb")
    _faiss_type = "IndexHNSWRaBitQ"

    def __init__(self, dim: int, *, metric: str = "ip", M: int = 16, ef_construction: int = 100, nb_bits: int = 1,
                 build: str = "float", ef_search: int = 64, qb: int = 4) -> None:
        super().__init__(dim, metric=metric)
        self.M = check_int(M, "M", minimum=2)
        self.nb_bits = check_int(nb_bits, "nb_bits", minimum=1)
        if self.nb_bits > 9:
            raise ValueError(f"nb_bits must be in 1..9 (faiss's RaBitQ), got {nb_bits}")
        self.ef_construction = check_int(ef_construction, "ef_construction", minimum=1)
        if build not in ("float", "codes"):
            raise ValueError(f"build must be 'float' or 'codes', got {build!r}")
        self.build = build
        self.set_search_params(ef_search=ef_search, qb=qb)
        self._pending: list[NDArray[np.float32]] = []  # build="float": vectors until the graph is built
        self.progress: bool | None = None  # None: a bar for graph builds of _PROGRESS_ROWS vectors or more
        self._lock = threading.Lock()
        if build == "codes":
            self._index = self._new()

    def _new(self) -> Any:
        index = faiss.IndexHNSWRaBitQ(self.dim, self.M, self.nb_bits)  # (d, M, nb_bits, metric=L2 only)
        index.hnsw.efConstruction = self.ef_construction
        return index

    @property
    def ntotal(self) -> int:
        return super().ntotal + sum(int(v.shape[0]) for v in self._pending)

    @property
    def is_trained(self) -> bool:
        return bool(self._pending) or super().is_trained

    def get_params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "nb_bits": self.nb_bits, "build": self.build}

    def check_add(self, n: int) -> None:
        """``ValueError`` (the one ``add`` raises) when ``build="float"`` and the graph is built."""
        if n and self.build == "float" and self._index is not None:
            raise ValueError(_BUILT)

    def _add(self, x: NDArray[np.float32]) -> None:
        self.check_add(x.shape[0])
        if self.metric == "ip":
            norms = np.linalg.norm(x, axis=1)
            bad = int(np.count_nonzero(np.abs(norms - 1) > _UNIT_TOL))
            if bad:
                raise ValueError(f"rabitq-hnsw with metric='ip' needs unit-norm vectors (faiss's IndexHNSWRaBitQ is L2-only); {bad} of {x.shape[0]} are not: normalize them")
        if self.build == "codes":
            super()._add(x)
        else:
            self._pending.append(x.copy())  # the caller may change its array before the build

    def _build_graph(self) -> None:
        """build="float": HNSW on the held floats, then the same graph over RaBitQ codes."""
        if not self._pending:
            return
        x = np.concatenate(self._pending)
        graph = faiss.IndexHNSWFlat(self.dim, self.M, faiss.METRIC_L2)
        graph.hnsw.efConstruction = self.ef_construction
        n = x.shape[0]
        with elapsed_bar(f"rabitq-hnsw graph ({n:,} vectors)", n >= _PROGRESS_ROWS if self.progress is None else self.progress):
            graph.add(x)  # one call: faiss releases the GIL, so the bar's thread ticks meanwhile
        index = self._new()
        storage = faiss.downcast_index(index.storage)
        storage.train(x)
        storage.add(x)
        index.hnsw = graph.hnsw  # a C++ copy: dropping `graph` frees the float vectors
        index.ntotal, index.is_trained = x.shape[0], True  # faiss's reader checks is_trained
        self._index, self._pending = index, []

    def _state(self) -> Any:
        with self._lock:
            self._build_graph()
        return super()._state()

    def memory_bytes(self) -> int:
        """Held floats (``4 * n * dim``) until the graph is built; then faiss's serialized size."""
        if self._pending:
            return sum(v.nbytes for v in self._pending)
        return super().memory_bytes()

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        call = self._effective_params()
        with self._lock:
            self._build_graph()
            storage: Any = faiss.downcast_index(self._index.storage)
            storage.qb = call["qb"]
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # absent from faiss's stubs
            params.efSearch = call["ef_search"]
            D, I = self._index.search(q, k, params=params)
        if self.metric == "ip":
            D = (np.einsum("ij,ij->i", q, q)[:, None] + 1.0 - D) * 0.5
        return D.astype(np.float32, copy=False), I.astype(np.int64, copy=False)

    def _metric_type(self) -> int:
        return faiss.METRIC_L2  # for both metrics (see the class docstring)

    def _adopt(self, index: Any) -> None:
        super()._adopt(index)
        bits = int(faiss.downcast_index(index.storage).rabitq.nb_bits)  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
        if bits != self.nb_bits:
            raise ValueError(f"stored codes have nb_bits={bits}, header says {self.nb_bits}")
        if int(index.hnsw.nb_neighbors(0)) != 2 * self.M:
            raise ValueError(f"stored graph has {index.hnsw.nb_neighbors(0)} level-0 links, expected 2 * M = {2 * self.M}")


