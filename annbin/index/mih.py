"""Exact Hamming kNN by multi-index hashing, in pure Python + numpy.

Norouzi, Punjani & Fleet, "Fast Exact Search in Hamming Space with Multi-Index Hashing" (CVPR
2012, TPAMI 2014). Codes are split into ``m`` disjoint substrings, each indexed by a direct-address
hash table; a query probes buckets at growing substring radius and stops by the pigeonhole bound.
Results are exact: the distances equal ``faiss.IndexBinaryFlat``'s for every query.

Design (details in ``_mih_tables`` and ``_mih_search``):

- **m**: explicit; ``"formula"`` for the paper's ``m ~ d / log2(ntotal)`` (substrings of at most 24
  bits) at every (re)build; or ``None`` (default): the formula below ``MEASURE_M_MIN_N`` codes and,
  from there on, measured: the build times a sample of the index's own codes as queries on
  candidate ``m`` around the formula's (``_mih_calibrate.choose_m``; a few table builds: 2-7x a
  plain build at 1M codes in mih_vs_flat's m-sweep). The choice is kept, saved with the index and
  reused until ntotal halves or doubles. ``effective_m`` reports the value in use, ``measured_m``
  what was measured.
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
- **Fallback**: a cost model (constants measured once per process, ``_mih_calibrate``) predicts, per query and step, what finishing by MIH would still cost;
  a query for which that exceeds ``fallback_ratio`` times a flat scan (far neighbours, e.g.
  uniformly random 128-bit codes) is answered by the flat scan instead; exact either way.
  ``fallback="never"`` / ``"always"`` force one path. Range search makes the same choice once per
  call.
- **Batches**: every search step is a round of numpy calls for all active queries, so a batch of
  1,000 queries costs far less per query than one query alone (about 0.1 ms of overhead per step,
  0.6-0.7 ms per single-query search on the development box: at 1M codes about what a flat scan
  costs).
- **Ties**: at the k-th distance the smallest ids win, as in ``FlatIndex``: the tables are built
  over the codes in id order, so a table row is an id's rank and the search's (distance, row)
  order is (distance, id) order; the fallback scan uses ``exact_knn``.
- **Threads**: ``num_threads`` splits a batch into query blocks searched on a thread pool (numpy
  releases the GIL in its heavy calls; blocks are independent, so results do not depend on the
  count), and runs the fallback scan with as many OpenMP threads. The default, ``None``, follows
  faiss's OpenMP setting: every core unless ``OMP_NUM_THREADS`` or ``faiss.omp_set_num_threads``
  says otherwise, so code that pins faiss to one thread (``annbin bench --threads 1``, a Ray
  actor with one CPU) pins MIH too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import as_ids, check_int
from annbin.index._faiss import exact_knn, flat_codes, omp_threads
from annbin.index._mih_calibrate import calibrated_costs, measure_m, planned_m
from annbin.index._mih_search import (
    CostModel,
    expected_step_costs,
    knn_search,
    range_search,
)
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
#: Fewest queries a block is cut to when spreading a batch over threads: a step's fixed numpy
#: overhead (~0.1 ms, mostly holding the GIL) would dominate smaller blocks.
#: Measured, 1M clustered 64-bit codes (mih_vs_flat's generator), 1,000 queries, k=10, median of 3,
#: three runs: 2 threads took 0.66x, 0.84x and 0.85x the speed of 1 on the shared 2-core development
#: box, whose other core was busy with other work (2 threads' CPU time was 1.15-1.25x one thread's
#: and never ran on two cores at once): indicative only, it shows what two blocks cost, not what a
#: free core gains.
MIN_THREAD_BLOCK = 256
_T = TypeVar("_T")


class MIHIndex(BinaryIndex):
    """Exact Hamming kNN and range search by multi-index hashing (pure numpy).

    ``d``: code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    ``m``: number of substrings (hash tables). ``None`` (default): chosen at each build, by
    measuring candidates from ``MEASURE_M_MIN_N`` codes on (kept while ntotal stays within 2x) and
    by the formula ``~ d / log2(ntotal)`` below; ``"formula"``: always the formula. An explicit
    ``m`` must satisfy ``1 <= m <= d`` and ``ceil(d / m) <= 24``.

    Search parameters: ``fallback`` (``"auto"``, ``"never"``, ``"always"``: when to answer a
    query by a brute-force scan), ``fallback_ratio`` (``auto`` falls back when MIH's predicted
    cost exceeds this multiple of a scan's, default 1.0) and ``num_threads`` (threads for one
    search, MIH and fallback scan alike; ``None``, the default: ``faiss.omp_get_max_threads()``,
    all cores unless OpenMP was told otherwise).
    ``cost_model``: the ``CostModel`` behind ``auto``'s choice (default: ``calibrated_costs()``,
    measured on this machine once per process; ``_mih_search.COSTS`` for fixed reference constants).
    """

    variant = "mih"
    exact = True
    build_params = ("m",)
    search_params = ("fallback", "fallback_ratio", "num_threads")

    def __init__(self, d: int, *, m: int | str | None = None, fallback: str = "auto", fallback_ratio: float = 1.0,
                 num_threads: int | None = None, cost_model: CostModel | None = None) -> None:
        super().__init__(d)
        self.m: int | str | None = m if m is None or m == "formula" else check_m(m, self.d)
        self.fallback = "auto"
        self.fallback_ratio = 1.0
        self.num_threads: int | None = None
        if cost_model is not None and not isinstance(cost_model, CostModel):
            raise TypeError(f"cost_model must be a CostModel, got {type(cost_model).__name__}")
        self._cost_model = cost_model
        #: the last measured choice of m: {"m", "ntotal" (when measured), "seconds" (by candidate m)}
        self._m_choice: dict[str, Any] | None = None
        self._measuring: int | None = None  # the candidate m being built while measuring
        self._flat = faiss.IndexBinaryFlat(self.d)
        self._id_chunks: list[NDArray[np.int64]] = []
        self._ids_array = np.empty(0, dtype=np.int64)
        self._tables: list[MIHTable] | None = None
        self._layout: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None
        #: ids in the tables' row order (ascending: the tie rule), set by each build
        self._table_ids = np.empty(0, dtype=np.int64)
        #: work done by the last search: queries, bucket lookups and candidates verified (kNN), and
        #: how many queries went to the flat scan
        self.last_search_stats: dict[str, Any] | None = None
        #: profiling: when True, kNN searches add ``"steps"`` to ``last_search_stats``, one record per
        #: search step and query block (radius, table, active queries, lookups, candidates, seconds)
        self.record_steps = False
        self.set_search_params(fallback=fallback, fallback_ratio=fallback_ratio, num_threads=num_threads)

    # --- storage -------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._flat.ntotal)

    @property
    def cost_model(self) -> CostModel:
        """The cost model behind ``fallback="auto"`` (calibrated on first use unless one was given)."""
        return self._cost_model if self._cost_model is not None else calibrated_costs()

    @cost_model.setter
    def cost_model(self, value: CostModel) -> None:
        self._cost_model = value

    @property
    def effective_m(self) -> int | None:
        """The number of substrings the tables use (or will use at the next build, if it measures
        nothing); None if empty."""
        if self._layout is not None:
            return int(self._layout[0].size)
        if not self.ntotal and not isinstance(self.m, int):
            return None
        return planned_m(self.m, self.d, self.ntotal, self._m_choice) or default_m(self.d, self.ntotal)

    @property
    def measured_m(self) -> dict[str, Any] | None:
        """The last measured choice of ``m`` (``m=None``): ``{"m", "ntotal", "seconds"}``, seconds
        per candidate ``m`` (empty after a load: the choice is saved, its times are not); None if
        none was measured."""
        return None if self._m_choice is None else {**self._m_choice, "seconds": dict(self._m_choice["seconds"])}

    def _resolve_m(self) -> int:
        """The ``m`` for the next build; measuring it (which leaves the winner's tables built) if due."""
        if self._measuring is not None:
            return self._measuring
        m = planned_m(self.m, self.d, self.ntotal, self._m_choice)
        return m if m is not None else self._measure_m()

    def _measure_m(self) -> int:
        """Choose ``m`` by timing sample queries on candidate tables (``measure_m``)."""

        def build(m: int) -> tuple[Any, Any]:
            self._measuring, self._tables, self._layout = m, None, None
            try:
                self._build()
            finally:
                self._measuring = None
            return self._tables, self._layout

        def install(built: tuple[Any, Any]) -> None:
            self._tables, self._layout = built

        stats = self.last_search_stats
        self._m_choice, (self._tables, self._layout) = measure_m(
            self.d, flat_codes(self._flat), build, install, lambda x, k: self.search(x, k, params={"num_threads": 1}))
        self.last_search_stats = stats
        return int(self._m_choice["m"])

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
        self._m_choice = None  # measured on codes that are gone

    def _build(self) -> list[MIHTable]:
        """(Re)build the tables from the stored codes if they are stale.

        The tables hold the codes in ascending id order (a row is an id's rank), so the search's
        tie rule on rows is the tie rule on ids; in insertion order as long as ids only grew.
        """
        if self._tables is None:
            m = self._resolve_m()
        if self._tables is None:  # (measuring m built the chosen tables already)
            starts, lengths = substring_layout(self.d, m)
            codes, ids = self._codes(), self._ids
            if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
                order = np.argsort(ids)
                codes, ids = codes[order], ids[order]
            self._tables = build_tables(to_words(codes), extract_substrings(codes, starts, lengths), lengths)
            self._table_ids = ids
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
        if tables and self._table_ids is not self._ids_array:  # ids not ascending: a sorted copy
            held += self._table_ids.nbytes
        return held + self._code_map_bytes()

    # --- parameters ----------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"m": self.m}

    def get_search_params(self) -> dict[str, Any]:
        return {"fallback": self.fallback, "fallback_ratio": self.fallback_ratio, "num_threads": self.num_threads}

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
        if "num_threads" in params:
            threads = params["num_threads"]
            self.num_threads = None if threads is None else check_int(threads, "num_threads", minimum=1)

    # --- search --------------------------------------------------------------------------
    def _threads(self) -> int:
        """Threads for one search: ``num_threads``, or faiss's OpenMP thread count (all cores by default)."""
        return self.num_threads if self.num_threads is not None else max(1, faiss.omp_get_max_threads())

    def _budget(self) -> float:
        """Per-query cost (ns) above which a query goes to the flat scan."""
        if self.fallback == "never":
            return math.inf
        if self.fallback == "always":
            return -math.inf
        return self.fallback_ratio * self.cost_model.flat_cost(self.ntotal, self.d)

    def _queries(self, x: NDArray[np.uint8]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
        if self._layout is None:
            raise RuntimeError("tables not built")
        return to_words(x), extract_substrings(x, *self._layout)

    @staticmethod
    def _blocks(nq: int, cap: int, threads: int) -> list[tuple[int, int]]:
        """Query blocks ``[a, b)`` of at most ``cap`` queries; with threads, at least one per thread
        (while each keeps ``MIN_THREAD_BLOCK`` queries) and a multiple of them, of equal size."""
        count = -(-nq // cap)
        if threads > 1:
            count = max(count, min(threads, nq // MIN_THREAD_BLOCK))
            if count > threads:
                count = -(-count // threads) * threads
        size = -(-nq // count)
        return [(a, min(nq, a + size)) for a in range(0, nq, size)]

    @staticmethod
    def _map_blocks(fn: Callable[[int, int], _T], blocks: list[tuple[int, int]], threads: int) -> list[_T]:
        """``fn(a, b)`` for each block, in order, on up to ``threads`` threads."""
        if threads == 1 or len(blocks) == 1:
            return [fn(a, b) for a, b in blocks]
        with ThreadPoolExecutor(max_workers=min(threads, len(blocks))) as pool:
            return list(pool.map(lambda ab: fn(*ab), blocks))

    def _scan(self, x: NDArray[np.uint8], k: int, threads: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """Exact kNN (ids, tie rule) by the faiss scan, on ``threads`` OpenMP threads."""
        with omp_threads(threads):
            return exact_knn(self._flat, x, k, ids=self._ids)

    def _range_scan(self, x: NDArray[np.uint8], radius: int, threads: int) -> RangeResult:
        """Range search (ids) by the faiss scan, on ``threads`` OpenMP threads."""
        with omp_threads(threads):
            lims, D, rows = self._flat.range_search(x, radius + 1)  # faiss keeps distance < radius
        return lims.astype(np.int64), D.astype(np.int32), self._ids[rows]

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        tables = self._build()
        nq = x.shape[0]
        budget, costs, threads = self._budget(), self.cost_model, self._threads()
        # the first round of exact-match probes alone would cost more than a scan: scan everything
        if budget < len(tables) * (costs.step / nq + costs.lookup):
            self.last_search_stats = {"queries": nq, "lookups": 0, "candidates": 0, "fallback_queries": nq}
            return self._scan(x, k, threads)
        xw, xs = self._queries(x)
        record = self.record_steps

        def block(a: int, b: int) -> tuple[Any, ...]:
            stats: dict[str, int] = {}
            steps: list[dict[str, float]] | None = [] if record else None
            out = knn_search(tables, self.ntotal, self.d, xw[a:b], xs[a:b], k, budget, costs, stats=stats, steps=steps)
            return (*out, stats, steps)

        # top-k state is (block, k) int64 keys that also hold the query's index in the block
        cap = max(1, min(QUERY_BLOCK, (1 << 24) // k, (1 << (31 - (self.d + 1).bit_length())) - 1))
        parts = self._map_blocks(block, self._blocks(nq, cap, threads), threads)
        D = np.concatenate([p[0] for p in parts])
        I = self._table_ids[np.concatenate([p[1] for p in parts])]
        fallback = np.concatenate([p[2] for p in parts])
        stats: dict[str, Any] = {"queries": nq, "lookups": sum(p[3]["lookups"] for p in parts),
                                 "candidates": sum(p[3]["candidates"] for p in parts)}
        if record:  # one record per step and block, block after block
            stats["steps"] = [step for p in parts for step in p[4]]
        if fallback.any():
            D[fallback], I[fallback] = self._scan(x[fallback], k, threads)
        stats["fallback_queries"] = int(fallback.sum())
        self.last_search_stats = stats
        return D, I

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        tables = self._build()
        nq = x.shape[0]
        radius = min(radius, self.d)
        budget, costs, threads = self._budget(), self.cost_model, self._threads()
        # every step 0..radius is needed: predict their cost on uniform buckets
        steps = radius + 1
        expected = expected_step_costs(tables, self.ntotal, -(-self.d // 64), steps, costs).sum() + steps * costs.step / nq
        if expected > budget:
            self.last_search_stats = {"queries": nq, "fallback_queries": nq}
            return self._range_scan(x, radius, threads)
        xw, xs = self._queries(x)
        parts = self._map_blocks(lambda a, b: range_search(tables, self.ntotal, self.d, xw[a:b], xs[a:b], radius, budget, costs),
                                 self._blocks(nq, nq, threads), threads)
        sizes = np.concatenate([np.diff(p[0]) for p in parts])
        D = np.concatenate([p[1] for p in parts])
        I = self._table_ids[np.concatenate([p[2] for p in parts])]
        fallback = np.concatenate([p[3] for p in parts])
        self.last_search_stats = {"queries": nq, "fallback_queries": int(fallback.sum())}
        if fallback.any():  # skewed buckets: those queries by brute force, spliced back in query order
            flims, fD, fI = self._range_scan(x[fallback], radius, threads)
            sizes[fallback] = np.diff(flims)
            qid = np.concatenate([np.repeat(np.flatnonzero(~fallback), sizes[~fallback]),
                                  np.repeat(np.flatnonzero(fallback), sizes[fallback])])
            order = np.argsort(qid, kind="stable")
            D = np.concatenate([D, fD])[order]
            I = np.concatenate([I, fI])[order]
        return np.concatenate([[0], np.cumsum(sizes)]), D, I

    # --- persistence ---------------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Codes and ids, and a measured ``m`` with the ntotal it was measured at (so a load does
        not measure again): the tables are a deterministic function of them, rebuilt on load."""
        arrays: dict[str, np.ndarray] = {"codes": self._codes(), "ids": self._ids}
        if self._m_choice is not None:
            arrays["m_choice"] = np.array([self._m_choice["m"], self._m_choice["ntotal"]], dtype=np.int64)
        return arrays

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
        if "m_choice" in arrays:  # absent in files from before m was measured, or where it was not
            m, n = (int(v) for v in np.asarray(arrays["m_choice"]).reshape(-1)[:2])
            obj._m_choice = {"m": check_m(m, d), "ntotal": n, "seconds": {}}
        return obj
