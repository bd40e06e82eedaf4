"""The float-in index interface: float vectors in, float queries in, faiss's float convention out.

``FloatIndex`` is shared by the float baselines (``annbin.embed.floats``) and faiss's RaBitQ family
(``annbin.embed.rabitq``); it lives below both so that neither imports the other's module to subclass it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import as_floats, check_int, check_k, check_metric
from annbin.index.base import Described

FloatResult = tuple[NDArray[np.float32], NDArray[np.int64]]

__all__ = ["FloatIndex", "FloatResult", "load_float_file"]


class FloatIndex(Described, ABC):
    """Common shape of the float baselines: validation, padding of missing results, params."""

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


def load_float_file(path: str | os.PathLike[str], variants: Mapping[str, type[FloatIndex]], payload: str, what: str) -> FloatIndex:
    """An index of one of ``variants`` from a file its ``save`` wrote: the header builds it, the
    array ``payload`` (the library's own bytes) goes to its ``_adopt_payload``. ``ValueError`` for a
    file that is missing, corrupted (checksum), of another kind, or inconsistent."""
    from annbin._io import read_index_file

    header, arrays = read_index_file(path)
    try:
        cls = variants[header["variant"]]
        index = cls(int(header["dim"]), metric=header["metric"], **header["params"])
        ntotal, blob, search = int(header["ntotal"]), arrays[payload], dict(header["search_params"])
    except KeyError as exc:
        raise ValueError(f"{str(path)!r} is not a saved {what} (missing or unknown {exc})") from None
    except TypeError as exc:
        raise ValueError(f"{str(path)!r} has a malformed header: {exc}") from None
    if blob.size:
        try:
            index._adopt_payload(blob, Path(path))  # type: ignore[attr-defined]  # each variant family defines it
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: {exc}") from None
    if index.ntotal != ntotal:
        raise ValueError(f"{str(path)!r} is inconsistent: header says {ntotal} vectors, payload has {index.ntotal}")
    index.set_search_params(**search)
    return index
