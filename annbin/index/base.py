"""The one interface every annbin index implements: faiss's names and return conventions.

A subclass implements the private hooks (``_add``, ``_search``, ...); the public methods here do
all validation, result padding and tie ordering once, so every variant behaves the same:

- ``search(x, k) -> (D, I)``: ``D`` int32 ``(nq, k)`` Hamming distances ascending, ``I`` int64
  ``(nq, k)`` ids; ties ordered by smaller id; missing results (``k > ntotal``, empty index) are
  ``I = -1``, ``D = INT32_MAX``.
- ``range_search(x, radius) -> (lims, D, I)``: every item with distance **< radius**, as faiss's
  own ``range_search``; results of query ``i`` in ``D[lims[i]:lims[i+1]]``, sorted by (distance, id).
  Variants implement ``_range_search(x, radius)`` by the same rule, so faiss gets the radius as is.
- Codes are always ``(n, d // 8)`` uint8; ``d`` is in bits. A 1-D array is one code.
- ``get_codes(ids)``: the stored codes of any array of ids (e.g. a search's ``I``), for rescoring;
  each variant reads them from the storage it already has (see ``_get_codes``).
"""

from __future__ import annotations

import contextvars
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import INT32_MAX, InputTypeError, as_codes, as_id_selection, as_ids, check_d, check_k, check_radius
from annbin.index._results import CodesResult, RangeResult, SearchResult, sort_ranges, sort_results
from annbin.index._rows import RowMap
from annbin.spec import format_spec

# the result types and orderings live a floor down (``_results``); named here for the variants
__all__ = ["BinaryIndex", "CodesResult", "Described", "RangeResult", "SearchResult", "UnsupportedOperation",
           "sort_ranges", "sort_results"]

# The search in progress in this thread (or task) and its full search parameters: ``params=`` of one
# call is read from here, never written to the index, so one index serves concurrent searches.
_CALL_PARAMS: contextvars.ContextVar[tuple[Any, dict[str, Any]] | None] = contextvars.ContextVar("_CALL_PARAMS", default=None)


class UnsupportedOperation(NotImplementedError):
    """The index variant cannot do this (e.g. ``remove_ids`` on HNSW); faiss's Python layer raises
    ``RuntimeError`` there, annbin a ``NotImplementedError`` one can catch by type."""


class Described:
    """What every annbin index-like class shares: ``len()``, ``is_trained`` and its spec string.

    A subclass defines ``variant``, ``ntotal``, ``get_params`` and ``get_search_params``.
    """

    variant: ClassVar[str] = ""
    #: takes float vectors (``add(x)``, ``search(q, k)`` on floats) rather than packed binary codes
    takes_floats: ClassVar[bool] = False

    @property
    def ntotal(self) -> int:  # pragma: no cover - every subclass overrides it
        raise TypeError(f"{type(self).__name__} must define ntotal")

    def get_params(self) -> dict[str, Any]:
        """Build-time parameters (what the constructor needs besides the dimension)."""
        return {}

    def get_search_params(self) -> dict[str, Any]:
        """Current search-time parameters."""
        return {}

    def _check_search_value(self, name: str, value: Any) -> Any:
        """One search parameter's value, checked and normalized (``TypeError`` / ``ValueError``);
        ``name`` is one of ``search_params``. Variants with parameters override it."""
        return value

    def _checked_search_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with every name known and every value checked; nothing is set."""
        names = tuple(getattr(self, "search_params", ()))
        unknown = sorted(set(params) - set(names))
        if unknown:
            allowed = ", ".join(names) or "none"
            raise ValueError(f"unknown search parameter(s) {unknown} for {self.variant!r}; expected: {allowed}")
        return {name: self._check_search_value(name, value) for name, value in params.items()}

    @contextmanager
    def _search_call(self, params: dict[str, Any] | None) -> Iterator[None]:
        """Make ``params`` (checked) this thread's search parameters of this index for the block."""
        if not params:
            yield
            return
        call = {**self.get_search_params(), **self._checked_search_params(params)}
        token = _CALL_PARAMS.set((self, call))
        try:
            yield
        finally:
            _CALL_PARAMS.reset(token)

    def _effective_params(self) -> dict[str, Any]:
        """The search parameters of the search in progress: the call's ``params`` over the index's
        own (read it in the searching thread: worker threads do not inherit the call's)."""
        call = _CALL_PARAMS.get()
        return call[1] if call is not None and call[0] is self else self.get_search_params()

    @property
    def is_trained(self) -> bool:
        """faiss compatibility: no training needed unless a variant says so."""
        return True

    def __len__(self) -> int:
        return self.ntotal

    @property
    def spec(self) -> str:
        """The spec string that rebuilds an empty index like this one (see ``make_index``)."""
        return format_spec(self.variant, {**self.get_params(), **self.get_search_params()})


class BinaryIndex(Described, ABC):
    """Abstract index over packed binary codes of ``d`` bits, searched by Hamming distance.

    Parameters
    ----------
    d : int
        Code length in bits, a positive multiple of 8; codes are ``(n, d // 8)`` uint8.
    """

    variant: ClassVar[str] = ""
    #: build-time parameters (constructor keywords), part of the spec string and the saved file
    build_params: ClassVar[tuple[str, ...]] = ()
    #: parameters ``set_search_params`` accepts
    search_params: ClassVar[tuple[str, ...]] = ()
    #: True when search returns exactly the k nearest distances (flat, MIH)
    exact: ClassVar[bool] = True
    #: the id -> storage map ``get_codes`` builds on first use; dropped by add, remove_ids, reset
    _code_map_cache: Any = None

    def __init__(self, d: int) -> None:
        self.d = check_d(d)
        self._next_id = 0

    # --- properties ------------------------------------------------------------------------
    @property
    def code_size(self) -> int:
        """Bytes per code, ``d // 8``."""
        return self.d // 8

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of codes stored."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} d={self.d} ntotal={self.ntotal}>"

    # --- public API ------------------------------------------------------------------------
    def add(self, codes: NDArray[np.uint8], ids: ArrayLike | None = None) -> None:
        """Add codes ``(n, d // 8)`` uint8; ``ids`` int64 ``(n,)`` or None for sequential ids.

        Explicit ids must be unique and not already stored.
        """
        codes = as_codes(codes, self.code_size)
        n = codes.shape[0]
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            new_ids = as_ids(ids, n)
            if self.ntotal and n:
                clash = np.sort(self._find_present(new_ids))
                if clash.size:
                    raise ValueError(f"ids already in the index: {clash[:5].tolist()}")
        if n == 0:
            return
        self._before_write()
        self._code_map_cache = None
        self._add(codes, new_ids)
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)

    def add_with_ids(self, codes: NDArray[np.uint8], ids: ArrayLike) -> None:
        """faiss's name for ``add(codes, ids)``."""
        self.add(codes, ids)

    def search(self, codes: NDArray[np.uint8], k: int, *, params: dict[str, Any] | None = None) -> SearchResult:
        """k nearest codes by Hamming distance for queries ``(nq, d // 8)`` uint8.

        Returns ``(D, I)``: int32 distances ``(nq, k)`` ascending and int64 ids ``(nq, k)``; slots
        past ``ntotal`` hold ``-1`` / ``INT32_MAX``. ``params`` sets search parameters for this
        call only: they are not written to the index, so searches with different ``params`` may run
        concurrently from many threads (not concurrently with ``add``, ``remove_ids``, ``reset`` or
        ``set_search_params``).
        """
        x = as_codes(codes, self.code_size, name="queries")
        k = check_k(k)
        nq = x.shape[0]
        D = np.full((nq, k), INT32_MAX, dtype=np.int32)
        I = np.full((nq, k), -1, dtype=np.int64)
        kk = min(k, self.ntotal)
        if kk == 0 or nq == 0:
            return D, I
        with self._search_call(params):
            d_, i_ = self._search(x, kk)
        D[:, :kk] = d_
        I[:, :kk] = i_
        return sort_results(D, I)

    def range_search(self, codes: NDArray[np.uint8], radius: int) -> RangeResult:
        """Every stored code at Hamming distance ``< radius`` from each query (faiss's rule).

        ``radius`` is an int >= 0 (0 matches nothing; ``d + 1`` matches everything). Returns
        ``(lims, D, I)``: lims int64 ``(nq + 1,)``, D int32, I int64; query i's results are
        ``D[lims[i]:lims[i + 1]]``, sorted by (distance, id).
        """
        x = as_codes(codes, self.code_size, name="queries")
        radius = check_radius(radius)
        if self.ntotal == 0 or x.shape[0] == 0 or radius == 0:
            return np.zeros(x.shape[0] + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
        # d + 1 already matches everything: clipped there, a radius stays inside faiss's C int
        lims, D, I = self._range_search(x, min(radius, self.d + 1))
        return sort_ranges(lims.astype(np.int64), D.astype(np.int32), I.astype(np.int64))

    def remove_ids(self, ids: ArrayLike) -> int:
        """Remove the given ids (absent ones are ignored); returns how many were removed.

        ``ids``: a 1-D integer array, or a ``faiss.IDSelector`` (each stored id is tested with its
        ``is_member``, a Python loop over ``ntotal``: fine for occasional deletes).
        """
        if hasattr(ids, "is_member"):
            stored = self.get_ids()
            ids = stored[np.fromiter((ids.is_member(int(i)) for i in stored), dtype=bool, count=stored.size)]
        sel = as_id_selection(ids)
        if sel.size == 0 or self.ntotal == 0:
            return 0
        self._before_write()
        self._code_map_cache = None
        return int(self._remove_ids(sel))

    def reset(self) -> None:
        """Remove everything; the index keeps its parameters."""
        self._before_write()
        self._code_map_cache = None
        self._reset()
        self._next_id = 0

    def set_search_params(self, **params: Any) -> None:
        """Set search-time parameters by name (see ``search_params``); unknown names raise."""
        checked = self._checked_search_params(params)
        if checked:
            self._set_search_params(checked)

    def get_codes(self, ids: ArrayLike) -> NDArray[np.uint8]:
        """The stored codes of ``ids``: uint8 ``ids.shape + (d // 8,)``, bytes exactly as added.

        ``ids``: an integer array of any shape, e.g. ``(n,)`` or a search's ``(nq, k)`` ``I``.
        An id of ``-1`` (a missing search result) gives an all-zero code; all-zero is also a valid
        stored code, so test ``ids >= 0`` to tell them apart. Any other id that is not stored
        raises ``ValueError`` naming up to 5 of them; non-integer ids raise ``TypeError``.

        Codes are gathered from the storage the variant already holds (no copy of the index).
        The first call after ``add`` / ``remove_ids`` / ``reset`` builds an id -> row map
        (free when the ids are ``0 .. ntotal-1`` in order, else 4-16 bytes per stored code, counted
        by ``memory_bytes``; see ``annbin.index._rows``). Per-variant costs are in each class.
        """
        ids = _lookup_ids(ids)
        flat = ids.reshape(-1)
        result: CodesResult
        if self.ntotal == 0 or flat.size == 0:
            result = np.zeros((flat.size, self.code_size), np.uint8), np.zeros(flat.size, bool)
        else:
            result = self._get_codes(flat)
        codes, found = result
        if found is not None:
            unknown = flat[~found & (flat != -1)]
            if unknown.size:
                unknown = np.unique(unknown)
                more = f" ({unknown.size} distinct in all)" if unknown.size > 5 else ""
                raise ValueError(f"ids not in the index: {unknown[:5].tolist()}{more}")
        return codes.reshape(ids.shape + (self.code_size,))

    def reconstruct(self, id: int) -> NDArray[np.uint8]:
        """faiss's name: the stored code of one id, uint8 ``(d // 8,)`` (``-1`` gives zeros)."""
        if isinstance(id, (bool, np.bool_)) or not isinstance(id, numbers.Integral):
            raise InputTypeError(f"id must be an int, got {type(id).__name__}")
        return self.get_codes(np.array([id], np.int64))[0]

    def reconstruct_batch(self, ids: ArrayLike) -> NDArray[np.uint8]:
        """faiss's name: the stored codes of 1-D ``ids``, uint8 ``(n, d // 8)`` (see ``get_codes``)."""
        ids = _lookup_ids(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {ids.shape} (get_codes takes any shape)")
        return self.get_codes(ids)

    @abstractmethod
    def get_ids(self) -> NDArray[np.int64]:
        """All stored ids, int64 ``(ntotal,)``, in storage order."""

    @abstractmethod
    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM (codes, ids, tables or graph)."""

    def save(self, path: str) -> None:
        """Write the index atomically to ``path`` in annbin's format (see ``annbin._io``)."""
        from annbin._io import write_index_file

        header = {
            "variant": self.variant,
            "d": self.d,
            "ntotal": self.ntotal,
            "params": self.get_params(),
            "search_params": self.get_search_params(),
            "next_id": self._next_id,
        }
        write_index_file(path, header, self._state_arrays())

    # --- hooks for variants ----------------------------------------------------------------
    @abstractmethod
    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        """Store validated codes with validated, new ids."""

    @abstractmethod
    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        """Search validated queries with 1 <= k <= ntotal."""

    def _before_write(self) -> None:
        """Called before ``add``, ``remove_ids`` and ``reset`` change the storage: an index loaded
        with ``mmap=True`` copies its mapped codes into RAM here (copy on write)."""

    def _find_present(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """Which of ``ids`` are stored already (a variant may answer without listing all ids)."""
        return ids[np.isin(ids, self.get_ids())]

    def _get_codes(self, ids: NDArray[np.int64]) -> CodesResult:
        """Codes of 1-D ids (``ntotal > 0``, ``ids`` non-empty; -1 and unknown ids not found)."""
        raise UnsupportedOperation(f"{self.variant!r} index cannot return its stored codes")

    def _code_map(self) -> Any:
        """``_build_code_map()``'s map, cached until the index changes (or its ``ntotal`` does:
        a faiss index shared with ``from_faiss`` may grow from outside)."""
        cached = self._code_map_cache
        if cached is None or cached.ntotal != self.ntotal:
            cached = self._code_map_cache = self._build_code_map()
        return cached

    def _build_code_map(self) -> Any:
        """An object with ``ntotal``, ``nbytes`` and ``lookup(ids) -> (rows, found)``: by default
        ids to rows of ``get_ids()``'s order, which is storage order."""
        return RowMap(self.get_ids())

    def _code_map_bytes(self) -> int:
        """RAM held by the cached ``get_codes`` map (0 until it is built)."""
        return int(self._code_map_cache.nbytes) if self._code_map_cache is not None else 0

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        """Every stored code at distance ``< radius`` (``1 <= radius <= d + 1``) from validated
        queries: ``(lims, D, I)`` grouped by query, in any order within a query."""
        raise UnsupportedOperation(f"{self.variant!r} index does not support range_search")

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        raise UnsupportedOperation(f"{self.variant!r} index does not support remove_ids")

    @abstractmethod
    def _reset(self) -> None:
        """Drop all stored codes."""

    def _set_search_params(self, params: dict[str, Any]) -> None:
        """Store search parameters already checked by ``_check_search_value``. ``_search`` reads
        them through ``_effective_params()``, which puts a call's ``params=`` over them."""

    @abstractmethod
    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Arrays that, with ``get_params()``, rebuild the index (see ``_from_state``)."""

    @classmethod
    @abstractmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        """Rebuild an index from what ``save`` wrote."""


def _lookup_ids(ids: Any) -> NDArray[np.int64]:
    """Ids to look up, any shape, as int64; non-integer ids are a ``TypeError``."""
    x = ids if isinstance(ids, np.ndarray) else np.asarray(ids)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise InputTypeError(f"ids must be integers, got dtype {x.dtype}")
    if x.dtype == np.uint64 and x.size and int(x.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"ids not in the index: ids are int64, got {int(x.max())}")
    return x.astype(np.int64, copy=False)
