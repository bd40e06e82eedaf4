"""Any ``faiss.IndexBinary`` behind annbin's interface, and faiss's factory strings and files.

``from_faiss(index)`` wraps a faiss binary index (Flat, HNSW, IVF, Hash, MultiHash, IDMap/IDMap2
around them, or anything else deriving from ``faiss.IndexBinary``) as a ``FaissIndex``: annbin's
validation, padding and tie order, ``save``/``load_index``, ``set_search_params``, and
``to_faiss()`` to hand the same object back. The wrapper *shares* the faiss index (no copy).

Ids follow faiss:

- inside ``IndexBinaryIDMap``/``IDMap2`` (and for a bare ``IndexBinaryIVF``, which stores ids
  itself) any unique ids may be given to ``add``;
- any other bare index numbers items ``0, 1, 2, ...`` in insertion order, as faiss does; explicit
  ids are then refused (wrap it in ``faiss.IndexBinaryIDMap2`` to choose ids).

``remove_ids`` works where faiss keeps ids stable: IDMap/IDMap2 around Flat or IVF, and bare IVF.
A bare ``IndexBinaryFlat`` can remove in faiss, but renumbers the items after the removed ones,
so annbin refuses (``UnsupportedOperation``) rather than silently changing ids. ``range_search``
works where faiss implements it (not HNSW), keeping distances ``< radius`` as faiss does.

An untrained index (IVF) is trained on the first ``add``, on a seeded sample of at most
``TRAIN_POINTS_PER_LIST * nlist`` of those codes (see ``train_on_sample``); or call ``train``.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError, as_codes, check_d, check_int
from annbin._training import TRAIN_POINTS_PER_LIST
from annbin.index._faiss import (
    InvertedListCodes,
    faiss_range_search,
    first_line,
    hnsw_params,
    ivf_ids,
    ivf_params,
    normalize_missing,
    read_blob,
    read_codes,
    train_on_sample,
    unwrap_idmap,
)
from annbin.index._rows import RowMap
from annbin.index.base import BinaryIndex, CodesResult, RangeResult, SearchResult, UnsupportedOperation
from annbin.index.registry import register
from annbin.spec import format_spec

#: RAM per entry of IndexBinaryIDMap2's id -> position hash map (an std::unordered_map), measured
#: as resident memory: 200k codes in IDMap2 vs IDMap around a flat index
_REV_MAP_BYTES = 32

__all__ = ["FaissIndex", "from_faiss", "read_faiss_file"]


def _hnsw_m(hnsw: Any) -> int:
    """HNSW's M (links per upper-level node); 0 for a degenerate graph (faiss built with M=0)."""
    try:
        return int(hnsw.nb_neighbors(1))
    except RuntimeError:
        return 0


def factory_string(index: Any) -> str | None:
    """The faiss binary factory string that builds an empty index like ``index``, or None."""
    core, prefix = unwrap_idmap(index)
    if isinstance(core, faiss.IndexBinaryFlat):
        body = "BFlat"
    elif isinstance(core, faiss.IndexBinaryHNSW):
        body = f"BHNSW{_hnsw_m(core.hnsw)}"
    elif isinstance(core, faiss.IndexBinaryIVF):
        quantizer = faiss.downcast_IndexBinary(core.quantizer)
        body = f"BIVF{core.nlist}"
        if isinstance(quantizer, faiss.IndexBinaryHNSW):
            body += f"_HNSW{_hnsw_m(quantizer.hnsw)}"
    elif isinstance(core, faiss.IndexBinaryMultiHash):
        body = f"BHash{core.nhash}x{core.b}"  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
    elif isinstance(core, faiss.IndexBinaryHash):
        body = f"BHash{core.b}"  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
    else:
        return None
    return (prefix or "") + body


def _train_cap(index: Any) -> int | None:
    nlist = getattr(unwrap_idmap(index)[0], "nlist", None)
    return None if nlist is None else max(int(nlist) * TRAIN_POINTS_PER_LIST, 1)


@register
class FaissIndex(BinaryIndex):
    """annbin's interface over any ``faiss.IndexBinary`` (see the module docstring for ids).

    Build one with ``from_faiss(index)``, ``make_index("IDMap2,BHash4x16", d=d)`` or
    ``FaissIndex(d=d, factory="BHash16")``. Search parameters are those of the wrapped index:
    ``ef_search`` (HNSW), ``nprobe`` (IVF), ``nflip`` (Hash, MultiHash). ``exact`` is True only
    for a flat index.

    Parameters
    ----------
    d : int
        Code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    factory : str
        A faiss binary factory string (``"BFlat"``, ``"BHNSW32"``, ``"IDMap2,BIVF64"``,
        ``"BHash4x16"``, ...); refused unless faiss reads it back as itself.
    """

    variant = "faiss"
    build_params = ("factory",)
    exact = False
    _mapped: Any = None  # as FaissBackedIndex._mapped

    def __init__(self, d: int, *, factory: str = "BFlat") -> None:
        super().__init__(d)
        self._attach(_build_factory(factory, self.d))

    # --- wrapping --------------------------------------------------------------------------
    def _attach(self, index: Any) -> None:
        if index.d != self.d:
            raise ValueError(f"faiss index has d={index.d} bits, expected d={self.d}")
        # A downcast proxy does not own the C++ index: it must keep the proxy handed in alive,
        # else the index is freed with it (faiss's own pattern: ``referenced_objects``).
        self._owner = index
        self._lock = threading.Lock()
        self._index = faiss.downcast_IndexBinary(index)
        self._index.referenced_objects = [index]  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
        self._core, self._idmap = unwrap_idmap(index)
        core = self._core
        self._own_ids = self._idmap is not None or isinstance(core, faiss.IndexBinaryIVF)
        self.exact = isinstance(core, faiss.IndexBinaryFlat)  # type: ignore[misc]
        if isinstance(core, faiss.IndexBinaryHNSW):
            self.search_params = ("ef_search",)  # type: ignore[misc]
        elif isinstance(core, faiss.IndexBinaryIVF):
            self.search_params = ("nprobe",)  # type: ignore[misc]
        elif isinstance(core, (faiss.IndexBinaryHash, faiss.IndexBinaryMultiHash)):
            self.search_params = ("nflip",)  # type: ignore[misc]
        else:
            self.search_params = ()  # type: ignore[misc]
        ids = self.get_ids()
        self._next_id = int(ids.max()) + 1 if ids.size else 0

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def spec(self) -> str:
        factory = factory_string(self._index)
        if factory is None:
            return f"faiss:{type(self._core).__name__}"
        return format_spec(factory, self.get_search_params())

    def to_faiss(self) -> Any:
        """The wrapped faiss index (shared, not copied): the very object given to ``from_faiss``
        (unless that was a bare ``faiss.IndexBinary`` proxy: then its downcast)."""
        return self._index if type(self._owner) is faiss.IndexBinary else self._owner

    def train(self, codes: NDArray[np.uint8]) -> None:
        """Train on codes ``(n, d // 8)`` uint8 (IVF: k-means for the lists); others ignore it."""
        codes = as_codes(codes, self.code_size)
        if not self.is_trained:
            train_on_sample(self._index, codes, None)

    # --- parameters ------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"factory": factory_string(self._index) or type(self._core).__name__}

    def get_search_params(self) -> dict[str, Any]:
        core = self._core
        if "ef_search" in self.search_params:
            return {"ef_search": int(core.hnsw.efSearch)}
        if "nprobe" in self.search_params:
            return {"nprobe": int(core.nprobe)}
        if "nflip" in self.search_params:
            return {"nflip": int(core.nflip)}
        return {}

    def _check_search_value(self, name: str, value: Any) -> Any:
        return check_int(value, name, minimum=0 if name == "nflip" else 1)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        core = self._core
        if "ef_search" in params:
            core.hnsw.efSearch = params["ef_search"]
        if "nprobe" in params:
            core.nprobe = params["nprobe"]
        if "nflip" in params:
            with self._lock:  # not while a search with another nflip has it set (see _search)
                core.nflip = params["nflip"]

    # --- hooks -----------------------------------------------------------------------------
    def get_ids(self) -> NDArray[np.int64]:
        if self._idmap is not None:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
        if isinstance(self._core, faiss.IndexBinaryIVF):
            return ivf_ids(self._core)
        return np.arange(self.ntotal, dtype=np.int64)

    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        if not self._own_ids and not np.array_equal(ids, np.arange(self.ntotal, self.ntotal + ids.size)):
            raise UnsupportedOperation(
                f"faiss {type(self._core).__name__} numbers items 0, 1, 2, ...: explicit ids need "
                "an IDMap2 wrapper (annbin.from_faiss(faiss.IndexBinaryIDMap2(index)) or spec 'IDMap2,...')"
            )
        if not self.is_trained:
            train_on_sample(self._index, codes, _train_cap(self._index))
        try:
            if self._own_ids:
                self._index.add_with_ids(codes, ids)
            else:
                self._index.add(codes)
        except RuntimeError as exc:
            raise ValueError(f"faiss could not add to {type(self._core).__name__}: {first_line(exc)}") from None

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        call = self._effective_params()
        if "ef_search" in call:
            return normalize_missing(*self._index.search(x, k, params=hnsw_params(call["ef_search"], k)))
        if "nprobe" in call:
            return normalize_missing(*self._index.search(x, k, params=ivf_params(call["nprobe"])))
        if "nflip" in call:
            # faiss's hash indexes take no SearchParameters: a call's nflip is set on the index for
            # the call, so hash searches of one index take turns
            with self._lock:
                saved, self._core.nflip = self._core.nflip, call["nflip"]
                try:
                    return normalize_missing(*self._index.search(x, k))
                finally:
                    self._core.nflip = saved
        return normalize_missing(*self._index.search(x, k))

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        try:
            return faiss_range_search(self._index, x, radius)
        except RuntimeError as exc:
            raise UnsupportedOperation(
                f"faiss {type(self._core).__name__} does not support range_search ({first_line(exc)})"
            ) from None

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        if not self._own_ids and isinstance(self._core, faiss.IndexBinaryFlat):
            raise UnsupportedOperation(
                "faiss IndexBinaryFlat without IDMap renumbers the remaining items on remove_ids; "
                "wrap it in faiss.IndexBinaryIDMap2 to remove by id"
            )
        if not self._own_ids:
            raise UnsupportedOperation(f"faiss {type(self._core).__name__} does not support remove_ids")
        if self._idmap is not None and not isinstance(self._core, faiss.IndexBinaryFlat):
            # IndexBinaryIDMap.remove_ids compacts its id map as if the inner index renumbered
            # like a flat one; an IVF keeps its internal ids, so the map would go out of step
            raise UnsupportedOperation(
                f"faiss's IDMap.remove_ids is only correct around IndexBinaryFlat, not "
                f"{type(self._core).__name__} (use a bare IndexBinaryIVF: it stores ids itself)"
            )
        try:
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        except RuntimeError as exc:
            raise UnsupportedOperation(
                f"faiss {type(self._core).__name__} does not support remove_ids ({first_line(exc)})"
            ) from None

    def _reset(self) -> None:
        self._index.reset()

    def _build_code_map(self) -> Any:
        if not isinstance(self._core, faiss.IndexBinaryIVF):
            return RowMap(self.get_ids())
        ids = ivf_ids(self._core)
        if self._idmap is not None:  # the IVF then holds positions in the IDMap's id list
            ids = self.get_ids()[ids]
        return InvertedListCodes(self._core, ids)

    def _get_codes(self, ids: NDArray[np.int64]) -> CodesResult:
        return read_codes(self._core, self._code_map, ids)

    def memory_bytes(self) -> int:
        """Estimate of RAM held: codes, ids, graph / hash tables / centroids."""
        n, cs, core = self.ntotal, self.code_size, self._core
        total = n * cs
        if isinstance(core, faiss.IndexBinaryHNSW):
            h = core.hnsw
            total += int(h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8)
        elif isinstance(core, faiss.IndexBinaryIVF):
            total += n * 8 + int(core.nlist) * cs
        elif isinstance(core, faiss.IndexBinaryMultiHash):
            total += n * 8 * int(core.nhash)  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
        elif isinstance(core, faiss.IndexBinaryHash):
            total += n * 8
        if self._idmap is not None:
            total += n * 8
        if self._idmap == "IDMap2,":
            total += n * _REV_MAP_BYTES
        return int(total) + self._code_map_bytes()

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"faiss": faiss.serialize_index_binary(self._index)}

    @classmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        if "faiss" not in arrays:
            raise ValueError("faiss could not read the stored index: no 'faiss' array in the file")
        obj = cls._wrap(read_blob(arrays["faiss"]), d)
        obj._mapped = arrays["faiss"] if isinstance(arrays["faiss"], np.memmap) else None
        return obj

    def _before_write(self) -> None:
        # faiss aborts the process on a write to codes it holds as a view: copy them in first
        if self._mapped is not None:
            search, next_id = self.get_search_params(), self._next_id
            self._attach(read_blob(np.array(self._mapped)))
            self._set_search_params(search)
            self._mapped, self._next_id = None, next_id

    @classmethod
    def _wrap(cls, index: Any, d: int | None = None) -> FaissIndex:
        obj = cls.__new__(cls)
        BinaryIndex.__init__(obj, check_d(index.d if d is None else d))
        obj._attach(index)
        return obj


def _build_factory(factory: str, d: int) -> Any:
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"faiss factory string must be a non-empty str, got {factory!r}")
    factory = factory.strip()
    try:
        index = faiss.index_binary_factory(d, factory)
    except RuntimeError as exc:
        raise ValueError(f"bad faiss binary factory string {factory!r}: {first_line(exc)}") from None
    # faiss's parser is lenient ("BHash4x" builds BHash4, "BHash99" a 99-bit hash of 64-bit
    # codes, "BIVF0" zero lists): accept a string only if it reads back as itself and is sane
    core, _ = unwrap_idmap(index)
    problem = None
    if isinstance(core, (faiss.IndexBinaryHash, faiss.IndexBinaryMultiHash)) and not 1 <= core.b <= min(d, 63):  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
        problem = f"hash of b={core.b} bits needs 1 <= b <= {min(d, 63)}"  # type: ignore[attr-defined, unused-ignore]  # not in faiss's stubs
    elif isinstance(core, faiss.IndexBinaryIVF) and core.nlist < 1:
        problem = "nlist must be >= 1"
    elif isinstance(core, faiss.IndexBinaryHNSW) and _hnsw_m(core.hnsw) < 2:
        problem = "HNSW M must be >= 2"
    else:
        canonical = factory_string(index)
        wanted = re.sub(r"\s+", "", factory)
        if wanted.endswith((",IDMap2", ",IDMap")):  # faiss takes the wrapper as a suffix too
            body, _, wrapper = wanted.rpartition(",")
            wanted = f"{wrapper},{body}"
        if canonical is not None and canonical != wanted:
            problem = f"faiss reads it as {canonical!r}"
    if problem:
        raise ValueError(f"bad faiss binary factory string {factory!r}: {problem}")
    return index


def from_faiss(index: Any) -> FaissIndex:
    """Wrap a ``faiss.IndexBinary`` (any kind, trained or not, empty or not) as an annbin index.

    The faiss object is shared: changes through either side are seen by both.
    """
    if not isinstance(index, faiss.IndexBinary):
        hint = " (a float faiss index: see annbin.embed.floats for float search)" if isinstance(index, faiss.Index) else ""
        raise InputTypeError(f"from_faiss expects a faiss.IndexBinary, got {type(index).__name__}{hint}")
    return FaissIndex._wrap(index)


def read_faiss_file(path: str | os.PathLike[str]) -> FaissIndex:
    """Read a file written by ``faiss.write_index_binary`` as a ``FaissIndex``."""
    try:
        index = faiss.read_index_binary(os.fspath(path))
    except RuntimeError as exc:
        raise ValueError(
            f"{str(path)!r} is not an annbin index (bad magic bytes) and faiss cannot read it as a "
            f"binary index either: {first_line(exc)}"
        ) from None
    return FaissIndex._wrap(index)
