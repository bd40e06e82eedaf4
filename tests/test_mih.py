"""MIHIndex: exact multi-index hashing, checked against faiss-flat and a plain numpy popcount."""

from __future__ import annotations

import itertools
import math
import threading
from unittest import mock

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import annbin
from annbin import MIHIndex
from annbin._checks import INT32_MAX
from annbin.index.mih._cost import CostModel
from annbin.index.mih._tables import (
    MAX_SUBSTRING_BITS,
    default_m,
    extract_substrings,
    occupancy_probes,
    popcount_masks,
    substring_layout,
    to_words,
)

DIMS = [8, 24, 64, 128, 256, 1024]
KINDS = ["random", "clustered", "equal", "duplicates", "zeros"]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("reference_costs")  # conftest.py

# --- data and references ---------------------------------------------------------------------
def make_codes(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, d // 8)`` uint8 codes of one adversarial kind."""
    cs = d // 8
    if kind == "random":
        return rng.integers(0, 256, (n, cs), dtype=np.uint8)
    if kind == "zeros":
        return np.zeros((n, cs), dtype=np.uint8)
    if kind == "equal":
        return np.repeat(rng.integers(0, 256, (1, cs), dtype=np.uint8), n, axis=0)
    if kind == "duplicates":  # a handful of distinct codes, each repeated many times: ties everywhere
        pool = rng.integers(0, 256, (max(1, n // 50), cs), dtype=np.uint8)
        return pool[rng.integers(0, len(pool), n)]
    # clustered: centres plus sparse bit flips, neighbours a few bits away
    centres = rng.integers(0, 2, (max(1, n // 40), d), dtype=np.uint8)
    bits = centres[rng.integers(0, len(centres), n)] ^ (rng.random((n, d)) < 0.05).astype(np.uint8)
    return np.packbits(bits, axis=1)


def make_queries(codes: np.ndarray, kind: str, nq: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Queries: some stored codes (exact matches), some lightly perturbed, some fresh."""
    fresh = make_codes(kind, nq, d, rng)
    if len(codes) == 0:
        return fresh
    picked = codes[rng.integers(0, len(codes), nq)].copy()
    flip = rng.integers(0, 256, picked.shape, dtype=np.uint8) & (rng.random(picked.shape) < 0.05).astype(np.uint8)
    choice = rng.integers(0, 3, nq)
    return np.where((choice == 0)[:, None], picked, np.where((choice == 1)[:, None], picked ^ flip, fresh)).astype(np.uint8)


def mih_problem(kind: str, n: int, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray, MIHIndex]:
    """Codes and queries of one kind in a 64-bit, m=4 index that never falls back to the scan."""
    rng = np.random.default_rng(seed)
    codes = make_codes(kind, n, 64, rng)
    q = make_queries(codes, kind, nq, 64, rng)
    index = MIHIndex(64, m=4, fallback="never")
    index.add(codes)
    return codes, q, index


def hamming(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Plain numpy reference: ``(nq, n)`` int64 Hamming distances."""
    return np.bitwise_count(q[:, None, :] ^ x[None, :, :]).sum(axis=2, dtype=np.int64)


def faiss_distances(codes: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    return index.search(q, k)[0]


def check_knn(D: np.ndarray, I: np.ndarray, codes: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> None:
    """Exact kNN contract: faiss's distances, numpy's distances, valid unique ids, sorted rows, padding."""
    n = len(codes)
    kk = min(k, n)
    assert D.shape == I.shape == (len(q), k)
    assert D.dtype == np.int32 and I.dtype == np.int64
    assert (D[:, kk:] == INT32_MAX).all() and (I[:, kk:] == -1).all()
    if kk == 0:
        return
    ref = hamming(q, codes)
    np.testing.assert_array_equal(D[:, :kk], faiss_distances(codes, q, kk))
    np.testing.assert_array_equal(D[:, :kk], np.sort(ref, axis=1)[:, :kk])
    position = {int(i): p for p, i in enumerate(ids)}
    for row in range(len(q)):
        got = I[row, :kk].tolist()
        assert len(set(got)) == kk, "duplicate ids in a result row"
        assert all(i in position for i in got), "unknown id returned"
        np.testing.assert_array_equal(ref[row, [position[i] for i in got]], D[row, :kk])  # id matches its distance
        assert list(zip(D[row, :kk].tolist(), got)) == sorted(zip(D[row, :kk].tolist(), got))


def check_range(lims: np.ndarray, D: np.ndarray, I: np.ndarray, codes: np.ndarray, ids: np.ndarray, q: np.ndarray, radius: int) -> None:
    """Range results equal brute force under faiss's rule: every code at distance < radius."""
    ref = hamming(q, codes) if len(codes) else np.zeros((len(q), 0), np.int64)
    assert lims.shape == (len(q) + 1,) and lims[0] == 0 and lims[-1] == len(D) == len(I)
    for row in range(len(q)):
        got = set(zip(I[lims[row] : lims[row + 1]].tolist(), D[lims[row] : lims[row + 1]].tolist()))
        want = {(int(ids[j]), int(ref[row, j])) for j in np.flatnonzero(ref[row] < radius)}
        assert got == want
        assert lims[row + 1] - lims[row] == len(got)  # no duplicates


def tie_rule_knn(codes: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The tie rule by brute force: each row's min(k, n) smallest (distance, id) pairs, in order."""
    dist = hamming(q, codes)
    kk = min(k, len(codes))
    order = np.lexsort((np.broadcast_to(ids, dist.shape), dist), axis=1)[:, :kk]
    return np.take_along_axis(dist, order, axis=1).astype(np.int32), ids[order]


def reference_mih(codes: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, m: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Plain multi-index hashing, the oracle for the optimised one: ``m`` substring tables (a dict
    per table), step ``s = r * m + j`` probes table ``j`` at substring radius ``r``, and a query stops
    once its k-th distance is ``<= s`` (every code that close, ties included, has been seen).
    Returns (D, I) of the first min(k, n) results by (distance, id), and the bucket probes made."""
    d, kk = codes.shape[1] * 8, min(k, len(codes))
    starts, lengths = substring_layout(d, m)

    def subs(x: np.ndarray) -> list[list[int]]:
        bits = np.unpackbits(x, axis=1).astype(np.int64)
        return [[int(v) for v in bits[:, a : a + ln] @ (1 << np.arange(ln - 1, -1, -1))] for a, ln in zip(starts, lengths)]

    tables: list[dict[int, list[int]]] = [{} for _ in range(m)]
    for j, column in enumerate(subs(codes)):
        for row, value in enumerate(column):
            tables[j].setdefault(value, []).append(row)
    dist, qsubs = hamming(q, codes), subs(q)
    D, I, probes = np.zeros((len(q), kk), np.int32), np.zeros((len(q), kk), np.int64), 0
    for i in range(len(q)):
        seen: set[int] = set()
        for step in itertools.count():
            r, j = divmod(step, m)
            for flips in itertools.combinations(range(lengths[j]), r):  # none when r > length
                seen.update(tables[j].get(qsubs[j][i] ^ sum(1 << b for b in flips), ()))
                probes += 1
            best = sorted((int(dist[i, row]), int(ids[row])) for row in seen)[:kk]
            if len(best) == kk and best[-1][0] <= step:
                break
        D[i], I[i] = [b[0] for b in best], [b[1] for b in best]
    return D, I, probes


def assert_did_its_own_work(index: MIHIndex) -> None:
    """The last search ran MIH's lookups and sent no query to the flat scan."""
    stats = index.last_search_stats
    assert stats["lookups"] > 0 and stats["fallback_queries"] == 0, stats


@st.composite
def problems(draw: st.DrawFn, dims: list[int] = DIMS) -> tuple[int, str, np.ndarray, np.ndarray, int]:
    d = draw(st.sampled_from(dims))
    kind = draw(st.sampled_from(KINDS))
    n_max = 800 if d == 1024 else 3000
    n = draw(st.one_of(st.integers(0, 40), st.integers(0, n_max), st.integers(n_max - 200, n_max)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    codes = make_codes(kind, n, d, rng)
    q = make_queries(codes, kind, draw(st.integers(1, 6)), d, rng)
    k = draw(st.one_of(st.integers(1, 12), st.integers(1, n + 5)))
    return d, kind, codes, q, k


# --- properties ------------------------------------------------------------------------------
@PROPERTY
@given(problem=problems(), fallback=st.sampled_from(["never", "auto"]))
def test_knn_is_exact(problem, fallback):
    d, _, codes, q, k = problem
    index = MIHIndex(d, fallback=fallback)
    index.add(codes)
    D, I = index.search(q, k)
    check_knn(D, I, codes, np.arange(len(codes)), q, k)


@PROPERTY
@given(problem=problems(), radius_frac=st.floats(0, 0.35), fallback=st.sampled_from(["never", "auto"]))
def test_range_search_is_exact(problem, radius_frac, fallback):
    d, _, codes, q, _ = problem
    radius = int(radius_frac * d)
    index = MIHIndex(d, fallback=fallback)
    index.add(codes)
    lims, D, I = index.range_search(q, radius)
    check_range(lims, D, I, codes, np.arange(len(codes)), q, radius)


@settings(max_examples=25, deadline=None)
@given(problem=problems(dims=[8, 16, 24, 64, 128]), data=st.data())
def test_explicit_m_is_exact(problem, data):
    d, _, codes, q, k = problem
    m_min = -(-d // MAX_SUBSTRING_BITS)
    m = data.draw(st.sampled_from(sorted({m_min, max(m_min, 1), max(m_min, 2), d // 8, min(d, m_min + 3), d})), label="m")
    index = MIHIndex(d, m=m, fallback="never")
    index.add(codes)
    D, I = index.search(q, k)
    check_knn(D, I, codes, np.arange(len(codes)), q, k)
    radius = data.draw(st.integers(0, d // 3), label="radius")
    check_range(*index.range_search(q, radius), codes, np.arange(len(codes)), q, radius)


@settings(max_examples=20, deadline=None)
@given(problem=problems(dims=[24, 64, 128]))
def test_knn_results_lie_inside_range_results(problem):
    """Every kNN hit is within the k-th distance, so range search below kth + 1 contains it."""
    d, _, codes, q, k = problem
    if len(codes) == 0:
        return
    index = MIHIndex(d, fallback="never")
    index.add(codes)
    D, I = index.search(q, k)
    for row in range(len(q)):
        kth = int(D[row, min(k, len(codes)) - 1])
        lims, _, rI = index.range_search(q[row : row + 1], kth + 1)  # distance < kth + 1
        assert set(I[row][I[row] >= 0].tolist()) <= set(rI.tolist())


@st.composite
def small_problems(draw: st.DrawFn) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, int]:
    """Up to 300 codes of <= 64 bits, ids not in insertion order, m with substrings <= 12 bits
    (the reference probes buckets one by one in Python)."""
    d = draw(st.sampled_from([8, 16, 24, 32, 64]))
    kind = draw(st.sampled_from(KINDS))
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    codes = make_codes(kind, n, d, rng)
    q = make_queries(codes, kind, draw(st.integers(1, 5)), d, rng)
    ids = rng.permutation(3 * n)[:n].astype(np.int64)
    m = draw(st.integers(-(-d // 12), min(d, -(-d // 12) + 3)))
    return d, m, codes, ids, q, draw(st.integers(1, n + 3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=small_problems())
def test_matches_the_reference_mih_and_the_tie_rule(problem):
    d, m, codes, ids, q, k = problem
    index = MIHIndex(d, m=m, fallback="never")
    index.add(codes, ids=ids)
    D, I = index.search(q, k)
    rD, rI, probes = reference_mih(codes, ids, q, k, m)
    kk = rD.shape[1]
    np.testing.assert_array_equal(D[:, :kk], rD)
    np.testing.assert_array_equal(I[:, :kk], rI)
    np.testing.assert_array_equal(D[:, :kk], faiss_distances(codes, q, kk))
    tD, tI = tie_rule_knn(codes, ids, q, k)
    np.testing.assert_array_equal(I[:, :kk], tI)
    assert_did_its_own_work(index)
    assert index.last_search_stats["lookups"] >= probes  # it never stops before the plain rule does


#: bucket probes are the only cost: a query's cost is the same number of probes as the reference's
LOOKUPS_ONLY = CostModel(lookup=1.0, candidate=0.0, candidate_word=0.0, step=0.0)


def mixing_index(d: int, m: int, n: int, **kwargs: object) -> MIHIndex:
    """An ``auto`` index (injected cost model: probes only) whose budget lies between the radius-0
    round (``m`` probes) and the first radius-1 step: a query with k-th distance ``>= m`` goes to the
    scan at step ``m``, any other is finished by MIH before, so a batch mixes both paths at will."""
    first = int(substring_layout(d, m)[1][0])
    assert first > m, "the first radius-1 step must cost more probes than the radius-0 round"
    budget = (3 * m + first) / 4  # >= m: the radius-0 round fits; 2 * budget < m + first: step m does not
    return MIHIndex(d, m=m, fallback_ratio=budget / LOOKUPS_ONLY.flat_cost(n, d), cost_model=LOOKUPS_ONLY, **kwargs)


@st.composite
def mixed_problems(draw: st.DrawFn) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, int]:
    """A query with k copies of itself stored (k-th distance 0: MIH) and its complement (far: the
    scan), among others; ids not in insertion order."""
    d, m = draw(st.sampled_from([(16, 2), (16, 3), (24, 2), (24, 3), (64, 3), (64, 4), (64, 5)]))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 12))
    base = make_codes(kind, draw(st.integers(1, 1500)), d, rng)
    codes = np.concatenate([base, np.repeat(base[:1], k, axis=0)])[rng.permutation(len(base) + k)]
    q = np.concatenate([base[:1], ~base[:1], make_queries(base, kind, draw(st.integers(0, 8)), d, rng)])
    ids = rng.permutation(2 * len(codes))[: len(codes)].astype(np.int64)
    return d, m, codes, ids, q[rng.permutation(len(q))], k


@PROPERTY
@given(problem=mixed_problems(), threads=st.sampled_from([1, 2, 3]), block=st.sampled_from([1, 3, 4096]))
def test_mixed_batches_of_mih_and_fallback_queries(problem, threads, block):
    """One batch, some queries finished by MIH and some by the scan (split over blocks and threads):
    the tie rule's (D, I) either way, and exactly the queries the cost model sends away fall back."""
    import annbin.index.mih._blocks as blocks_module
    import annbin.index.mih.index as mih_module

    d, m, codes, ids, q, k = problem
    index = mixing_index(d, m, len(codes), num_threads=threads)
    index.add(codes, ids=ids)
    with mock.patch.object(mih_module, "QUERY_BLOCK", block), mock.patch.object(blocks_module, "MIN_THREAD_BLOCK", 1):
        D, I = index.search(q, k)
    tD, tI = tie_rule_knn(codes, ids, q, k)
    np.testing.assert_array_equal(D, tD)
    np.testing.assert_array_equal(I, tI)
    far = int((tD[:, -1] >= m).sum())
    event("mixed batch" if far else "MIH only (the complement has k neighbours within m - 1 bits)")
    assert index.last_search_stats["fallback_queries"] == far < len(q)  # the query stored k times stays
    assert index.last_search_stats["lookups"] > 0


def test_more_queries_than_a_block():
    """QUERY_BLOCK + 300 queries: two blocks (more with threads), MIH only and mixed with the scan."""
    from annbin.index.mih.index import QUERY_BLOCK

    rng = np.random.default_rng(15)
    codes = make_codes("clustered", 2000, 64, rng)
    ids = rng.permutation(10**6)[:2000].astype(np.int64)
    q = make_queries(codes, "clustered", QUERY_BLOCK + 300, 64, rng)
    q[::7] = ~q[::7]  # far from every cluster: these go to the scan in the mixed index
    flat = annbin.FlatIndex(64)
    flat.add(codes, ids=ids)
    fD, fI = flat.search(q, 10)
    np.testing.assert_array_equal(fD, faiss_distances(codes, q, 10))
    for threads in (1, 2):
        never = MIHIndex(64, m=4, fallback="never", num_threads=threads)
        never.add(codes, ids=ids)
        D, I = never.search(q, 10)
        np.testing.assert_array_equal(D, fD)
        np.testing.assert_array_equal(I, fI)
        assert_did_its_own_work(never)
        mixed = mixing_index(64, 4, 2000, num_threads=threads)
        mixed.add(codes, ids=ids)
        D, I = mixed.search(q, 10)
        np.testing.assert_array_equal(D, fD)
        np.testing.assert_array_equal(I, fI)
        assert mixed.last_search_stats["fallback_queries"] == int((fD[:, -1] >= 4).sum())
        assert 0 < mixed.last_search_stats["fallback_queries"] < len(q)


def test_ties_do_not_depend_on_discovery_order():
    """The issue's case: ids 0 and 11 both at distance 1, m=4. Id 11 differs in substring 1, so
    step 0 (table 0) finds it; id 0 differs in substring 0 and is found at step 1. Id 0 wins."""
    query = np.array([[0b00000000]], np.uint8)
    codes = np.full((12, 1), 0b11111111, np.uint8)  # ids 1..10 at distance 8
    codes[0] = 0b10000000  # substring 0 (bits 0-1) differs
    codes[11] = 0b00100000  # substring 1 (bits 2-3) differs
    for fallback in ("never", "always"):
        index = MIHIndex(8, m=4, fallback=fallback)
        index.add(codes)
        D, I = index.search(query, 1)
        assert (D[0, 0], I[0, 0]) == (1, 0)
        D, I = index.search(query, 3)
        assert D[0].tolist() == [1, 1, 8] and I[0].tolist() == [0, 11, 1]
    assert index.last_search_stats["fallback_queries"] == 1


def test_ties_follow_ids_not_insertion_order():
    """Ids added in descending order, some removed, more added: the tables are built in id order."""
    rng = np.random.default_rng(16)
    codes = make_codes("duplicates", 3000, 64, rng)
    ids = np.arange(3000, dtype=np.int64)[::-1] * 3
    q = make_queries(codes, "duplicates", 40, 64, rng)
    index = MIHIndex(64, m=4, fallback="never")
    index.add(codes, ids=ids)
    ascending = MIHIndex(64, m=4)
    ascending.add(codes[::-1], ids=ids[::-1])
    index.build()
    ascending.build()
    assert index.memory_bytes() == ascending.memory_bytes()  # main is rewritten in id order: no second copy of the ids
    keep = np.ones(3000, bool)
    keep[rng.choice(3000, 500, replace=False)] = False
    index.remove_ids(ids[~keep])
    extra = make_codes("duplicates", 200, 64, rng)
    index.add(extra, ids=np.arange(200) * 3 + 1)
    all_codes, all_ids = np.concatenate([codes[keep], extra]), np.concatenate([ids[keep], np.arange(200) * 3 + 1])
    for k in (1, 7, 50):
        D, I = index.search(q, k)
        tD, tI = tie_rule_knn(all_codes, all_ids, q, k)
        np.testing.assert_array_equal(D, tD)
        np.testing.assert_array_equal(I, tI)
        assert_did_its_own_work(index)
    lims, rD, rI = index.range_search(q, 6)
    for row in range(len(q)):
        pairs = list(zip(rD[lims[row] : lims[row + 1]].tolist(), rI[lims[row] : lims[row + 1]].tolist()))
        assert pairs == sorted(pairs)
    check_range(lims, rD, rI, all_codes, all_ids, q, 6)


# --- threads ---------------------------------------------------------------------------------
def test_last_search_stats_are_per_thread():
    """Two threads search one index at once, kNN with 7 queries and range search with 40 at
    changing radii: each always reads the stats of its own last search, never the other's."""
    rng = np.random.default_rng(23)
    codes = make_codes("clustered", 3000, 64, rng)
    index = MIHIndex(64, m=4, fallback="never", num_threads=1)
    index.add(codes)
    index.build()
    rounds, start, seen = 300, threading.Barrier(2), {}

    def knn(nq: int) -> None:
        q = make_queries(codes, "clustered", nq, 64, np.random.default_rng(nq))
        start.wait()
        seen[nq] = []
        for _ in range(rounds):
            index.search(q, 10)
            stats = index.last_search_stats
            seen[nq].append((stats["queries"], "lookups" in stats))

    def ranges(nq: int) -> None:
        q = make_queries(codes, "clustered", nq, 64, np.random.default_rng(nq))
        start.wait()
        seen[nq] = []
        for r in range(rounds):
            index.range_search(q, 1 + r % 6)
            stats = index.last_search_stats
            seen[nq].append((stats["queries"], "lookups" in stats))

    workers = [threading.Thread(target=knn, args=(7,)), threading.Thread(target=ranges, args=(40,))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen[7] == [(7, True)] * rounds  # kNN stats count lookups, range stats do not
    assert seen[40] == [(40, False)] * rounds
    assert index.last_search_stats is None  # this thread searched nothing


def test_threads_give_identical_results(monkeypatch):
    import annbin.index.mih._blocks as blocks_module

    monkeypatch.setattr(blocks_module, "MIN_THREAD_BLOCK", 16)
    rng = np.random.default_rng(17)
    codes = make_codes("clustered", 4000, 64, rng)
    q = make_queries(codes, "clustered", 300, 64, rng)
    index = MIHIndex(64, m=4, fallback="never", num_threads=1)
    index.add(codes)
    index.record_steps = True
    D1, I1 = index.search(q, 10)
    lims1, rD1, rI1 = index.range_search(q, 6)
    for threads in (2, 3, 8):
        D, I = index.search(q, 10, params={"num_threads": threads})
        np.testing.assert_array_equal(D, D1)
        np.testing.assert_array_equal(I, I1)
        stats = index.last_search_stats
        assert_did_its_own_work(index)
        blocks = sum(s["step"] == 0 for s in stats["steps"])  # one trace per block, block after block
        assert blocks == min(threads, 300 // 16) and sum(s["active"] for s in stats["steps"] if s["step"] == 0) == 300
        assert sum(s["lookups"] for s in stats["steps"]) == stats["lookups"]
        index.set_search_params(num_threads=threads)  # range search takes no per-call params
        lims, rD, rI = index.range_search(q, 6)
        index.set_search_params(num_threads=1)
        np.testing.assert_array_equal(lims, lims1)
        np.testing.assert_array_equal(rD, rD1)
        np.testing.assert_array_equal(rI, rI1)


def test_query_blocks_split_evenly_over_threads(monkeypatch):
    import annbin.index.mih._blocks as blocks_module

    monkeypatch.setattr(blocks_module, "MIN_THREAD_BLOCK", 256)
    blocks = blocks_module.query_blocks
    assert blocks(1000, 4096, 1) == [(0, 1000)]
    assert blocks(1000, 4096, 2) == [(0, 500), (500, 1000)]
    assert blocks(300, 4096, 2) == [(0, 300)]  # two blocks would hold fewer than MIN_THREAD_BLOCK
    assert blocks(1000, 4096, 8) == [(0, 334), (334, 668), (668, 1000)]
    assert blocks(9000, 4096, 2) == [(0, 2250), (2250, 4500), (4500, 6750), (6750, 9000)]
    assert blocks(9000, 4096, 1) == [(0, 3000), (3000, 6000), (6000, 9000)]
    for nq, cap, threads in itertools.product((1, 255, 256, 513, 5000), (1, 7, 4096), (1, 2, 3)):
        got = blocks(nq, cap, threads)
        assert got[0][0] == 0 and got[-1][1] == nq and all(a[1] == b[0] for a, b in zip(got, got[1:]))
        assert all(0 < b - a <= cap for a, b in got)


def test_splice_ranges_groups_parts_by_query():
    """Range results of parts that answer different queries (MIH and fallback scan, tables and
    tail) come back grouped by query, each query's results in part order."""
    from annbin.index.mih._blocks import splice_ranges

    a = (np.array([0, 2, 3]), np.array([2, 0, 1]), np.array([5, 6, 7], np.int32), np.array([50, 60, 70]))
    b = (np.array([1, 3]), np.array([1, 2]), np.array([1, 2, 3], np.int32), np.array([10, 20, 30]))
    lims, D, I = splice_ranges(5, [a, b])
    assert lims.tolist() == [0, 2, 3, 3, 6, 6]
    assert D.tolist() == [5, 6, 1, 7, 2, 3] and I.tolist() == [50, 60, 10, 70, 20, 30]
    assert D.dtype == np.int32 and I.dtype == np.int64


def test_fallback_scan_runs_on_num_threads(monkeypatch):
    import annbin.index.mih._store as store_module

    seen = []
    real = store_module.exact_knn
    monkeypatch.setattr(store_module, "exact_knn", lambda *a, **kw: seen.append(faiss.omp_get_max_threads()) or real(*a, **kw))
    rng = np.random.default_rng(18)
    codes = make_codes("random", 500, 64, rng)
    index = MIHIndex(64, fallback="always")
    index.add(codes)
    before = faiss.omp_get_max_threads()
    for threads in (1, 3):
        D, _ = index.search(codes[:5], 4, params={"num_threads": threads})
        np.testing.assert_array_equal(D, faiss_distances(codes, codes[:5], 4))
    index.search(codes[:5], 4)  # num_threads=None: faiss's own setting
    faiss.omp_set_num_threads(1)
    try:
        index.search(codes[:5], 4)
    finally:
        faiss.omp_set_num_threads(before)
    assert seen == [1, 3, before, 1] and faiss.omp_get_max_threads() == before  # restored after each


def test_num_threads_parameter():
    index = MIHIndex(64, num_threads=2)
    assert index.num_threads == 2 and index.spec == "mih:fallback=auto,fallback_ratio=1.0,num_threads=2"
    assert MIHIndex(64).num_threads is None and MIHIndex(64).spec == "mih:fallback=auto,fallback_ratio=1.0"
    spec = annbin.make_index("mih:m=4,num_threads=3", 64)
    assert spec.num_threads == 3 and spec.m == 4
    rng = np.random.default_rng(19)
    codes = make_codes("clustered", 600, 64, rng)
    index.add(codes)
    index.search(codes[:3], 2, params={"num_threads": 1})  # per call: not kept
    assert index.num_threads == 2
    index.set_search_params(num_threads=None)
    assert index.get_search_params()["num_threads"] is None
    for bad, exc in ((0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)):
        with pytest.raises(exc, match="num_threads must"):
            MIHIndex(64, num_threads=bad)
        with pytest.raises(exc, match="num_threads must"):
            index.search(codes[:3], 2, params={"num_threads": bad})
    with pytest.raises(TypeError, match="cost_model must be a CostModel"):
        MIHIndex(64, cost_model={"lookup": 1.0})
    assert index.num_threads is None


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", KINDS)
def test_grid_of_sizes_kinds_and_k(d, kind):
    """Deterministic companion to the properties: thousands of codes of every kind, k up to n + 3."""
    rng = np.random.default_rng(DIMS.index(d) * 10 + KINDS.index(kind))
    n = 800 if d == 1024 else 2500
    codes = make_codes(kind, n, d, rng)
    q = make_queries(codes, kind, 6, d, rng)
    index = MIHIndex(d, fallback="never")
    index.add(codes)
    for k in (1, 10, n - 1, n + 3):
        check_knn(*index.search(q, k), codes, np.arange(n), q, k)
    for radius in (0, d // 16, d // 5):
        check_range(*index.range_search(q, radius), codes, np.arange(n), q, radius)


@pytest.mark.parametrize("d", [64, 72, 256])
def test_shared_code_copy_is_exact(d, monkeypatch):
    """Tables that keep no copy of the codes read the index's own (main storage, through rows)."""
    import annbin.index.mih._tables as tables_module
    from annbin.index._faiss import flat_codes

    monkeypatch.setattr(tables_module, "COPY_WORDS_MAX_BYTES", 0)
    rng = np.random.default_rng(d)
    codes = make_codes("clustered", 3000, d, rng)
    q = make_queries(codes, "clustered", 20, d, rng)
    index = MIHIndex(d, fallback="never")
    index.add(codes)
    check_knn(*index.search(q, 10), codes, np.arange(3000), q, 10)
    check_range(*index.range_search(q, d // 10), codes, np.arange(3000), q, d // 10)
    assert all(t.shared and t.words is index._words for t in index._tables)
    padded = d % 64 != 0  # then the shared words are a zero-padded copy, counted once
    assert np.shares_memory(index._words, flat_codes(index._store.main)) != padded
    tables = sum(t.occupancy.nbytes + t.ranks.nbytes + t.buckets.nbytes + 3000 * 4 for t in index._tables)
    assert index.memory_bytes() == 3000 * (d // 8) + tables + (index._words.nbytes if padded else 0)  # ids 0..n-1: none stored
    assert len(index._tables) > 1


@pytest.mark.parametrize("kind", ["clustered", "random", "duplicates"])
def test_compact_tables_list_each_bucket(kind):
    """Occupancy bits, per-word ranks and (start, count) of the non-empty buckets give each bucket
    exactly the rows whose substring is its key."""
    codes, _, index = mih_problem(kind, 3000, 1, seed=11)
    index.build()
    subs = extract_substrings(codes, *index._layout)
    for j, t in enumerate(index._tables):
        counts = np.bincount(subs[:, j], minlength=1 << t.length)
        bits = np.unpackbits(t.occupancy, bitorder="little")
        np.testing.assert_array_equal(bits[: counts.size], counts != 0)
        assert not bits[counts.size :].any()
        nonempty = np.flatnonzero(counts)
        start, count = t.buckets >> 32, t.buckets & 0xFFFFFFFF
        np.testing.assert_array_equal(count, counts[nonempty])
        np.testing.assert_array_equal(start, np.concatenate([[0], np.cumsum(counts[nonempty])[:-1]]))
        np.testing.assert_array_equal(t.ranks, np.concatenate([[0], np.cumsum(np.bitwise_count(t.occupancy.view(np.uint64)))[:-1]]))
        for rank, key in enumerate(nonempty[:50].tolist()):
            rows = t.rows[start[rank] : start[rank] + count[rank]]
            np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(subs[:, j] == key))
            np.testing.assert_array_equal(t.words[start[rank] : start[rank] + count[rank], 0], codes[rows].view(np.uint64)[:, 0])


@pytest.mark.parametrize("chunk", [7, 300])
def test_small_work_chunks_are_exact(chunk, monkeypatch):
    """Probes and candidates split into many chunks (offsets past the cached arange) change nothing."""
    import annbin.index.mih._probe as probe_module
    import annbin.index.mih._range as range_module
    import annbin.index.mih._search as search_module

    rng = np.random.default_rng(12)
    codes = make_codes("clustered", 4000, 64, rng)
    q = make_queries(codes, "clustered", 40, 64, rng)
    index = MIHIndex(64, m=4, fallback="never")
    index.add(codes)
    expected = index.search(q, 10)
    expected_range = index.range_search(q, 8)
    monkeypatch.setattr(probe_module, "CANDIDATE_CHUNK", chunk)
    monkeypatch.setattr(search_module, "LOOKUP_CHUNK", chunk)
    monkeypatch.setattr(range_module, "LOOKUP_CHUNK", chunk)
    monkeypatch.setattr(probe_module, "_ARANGE", np.arange(chunk // 2, dtype=np.int64))
    D, I = index.search(q, 10)
    check_knn(D, I, codes, np.arange(4000), q, 10)
    np.testing.assert_array_equal(D, expected[0])
    got_range = index.range_search(q, 8)
    check_range(*got_range, codes, np.arange(4000), q, 8)
    for got, want in zip(got_range, expected_range):
        np.testing.assert_array_equal(got, want)


def test_cap_keeps_exactly_the_hits_within_each_querys_kth():
    """A step's hits are cut at each query's k-th nearest hit, ties at that distance kept."""
    from annbin.index.mih._search import _cap

    rng = np.random.default_rng(13)
    nq, k, sentinel = 50, 5, 65
    q = np.sort(rng.integers(0, nq, 2000))
    dist = rng.integers(0, sentinel, q.size)
    rows = rng.permutation(q.size).astype(np.int64)
    kq, kd, kr = _cap(q, dist, rows, k, nq, sentinel)
    for i in range(nq):
        mine = dist[q == i]
        bound = np.sort(mine)[k - 1] if mine.size >= k else sentinel
        expected = set(rows[(q == i) & (dist <= bound)].tolist())
        assert set(kr[kq == i].tolist()) == expected
        assert (kd[kq == i] <= bound).all()


@pytest.mark.parametrize("kind", ["equal", "duplicates", "clustered"])
def test_capped_dense_steps_are_exact(kind, monkeypatch):
    """Buckets holding many codes a query (ties everywhere) make the cap fire; results stay exact."""
    import annbin.index.mih._search as search_module

    calls = []
    real = search_module._cap
    monkeypatch.setattr(search_module, "_cap", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(search_module, "CAP_MIN_HITS", 1)
    codes, q, index = mih_problem(kind, 3000, 30, seed=14)
    check_knn(*index.search(q, 10), codes, np.arange(3000), q, 10)
    assert calls


# --- the pigeonhole schedule at its edges ----------------------------------------------------
@pytest.mark.parametrize("d,m", [(16, 2), (24, 2), (24, 3), (64, 4), (64, 3), (8, 1), (24, 1)])
def test_every_split_of_the_distance_is_found(d, m):
    """An item whose substring distances are (r+1, .., r+1, r, .., r) is first reachable at the
    last step the pigeonhole bound allows: each such item must be found as the unique nearest."""
    rng = np.random.default_rng(d * 100 + m)
    starts, lengths = substring_layout(d, m)
    base = rng.integers(0, 2, d, dtype=np.uint8)
    far = np.packbits(1 - base)[None, :]  # everything else is at distance d
    for dist in range(0, min(d, 3 * m + 2)):
        r, j = divmod(dist, m)
        split = [r + 1] * j + [r] * (m - j)  # sum == dist
        if any(s > ln for s, ln in zip(split, lengths.tolist())):
            continue
        bits = base.copy()
        for t, s in enumerate(split):
            flip = rng.choice(lengths[t], size=s, replace=False) + starts[t]
            bits[flip] ^= 1
        item = np.packbits(bits)[None, :]
        codes = np.concatenate([np.repeat(far, 20, axis=0), item])
        index = MIHIndex(d, m=m, fallback="never")
        index.add(codes)
        D, I = index.search(np.packbits(base)[None, :], 1)
        assert (D[0, 0], I[0, 0]) == (dist, 20), f"split {split} at distance {dist} missed"
        lims, rD, rI = index.range_search(np.packbits(base)[None, :], dist + 1)  # distance < dist + 1
        assert rI.tolist() == [20] and rD.tolist() == [dist]


def test_exact_match_with_two_substrings():
    """The known bug elsewhere: m=2 probing one table too few misses exact matches at radius 0."""
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (500, 4), dtype=np.uint8)
    index = MIHIndex(32, m=2, fallback="never")
    index.add(codes)
    D, I = index.search(codes[:50], 1)
    assert (D[:, 0] == 0).all()
    np.testing.assert_array_equal(hamming(codes[:50], codes)[np.arange(50), I[:, 0]], 0)


# --- mutation, persistence, parameters -------------------------------------------------------
def test_add_after_search_rebuilds():
    rng = np.random.default_rng(1)
    a, b = make_codes("clustered", 1500, 64, rng), make_codes("clustered", 700, 64, rng)
    q = make_queries(np.concatenate([a, b]), "clustered", 20, 64, rng)
    index = MIHIndex(64, fallback="never")
    index.add(a)
    check_knn(*index.search(q, 10), a, np.arange(1500), q, 10)
    index.add(b)
    assert index.ntotal == 2200
    both = np.concatenate([a, b])
    check_knn(*index.search(q, 10), both, np.arange(2200), q, 10)
    index.add(make_codes("random", 5, 64, rng), ids=np.arange(10_000, 10_005))
    assert index.get_ids()[-5:].tolist() == list(range(10_000, 10_005))


def test_formula_m_is_rechosen_at_rebuild():
    rng = np.random.default_rng(2)
    index = MIHIndex(64, m="formula")  # the default, m=None, measures m from 100k codes (test_mih_calibrate)
    index.add(make_codes("random", 300, 64, rng))
    index.build()
    small = index.effective_m
    index.add(make_codes("random", 200_000, 64, rng))
    index.build()
    assert small == default_m(64, 300) and index.effective_m == default_m(64, 200_300) < small
    fixed = MIHIndex(64, m=5)
    fixed.add(make_codes("random", 300, 64, rng))
    fixed.build()
    assert fixed.effective_m == 5


def test_remove_ids_then_search_excludes_them():
    rng = np.random.default_rng(3)
    codes = make_codes("duplicates", 2000, 128, rng)
    ids = rng.permutation(10_000)[:2000].astype(np.int64)
    q = make_queries(codes, "duplicates", 15, 128, rng)
    index = MIHIndex(128, fallback="never")
    index.add(codes, ids=ids)
    index.search(q, 5)
    gone = ids[::3]
    assert index.remove_ids(np.concatenate([gone, [10_001, 10_002]])) == len(gone)
    assert index.remove_ids(gone) == 0
    keep = ~np.isin(ids, gone)
    assert index.ntotal == keep.sum()
    D, I = index.search(q, 30)
    assert not np.isin(I, gone).any()
    check_knn(D, I, codes[keep], ids[keep], q, 30)
    check_range(*index.range_search(q, 20), codes[keep], ids[keep], q, 20)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    codes = make_codes("clustered", 3000, 256, rng)
    q = make_queries(codes, "clustered", 25, 256, rng)
    index = MIHIndex(256, m=16, fallback="never")
    index.add(codes, ids=np.arange(3000) * 7)
    before = index.search(q, 12)
    index.save(tmp_path / "mih.annbin")
    loaded = annbin.load_index(tmp_path / "mih.annbin")
    assert isinstance(loaded, MIHIndex) and loaded.spec == index.spec == "mih:m=16,fallback=never,fallback_ratio=1.0"
    after = loaded.search(q, 12)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(loaded.get_ids(), index.get_ids())
    assert loaded.memory_bytes() == index.memory_bytes()
    index.remove_ids(index.get_ids()[:100])
    index.save(tmp_path / "mih.annbin")  # overwrite after a mutation
    again = annbin.load_index(tmp_path / "mih.annbin")
    np.testing.assert_array_equal(again.search(q, 12)[1], index.search(q, 12)[1])


def test_save_load_empty_index(tmp_path):
    empty = MIHIndex(64, m=4)
    empty.save(tmp_path / "empty.annbin")
    loaded = annbin.load_index(tmp_path / "empty.annbin")
    assert loaded.ntotal == 0 and loaded.m == 4


def test_fallback_paths_agree_exactly():
    rng = np.random.default_rng(5)
    codes = make_codes("clustered", 3000, 64, rng)
    q = make_queries(codes, "clustered", 40, 64, rng)
    index = MIHIndex(64)
    index.add(codes)
    results = {mode: index.search(q, 15, params={"fallback": mode}) for mode in ("never", "always", "auto")}
    for D, I in results.values():
        check_knn(D, I, codes, np.arange(3000), q, 15)
    np.testing.assert_array_equal(results["never"][0], results["always"][0])
    np.testing.assert_array_equal(results["never"][0], results["auto"][0])
    index.search(q, 15, params={"fallback": "always"})
    assert index.last_search_stats["fallback_queries"] == len(q) and index.fallback == "auto"
    index.set_search_params(fallback="never")
    index.search(q, 15)
    assert index.last_search_stats["fallback_queries"] == 0 and index.last_search_stats["candidates"] > 0
    for mode in ("never", "always"):
        index.set_search_params(fallback=mode)
        for radius in (0, 5, 20):
            check_range(*index.range_search(q, radius), codes, np.arange(3000), q, radius)


def test_step_trace_accounts_for_the_work_and_follows_the_pigeonhole_order():
    rng = np.random.default_rng(8)
    codes = make_codes("clustered", 4000, 64, rng)
    q = make_queries(codes, "clustered", 50, 64, rng)
    index = MIHIndex(64, m=4, fallback="never")
    index.add(codes)
    D, _ = index.search(q, 10)
    assert "steps" not in index.last_search_stats  # tracing is off by default
    index.record_steps = True
    D2, _ = index.search(q, 10)
    np.testing.assert_array_equal(D2, D)
    stats = index.last_search_stats
    steps = stats["steps"]
    assert [s["step"] for s in steps] == list(range(len(steps)))
    assert [(s["radius"], s["table"]) for s in steps] == [divmod(s["step"], 4) for s in steps]
    assert sum(s["lookups"] for s in steps) == stats["lookups"]
    assert sum(s["candidates"] for s in steps) == stats["candidates"]
    assert steps[0]["active"] == len(q) and all(a["active"] >= b["active"] for a, b in zip(steps, steps[1:]))
    # a query stops after step s once its k-th distance is <= s (the tie rule: codes at the k-th
    # distance are found by then), so the farthest query runs steps 0..k-th distance
    worst = int(D[:, -1].max())
    assert len(steps) == worst + 1
    assert all(s["seconds"] >= 0 for s in steps)


def test_candidates_pending_when_every_query_stops_are_merged():
    """Hypothesis found it: all queries stopped after a radius-0 step that merged nothing, and that
    step's candidates (the nearest code of the last query) were dropped."""
    codes = np.array([95, 130, 194, 217, 207, 235, 15, 163, 33, 215, 217, 130, 248, 189, 16, 69, 184, 232, 205,
                      78, 169, 61, 125, 10, 29, 240, 66, 19, 182, 39, 59, 4, 59, 81, 222, 44, 120], dtype=np.uint8)[:, None]
    q = np.array([78, 28, 125], dtype=np.uint8)[:, None]
    index = MIHIndex(8, m=4, fallback="never")
    index.add(codes)
    check_knn(*index.search(q, 2), codes, np.arange(len(codes)), q, 2)


def test_cost_model_predicts_nothing_during_the_radius_0_round():
    """A k-th distance merged from part of the radius-0 round is loose; predicting the remaining cost
    from it sent clustered queries to the scan. From radius 1 on, the same k-th distance counts."""
    from annbin.index.mih._cost import COSTS, Budget
    from annbin.index.mih._search import _Batch

    rng = np.random.default_rng(9)
    codes = make_codes("random", 20_000, 128, rng)
    index = MIHIndex(128)
    index.add(codes)
    tables = index._build()
    m = len(tables)
    xw, xs = to_words(codes[:4]), extract_substrings(codes[:4], *index._layout)
    budget = COSTS.flat_cost(index.ntotal, 128)
    A, few = np.arange(4), np.ones(4, dtype=np.int64)
    for step, expected in ((0, False), (m - 1, False), (m, True)):
        batch = _Batch(xw, xs, 10, 128)
        batch.kth[:] = 60  # loose: the rest of the search to radius 60 would cost many scans
        guard = Budget(tables, index.ntotal, 128, 10, 2, budget, COSTS, 4)
        guard.start_step(1, 1000)
        over = guard.over(batch.kth, batch.sentinel, A, step, few, 1000)
        assert (over is not None and over.tolist() == [True] * 4) if expected else over is None, step


def test_auto_fallback_follows_the_data():
    """Uniformly random 128-bit codes: neighbours are far, MIH gives up; clustered 64-bit: it stays."""
    rng = np.random.default_rng(6)
    far = make_codes("random", 100_000, 128, rng)
    index = MIHIndex(128, m="formula")  # (measuring m at 100k codes would only slow the test)
    index.add(far)
    q = make_codes("random", 64, 128, rng)
    D, I = index.search(q, 10)
    np.testing.assert_array_equal(D, faiss_distances(far, q, 10))
    assert index.last_search_stats["fallback_queries"] == len(q)
    near = make_codes("clustered", 100_000, 64, rng)
    index = MIHIndex(64, m="formula")
    index.add(near)
    q = near[rng.integers(0, len(near), 256)] ^ (rng.random((256, 8)) < 0.02).astype(np.uint8)  # near a cluster
    D, I = index.search(q, 10)
    np.testing.assert_array_equal(D, faiss_distances(near, q, 10))
    assert index.last_search_stats["fallback_queries"] < len(q) // 4


def test_skewed_buckets_fall_back_and_stay_exact():
    """All codes in one bucket: the uniform estimate says MIH is cheap, the bucket sizes say no."""
    rng = np.random.default_rng(9)
    codes = make_codes("equal", 30_000, 64, rng)
    codes[::1000, 0] ^= 1  # a few codes one bit away from all the others
    two_away = codes[1:4].copy()
    two_away[:, 0] ^= 3
    q = np.concatenate([codes[1:4], two_away, make_codes("random", 100, 64, rng)])
    index = MIHIndex(64)
    index.add(codes)
    D, I = index.search(q, 20)
    check_knn(D, I, codes, np.arange(len(codes)), q, 20)
    assert index.last_search_stats["fallback_queries"] >= 6
    lims, rD, rI = index.range_search(q, 2)
    check_range(lims, rD, rI, codes, np.arange(len(codes)), q, 2)
    assert index.last_search_stats["fallback_queries"] == 6  # the random queries' probes stay empty: MIH


@pytest.mark.parametrize("d,m", [(64, 0), (64, -1), (64, 65), (64, 2), (256, 10), (1024, 42)])
def test_bad_m_raises(d, m):
    with pytest.raises(ValueError, match="m"):
        MIHIndex(d, m=m)
    with pytest.raises(ValueError):
        annbin.make_index(f"mih:m={m}", d)


@pytest.mark.parametrize("m", [2.5, "4", True])
def test_non_int_m_raises_type_error(m):
    with pytest.raises(TypeError, match="m must be an int"):
        MIHIndex(64, m=m)


def test_bad_search_params_raise():
    index = MIHIndex(64)
    with pytest.raises(ValueError, match="fallback must be one of"):
        index.set_search_params(fallback="sometimes")
    with pytest.raises(ValueError, match="fallback_ratio must be > 0"):
        index.set_search_params(fallback_ratio=0)
    with pytest.raises(TypeError, match="fallback_ratio must be a number"):
        index.set_search_params(fallback_ratio="1")
    with pytest.raises(ValueError, match="unknown search parameter"):
        index.set_search_params(ef_search=3)
    assert index.get_search_params() == {"fallback": "auto", "fallback_ratio": 1.0, "num_threads": None}


def test_spec_strings_and_memory():
    index = annbin.make_index("mih:m=4,fallback=never", 64)
    assert isinstance(index, MIHIndex) and index.m == 4 and index.fallback == "never"
    assert annbin.make_index("mih", 64).m is None
    assert MIHIndex.build_params == ("m", "tail_fraction") and MIHIndex.exact
    assert annbin.make_index("mih:tail_fraction=0.2", 64).spec == "mih:tail_fraction=0.2,fallback=auto,fallback_ratio=1.0"
    rng = np.random.default_rng(8)
    codes = make_codes("random", 5000, 64, rng)
    for m, ids in ((3, None), (4, None), (8, None), (4, 7 * np.arange(5000) + 3)):
        index = MIHIndex(64, m=m)
        index.add(codes, ids=ids)
        assert index.memory_bytes() == 5000 * 8 + 5000 * 8  # codes + ids: memory_bytes does not build
        assert index._tables is None and index.rebuilds == 0
        index.build()
        tables = index._tables
        assert len(tables) == m and index.rebuilds == 1
        copies = m <= 16  # COPY_MAX_TABLES: more tables share the index's codes
        assert all(t.occupancy.nbytes == 8 * -(-(1 << t.length) // 64) and t.ranks.nbytes == 8 * -(-(1 << t.length) // 64) for t in tables)
        stored_ids = 0 if ids is None else 5000 * 8  # ids 0..n-1 are the rows: not stored
        expected = 5000 * 8 + stored_ids + sum(t.occupancy.nbytes + t.ranks.nbytes + t.buckets.nbytes + 5000 * (4 + 8 * copies) for t in tables)
        assert index.memory_bytes() == expected  # codes + ids + (occupancy bits, ranks, buckets, rows, words copy) per table
        assert all(t.buckets.nbytes == 8 * np.unique(s).size for t, s in zip(tables, extract_substrings(codes, *index._layout).T))
    assert MIHIndex(64).memory_bytes() == 0


def test_ids_that_are_the_rows_are_not_stored(tmp_path):
    """Ids 0..n-1 (an index filled without ids, in any order) are main's rows: none are stored, and
    searches, removals, rebuilds and a save / load map rows to ids as if they were."""
    rng = np.random.default_rng(21)
    codes = make_codes("clustered", 3000, 64, rng)
    q = make_queries(codes, "clustered", 30, 64, rng)
    order = rng.permutation(3000)
    index = MIHIndex(64, m=4, fallback="never")
    index.add(codes[order], ids=order)  # ids 0..n-1, shuffled: main is rewritten in id order
    index.build()
    assert index._store.scan_ids is None
    check_knn(*index.search(q, 10), codes, np.arange(3000), q, 10)
    check_knn(*index.search(q, 10, params={"fallback": "always"}), codes, np.arange(3000), q, 10)  # the scan's rows too
    assert index.last_search_stats["fallback_queries"] == len(q)
    gone = np.array([0, 7, 2999, 5000, -1])  # 5000 and -1 are not stored
    assert index.remove_ids(gone) == 3
    live = np.setdiff1d(np.arange(3000), gone)
    check_knn(*index.search(q, 10), codes[live], live, q, 10)
    check_range(*index.range_search(q, 6), codes[live], live, q, 6)
    index.build()  # ids 1..2998 with gaps: now stored
    assert index._store.scan_ids is not None
    check_knn(*index.search(q, 10), codes[live], live, q, 10)
    fresh = MIHIndex(64, m=4)
    fresh.add(codes)
    fresh.build()
    fresh.save(tmp_path / "rows.annbin")
    loaded = annbin.load_index(tmp_path / "rows.annbin")
    assert loaded._store.scan_ids is None and loaded.rebuilds == 0
    assert loaded.memory_bytes() == fresh.memory_bytes()
    np.testing.assert_array_equal(loaded.search(q, 10)[1], fresh.search(q, 10)[1])


def test_empty_and_tiny_indexes():
    index = MIHIndex(64)
    q = np.zeros((3, 8), np.uint8)
    D, I = index.search(q, 4)
    assert (D == INT32_MAX).all() and (I == -1).all()
    lims, rD, rI = index.range_search(q, 10)
    assert lims.tolist() == [0, 0, 0, 0] and rD.size == rI.size == 0
    index.add(q[:1])
    D, I = index.search(q, 4, params={"fallback": "never"})
    assert D[:, 0].tolist() == [0, 0, 0] and (I[:, 1:] == -1).all()


# --- building blocks -------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 5, 12, 20])
def test_popcount_masks(length):
    for r in range(0, min(length, 6) + 1):
        masks = popcount_masks(length, r)
        assert masks.size == math.comb(length, r) == np.unique(masks).size
        assert (np.bitwise_count(masks) == r).all() and (masks < (1 << length)).all()
    assert popcount_masks(length, length + 1).size == 0


@pytest.mark.parametrize("length", [2, 3, 9, 21])
def test_occupancy_probes_split_each_key_into_byte_and_bit(length):
    """``sub ^ mask`` is bit ``lo[sub & 7, i]`` of byte ``(sub >> 3) ^ hi[i]``, for every mask."""
    rng = np.random.default_rng(length)
    subs = rng.integers(0, 1 << length, 40)
    for r in range(0, min(length, 3) + 1):
        masks = popcount_masks(length, r)
        hi, lo = occupancy_probes(length, r)
        assert lo.shape == (8, masks.size) and lo.dtype == np.uint8
        keys = subs[:, None] ^ masks[None, :]
        assert np.array_equal(((subs >> 3)[:, None] ^ hi[None, :]) << 3 | lo[subs & 7], keys)


@pytest.mark.parametrize("d,m", [(8, 1), (24, 5), (64, 3), (72, 7), (1024, 43)])
def test_substrings_partition_the_bits(d, m):
    rng = np.random.default_rng(d + m)
    codes = rng.integers(0, 256, (50, d // 8), dtype=np.uint8)
    starts, lengths = substring_layout(d, m)
    assert lengths.sum() == d and lengths.max() - lengths.min() <= 1 and starts[0] == 0
    subs = extract_substrings(codes, starts, lengths)
    bits = np.unpackbits(codes, axis=1).astype(np.int64)
    for t, (s, ln) in enumerate(zip(starts.tolist(), lengths.tolist())):
        want = bits[:, s : s + ln] @ (1 << np.arange(ln - 1, -1, -1, dtype=np.int64))
        np.testing.assert_array_equal(subs[:, t], want)


def test_default_m_follows_the_paper_rule():
    assert default_m(64, 1_000_000) == 3 and default_m(64, 10_000_000) == 3
    assert default_m(128, 1_000_000) == 6 and default_m(256, 1_000_000) == 13
    assert default_m(1024, 1_000_000) == 51 and default_m(8, 10) == 2
    for d in (8, 64, 256, 1024):
        for n in (1, 100, 10**6, 10**9):
            m = default_m(d, n)
            assert 1 <= m <= d and -(-d // m) <= MAX_SUBSTRING_BITS
