"""Float baselines with the same search shape as annbin's indexes, for side-by-side benches.

``FloatFlat`` (exact, faiss ``IndexFlatIP`` / ``IndexFlatL2``) and ``FloatHNSW`` (hnswlib), built
from spec strings by ``make_float_index``::

    make_float_index("float-flat", dim=384, metric="ip")
    make_float_index("float-hnsw:M=16,ef_construction=200,ef=64", dim=384, metric="ip")

Both take float vectors ``(n, dim)`` and return faiss's float convention,
``search(x, k) -> (D, I)``: ``D`` float32 ``(nq, k)``, inner-product *scores descending* for
``metric="ip"`` or *squared L2 distances ascending* for ``"l2"``; ``I`` int64 ``(nq, k)``;
missing results ``I = -1`` with ``D = -inf`` (ip) or ``+inf`` (l2). Ids are sequential in
insertion order. For cosine similarity, normalize the vectors and use ``"ip"``.

hnswlib differs from faiss in three ways handled here: it returns ``(labels, distances)``, its
"ip" distance is ``1 - dot`` (converted back to the score), and ``ef`` is not saved with an index
and defaults to 10 (it is always set explicitly; a search widens it to ``k`` when smaller, as
hnswlib cannot return more than ``ef`` results).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_int
from annbin.embed.float_base import FloatIndex, FloatResult
from annbin.index.registry import float_variants, register, unknown_spec_error, variants
from annbin.spec import parse_spec, split_params, variant_name

__all__ = ["FloatFlat", "FloatHNSW", "is_float_spec", "make_float_index"]


@register
class FloatFlat(FloatIndex):
    """Exact float search by linear scan: faiss ``IndexFlatIP`` (``"ip"``) or ``IndexFlatL2``.

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1.
    metric : {"ip", "l2"}
        ``"ip"`` (default) or ``"l2"`` (see ``FloatIndex``).
    """

    variant = "float-flat"

    def __init__(self, dim: int, *, metric: str = "ip") -> None:
        import faiss

        super().__init__(dim, metric=metric)
        self._index = faiss.IndexFlatIP(self.dim) if metric == "ip" else faiss.IndexFlatL2(self.dim)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def _add(self, x: NDArray[np.float32]) -> None:
        self._index.add(x)

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        D, I = self._index.search(q, k)
        return D, I.astype(np.int64, copy=False)

    def memory_bytes(self) -> int:
        return self.ntotal * self.dim * 4

    def to_faiss(self) -> Any:
        """The underlying faiss index (shared)."""
        return self._index


@register
class FloatHNSW(FloatIndex):
    """Float HNSW on hnswlib.

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1.
    metric : {"ip", "l2"}
        ``"ip"`` (default) or ``"l2"`` (see ``FloatIndex``).
    M : int
        Build parameter: graph degree, >= 2 (default 16).
    ef_construction : int
        Build parameter: beam width of the graph build, >= 1 (default 200).
    ef : int
        Search parameter: beam width of a search, >= 1 (default 64; a search uses at least ``k``).
    seed : int
        Build parameter: seed of hnswlib's level generator, >= 0 (default 100).
    num_threads : int
        Threads for add and search (default -1: all cores).
    """

    variant = "float-hnsw"
    exact = False
    build_params = ("M", "ef_construction", "seed")
    search_params = ("ef",)

    def __init__(self, dim: int, *, metric: str = "ip", M: int = 16, ef_construction: int = 200,
                 ef: int = 64, seed: int = 100, num_threads: int = -1) -> None:
        import hnswlib

        super().__init__(dim, metric=metric)
        self.M = check_int(M, "M", minimum=2)
        self.ef_construction = check_int(ef_construction, "ef_construction", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.num_threads = check_int(num_threads, "num_threads", minimum=-1)
        self._index = hnswlib.Index(space=metric, dim=self.dim)
        self._index.init_index(max_elements=1, M=self.M, ef_construction=self.ef_construction, random_seed=self.seed)
        self._lock = threading.Lock()
        self.set_search_params(ef=ef)

    @property
    def ntotal(self) -> int:
        return int(self._index.get_current_count())

    def get_params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "seed": self.seed}

    def get_search_params(self) -> dict[str, Any]:
        return {"ef": self._ef}

    def _check_search_value(self, name: str, value: Any) -> Any:
        return check_int(value, name, minimum=1)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        if "ef" in params:
            with self._lock:
                self._ef = params["ef"]
                self._index.set_ef(self._ef)

    def _add(self, x: NDArray[np.float32]) -> None:
        n0 = self.ntotal
        # exact capacity: hnswlib allocates the level-0 graph and vectors for max_elements
        self._index.resize_index(n0 + x.shape[0])
        self._index.add_items(x, np.arange(n0, n0 + x.shape[0]), num_threads=self.num_threads)

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        # hnswlib's ef is the index's, not the query's: a call sets it for itself (at least k, or
        # hnswlib returns fewer results), so searches of one index take turns (each multithreaded)
        ef = max(self._effective_params()["ef"], k)
        with self._lock:
            self._index.set_ef(ef)
            try:
                labels, dist = self._index.knn_query(q, k=k, num_threads=self.num_threads)
            finally:
                self._index.set_ef(self._ef)
        D = (1.0 - dist) if self.metric == "ip" else dist
        return D.astype(np.float32, copy=False), labels.astype(np.int64)

    def memory_bytes(self) -> int:
        """hnswlib's serialized size: vectors, level-0 and upper-level links, labels.

        A lower bound on its RAM: per-element locks and the label hash map are not counted.
        """
        return int(self._index.index_file_size())


def is_float_spec(spec: Any) -> bool:
    """True if ``spec`` names a float-in index (``"float-flat"``, ``"float-hnsw:..."``, ``"rabitq"``,
    ``"ivf-rabitq:..."``, ``"rabitq-hnsw:..."``)."""
    return variant_name(spec) in float_variants()


def make_float_index(spec: str, dim: int, metric: str = "ip") -> FloatIndex:
    """Build an empty float baseline from a spec string for ``dim``-dimensional vectors.

    ``"float-flat"``; ``"float-hnsw"`` with ``M``, ``ef_construction``, ``seed`` (build) and
    ``ef`` (search), e.g. ``"float-hnsw:M=16,ef_construction=200,ef=64"``; the RaBitQ variants
    ``"rabitq"``, ``"ivf-rabitq"``, ``"rabitq-hnsw"`` (see ``annbin.embed.rabitq``).
    """
    name, params = parse_spec(spec)
    cls = float_variants().get(name)
    if cls is None:
        if name in variants():
            raise ValueError(f"{spec!r} is a binary index (codes, not float vectors): build it with make_index(spec, d)")
        raise unknown_spec_error(name, spec, what="float index spec")
    build, search = split_params(name, (cls.build_params, cls.search_params), params, spec)
    index = cls(dim, metric=metric, **build)
    index.set_search_params(**search)
    return index
