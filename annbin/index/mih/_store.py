"""Where ``MIHIndex`` keeps its codes: a main storage the hash tables cover, a tail, tombstones.

- **main**: a ``faiss.IndexBinaryFlat`` holding the codes the tables were built over, in ascending
  id order (a row is an id's rank, so the search's (distance, row) order is the tie rule's
  (distance, id) order), with their ids (``main_ids``, int64, ascending; not stored while they are
  ``0..n-1``, the ids of an index filled without explicit ids). It changes only when the
  tables are rebuilt (``compact``), so a zero-copy view of its codes stays valid as the tables'
  shared codes.
- **tail**: a second ``IndexBinaryFlat`` with the codes added since, in insertion order, and their
  ids; searches scan it by brute force (faiss) and merge its results exactly with the tables'.
- **tombstones**: ``dead``, a bool per main row, set by ``remove``; the tables skip those rows and
  the scans of main use a faiss ``IDSelectorBitmap`` of the live rows. Codes removed from the
  tail leave it at once.

``compact`` folds the tail into main and drops the tombstones: the caller rebuilds the tables.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import as_ids
from annbin.index._faiss import exact_knn, flat_codes, omp_threads
from annbin.index._results import RangeResult, SearchResult
from annbin.index._rows import RowMap, gather
from annbin.index.mih._tables import MIHTable, check_m, copies_words, substring_layout, to_words

_EMPTY_IDS = np.empty(0, dtype=np.int64)


class LiveRows:
    """A main ``IndexBinaryFlat`` seen without its tombstoned rows: the ``search`` /
    ``range_search`` / ``ntotal`` that ``exact_knn`` needs (rows returned are main rows).

    Parameters
    ----------
    flat : faiss.IndexBinaryFlat
        Main storage.
    dead : ndarray of bool, shape (flat.ntotal,)
        The tombstoned rows.
    """

    def __init__(self, flat: Any, dead: NDArray[np.bool_]) -> None:
        self._flat, self.d = flat, int(flat.d)
        self.ntotal = int(dead.size - np.count_nonzero(dead))
        self._bitmap = np.packbits(~dead, bitorder="little")  # the selector reads it: keep it alive
        self._params = faiss.SearchParameters()
        self._params.sel = faiss.IDSelectorBitmap(dead.size, faiss.swig_ptr(self._bitmap))

    def search(self, x: NDArray[np.uint8], k: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        D, I = self._flat.search(x, k, params=self._params)
        return D, I

    def range_search(self, x: NDArray[np.uint8], radius: int) -> tuple[Any, Any, Any]:
        lims, D, I = self._flat.range_search(x, radius, params=self._params)
        return lims, D, I


class StorageMap:
    """``get_codes``' id -> storage map: a ``RowMap`` over the live ids (main's live rows, then the
    tail) and, while there are tombstones, the main row of each live main code (int32).

    Parameters
    ----------
    store : MIHStore
        The store mapped, as it is now (the map is rebuilt when it changes).
    """

    def __init__(self, store: MIHStore) -> None:
        self.rows = RowMap(store.ids())
        self.ntotal = self.rows.ntotal
        self.nmain = store.nmain
        self.live = None if store.dead is None else np.flatnonzero(~store.dead).astype(np.int32)
        self.nlive = store.nmain - store.ndead

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + (0 if self.live is None else self.live.nbytes)

    def lookup(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
        """Storage positions of ``ids``: main row ``p < nmain``, else tail row ``p - nmain``."""
        pos, found = self.rows.lookup(ids)
        pos = pos.astype(np.int64)  # a copy: the RowMap may hand back ``ids`` itself
        tail = pos >= self.nlive
        pos[tail] += self.nmain - self.nlive
        if self.live is not None:
            main = ~tail
            pos[main] = self.live[pos[main]]
        return pos, found


class MIHStore:
    """Codes and ids of an ``MIHIndex``: main (covered by the tables), tail and tombstones.

    Parameters
    ----------
    d : int
        Code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    """

    def __init__(self, d: int) -> None:
        self.d, self.code_size = d, d // 8
        self.main = faiss.IndexBinaryFlat(d)
        #: main's ids, or None while they are 0..nmain-1 (8 bytes a code saved: half the tables'
        #: overhead at 64 bits)
        self._main_ids: NDArray[np.int64] | None = None
        self.tail = faiss.IndexBinaryFlat(d)
        self._tail_chunks: list[NDArray[np.int64]] = []
        self._tail_ids = _EMPTY_IDS
        self.dead: NDArray[np.bool_] | None = None
        self.ndead = 0

    @property
    def nmain(self) -> int:
        """Main rows, tombstoned ones included."""
        return int(self.main.ntotal)

    @property
    def main_ids(self) -> NDArray[np.int64]:
        """Main's ids in row order (a new ``arange`` while they are ``0..nmain-1``)."""
        return np.arange(self.nmain, dtype=np.int64) if self._main_ids is None else self._main_ids

    def ids_of(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        """The ids of main ``rows``."""
        return rows.astype(np.int64, copy=False) if self._main_ids is None else self._main_ids[rows]

    @property
    def scan_ids(self) -> NDArray[np.int64] | None:
        """``exact_knn``'s ``ids`` for a scan of main: None while ids are rows."""
        return self._main_ids

    def _set_main_ids(self, ids: NDArray[np.int64]) -> None:
        """Keep main's ids (ascending, unique), or nothing if they are ``0..nmain-1``."""
        self._main_ids = None if ids.size == 0 or (ids[0] == 0 and ids[-1] == ids.size - 1) else ids

    @property
    def ntail(self) -> int:
        return int(self.tail.ntotal)

    @property
    def ntotal(self) -> int:
        """Live codes."""
        return self.nmain - self.ndead + self.ntail

    @property
    def tail_ids(self) -> NDArray[np.int64]:
        if self._tail_chunks:
            self._tail_ids = np.concatenate([self._tail_ids, *self._tail_chunks])
            self._tail_chunks = []
        return self._tail_ids

    def ids(self) -> NDArray[np.int64]:
        """Live ids: main's in row order, then the tail's (a new array)."""
        main = self.main_ids if self.dead is None else self.main_ids[~self.dead]
        return np.concatenate([main, self.tail_ids])

    def add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        """Append validated codes ``(n, d // 8)`` uint8 with new ids to the tail."""
        if self.nmain + self.ntail + codes.shape[0] >= 2**31 - 1:
            raise ValueError(f"MIHIndex holds fewer than 2**31 codes; adding {codes.shape[0]} to {self.ntotal}")
        self.tail.add(codes)
        self._tail_chunks.append(ids.copy())

    def remove(self, ids: NDArray[np.int64]) -> int:
        """Tombstone the main rows of ``ids``, drop their tail rows; returns how many went."""
        removed = 0
        if self.nmain:
            if self._main_ids is None:  # ids are rows
                hit = np.zeros(self.nmain, dtype=bool)
                hit[ids[(ids >= 0) & (ids < self.nmain)]] = True
            else:
                hit = np.isin(self._main_ids, ids)
            if self.dead is not None:
                hit &= ~self.dead
            count = int(np.count_nonzero(hit))
            if count:
                self.dead = hit if self.dead is None else self.dead | hit
                self.ndead += count
                removed += count
        if self.ntail:
            rows = np.flatnonzero(np.isin(self.tail_ids, ids))
            if rows.size:
                gone = int(self.tail.remove_ids(faiss.IDSelectorBatch(rows.astype(np.int64))))
                if gone != rows.size:  # faiss's flat index compacts in order; anything else is a bug
                    raise RuntimeError(f"faiss removed {gone} codes, expected {rows.size}")
                self._tail_ids = np.delete(self._tail_ids, rows)
                removed += gone
        return removed

    def main_index(self) -> Any:
        """Main as exact_knn scans it: the flat index, or a view without its tombstones."""
        return self.main if self.dead is None else LiveRows(self.main, self.dead)

    def knn_scan(self, x: NDArray[np.uint8], k: int, threads: int, *, tail: bool = False) -> SearchResult:
        """Exact kNN (ids, tie rule) of queries ``x`` ``(nq, d // 8)`` uint8 over main's live codes
        (or the tail's) by the faiss scan, on ``threads`` OpenMP threads; ``1 <= k <=`` those codes."""
        with omp_threads(threads):
            if tail:
                return exact_knn(self.tail, x, k, ids=self.tail_ids)
            return exact_knn(self.main_index(), x, k, ids=self.scan_ids)

    def range_scan(self, x: NDArray[np.uint8], radius: int, threads: int, *, tail: bool = False) -> RangeResult:
        """Every code of main's live ones (or the tail's) at distance ``< radius`` from queries ``x``,
        by the faiss scan on ``threads`` OpenMP threads: ``(lims, D, ids)`` grouped by query."""
        with omp_threads(threads):
            lims, D, rows = (self.tail if tail else self.main_index()).range_search(x, radius)
        ids = self.tail_ids[rows] if tail else self.ids_of(rows)
        return lims.astype(np.int64), D.astype(np.int32), ids

    def compact(self) -> NDArray[np.uint8]:
        """Fold the tail into main and drop tombstoned rows, main in ascending id order; returns a
        zero-copy view of main's codes ``(nmain, d // 8)`` (valid until main next changes)."""
        main = flat_codes(self.main)
        live = slice(None) if self.dead is None else ~self.dead
        codes = np.concatenate([main[live], flat_codes(self.tail)])
        ids = np.concatenate([self.main_ids[live], self.tail_ids])
        if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
            order = np.argsort(ids)
            codes, ids = codes[order], ids[order]
        self.main.reset()
        if codes.shape[0]:
            self.main.add(codes)
        del codes
        self._set_main_ids(ids)
        self.tail.reset()
        self._tail_chunks, self._tail_ids = [], _EMPTY_IDS
        self.dead, self.ndead = None, 0
        return flat_codes(self.main)

    def get_codes(self, storage: StorageMap, ids: NDArray[np.int64]) -> tuple[NDArray[np.uint8], NDArray[np.bool_] | None]:
        """Codes of ``ids`` through ``storage`` (this store's current map), zero where not found."""
        pos, found = storage.lookup(ids)
        in_main = pos < self.nmain
        if in_main.all():
            return gather(flat_codes(self.main), pos, found), found
        out = np.empty((ids.size, self.code_size), np.uint8)
        out[in_main] = gather(flat_codes(self.main), pos[in_main], None)
        out[~in_main] = gather(flat_codes(self.tail), pos[~in_main] - self.nmain, None)
        if found is not None:
            out[~found] = 0
        return out, found

    def reset(self) -> None:
        self.__init__(self.d)  # type: ignore[misc]

    @property
    def nbytes(self) -> int:
        """Codes, ids and tombstones held now."""
        ids = (0 if self._main_ids is None else self._main_ids.nbytes) + self._tail_ids.nbytes + sum(c.nbytes for c in self._tail_chunks)
        return (self.nmain + self.ntail) * self.code_size + ids + (0 if self.dead is None else self.dead.nbytes)

    # --- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Main codes and ids (tombstoned rows included: the tables index them), the tombstones
        (uint8 0/1, empty if none), the tail's codes and ids."""
        dead = np.empty(0, np.uint8) if self.dead is None else self.dead.astype(np.uint8)
        return {"codes": flat_codes(self.main).copy(), "ids": self.main_ids, "dead": dead,
                "tail_codes": flat_codes(self.tail).copy(), "tail_ids": self.tail_ids}

    def load(self, codes: NDArray[np.uint8], ids: NDArray[np.int64], dead: NDArray[np.uint8] | None,
             tail_codes: NDArray[np.uint8] | None, tail_ids: NDArray[np.int64] | None) -> None:
        """Restore ``state``'s arrays (validated by the caller) into this empty store."""
        if codes.shape[0]:
            self.main.add(np.ascontiguousarray(codes))
        self._set_main_ids(ids)
        if dead is not None and dead.size and dead.any():
            self.dead = dead.astype(bool)
            self.ndead = int(np.count_nonzero(self.dead))
        if tail_codes is not None and tail_codes.shape[0]:
            self.tail.add(np.ascontiguousarray(tail_codes))
            self._tail_ids = np.asarray(tail_ids, dtype=np.int64)


Layout = tuple[NDArray[np.int64], NDArray[np.int64]]
Restored = tuple[list[MIHTable], "NDArray[np.uint64] | None", Layout]


def save_state(store: MIHStore, tables: list[MIHTable] | None, layout: Layout | None,
               m_choice: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """What an ``MIHIndex`` file holds: the store (main codes and ids, tombstones, tail), the
    measured ``m`` and the ntotal it was measured at (``m_choice``: a load does not measure again)
    and, once built, the tables, so a load needs no rebuild (``table_lengths`` and per table
    ``t<j>.occupancy``, ``.starts``, ``.rows``)."""
    arrays = store.state()
    if m_choice is not None:
        arrays["m_choice"] = np.array([m_choice["m"], m_choice["ntotal"]], dtype=np.int64)
    if tables is not None and layout is not None:
        arrays["table_lengths"] = layout[1]
        for j, table in enumerate(tables):
            arrays.update(table.state(f"t{j}."))
    return arrays


def load_m_choice(d: int, arrays: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """The measured ``m`` a file holds (``save_state``), or None (files from before ``m`` was
    measured, or where it was not); its times are not saved."""
    if "m_choice" not in arrays:
        return None
    m, n = (int(v) for v in np.asarray(arrays["m_choice"]).reshape(-1)[:2])
    return {"m": check_m(m, d), "ntotal": n, "seconds": {}}


def load_state(d: int, arrays: dict[str, np.ndarray]) -> tuple[MIHStore, Restored | None]:
    """A store from ``save_state``'s arrays plus, when the file holds them (``table_lengths``,
    ``t<j>.occupancy / .starts / .rows``), the tables, their shared words and their substring
    layout. Without tables (an older file, or an index never built), every live code goes to the
    tail. ``ValueError`` names any array that does not fit the others.

    The file's checksum (verified before this runs) vouches that ``save`` wrote these arrays, so a
    file with tables gets checks of O(n) at most: its main ids are checked ascending (hence unique)
    and non-negative, not sorted again (``as_ids``' ``np.unique`` was most of a 1M-code load), and
    only the tail's ids, a small fraction, are checked in full.
    """
    lengths = arrays.get("table_lengths")
    codes, ids = _stored_codes(arrays, "codes", "ids", d, trusted=lengths is not None)
    tail_codes, tail_ids = (_stored_codes(arrays, "tail_codes", "tail_ids", d) if "tail_codes" in arrays
                            else (codes[:0], ids[:0]))
    dead = arrays.get("dead")
    if dead is not None and dead.size and (dead.dtype != np.uint8 or dead.shape != (codes.shape[0],) or dead.max() > 1):
        raise ValueError(f"stored tombstones must be uint8 0/1 ({codes.shape[0]},), got {dead.dtype} {dead.shape}")
    store = MIHStore(d)
    if lengths is None or codes.shape[0] == 0:
        if np.intersect1d(ids, tail_ids).size:
            raise ValueError("stored ids repeat between the main codes and the tail")
        live = slice(None) if dead is None or dead.size == 0 else dead == 0
        codes, ids = np.concatenate([codes[live], tail_codes]), np.concatenate([ids[live], tail_ids])
        if codes.shape[0]:
            store.add(np.ascontiguousarray(codes), ids)
        return store, None
    if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
        raise ValueError("stored main ids must be ascending (the tables' row order)")
    if ids.size and ids[0] < 0:
        raise ValueError(f"stored ids must be >= 0, got {int(ids[0])}")
    if tail_ids.size and (ids.take(ids.searchsorted(tail_ids), mode="clip") == tail_ids).any():  # main ids are sorted
        raise ValueError("stored ids repeat between the main codes and the tail")
    if lengths.dtype != np.int64 or lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"stored table_lengths must be int64 (m,), got {lengths.dtype} {lengths.shape}")
    starts, expected = substring_layout(d, check_m(int(lengths.size), d))
    if not np.array_equal(lengths, expected):
        raise ValueError(f"stored table lengths {lengths.tolist()} do not split {d} bits into {lengths.size} substrings")
    store.load(codes, ids, dead, tail_codes, tail_ids)
    words = to_words(flat_codes(store.main))
    copy = copies_words(words, int(lengths.size))
    tables = [MIHTable.from_state(int(length), arrays, f"t{j}.", words, copy) for j, length in enumerate(lengths.tolist())]
    return store, (tables, None if copy else words, (starts, expected))


def _stored_codes(arrays: dict[str, np.ndarray], codes_name: str, ids_name: str, d: int, *, trusted: bool = False,
                  ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """A saved ``(codes, ids)`` pair, checked (``ValueError`` names what is wrong). ``trusted``: the
    ids' dtype and shape only; the caller checks them in O(n) (``load_state``)."""
    try:
        codes, ids = arrays[codes_name], arrays[ids_name]
    except KeyError as exc:
        raise ValueError(f"MIH index file lacks the {exc.args[0]!r} array") from None
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != d // 8:
        raise ValueError(f"stored {codes_name} must be uint8 (n, {d // 8}), got {codes.dtype} {codes.shape}")
    if trusted:
        if ids.dtype != np.int64 or ids.shape != (codes.shape[0],):
            raise ValueError(f"stored {ids_name} must be int64 ({codes.shape[0]},), got {ids.dtype} {ids.shape}")
        return codes, ids
    return codes, as_ids(ids, codes.shape[0], name=f"stored {ids_name}")
