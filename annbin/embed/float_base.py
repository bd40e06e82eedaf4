"""The float-in index interface: float vectors in, float queries in, faiss's float convention out.

``FloatIndex`` is shared by the float baselines (``annbin.embed.floats``) and faiss's RaBitQ family
(``annbin.embed.rabitq``); it lives below both so that neither imports the other's module to subclass it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import as_floats, check_int, check_k, check_metric
from annbin.index.base import Described

FloatResult = tuple[NDArray[np.float32], NDArray[np.int64]]

__all__ = ["FloatIndex", "FloatResult"]


class FloatIndex(Described, ABC):
    """Common shape of the float baselines: validation, padding of missing results, params.

    Parameters
    ----------
    dim : int
        Float dimension of the vectors and queries, >= 1.
    metric : {"ip", "l2"}
        ``"ip"`` (default): inner-product scores, descending; ``"l2"``: squared L2 distances,
        ascending. For cosine, normalize the vectors and use ``"ip"``.
    """

    takes_floats: ClassVar[bool] = True
    #: the array of a saved file that holds the library's own bytes (``save`` / ``_adopt_payload``)
    payload: ClassVar[str] = ""
    build_params: ClassVar[tuple[str, ...]] = ()
    search_params: ClassVar[tuple[str, ...]] = ()
    exact: ClassVar[bool] = True
    #: ranks by an estimate from compressed codes, and is meant to be followed by float rescoring
    #: (RaBitQ first stages: ``BinaryEmbeddingIndex`` and the bench rescore it, and rotate its input)
    rescorable: ClassVar[bool] = False
    #: a rescorable stage's candidates per result when ``BinaryEmbeddingIndex`` is given none
    default_oversample: ClassVar[int] = 3
    #: a peer library's index, benchmarked beside annbin's: the distribution it needs (its row is
    #: skipped, with one line naming the ``annbin[peers]`` extra, when that is not installed)
    peer: ClassVar[str | None] = None
    #: threads for add and search where the library takes them per call (hnswlib; -1 = all
    #: cores); faiss-backed baselines follow ``faiss.omp_set_num_threads`` instead
    num_threads: int = -1

    def __init__(self, dim: int, *, metric: str = "ip") -> None:
        self.dim = check_int(dim, "dim", minimum=1)
        check_metric(metric)
        self.metric = metric

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of vectors stored."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} dim={self.dim} metric={self.metric} ntotal={self.ntotal}>"

    def set_search_params(self, **params: Any) -> None:
        """Set search parameters by name (see ``search_params``); unknown names raise."""
        checked = self._checked_search_params(params)
        if checked:
            self._set_search_params(checked)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        """Store checked search parameters (``_search`` reads them via ``_effective_params()``)."""

    def check_add(self, n: int) -> None:
        """``ValueError`` if an add of ``n`` vectors would be refused (checked before any file is
        written for it); variants that build once override it."""

    def add(self, x: ArrayLike) -> None:
        """Add float vectors ``(n, dim)`` (stored as float32); ids continue from ``ntotal``."""
        v = np.ascontiguousarray(as_floats(x, self.dim, name="vectors"), dtype=np.float32)
        if v.shape[0]:
            self._add(v)

    def search(self, x: ArrayLike, k: int, *, params: dict[str, Any] | None = None) -> FloatResult:
        """k best for float queries ``(nq, dim)``: ``(D float32, I int64)``, see module docstring.

        ``params`` apply to this call only and are not written to the index: searches with
        different ``params`` may run concurrently from many threads.
        """
        q = np.ascontiguousarray(as_floats(x, self.dim, name="queries"), dtype=np.float32)
        k = check_k(k)
        worst = -np.inf if self.metric == "ip" else np.inf
        D = np.full((q.shape[0], k), worst, np.float32)
        I = np.full((q.shape[0], k), -1, np.int64)
        kk = min(k, self.ntotal)
        if kk == 0 or q.shape[0] == 0:
            return D, I
        with self._search_call(params):
            d_, i_ = self._search(q, kk)
        I[:, :kk] = i_
        D[:, :kk] = np.where(i_ >= 0, d_, worst)
        return D, I

    @abstractmethod
    def _add(self, x: NDArray[np.float32]) -> None: ...

    @abstractmethod
    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult: ...

    @abstractmethod
    def memory_bytes(self) -> int:
        """Bytes held in RAM for the stored vectors and graph."""
