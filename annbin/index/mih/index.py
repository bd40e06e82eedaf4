"""Exact Hamming kNN by multi-index hashing, in pure Python + numpy.

Norouzi, Punjani & Fleet, "Fast Exact Search in Hamming Space with Multi-Index Hashing" (CVPR
2012, TPAMI 2014). Codes are split into ``m`` disjoint substrings, each indexed by a direct-address
hash table; a query probes buckets at growing substring radius and stops by the pigeonhole bound.
Results are exact: the distances equal ``faiss.IndexBinaryFlat``'s for every query.

Design (details in ``_tables``, ``_store``, ``_probe``, ``_search``, ``_range``, ``_cost``,
``_calibrate`` and ``_blocks``; measured figures in benchmarks/RESULTS.md):

- **m**: explicit; ``"formula"`` for the paper's ``m ~ d / log2(ntotal)`` (substrings of at most 24
  bits) at every (re)build; or ``None`` (default): the formula below ``MEASURE_M_MIN_N`` codes and,
  from there on, measured: the build times a sample of the index's own codes as queries on
  candidate ``m`` around the formula's (``_calibrate.choose_m``; a few table builds). The choice
  is kept, saved with the index and reused until ntotal halves or doubles. ``effective_m``
  reports the value in use, ``measured_m`` what was measured.
- **Storage** (``_store``): the codes the tables cover live in a ``faiss.IndexBinaryFlat``
  ("main", ascending id order; the fallback scan reads it), codes added since in a second one
  ("tail"). Each table holds one occupancy bit per possible bucket (read first by a probe: small
  enough to stay in L2 cache), an int64 rank per 64 buckets and an int64 start and count per
  non-empty bucket, int32 rows sorted by substring and, for at most ``COPY_MAX_TABLES`` tables, a
  copy of the codes in that order (verifying a bucket then reads contiguous memory); more tables
  read main's codes through the rows. Main's ids are not stored while they are ``0..n-1`` (an
  index filled without ids). ``get_codes`` gathers from zero-copy views of main and tail.
- **Search**: all queries of a batch advance together, radius by radius and table by table, and
  each query stops by the pigeonhole bound (see ``_search``); range search runs the same steps up
  to its radius (``_range``).
- **add / remove_ids**: ``add`` appends to the tail, which every search scans (faiss, exact, tie
  rule) and merges with the tables' results by (distance, id); ``remove_ids`` tombstones the
  tables' rows (skipped by the search and by the fallback scan) and drops tail rows. Once tail
  plus tombstones exceed ``tail_fraction`` of the tables' codes, the next search (or ``build()``)
  rebuilds: tail folded into main, tombstones dropped, every table rebuilt. ``rebuilds`` counts them.
  A saved file holds the tables too: a load rebuilds nothing.
- **Fallback**: a cost model (constants measured once per process, ``_calibrate``) predicts, per
  query and step, what finishing by MIH would still cost; a query for which that exceeds
  ``fallback_ratio`` times a flat scan (far neighbours, e.g. uniformly random 128-bit codes) is
  answered by the flat scan instead; exact either way. ``fallback="never"`` / ``"always"`` force
  one path. Range search makes the same choice once per call.
- **Batches**: every search step is a round of numpy calls for all active queries, so a batch of
  1,000 queries costs far less per query than one query alone, whose fixed per-step overhead
  makes it cost about what a flat scan of 1M codes does.
- **Ties**: at the k-th distance the smallest ids win, as in ``FlatIndex``: the tables are built
  over the codes in id order, so a table row is an id's rank and the search's (distance, row)
  order is (distance, id) order; the fallback scan uses ``exact_knn``.
- **Threads**: ``num_threads`` splits a batch into query blocks searched on a thread pool (numpy
  releases the GIL in its heavy calls; blocks are independent, so results do not depend on the
  count), and runs the fallback scan with as many OpenMP threads. The default, ``None``, follows
  faiss's OpenMP setting: every core unless ``OMP_NUM_THREADS`` or ``faiss.omp_set_num_threads``
  says otherwise, so code that pins faiss to one thread (``annbin bench --threads 1``, a Ray
  actor with one CPU) pins MIH too. ``last_search_stats`` is per thread: each thread reads the
  stats of its own last search.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError
from annbin.index.base import BinaryIndex, CodesResult, RangeResult, SearchResult, sort_results
from annbin.index.mih._blocks import map_blocks, query_blocks, splice_ranges
from annbin.index.mih._calibrate import calibrated_costs, measure_m, planned_m
from annbin.index.mih._cost import CostModel
from annbin.index.mih._params import TAIL_FRACTION, check_fraction, check_search_value
from annbin.index.mih._range import range_main
from annbin.index.mih._search import knn_search
from annbin.index.mih._store import Layout, MIHStore, StorageMap, load_m_choice, load_state, save_state
from annbin.index.mih._tables import (
    MIHTable,
    build_tables,
    check_m,
    default_m,
    extract_substrings,
    substring_layout,
    to_words,
)
from annbin.index.registry import register

#: Queries searched together; the top-k state is ``(block, k)`` int64.
QUERY_BLOCK = 4096
Stats = dict[str, Any]


@register
class MIHIndex(BinaryIndex):
    """Exact Hamming kNN and range search by multi-index hashing (pure numpy).

    Parameters
    ----------
    d : int
        Code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    m : int, "formula" or None
        Number of substrings (hash tables). ``None`` (default): chosen at each build, by measuring
        candidates from ``MEASURE_M_MIN_N`` codes on (kept while ntotal stays within 2x) and by
        the formula ``~ d / log2(ntotal)`` below; ``"formula"``: always the formula. An explicit
        ``m`` must satisfy ``1 <= m <= d`` and ``ceil(d / m) <= 24``.
    tail_fraction : float
        Codes added since the last build (scanned by brute force) plus removed ones still in the
        tables (tombstones) may reach this fraction of the tables' codes before the next search
        rebuilds them (default ``TAIL_FRACTION``).
    fallback : {"auto", "never", "always"}
        Search parameter: when to answer a query by a brute-force scan.
    fallback_ratio : float
        Search parameter: ``auto`` falls back when MIH's predicted cost exceeds this multiple of a
        scan's (default 1.0).
    num_threads : int or None
        Search parameter: threads for one search, MIH and fallback scan alike; ``None`` (default):
        ``faiss.omp_get_max_threads()``, all cores unless OpenMP was told otherwise.
    cost_model : CostModel or None
        The model behind ``auto``'s choice (default: ``calibrated_costs()``, measured on this
        machine once per process; ``_cost.COSTS`` for fixed reference constants).
    """

    variant = "mih"
    exact = True
    build_params = ("m", "tail_fraction")
    search_params = ("fallback", "fallback_ratio", "num_threads")

    def __init__(self, d: int, *, m: int | str | None = None, tail_fraction: float = TAIL_FRACTION, fallback: str = "auto",
                 fallback_ratio: float = 1.0, num_threads: int | None = None, cost_model: CostModel | None = None) -> None:
        super().__init__(d)
        self.m: int | str | None = m if m is None or m == "formula" else check_m(m, self.d)
        self.tail_fraction = check_fraction(tail_fraction)
        self.fallback = "auto"
        self.fallback_ratio = 1.0
        self.num_threads: int | None = None
        if cost_model is not None and not isinstance(cost_model, CostModel):
            raise InputTypeError(f"cost_model must be a CostModel, got {type(cost_model).__name__}")
        self._cost_model = cost_model
        #: the last measured choice of m: {"m", "ntotal" (when measured), "seconds" (by candidate m)}
        self._m_choice: dict[str, Any] | None = None
        self._store = MIHStore(self.d)
        #: the tables over the store's main codes (None while main is empty)
        self._tables: list[MIHTable] | None = None
        self._build_lock = threading.RLock()  # re-entered: measuring m searches candidate tables
        self._layout: Layout | None = None
        #: the tables' shared codes (None while each table keeps a copy): a view of main's codes, or
        #: a zero-padded copy where d is not a multiple of 64
        self._words: NDArray[np.uint64] | None = None
        #: how many times this object (re)built its tables (a load that restores them does not count)
        self.rebuilds = 0
        self._stats = threading.local()  # last_search_stats, one per searching thread
        #: profiling: when True, kNN searches add ``"steps"`` to ``last_search_stats``, one record per
        #: search step and query block (radius, table, active queries, lookups, candidates, seconds)
        self.record_steps = False
        self.set_search_params(fallback=fallback, fallback_ratio=fallback_ratio, num_threads=num_threads)

    # --- storage -------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self._store.ntotal

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
        if self._layout is not None and not self._stale():
            return int(self._layout[0].size)
        if not self.ntotal and not isinstance(self.m, int):
            return None
        return planned_m(self.m, self.d, self.ntotal, self._m_choice) or default_m(self.d, self.ntotal)

    @property
    def last_search_stats(self) -> Stats | None:
        """Work done by this thread's last search on this index (None before its first): queries,
        bucket lookups and candidates verified (kNN), how many queries went to the flat scan, and
        the tail's size. Per thread, so concurrent searches never read each other's."""
        stats: Stats | None = getattr(self._stats, "value", None)
        return stats

    def _set_stats(self, stats: Stats | None) -> None:
        self._stats.value = stats

    @property
    def measured_m(self) -> dict[str, Any] | None:
        """The last measured choice of ``m`` (``m=None``): ``{"m", "ntotal", "seconds"}``, seconds
        per candidate ``m`` (empty after a load: the choice is saved, its times are not); None if
        none was measured."""
        return None if self._m_choice is None else {**self._m_choice, "seconds": dict(self._m_choice["seconds"])}

    def get_ids(self) -> NDArray[np.int64]:
        """Live ids: those the tables cover (ascending), then those added since (insertion order)."""
        return self._store.ids()

    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        self._store.add(codes, ids)

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        return self._store.remove(ids)

    def _build_code_map(self) -> StorageMap:
        return StorageMap(self._store)

    def _get_codes(self, ids: NDArray[np.int64]) -> CodesResult:
        return self._store.get_codes(self._code_map(), ids)

    def _reset(self) -> None:
        self._store.reset()
        self._tables = self._layout = self._words = None
        self._m_choice = None  # measured on codes that are gone

    def _stale(self) -> bool:
        """Whether the tail and the tombstones together exceed ``tail_fraction`` of main."""
        store = self._store
        return store.ntail + store.ndead > self.tail_fraction * store.nmain

    def _build(self, force: bool = False) -> list[MIHTable] | None:
        """Fold the tail into the tables if it and the tombstones have outgrown ``tail_fraction``
        (or ``force``): main is rewritten in ascending id order and every table rebuilt. Returns
        the tables (None if no code is left outside the tail, i.e. the index is empty)."""
        with self._build_lock:  # concurrent first searches after an add: one rebuilds, the others wait
            if force or self._stale():
                self._tables = self._layout = self._words = None
                self._code_map_cache = None  # storage rows move
                codes = self._store.compact()
                if codes.shape[0]:
                    m = planned_m(self.m, self.d, codes.shape[0], self._m_choice)
                    if m is None:
                        self._measure_m(codes)  # leaves the chosen m's tables built
                    else:
                        self._make_tables(codes, m)
                self.rebuilds += 1
            return self._tables

    def _make_tables(self, codes: NDArray[np.uint8], m: int) -> None:
        """Build and install the tables of ``m`` substrings over main's ``codes``."""
        starts, lengths = substring_layout(self.d, m)
        words = to_words(codes)
        self._tables = build_tables(words, extract_substrings(codes, starts, lengths), lengths)
        self._words = words if self._tables[0].shared else None
        self._layout = (starts, lengths)

    def _measure_m(self, codes: NDArray[np.uint8]) -> None:
        """Choose ``m`` by timing sample queries on candidate tables (``measure_m``); the winner's
        tables stay installed."""
        Built = tuple[Any, Any, Any]

        def build(m: int) -> Built:
            self._make_tables(codes, m)
            return self._tables, self._layout, self._words

        def install(built: Built) -> None:
            self._tables, self._layout, self._words = built

        stats = self.last_search_stats  # the sample searches' stats are not the caller's
        self._m_choice, built = measure_m(self.d, codes, build, install, lambda x, k: self.search(x, k, params={"num_threads": 1}))
        install(built)
        self._set_stats(stats)

    def build(self) -> None:
        """Build the hash tables over every stored code now (folding in the tail) instead of when
        a search finds the tail past ``tail_fraction`` (e.g. to time the build)."""
        if self.ntotal or self._store.nmain:
            self._build(force=True)

    def memory_bytes(self) -> int:
        """Bytes held now: codes (main and tail), ids, tombstones, the tables if built, and the
        ``get_codes`` map if built. Never builds: an index whose tables are not built yet (added
        to, not searched) counts its codes and ids only."""
        held = self._store.nbytes + sum(t.nbytes for t in self._tables or [])
        if self._words is not None and self.code_size % 8:  # a zero-padded copy, not a view of main
            held += self._words.nbytes
        return held + self._code_map_bytes()

    # --- parameters ----------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """``m``, and ``tail_fraction`` where it is not the default (spec strings stay short)."""
        if self.tail_fraction == TAIL_FRACTION:
            return {"m": self.m}
        return {"m": self.m, "tail_fraction": self.tail_fraction}

    def get_search_params(self) -> dict[str, Any]:
        return {"fallback": self.fallback, "fallback_ratio": self.fallback_ratio, "num_threads": self.num_threads}

    def _check_search_value(self, name: str, value: Any) -> Any:
        return check_search_value(name, value)

    def _set_search_params(self, params: dict[str, Any]) -> None:
        for name, value in params.items():
            setattr(self, name, value)

    # --- search --------------------------------------------------------------------------
    # _threads and _budget read the search call's parameters (``_effective_params``): call them in
    # the searching thread, not in the block pool's workers.
    def _threads(self) -> int:
        """Threads for one search: ``num_threads``, or faiss's OpenMP thread count (all cores by default)."""
        threads = self._effective_params()["num_threads"]
        return threads if threads is not None else max(1, faiss.omp_get_max_threads())

    def _budget(self) -> float:
        """Per-query cost (ns) above which a query goes to the flat scan."""
        call = self._effective_params()
        if call["fallback"] != "auto":
            return math.inf if call["fallback"] == "never" else -math.inf
        return float(call["fallback_ratio"]) * self.cost_model.flat_cost(self._store.nmain - self._store.ndead, self.d)

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        tables = self._build()
        store, nq = self._store, x.shape[0]
        parts = []
        live = store.nmain - store.ndead
        stats: Stats = {"queries": nq, "lookups": 0, "candidates": 0, "fallback_queries": 0}
        if tables is not None and self._layout is not None and live:
            parts.append(self._search_tables(tables, self._layout, x, min(k, live), stats))
        stats["tail_codes"] = store.ntail
        self._set_stats(stats)
        if store.ntail:  # codes added since the last build: scanned, and merged by (distance, id)
            parts.append(store.knn_scan(x, min(k, store.ntail), self._threads(), tail=True))
        if len(parts) == 1:
            return parts[0]
        D, I = sort_results(np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1))
        return D[:, :k], I[:, :k]

    def _search_tables(self, tables: list[MIHTable], layout: Layout, x: NDArray[np.uint8], k: int, stats: Stats) -> SearchResult:
        """Exact kNN over main's live codes (``1 <= k <=`` their number) by the tables (substrings
        at ``layout``); the work done goes to ``stats``."""
        store, nq = self._store, x.shape[0]
        budget, costs, threads = self._budget(), self.cost_model, self._threads()
        # the first round of exact-match probes alone would cost more than a scan: scan everything
        if budget < len(tables) * (costs.step / nq + costs.lookup):
            stats["fallback_queries"] = nq
            return store.knn_scan(x, k, threads)
        xw, xs = to_words(x), extract_substrings(x, *layout)
        record = self.record_steps

        def block(a: int, b: int) -> tuple[Any, ...]:
            work: dict[str, int] = {}
            steps: list[dict[str, float]] | None = [] if record else None
            out = knn_search(tables, store.nmain, self.d, xw[a:b], xs[a:b], k, budget, costs, stats=work, steps=steps,
                             dead=store.dead)
            return (*out, work, steps)

        # top-k state is (block, k) int64 keys that also hold the query's index in the block
        cap = max(1, min(QUERY_BLOCK, (1 << 24) // k, (1 << (31 - (self.d + 1).bit_length())) - 1))
        parts = map_blocks(block, query_blocks(nq, cap, threads), threads)
        D = np.concatenate([p[0] for p in parts])
        I = store.ids_of(np.concatenate([p[1] for p in parts]))
        fallback = np.concatenate([p[2] for p in parts])
        stats["lookups"] = sum(p[3]["lookups"] for p in parts)
        stats["candidates"] = sum(p[3]["candidates"] for p in parts)
        if record:  # one record per step and block, block after block
            stats["steps"] = [step for p in parts for step in p[4]]
        if fallback.any():
            D[fallback], I[fallback] = store.knn_scan(x[fallback], k, threads)
        stats["fallback_queries"] = int(fallback.sum())
        return D, I

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        tables = self._build()
        store, nq = self._store, x.shape[0]
        parts, fell = [], 0
        if tables is not None and self._layout is not None and store.nmain > store.ndead:
            part, fell = range_main(store, tables, self._layout, x, radius, self._budget(), self.cost_model, self._threads())
            parts.append(part)
        self._set_stats({"queries": nq, "fallback_queries": fell, "tail_codes": store.ntail})
        if store.ntail:
            parts.append(store.range_scan(x, radius, self._threads(), tail=True))
        if len(parts) == 1:
            return parts[0]
        every = np.arange(nq)  # both parts answer every query: interleave them query by query
        return splice_ranges(nq, [(every, np.diff(lims), D, I) for lims, D, I in parts])

    # --- persistence ---------------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        return save_state(self._store, self._tables, self._layout, self._m_choice)

    @classmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        """Restore what ``_state_arrays`` wrote. A file without tables (written before they were
        saved, or by an index never searched) loads all its codes into the tail: the tables are
        built at the first search."""
        unknown = sorted(set(params) - set(cls.build_params))
        if unknown:
            raise ValueError(f"unknown MIH build parameter(s) {unknown} in the index file")
        obj = cls(d, **params)
        obj._store, restored = load_state(d, arrays)
        if restored is not None:
            obj._tables, obj._words, obj._layout = restored
        obj._m_choice = load_m_choice(d, arrays)
        return obj

