"""near_duplicates (the exact MIH self-join, and its scan) and duplicate_groups, against plain references."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import annbin
from annbin.index.mih import _selfjoin, join

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = ("random", "ties", "clustered")


pytestmark = pytest.mark.usefixtures("reference_costs")  # conftest.py


# --- data and references ---------------------------------------------------------------------
def make_codes(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, d // 8)`` uint8: uniformly random; tie-heavy (a few distinct codes, many exact
    duplicates); or clustered (a few centres, 0-3 bits flipped per copy)."""
    cs = d // 8
    if kind == "random":
        return rng.integers(0, 256, (n, cs), dtype=np.uint8)
    if kind == "ties":
        pool = rng.integers(0, 256, (max(1, n // 12), cs), dtype=np.uint8)
        return pool[rng.integers(0, len(pool), n)]
    bits = np.unpackbits(rng.integers(0, 256, (max(1, n // 6), cs), dtype=np.uint8), axis=1)
    bits = bits[rng.integers(0, len(bits), n)]
    for _ in range(3):
        flip = rng.random(n) < 0.6
        bits[np.flatnonzero(flip), rng.integers(0, d, int(flip.sum()))] ^= 1
    return np.packbits(bits, axis=1)


def reference_pairs(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair i < j at distance < radius by popcount of the XOR of all pairs, sorted by (d, i, j)."""
    n = len(codes)
    dist = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2, dtype=np.int64)
    i, j = np.triu_indices(n, 1)
    d = dist[i, j]
    hit = d < radius
    i, j, d = i[hit], j[hit], d[hit]
    order = np.lexsort((j, i, d))
    return np.stack([i[order], j[order]], axis=1).astype(np.int64).reshape(-1, 2), d[order].astype(np.int32)


def reference_groups(pairs: np.ndarray, n: int) -> np.ndarray:
    """Connected components by breadth-first search, labelled by their smallest item."""
    nbrs: dict[int, list[int]] = collections.defaultdict(list)
    for a, b in pairs.tolist():
        nbrs[a].append(b)
        nbrs[b].append(a)
    label = [-1] * n
    for start in range(n):  # ascending: a component's first item reached is its smallest
        if label[start] >= 0:
            continue
        label[start] = start
        queue = collections.deque([start])
        while queue:
            for v in nbrs[queue.popleft()]:
                if label[v] < 0:
                    label[v] = start
                    queue.append(v)
    return np.array(label, dtype=np.int64)


def check(codes: np.ndarray, radius: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """near_duplicates equals the reference (and is well formed); returns it."""
    pairs, dist = annbin.near_duplicates(codes, radius, **kwargs)
    assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2
    assert dist.dtype == np.int32 and dist.shape == (len(pairs),)
    want_pairs, want_dist = reference_pairs(codes, radius)
    np.testing.assert_array_equal(pairs, want_pairs)
    np.testing.assert_array_equal(dist, want_dist)
    return pairs, dist


# --- exactness -------------------------------------------------------------------------------
@PROPERTY
@given(kind=st.sampled_from(KINDS), n=st.integers(0, 70), d=st.sampled_from([8, 16, 24, 64, 72, 128]),
       radius=st.integers(-1, 12), seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["auto", "mih", "scan"]),
       m=st.sampled_from([None, 1, 2, 3, 5]))
def test_pairs_equal_the_reference(kind, n, d, radius, seed, method, m):
    codes = make_codes(kind, n, d, np.random.default_rng(seed))
    if m is not None and (m > d or -(-d // m) > 24):
        m = None
    check(codes, radius if radius < 12 else d + 1, method=method, m=m, max_pairs=10**9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [24, 64, 128])
def test_many_blocks_and_threads(monkeypatch, kind, d):
    """Blocks of 37 codes on a pool of 3 threads: block edges, the pool and the scan of a suffix."""
    monkeypatch.setattr(_selfjoin, "JOIN_BLOCK", 37)
    codes = make_codes(kind, 400, d, np.random.default_rng(d))
    for radius in (1, 4, d // 6):
        for method in ("mih", "scan"):
            check(codes, radius, method=method, num_threads=3)
            assert join.last_join_stats()["blocks"] == 11


def test_pairs_once_smaller_first_and_sorted():
    codes = make_codes("ties", 300, 64, np.random.default_rng(1))
    pairs, dist = check(codes, 9, method="mih")
    assert len(pairs) > 1000 and (dist == 0).sum() > 100  # exact duplicates and near ones
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    key = np.lexsort((pairs[:, 1], pairs[:, 0], dist))
    np.testing.assert_array_equal(key, np.arange(len(pairs)))


# --- paths -----------------------------------------------------------------------------------
def test_mih_path_runs_without_the_scan(monkeypatch):
    def no_scan(*args, **kwargs):
        raise AssertionError("the scan ran")

    monkeypatch.setattr(_selfjoin, "scan_pairs", no_scan)
    hits = collections.Counter()
    probe = _selfjoin.range_hits

    def counted(*args, **kwargs):
        hits["range_hits"] += 1
        yield from probe(*args, **kwargs)

    monkeypatch.setattr(_selfjoin, "range_hits", counted)
    codes = make_codes("ties", 500, 64, np.random.default_rng(2))  # dense buckets: auto would scan some codes
    check(codes, 3, method="mih")
    stats = join.last_join_stats()
    assert stats["method"] == "mih" and stats["scan_queries"] == 0 and stats["m"] >= 3
    assert hits["range_hits"] == stats["blocks"] == 1


def test_scan_path_runs_without_the_tables(monkeypatch):
    def no_tables(*args, **kwargs):
        raise AssertionError("MIH tables were built")

    monkeypatch.setattr(_selfjoin, "build_tables", no_tables)
    monkeypatch.setattr(_selfjoin, "range_hits", no_tables)
    codes = make_codes("clustered", 300, 64, np.random.default_rng(3))
    check(codes, 5, method="scan")
    stats = join.last_join_stats()
    assert stats["method"] == "scan" and stats["scan_queries"] == 300 and stats["m"] is None


def test_both_paths_and_auto_agree_on_clustered_codes():
    codes = make_codes("clustered", 3000, 64, np.random.default_rng(4))
    results = {method: annbin.near_duplicates(codes, 5, method=method) for method in ("mih", "scan", "auto")}
    assert len(results["mih"][0]) > 3000
    for pairs, dist in results.values():
        np.testing.assert_array_equal(pairs, results["mih"][0])
        np.testing.assert_array_equal(dist, results["mih"][1])


def test_auto_takes_mih_at_a_small_radius_and_the_scan_at_a_large_one():
    codes = make_codes("clustered", 2000, 64, np.random.default_rng(5))
    annbin.near_duplicates(codes, 4)
    assert join.last_join_stats()["method"] == "mih"
    annbin.near_duplicates(codes, 30, max_pairs=10**7)
    assert join.last_join_stats()["method"] == "scan"
    assert join.join_plan(10**6, 64, 4) == ("mih", 3) and join.join_plan(10**6, 64, 40)[0] == "scan"


def test_auto_sends_codes_in_overfull_buckets_to_the_scan():
    """1,000 copies of one code among 3,000 random ones: each copy's bucket holds the other copies,
    far more than a uniformly filled table would; auto answers those codes by the scan, the rest by
    MIH, and the pairs are the same as the scan's alone."""
    rng = np.random.default_rng(6)
    codes = np.concatenate([make_codes("random", 3000, 64, rng), np.repeat(make_codes("random", 1, 64, rng), 1000, axis=0)])
    codes = codes[rng.permutation(len(codes))]
    pairs, dist = annbin.near_duplicates(codes, 2)
    stats = join.last_join_stats()
    assert stats["method"] == "mih" and 0 < stats["scan_queries"] < 1000
    assert len(pairs) >= 1000 * 999 // 2
    scan_pairs, scan_dist = annbin.near_duplicates(codes, 2, method="scan")
    np.testing.assert_array_equal(pairs, scan_pairs)
    np.testing.assert_array_equal(dist, scan_dist)


# --- ids, limits, empties ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mih", "scan"])
def test_ids_label_the_pairs(method):
    rng = np.random.default_rng(7)
    codes = make_codes("clustered", 250, 64, rng)
    ids = rng.choice(10**12, 250, replace=False).astype(np.int64)
    pairs, dist = annbin.near_duplicates(codes, 6, ids=ids, method=method)
    rows, want_dist = reference_pairs(codes, 6)
    labelled = np.sort(ids[rows], axis=1)  # the smaller id first
    order = np.lexsort((labelled[:, 1], labelled[:, 0], want_dist))
    np.testing.assert_array_equal(pairs, labelled[order])
    np.testing.assert_array_equal(dist, want_dist[order])


def test_bad_ids_raise():
    codes = make_codes("random", 10, 64, np.random.default_rng(8))
    with pytest.raises(ValueError, match="duplicates"):
        annbin.near_duplicates(codes, 3, ids=np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 9]))
    with pytest.raises(ValueError, match="length"):
        annbin.near_duplicates(codes, 3, ids=np.arange(9))
    with pytest.raises(TypeError, match="ids"):
        annbin.near_duplicates(codes, 3, ids=np.arange(10.0))


@pytest.mark.parametrize("method", ["mih", "scan"])
def test_max_pairs(monkeypatch, method):
    codes = make_codes("ties", 300, 64, np.random.default_rng(9))
    want, _ = reference_pairs(codes, 4)
    pairs, _ = annbin.near_duplicates(codes, 4, max_pairs=len(want), method=method)  # exactly at the limit
    assert len(pairs) == len(want)
    with pytest.raises(ValueError, match=r"radius 4 yields more than max_pairs=.* lower the radius or raise max_pairs"):
        annbin.near_duplicates(codes, 4, max_pairs=len(want) - 1, method=method)


@pytest.mark.parametrize("method", ["mih", "scan"])
def test_max_pairs_stops_early(monkeypatch, method):
    """20,000 equal codes hold 2e8 pairs; with max_pairs=1000 the count never runs far past it."""
    monkeypatch.setattr(_selfjoin, "JOIN_BLOCK", 1000)
    seen = []
    add = _selfjoin.Tally.add

    def spy(self, count):
        seen.append(self.count + count)
        add(self, count)

    monkeypatch.setattr(_selfjoin.Tally, "add", spy)
    with pytest.raises(ValueError, match="max_pairs=1,000"):
        annbin.near_duplicates(np.zeros((20_000, 8), np.uint8), 1, max_pairs=1000, method=method, num_threads=2)
    assert max(seen) <= 1000 + _selfjoin.SCAN_RESULTS and len(seen) < 50


@pytest.mark.parametrize("n, radius", [(0, 5), (1, 5), (50, 0), (50, -3)])
def test_nothing_to_pair(n, radius):
    pairs, dist = annbin.near_duplicates(np.zeros((n, 8), np.uint8), radius)
    assert pairs.shape == (0, 2) and pairs.dtype == np.int64
    assert dist.shape == (0,) and dist.dtype == np.int32


def test_radius_one_is_exact_duplicates_and_past_d_is_everything():
    codes = make_codes("ties", 120, 16, np.random.default_rng(10))
    pairs, dist = check(codes, 1)
    assert len(pairs) and not dist.any()
    pairs, _ = check(codes, 10**6, max_pairs=10**6)
    assert len(pairs) == 120 * 119 // 2


def test_progress_bar(capsys):
    annbin.near_duplicates(make_codes("random", 100, 64, np.random.default_rng(11)), 3, progress=True)
    assert "near_duplicates" in capsys.readouterr().err


@pytest.mark.parametrize("codes, error, match", [
    (np.zeros((5, 8), np.float32), TypeError, "uint8"),
    (np.zeros((5, 8), np.int8), TypeError, "uint8"),
    ([[0, 1]], TypeError, "numpy uint8"),
    (np.zeros(8, np.uint8), ValueError, "2-D"),
    (np.zeros((2, 5, 8), np.uint8), ValueError, "2-D"),
    (np.zeros((5, 0), np.uint8), ValueError, "8 bits"),
])
def test_bad_codes_raise(codes, error, match):
    with pytest.raises(error, match=match):
        annbin.near_duplicates(codes, 3)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"radius": 2.0}, TypeError, "radius"),
    ({"radius": True}, TypeError, "radius"),
    ({"radius": "3"}, TypeError, "radius"),
    ({"max_pairs": -1}, ValueError, "max_pairs"),
    ({"max_pairs": 1.5}, TypeError, "max_pairs"),
    ({"num_threads": 0}, ValueError, "num_threads"),
    ({"method": "fast"}, ValueError, "method"),
    ({"m": 0}, ValueError, "m must be"),
    ({"m": 2}, ValueError, "substrings of up to 32 bits"),
])
def test_bad_options_raise(kwargs, error, match):
    codes = make_codes("random", 10, 64, np.random.default_rng(12))
    radius = kwargs.pop("radius", 3)
    with pytest.raises(error, match=match):
        annbin.near_duplicates(codes, radius, **kwargs)


# --- groups ------------------------------------------------------------------------------------
@PROPERTY
@given(n=st.integers(0, 60), edges=st.integers(0, 90), seed=st.integers(0, 2**32 - 1))
def test_groups_equal_breadth_first_search(n, edges, seed):
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, n, (edges if n else 0, 2)).astype(np.int64)
    groups = annbin.duplicate_groups(pairs, n)
    assert groups.dtype == np.int64 and groups.shape == (n,)
    np.testing.assert_array_equal(groups, reference_groups(pairs, n))


def test_groups_of_long_chains_and_near_duplicates():
    perm = np.random.default_rng(13).permutation(5000)
    chain = np.stack([perm[:-1], perm[1:]], axis=1)  # one path through every item, in random order
    np.testing.assert_array_equal(annbin.duplicate_groups(chain, 5000), np.zeros(5000, np.int64))
    codes = make_codes("clustered", 600, 64, np.random.default_rng(14))
    pairs, _ = annbin.near_duplicates(codes, 3)
    groups = annbin.duplicate_groups(pairs, 600)
    np.testing.assert_array_equal(groups, reference_groups(pairs, 600))
    assert 1 < len(np.unique(groups)) < 600


@pytest.mark.parametrize("pairs, n, error, match", [
    (np.zeros((3, 3), np.int64), 5, ValueError, r"\(npairs, 2\)"),
    (np.zeros(4, np.int64), 5, ValueError, r"\(npairs, 2\)"),
    (np.zeros((3, 2), np.float64), 5, TypeError, "integers"),
    (np.array([[0, 5]]), 5, ValueError, "0 .. n - 1"),
    (np.array([[-1, 2]]), 5, ValueError, "0 .. n - 1"),
    (np.zeros((0, 2), np.int64), -1, ValueError, "n must be"),
    (np.zeros((0, 2), np.int64), 2.0, TypeError, "n must be"),
])
def test_bad_groups_input_raises(pairs, n, error, match):
    with pytest.raises(error, match=match):
        annbin.duplicate_groups(pairs, n)
