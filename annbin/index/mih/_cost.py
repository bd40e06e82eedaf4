"""What a multi-index hashing search costs, and when a query should leave it for a flat scan.

Cost model (``Budget``): each step's cost is known exactly once its buckets are read; the steps a
query still needs are priced on uniformly filled buckets up to its current k-th distance (capped
by the k-th distance of random codes, since early k-th distances are loose). A query whose
remaining cost exceeds its budget (``fallback_ratio`` times a faiss-flat scan) leaves the batch
and is answered by the scan; exact either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from annbin.index.mih._tables import MAX_SUBSTRING_BITS, MIHTable, substring_layout


@dataclass(frozen=True)
class CostModel:
    """Single-thread costs in nanoseconds: MIH's per-probe and per-candidate work against a faiss
    ``IndexBinaryFlat`` scan.

    Only the ratio of MIH to flat costs matters: it decides when a query is cheaper to scan.
    These defaults (``COSTS``, measured once on the development box; see benchmarks/RESULTS.md)
    are the reference; ``MIHIndex`` uses constants measured on the machine it runs on
    (``_calibrate.calibrated_costs``) unless given a model.

    Parameters
    ----------
    lookup : float
        One bucket probe (key, random read of the bucket, compaction).
    candidate : float
        One candidate of one 64-bit word (expand, gather, popcount, filter).
    candidate_word : float
        Each further 64-bit word of a candidate.
    step : float
        Fixed numpy overhead of one search step for the whole batch, merge included.
    flat_code : float
        faiss ``IndexBinaryFlat``, k = 10, per code of one 64-bit word.
    flat_word : float
        Each further word of a scanned code.
    flat_odd_code : float
        Per code whose bit length is not a multiple of 64 (those scan slower).
    """

    lookup: float = 8.0  # one bucket probe (key, random read of the bucket, compaction)
    candidate: float = 15.0  # one candidate of one 64-bit word (expand, gather, popcount, filter)
    candidate_word: float = 8.0  # each further 64-bit word of a candidate
    step: float = 80_000.0  # fixed numpy overhead of one step for the whole batch, merge included
    flat_code: float = 0.65  # faiss IndexBinaryFlat, k = 10, per code of one 64-bit word
    flat_word: float = 0.3  # each further word
    flat_odd_code: float = 2.0  # codes whose bit length is not a multiple of 64 scan slower

    def candidate_cost(self, words: int) -> float:
        return self.candidate + self.candidate_word * (words - 1)

    def flat_cost(self, n: int, d: int) -> float:
        """One query's flat scan over ``n`` codes of ``d`` bits."""
        words = -(-d // 64)
        per_code = self.flat_code + self.flat_word * (words - 1)
        if d % 64:
            per_code = max(per_code, self.flat_odd_code)
        return n * per_code


COSTS = CostModel()


def expected_step_costs(tables: list[MIHTable], n: int, words: int, nsteps: int, costs: CostModel = COSTS) -> NDArray[np.float64]:
    """Expected per-query cost of steps ``0..nsteps-1`` on uniformly filled buckets (read-only)."""
    return _expected_step_costs(tuple(t.length for t in tables), n, words, nsteps, costs)


@lru_cache(maxsize=64)
def _expected_step_costs(lengths: tuple[int, ...], n: int, words: int, nsteps: int, costs: CostModel) -> NDArray[np.float64]:
    m = len(lengths)
    out = np.zeros(nsteps)
    cand = costs.candidate_cost(words)
    for s in range(nsteps):
        r, j = divmod(s, m)
        length = lengths[j]
        if r <= length:
            probes = math.comb(length, r)
            out[s] = probes * (costs.lookup + cand * n / 2.0**length)
    out.setflags(write=False)
    return out


def range_cost(lengths: tuple[int, ...], n: int, words: int, radius: int, nq: int, costs: CostModel = COSTS) -> float:
    """Expected per-query cost (ns) of a range search at ``radius`` (steps ``0 .. radius - 1``) over
    ``n`` codes in tables of substrings of ``lengths`` bits, on uniformly filled buckets, for a batch
    of ``nq`` queries (each step's fixed overhead shared among them): what a range search or a
    self-join weighs against a scan."""
    return float(_expected_step_costs(lengths, n, words, radius, costs).sum()) + radius * costs.step / max(nq, 1)


def range_m(d: int, n: int, radius: int, nq: int, costs: CostModel = COSTS) -> tuple[int, float]:
    """The number of substrings with the smallest ``range_cost`` for ``d``-bit codes, and that cost.

    Candidates run from the fewest valid tables (substrings of at most ``MAX_SUBSTRING_BITS``) to
    four times that plus 8: more, shorter substrings only fill the buckets (``m > radius`` leaves
    tables unprobed).
    """
    lo = -(-d // MAX_SUBSTRING_BITS)
    words = -(-d // 64)
    cost = {m: range_cost(tuple(substring_layout(d, m)[1].tolist()), n, words, radius, nq, costs)
            for m in range(lo, min(d, 4 * lo + 8) + 1)}
    m = min(cost, key=cost.__getitem__)
    return m, cost[m]


@lru_cache(maxsize=64)
def random_knn_distance(n: int, d: int, k: int) -> int:
    """The k-th nearest distance expected among ``n`` uniformly random ``d``-bit codes.

    Smallest ``D`` with ``n * P(Binomial(d, 1/2) <= D) >= k``. Clustered data has nearer neighbours,
    so this caps the cost predicted from a k-th distance that is still loose early in a search.
    """
    need, total = k << d, 0
    for dist in range(d + 1):
        total += n * math.comb(d, dist)
        if total >= need:
            return dist
    return d


class Budget:
    """Per-query cost accounting that decides when a query should leave MIH for a flat scan.

    Parameters
    ----------
    tables : list of MIHTable
        The tables searched (their substring lengths price the steps).
    n : int
        Rows the tables cover.
    d : int
        Code length in bits.
    k : int
        Results per query.
    words : int
        64-bit words per code, ``ceil(d / 64)``.
    budget : float
        Nanoseconds a query may cost (a flat scan's cost times ``fallback_ratio``).
    costs : CostModel
        The constants that price probes, candidates and steps.
    nq : int
        Queries in the batch.
    """

    def __init__(self, tables: list[MIHTable], n: int, d: int, k: int, words: int, budget: float, costs: CostModel, nq: int) -> None:
        self.budget, self.costs, self.m = budget, costs, len(tables)
        self.cand_cost = costs.candidate_cost(words)
        self.cum = np.cumsum(expected_step_costs(tables, n, words, d + 2, costs))
        self.cap = random_knn_distance(n, d, k)
        # a query's cost so far is common + cand_cost * candidates[query]: every active query has
        # made the same probes (all start at step 0 and run every step until they leave)
        self.common = 0.0
        self.dropped = False  # whether this step gave up on any query
        self.candidates = np.zeros(nq)
        self.fallback = np.zeros(nq, dtype=bool)

    def _to_come(self, kth: NDArray[np.int64] | np.int64, step: int) -> NDArray[np.float64]:
        """Expected cost of the steps after ``step`` that a k-th distance ``kth`` still needs: up to
        step ``kth`` (the tie rule's last step), ``kth`` capped at the random-code k-th distance
        (not one higher: that sent clustered queries to the scan at radius 1)."""
        until = np.minimum(np.minimum(kth, self.cap), self.cum.size - 1)
        cost: NDArray[np.float64] = np.maximum(self.cum[until] - self.cum[step], 0.0)
        return cost

    def start_step(self, nmasks: int, nactive: int) -> None:
        """Charge every active query for a step's probes (``nmasks`` each) and fixed overhead."""
        self.common += nmasks * self.costs.lookup + self.costs.step / nactive
        self.dropped = False

    def over(self, kth_all: NDArray[np.int64], sentinel: int, A: NDArray[np.int64], step: int,
             per_query: NDArray[np.int64], nactive: int) -> NDArray[np.bool_] | None:
        """Flag (and return) the queries of ``A`` (some or all of the active ones) to give up,
        given every query's current k-th distance ``kth_all`` (``sentinel`` while unknown) and
        this step's candidate counts (``start_step`` charged its probes); None if there
        are none (the usual case, decided from maxima alone).

        Rational rule: give up when what is still to come costs more than a scan (what is spent is
        spent). The steps still to come are those needed if the current k-th distance were final,
        capped one above what uniformly random codes would give (an early k-th distance is loose);
        nothing is predicted before radius 1 (a k-th distance from part of the radius-0 round is
        looser still: predicting from it sent clustered queries to the scan). A query
        that has spent twice a scan anyway (the prediction failed: adversarial data) gives up too.
        """
        costs, cand_cost = self.costs, self.cand_cost
        seen = self.candidates[A]
        seen += per_query
        self.candidates[A] = seen
        kth = kth_all.take(A) if step >= self.m else None  # predictions start at radius 1
        # no query can be over if the costliest step and the costliest prediction together are not
        most = float(per_query.max()) * cand_cost + costs.step / nactive
        if kth is not None:
            most += float(self._to_come(kth.max(), step))
        if most <= self.budget and self.common + cand_cost * float(seen.max()) <= 2 * self.budget:
            return None
        ahead = per_query * cand_cost + costs.step / nactive
        if kth is not None:  # what the current k-th distance still needs (nothing while it is unknown)
            ahead += np.where(kth < sentinel, self._to_come(kth, step), 0.0)
        over = (ahead > self.budget) | (self.common + cand_cost * seen > 2 * self.budget)
        if not over.any():
            return None
        self.fallback[A[over]] = True
        self.dropped = True
        return over
