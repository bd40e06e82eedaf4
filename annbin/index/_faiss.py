"""Shared plumbing for variants that are thin wrappers over a faiss binary index.

The faiss index is always wrapped in ``IndexBinaryIDMap`` so user ids survive and can be listed
(not ``IDMap2``: its reverse hash map costs ~32 bytes a vector; ``get_codes`` reads codes through a
zero-copy view of the flat storage and annbin's own id -> row map, ``annbin.index._rows``).
``range_search`` keeps distances ``< radius`` in annbin as in faiss: the radius reaches faiss as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import INT32_MAX
from annbin._training import training_sample
from annbin.index._rows import RowMap, gather
from annbin.index.base import BinaryIndex, CodesResult, RangeResult, SearchResult, UnsupportedOperation, sort_results

#: Most results one completing range search may hold (``exact_knn``): 12 bytes each, so <= 48 MiB
#: even when every stored code ties with the k-th distance.
_COMPLETION_RESULTS = 1 << 22
_READ_CHUNK = 1 << 22  # bytes a deserializing faiss reader takes from Python at a time


class FaissBackedIndex(BinaryIndex):
    """Base for variants whose storage is a ``faiss.IndexBinaryIDMap`` around an inner index.

    Parameters
    ----------
    d : int
        Code length in bits (multiple of 8); a subclass builds the inner index in ``_new_inner``.
    """

    def __init__(self, d: int) -> None:
        super().__init__(d)
        self._inner = self._new_inner()
        self._index: Any = faiss.IndexBinaryIDMap(self._inner)  # or a variant's own index (IVF keeps its ids)

    def _new_inner(self) -> Any:
        raise TypeError(f"{type(self).__name__} must define _new_inner")

    #: the memory-mapped file section the faiss index's codes are a view of (see ``read_blob``),
    #: or None when the index owns its memory
    _mapped: Any = None

    def _adopt(self, index: Any) -> None:
        """Take a deserialized ``IndexBinaryIDMap`` as storage.

        The proxy faiss returned owns the C++ object, so it is kept as is (a downcast copy would
        not own it, and the object would be freed with the original proxy).
        """
        if not isinstance(index, faiss.IndexBinaryIDMap):
            raise ValueError(f"stored faiss index is {type(index).__name__}, expected IndexBinaryIDMap")
        self._index = index
        self._inner = faiss.downcast_IndexBinary(index.index)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def get_ids(self) -> NDArray[np.int64]:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def to_faiss(self) -> Any:
        """The underlying ``faiss.IndexBinaryIDMap`` (shared, not copied)."""
        return self._index

    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        self._index.add_with_ids(codes, ids)

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        return self._faiss_search(x, k)

    def _faiss_search(self, x: NDArray[np.uint8], k: int, params: Any = None) -> SearchResult:
        """faiss's search with per-call ``faiss.SearchParameters`` (None: the index's own)."""
        return normalize_missing(*self._index.search(x, k, params=params))

    def _get_codes(self, ids: NDArray[np.int64]) -> CodesResult:
        return read_codes(self._inner, self._code_map, ids)

    def _reset(self) -> None:
        self._index.reset()

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"faiss": faiss.serialize_index_binary(self._index)}

    @classmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        obj = cls(d, **params)
        obj._adopt(read_blob(arrays["faiss"]))
        obj._mapped = arrays["faiss"] if isinstance(arrays["faiss"], np.memmap) else None
        if obj._index.d != d:
            raise ValueError(f"stored faiss index has d={obj._index.d}, header says d={d}")
        return obj

    def _before_write(self) -> None:
        # faiss aborts the process on a write to codes it holds as a view: copy them in first
        if self._mapped is not None:
            self._adopt(read_blob(np.array(self._mapped)))
            self._mapped = None

    def _ids_bytes(self) -> int:
        """The IDMap's ids, and the id -> row map once ``get_codes`` has built it."""
        return self.ntotal * 8 + self._code_map_bytes()


def unwrap_idmap(index: Any) -> tuple[Any, str | None]:
    """The innermost index (downcast) and the IDMap prefix (``"IDMap,"``, ``"IDMap2,"`` or None)."""
    index = faiss.downcast_IndexBinary(index)
    if isinstance(index, faiss.IndexBinaryIDMap2):
        return faiss.downcast_IndexBinary(index.index), "IDMap2,"
    if isinstance(index, faiss.IndexBinaryIDMap):
        return faiss.downcast_IndexBinary(index.index), "IDMap,"
    return index, None


def train_on_sample(index: Any, codes: NDArray[np.uint8], max_points: int | None) -> None:
    """Train ``index`` on at most ``max_points`` rows of ``codes``, drawn with a fixed seed.

    faiss's binary IVF converts every training code to floats before k-means (``n * d * 4``
    bytes), so a large first batch is subsampled here rather than inside faiss.
    """
    codes = training_sample(codes, max_points)
    nlist = getattr(faiss.downcast_IndexBinary(unwrap_idmap(index)[0]), "nlist", 0)
    if codes.shape[0] < nlist:
        raise ValueError(
            f"training needs at least nlist={nlist} codes, got {codes.shape[0]}; "
            "add more codes in the first batch, call train() with a larger sample, or lower nlist"
        )
    try:
        index.train(codes)
    except RuntimeError as exc:
        raise ValueError(f"faiss could not train the index: {first_line(exc)}") from None


def read_blob(blob: NDArray[np.uint8]) -> Any:
    """The faiss binary index serialized in ``blob`` (uint8). A ``np.memmap`` blob is read in
    place: flat codes (``IndexBinaryFlat``, HNSW's storage) stay views of the mapped file, not
    copies, and the returned index keeps the map alive; faiss aborts the process on a write to
    such codes, so the owner copies them in first (``_before_write``). ``ValueError`` if faiss
    cannot read it."""
    mapped = isinstance(blob, np.memmap)
    try:
        if mapped:
            reader = faiss.ZeroCopyIOReader(faiss.swig_ptr(blob), blob.size)  # type: ignore[attr-defined]
        else:
            # read straight from the array, chunk by chunk (faiss.deserialize_index_binary first
            # copies all of it into a buffer of its own: one more copy of the index at the peak)
            view, pos = np.ascontiguousarray(blob, np.uint8).data.cast("B"), 0

            def read(n: int) -> bytes:
                nonlocal pos
                start, pos = pos, min(pos + n, len(view))
                return bytes(view[start:pos])

            reader = faiss.PyCallbackIOReader(read, _READ_CHUNK)  # type: ignore[attr-defined]
        index = faiss.read_index_binary(reader)
    except RuntimeError as exc:
        raise ValueError(f"faiss could not read the stored index: {first_line(exc)}") from None
    if mapped:
        index.referenced_objects = [blob]  # type: ignore[attr-defined]  # the codes point into the map: it lives as long as the index
    return index


def normalize_missing(D: NDArray[np.int32], I: NDArray[np.int64]) -> SearchResult:
    """faiss's ``(D, I)`` as int32 / int64 with unfilled slots at ``INT32_MAX``: faiss leaves them at
    ``I = -1`` but not always ``D = INT32_MAX`` (binary HNSW writes INT32_MIN, which would sort first)."""
    I = I.astype(np.int64, copy=False)
    return np.where(I < 0, INT32_MAX, D).astype(np.int32, copy=False), I


def hnsw_params(ef_search: int, k: int) -> Any:
    """Per-call ``SearchParametersHNSW``: beam ``max(ef_search, k)`` (faiss returns fewer than
    ``k`` results when the beam is narrower). Binary HNSW honours them through an IDMap."""
    params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
    params.efSearch = max(int(ef_search), k)
    return params


def ivf_params(nprobe: int) -> Any:
    """Per-call ``SearchParametersIVF`` visiting ``nprobe`` lists (binary IVF honours them in
    ``search``; its ``range_search`` refuses them, so range search uses the index's ``nprobe``)."""
    params = faiss.SearchParametersIVF()
    params.nprobe = int(nprobe)
    return params


def first_line(exc: BaseException) -> str:
    """faiss's message without its C++ location prefix ("Error in <signature> at file:line: ")."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return re.sub(r"^Error in .* at \S+:\d+: ", "", text)


def faiss_range_search(index: Any, x: NDArray[np.uint8], radius: int) -> RangeResult:
    """faiss's range search (distances ``< radius``, annbin's rule too) with annbin's dtypes:
    ``(lims, D, I)`` int64, int32, int64."""
    lims, D, I = index.range_search(x, radius)
    return lims.astype(np.int64), D.astype(np.int32), I.astype(np.int64)


def tie_margin(k: int) -> int:
    """How many results ``exact_knn`` asks faiss for: ``2k + 32``.

    Measured on 1M clustered 64-bit codes (mih_vs_flat's data), k = 10, 1,000 queries: the codes
    tied at the 10th distance run past 11 results for 94% of the queries, past 20 for 47%, past 42
    for 1.8%, never past 74 (uniform codes: 90%, 26%, 1.8%, 0%).
    """
    return 2 * k + 32


def exact_knn(index: Any, x: NDArray[np.uint8], k: int, ids: NDArray[np.int64] | None = None) -> SearchResult:
    """Exact kNN by an exhaustive faiss index, under annbin's tie rule: each row holds the ``k``
    smallest (distance, id) pairs, in that order.

    faiss returns the exact k smallest distances but keeps *some* of the codes tied at the k-th.
    Asking for ``tie_margin(k)`` results, most rows end past their k-th distance: then every code at
    that distance is in the list, and sorting by (distance, id) keeps the smallest ids. A row still
    tied at its end is completed by a range search to its k-th distance (all codes that close).
    ``index``: ``IndexBinaryFlat`` (returns rows: pass ``ids``, int64 ``(ntotal,)``) or an
    ``IndexBinaryIDMap`` of one (returns ids: ``ids=None``); ``1 <= k <= ntotal``; queries
    ``(nq, d // 8)`` uint8. Returns D int32 and I int64, ``(nq, k)``.
    """
    n = int(index.ntotal)
    kk = min(n, tie_margin(k))
    D, I = index.search(x, kk)
    I = I.astype(np.int64, copy=False)
    D, I = sort_results(D.astype(np.int32, copy=False), I if ids is None else ids[I])
    tied = np.flatnonzero(D[:, kk - 1] == D[:, k - 1]) if kk < n else np.empty(0, np.int64)
    D, I = np.ascontiguousarray(D[:, :k]), np.ascontiguousarray(I[:, :k])
    chunk = max(1, _COMPLETION_RESULTS // n)  # queries per range search: bounded even if all codes tie
    for a in range(0, tied.size, chunk):
        rows = tied[a : a + chunk]
        kth = D[rows, k - 1].astype(np.int64)
        lims, rd, ri = index.range_search(x[rows], int(kth.max()) + 1)  # distance < kth + 1: ties included
        qid = np.repeat(np.arange(rows.size), np.diff(lims.astype(np.int64)))
        keep = rd <= kth[qid]
        qid, rd, ri = qid[keep], rd[keep].astype(np.int64), ri[keep].astype(np.int64)
        if ids is not None:
            ri = ids[ri]
        order = np.lexsort((ri, rd, qid))
        first = np.searchsorted(qid[order], np.arange(rows.size))  # every row has > k matches
        pick = order[first[:, None] + np.arange(k)]
        D[rows], I[rows] = rd[pick], ri[pick]
    return D, I


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """Run faiss calls made inside the block with ``n`` OpenMP threads (this thread's setting,
    restored on exit)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def flat_storage(index: Any) -> Any:
    """The ``IndexBinaryFlat`` holding ``index``'s codes in row order (itself for a flat index, the
    ``storage`` of HNSW and MultiHash), or None (IVF, Hash and others keep codes elsewhere)."""
    index = faiss.downcast_IndexBinary(index)
    if isinstance(index, faiss.IndexBinaryFlat):
        return index
    storage = getattr(index, "storage", None)
    if storage is not None:
        storage = faiss.downcast_IndexBinary(storage)
        if isinstance(storage, faiss.IndexBinaryFlat):
            return storage
    return None


def flat_codes(flat: Any) -> NDArray[np.uint8]:
    """Zero-copy ``(ntotal, code_size)`` uint8 view of an ``IndexBinaryFlat``'s codes.

    The view borrows faiss's buffer: use it before the index next changes (an add may move it).
    """
    n, cs = int(flat.ntotal), int(flat.code_size)
    if n == 0:
        return np.empty((0, cs), np.uint8)
    return faiss.rev_swig_ptr(flat.xb.data(), n * cs).reshape(n, cs)


def ivf_ids(ivf: Any) -> NDArray[np.int64]:
    """All ids stored in an IVF's inverted lists, list by list."""
    invlists, parts = ivf.invlists, []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            ptr = invlists.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(lst, ptr)
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


class InvertedListCodes:
    """Where each id's code sits in an IVF's inverted lists, and a gather of codes by id.

    Built from the ids in list-by-list order (``ivf_ids``, or what an IDMap maps them to): a
    ``RowMap`` to positions in that order plus where each list starts (8 bytes a list). A gather
    visits each touched list once through a zero-copy view of its codes: a Python step per list
    (~10 us), so its cost grows with the number of lists a batch of ids touches.

    Parameters
    ----------
    ivf : faiss.IndexBinaryIVF
        The index whose inverted lists hold the codes.
    ids : ndarray of int64, shape (ntotal,)
        The ids in list-by-list order (``ivf_ids``, or what an IDMap maps them to).
    """

    def __init__(self, ivf: Any, ids: NDArray[np.int64]) -> None:
        sizes = [ivf.invlists.list_size(lst) for lst in range(ivf.nlist)]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.rows = RowMap(ids)
        self.ntotal = self.rows.ntotal
        self.kind = self.rows.kind

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.starts.nbytes

    def lookup(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
        return self.rows.lookup(ids)

    def gather(self, ivf: Any, ids: NDArray[np.int64]) -> CodesResult:
        """Codes ``(m, code_size)`` uint8 of ``ids`` (zero where not found), and the found mask."""
        pos, found = self.lookup(ids)
        cs = int(ivf.code_size)
        want = np.arange(ids.size) if found is None else np.flatnonzero(found)
        want = want[np.argsort(pos[want])]  # list by list, so each list is visited once
        wpos = pos[want]
        bounds = np.searchsorted(wpos, self.starts).tolist()  # wpos[bounds[l]:bounds[l + 1]] are in list l
        starts = self.starts.tolist()
        picked = np.empty((want.size, cs), np.uint8)
        invlists = ivf.invlists
        for lst in np.flatnonzero(np.diff(bounds)).tolist():
            a, b, start = bounds[lst], bounds[lst + 1], starts[lst]
            ptr = invlists.get_codes(lst)
            try:
                codes = faiss.rev_swig_ptr(ptr, (starts[lst + 1] - start) * cs).reshape(-1, cs)
                np.take(codes, wpos[a:b] - start, axis=0, out=picked[a:b])
            finally:
                invlists.release_codes(lst, ptr)
        out = np.zeros((ids.size, cs), np.uint8)
        out[want] = picked
        return out, found


def read_codes(core: Any, code_map: Callable[[], Any], ids: NDArray[np.int64]) -> CodesResult:
    """Stored codes of ``ids`` in the faiss index ``core`` (an IDMap's inner index, or bare).

    ``code_map()`` gives the index's cached id map (a ``RowMap`` to ``core``'s rows, or for an
    IVF an ``InvertedListCodes``). Flat, HNSW, MultiHash: one gather from a zero-copy view of their
    flat storage; IVF: list by list; Hash: ``UnsupportedOperation``; anything else: faiss's own
    ``reconstruct``, one distinct id at a time (``UnsupportedOperation`` where faiss has none).
    """
    if isinstance(core, faiss.IndexBinaryHash):
        raise UnsupportedOperation(
            "faiss IndexBinaryHash keeps codes only inside its hash buckets and cannot return them "
            "by id; use MultiHash ('IDMap2,BHash4x16' keeps a flat copy) or a flat index"
        )
    storage = flat_storage(core)
    if storage is not None:
        rows, found = code_map().lookup(ids)
        return gather(flat_codes(storage), rows, found), found
    if isinstance(core, faiss.IndexBinaryIVF):
        return cast(CodesResult, code_map().gather(core, ids))
    rows, found = code_map().lookup(ids)
    distinct, inverse = np.unique(rows if found is None else rows[found], return_inverse=True)
    try:
        codes = np.stack([core.reconstruct(int(r)) for r in (distinct if distinct.size else [0])])
    except RuntimeError as exc:
        raise UnsupportedOperation(f"faiss {type(core).__name__} cannot return stored codes ({first_line(exc)})") from None
    out = np.zeros((ids.size, codes.shape[1]), np.uint8)
    out[slice(None) if found is None else found] = codes[inverse]
    return out, found
