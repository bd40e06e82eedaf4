"""Exact Hamming kNN by multi-index hashing, in pure Python + numpy.

Norouzi, Punjani & Fleet, "Fast Exact Search in Hamming Space with Multi-Index Hashing" (CVPR
2012, TPAMI 2014). Codes are split into ``m`` disjoint substrings, each indexed by a direct-address
hash table; a query probes buckets at growing substring radius and stops by the pigeonhole bound.
Results are exact: the distances equal ``faiss.IndexBinaryFlat``'s for every query.

Design (details in ``_mih_tables`` and ``_mih_search``):

- **m**: explicit, or ``None`` (default) for the paper's ``m ~ d / log2(ntotal)`` (substrings of at
  most 24 bits), re-chosen at every (re)build from the ntotal of that moment; ``effective_m``
  reports the value in use.
- **Storage**: the codes live in a ``faiss.IndexBinaryFlat`` in insertion order (the brute-force
  fallback scans it); each table holds ``2**length`` int64 buckets (start and size) and as many
  occupancy bits (read first by a probe: small enough to stay in L2 cache), int32 rows
  sorted by substring, and a copy of the codes as uint64 words in that order, so verifying a
  bucket reads contiguous memory. ``memory_bytes()`` counts all of it. ``get_codes`` gathers
  from a zero-copy view of the flat index's codes.
- **Search**: all queries of a batch advance together, radius by radius and table by table, and
  each query stops by the pigeonhole bound (see ``_mih_search``).
- **add / remove_ids**: both only append to / compact the stored codes and mark the tables stale;
  the tables are rebuilt lazily, in full, at the next search or ``build()`` (about 0.5 s per
  million 64-bit codes).
- **Fallback**: a cost model predicts, per query and step, what finishing by MIH would still cost;
  a query for which that exceeds ``fallback_ratio`` times a flat scan (far neighbours, e.g.
  uniformly random 128-bit codes) is answered by the flat scan instead; exact either way.
  ``fallback="never"`` / ``"always"`` force one path. Range search makes the same choice once per
  call.
- **Batches**: every search step is a round of numpy calls for all active queries, so a batch of
  1,000 queries costs far less per query than one query alone (about 0.1 ms of overhead per step,
  0.6-0.7 ms per single-query search on the development box: at 1M codes about what a flat scan
  costs).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import as_ids
from annbin.index._faiss import flat_codes
from annbin.index._mih_search import COSTS, expected_step_costs, knn_search, range_search
from annbin.index._mih_tables import (
    MIHTable,
    build_tables,
    check_m,
    default_m,
    extract_substrings,
    substring_layout,
    to_words,
)
from annbin.index._rows import gather
from annbin.index.base import BinaryIndex, CodesResult, RangeResult, SearchResult

FALLBACK_MODES = ("auto", "never", "always")
#: Queries searched together; the top-k state is ``(block, k)`` int64.
QUERY_BLOCK = 4096


class MIHIndex(BinaryIndex):
    """Exact Hamming kNN and range search by multi-index hashing (pure numpy).

    ``d``: code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    ``m``: number of substrings (hash tables); ``None`` chooses ``~ d / log2(ntotal)`` at each
    build. An explicit ``m`` must satisfy ``1 <= m <= d`` and ``ceil(d / m) <= 24``.

    Search parameters: ``fallback`` (``"auto"``, ``"never"``, ``"always"``: when to answer a
    query by a brute-force scan) and ``fallback_ratio`` (``auto`` falls back when MIH's predicted
    cost exceeds this multiple of a scan's, default 1.0).
    """

    variant = "mih"
    exact = True
    build_params = ("m",)
    search_params = ("fallback", "fallback_ratio")

    def __init__(self, d: int, *, m: int | None = None, fallback: str = "auto", fallback_ratio: float = 1.0) -> None:
        super().__init__(d)
        self.m = None if m is None else check_m(m, self.d)
        self.fallback = "auto"
        self.fallback_ratio = 1.0
        self._flat = faiss.IndexBinaryFlat(self.d)
        self._id_chunks: list[NDArray[np.int64]] = []
        self._ids_array = np.empty(0, dtype=np.int64)
        self._tables: list[MIHTable] | None = None
        self._layout: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None
        #: work done by the last search: queries, bucket lookups and candidates verified (kNN), and
        #: how many queries went to the flat scan
        self.last_search_stats: dict[str, Any] | None = None
        #: profiling: when True, kNN searches add ``"steps"`` to ``last_search_stats``, one record per
        #: search step and query block (radius, table, active queries, lookups, candidates, seconds)
        self.record_steps = False
        self.set_search_params(fallback=fallback, fallback_ratio=fallback_ratio)

    # --- storage -------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._flat.ntotal)

    @property
    def effective_m(self) -> int | None:
        """The number of substrings the tables use (or will use at the next build); None if empty."""
        if self._layout is not None:
            return int(self._layout[0].size)
        if self.m is not None:
            return self.m
        return default_m(self.d, self.ntotal) if self.ntotal else None

    @property
    def _ids(self) -> NDArray[np.int64]:
        if self._id_chunks:
            self._ids_array = np.concatenate([self._ids_array, *self._id_chunks])
            self._id_chunks = []
        return self._ids_array

    def get_ids(self) -> NDArray[np.int64]:
        return self._ids.copy()

    def _codes(self) -> NDArray[np.uint8]:
        """All codes ``(ntotal, d // 8)`` uint8 in insertion order (a copy)."""
        return faiss.vector_to_array(self._flat.xb).reshape(self.ntotal, self.code_size)

    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        if self.ntotal + codes.shape[0] >= 2**31 - 1:
            raise ValueError(f"MIHIndex holds fewer than 2**31 codes; adding {codes.shape[0]} to {self.ntotal}")
        self._flat.add(codes)
        self._id_chunks.append(ids.copy())
        self._tables = self._layout = None

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        rows = np.flatnonzero(np.isin(self._ids, ids))
        if rows.size == 0:
            return 0
        removed = int(self._flat.remove_ids(faiss.IDSelectorBatch(rows.astype(np.int64))))
        if removed != rows.size:  # faiss's flat index compacts in order; anything else is a bug
            raise RuntimeError(f"faiss removed {removed} codes, expected {rows.size}")
        self._ids_array = np.delete(self._ids_array, rows)
        self._tables = self._layout = None
        return removed

    def _get_codes(self, ids: NDArray[np.int64]) -> CodesResult:
        rows, found = self._code_map().lookup(ids)
        return gather(flat_codes(self._flat), rows, found), found

    def _reset(self) -> None:
        self._flat.reset()
        self._id_chunks = []
        self._ids_array = np.empty(0, dtype=np.int64)
        self._tables = self._layout = None

    def _build(self) -> list[MIHTable]:
        """(Re)build the tables from the stored codes if they are stale."""
        if self._tables is None:
            m = self.m if self.m is not None else default_m(self.d, self.ntotal)
            starts, lengths = substring_layout(self.d, m)
            codes = self._codes()
            self._tables = build_tables(to_words(codes), extract_substrings(codes, starts, lengths), lengths)
            self._layout = (starts, lengths)
        return self._tables

    def build(self) -> None:
        """Build the hash tables now instead of at the next search (e.g. to time the build)."""
        self._build()

    def memory_bytes(self) -> int:
        """Codes, ids and hash tables (building pending tables first, so the figure is what a search uses)."""
        tables = self._build() if self.ntotal else []
        shared = {id(t.words): t.words.nbytes for t in tables if t.shared}
        held = self.ntotal * self.code_size + self._ids.nbytes + sum(t.nbytes for t in tables) + sum(shared.values())
        return held + self._code_map_bytes()

    # --- parameters ----------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"m": self.m}

    def get_search_params(self) -> dict[str, Any]:
        return {"fallback": self.fallback, "fallback_ratio": self.fallback_ratio}

    def _set_search_params(self, params: dict[str, Any]) -> None:
        if "fallback" in params:
            mode = params["fallback"]
            if mode not in FALLBACK_MODES:
                raise ValueError(f"fallback must be one of {FALLBACK_MODES}, got {mode!r}")
            self.fallback = mode
        if "fallback_ratio" in params:
            ratio = params["fallback_ratio"]
            if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
                raise TypeError(f"fallback_ratio must be a number, got {type(ratio).__name__}")
            if not ratio > 0:
                raise ValueError(f"fallback_ratio must be > 0, got {ratio}")
            self.fallback_ratio = float(ratio)

    # --- search --------------------------------------------------------------------------
    def _budget(self) -> float:
        """Per-query cost (ns) above which a query goes to the flat scan."""
        if self.fallback == "never":
            return math.inf
        if self.fallback == "always":
            return -math.inf
        return self.fallback_ratio * COSTS.flat_cost(self.ntotal, self.d)

    def _queries(self, x: NDArray[np.uint8]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
        if self._layout is None:
            raise RuntimeError("tables not built")
        return to_words(x), extract_substrings(x, *self._layout)

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        tables = self._build()
        nq = x.shape[0]
        budget = self._budget()
        # the first round of exact-match probes alone would cost more than a scan: scan everything
        if budget < len(tables) * (COSTS.step / nq + COSTS.lookup):
            D, rows = self._flat.search(x, k)
            self.last_search_stats = {"queries": nq, "lookups": 0, "candidates": 0, "fallback_queries": nq}
            return D.astype(np.int32), self._ids[rows]
        xw, xs = self._queries(x)
        D = np.empty((nq, k), dtype=np.int32)
        rows = np.empty((nq, k), dtype=np.int64)
        fallback = np.zeros(nq, dtype=bool)
        # top-k state is (block, k) int64 keys that also hold the query's index in the block
        block = max(1, min(QUERY_BLOCK, (1 << 24) // k, (1 << (31 - (self.d + 1).bit_length())) - 1))
        stats: dict[str, Any] = {"queries": nq, "lookups": 0, "candidates": 0}
        steps: list[dict[str, float]] | None = [] if self.record_steps else None
        for a in range(0, nq, block):
            b = min(nq, a + block)
            D[a:b], rows[a:b], fallback[a:b] = knn_search(tables, self.ntotal, self.d, xw[a:b], xs[a:b], k, budget,
                                                          stats=stats, steps=steps)
        if steps is not None:
            stats["steps"] = steps
        if fallback.any():
            D[fallback], rows[fallback] = self._flat.search(x[fallback], k)
        stats["fallback_queries"] = int(fallback.sum())
        self.last_search_stats = stats
        return D, self._ids[rows]

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        tables = self._build()
        nq = x.shape[0]
        radius = min(radius, self.d)
        budget = self._budget()
        # every step 0..radius is needed: predict their cost on uniform buckets
        steps = radius + 1
        expected = expected_step_costs(tables, self.ntotal, -(-self.d // 64), steps).sum() + steps * COSTS.step / nq
        if expected > budget:
            lims, D, rows = self._flat.range_search(x, radius + 1)  # faiss keeps distance < radius
            lims = lims.astype(np.int64)
            self.last_search_stats = {"queries": nq, "fallback_queries": nq}
            return lims, D, self._ids[rows]
        xw, xs = self._queries(x)
        lims, D, rows, fallback = range_search(tables, self.ntotal, self.d, xw, xs, radius, budget)
        self.last_search_stats = {"queries": nq, "fallback_queries": int(fallback.sum())}
        if fallback.any():  # skewed buckets: those queries by brute force, spliced back in query order
            flims, fD, frows = self._flat.range_search(x[fallback], radius + 1)
            sizes = np.diff(lims)
            sizes[fallback] = np.diff(flims.astype(np.int64))
            qid = np.concatenate([np.repeat(np.flatnonzero(~fallback), sizes[~fallback]),
                                  np.repeat(np.flatnonzero(fallback), sizes[fallback])])
            order = np.argsort(qid, kind="stable")
            D = np.concatenate([D, fD.astype(np.int32)])[order]
            rows = np.concatenate([rows, frows.astype(np.int64)])[order]
            lims = np.concatenate([[0], np.cumsum(sizes)])
        return lims, D, self._ids[rows]

    # --- persistence ---------------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Codes and ids only: the tables are a deterministic function of them, rebuilt on load."""
        return {"codes": self._codes(), "ids": self._ids}

    @classmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        try:
            codes, ids = arrays["codes"], arrays["ids"]
        except KeyError as exc:
            raise ValueError(f"MIH index file lacks the {exc.args[0]!r} array") from None
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != d // 8:
            raise ValueError(f"stored codes must be uint8 (n, {d // 8}), got {codes.dtype} {codes.shape}")
        ids = as_ids(ids, codes.shape[0], name="stored ids")
        unknown = sorted(set(params) - set(cls.build_params))
        if unknown:
            raise ValueError(f"unknown MIH build parameter(s) {unknown} in the index file")
        obj = cls(d, **params)
        if codes.shape[0]:
            obj._add(np.ascontiguousarray(codes), ids)
        return obj
