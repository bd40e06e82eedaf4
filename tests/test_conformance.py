"""faiss's binary-index checks, applied to every annbin variant and every wrapped faiss kind.

The checks follow what faiss's own tests assert of its binary indexes (tests/test_index_binary.py,
test_binary_hashindex.py, test_binary_io.py): an empty index answers -1 / INT32_MAX; reported
distances are the true distances of the ids returned (and the exact k smallest for exact
indexes); range search agrees with kNN search; no duplicate ids; sorted results; recall never
falls as the search budget grows; serialization round-trips. Written for annbin: its range rule
(faiss's: distance ``< radius``), its tie rule (annbin's exact indexes return each row's k
smallest (distance, id) pairs) and both file formats. On 1,500 codes ``mih`` may answer by the
flat scan (its cost model's choice); ``mih:fallback=never`` runs multi-index hashing, and the
tests check that it did.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import annbin
from annbin._checks import INT32_MAX
from tests.conftest import clustered_codes, popcount_knn

D_BITS = 64
CS = D_BITS // 8

# spec -> (exact, budget parameter, budget values ascending; None when the variant has none)
VARIANTS = {
    "flat": (True, None, None),
    "mih": (True, None, None),
    "mih:fallback=never": (True, None, None),
    "hnsw:M=8,ef_search=4": (False, "ef_search", [4, 8, 16, 32, 64, 128]),
    "ivf:nlist=16,nprobe=1": (False, "nprobe", [1, 2, 4, 8, 16]),
    "BFlat": (True, None, None),
    "IDMap2,BFlat": (True, None, None),
    "BHNSW8": (False, "ef_search", [4, 8, 16, 32, 64, 128]),
    "BIVF16": (False, "nprobe", [1, 2, 4, 8, 16]),
    "IDMap2,BIVF16": (False, "nprobe", [1, 2, 4, 8, 16]),
    "BHash12": (False, "nflip", [0, 1, 2, 3, 4]),
    "BHash4x12": (False, "nflip", [0, 1, 2, 3]),
    "IDMap2,BHash4x12": (False, "nflip", [0, 1, 2, 3]),
}
SPECS = list(VARIANTS)
BUDGETED = [s for s in SPECS if VARIANTS[s][1]]
# search settings that make a variant exhaustive (every stored code is a candidate); HNSW has
# none: on clustered codes some nodes are unreachable from the entry point at any ef_search
EXHAUSTIVE = {"nprobe": 16, "nflip": 12}
# kinds whose budget only ever adds candidates (lists, buckets), so every query's k-th distance can
# only improve; HNSW's beam is checked in aggregate
SUPERSET_BUDGET = {"nprobe", "nflip"}


#: annbin's own exact variants: the tie rule holds for the ids too (faiss's wrapped kinds keep
#: whichever tied ids faiss keeps)
TIE_RULE = ["flat", "mih", "mih:fallback=never"]


def check_own_work(spec: str, index: annbin.BinaryIndex) -> None:
    """For ``mih:fallback=never``: the last search made bucket lookups (kNN) and used no scan."""
    if spec == "mih:fallback=never":
        stats = index.last_search_stats
        assert stats["fallback_queries"] == 0 and stats.get("lookups", 1) > 0, stats


def check_tie_rule(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, D: np.ndarray, I: np.ndarray) -> None:
    """Each row is the k smallest (distance, id) pairs of the stored codes, in that order."""
    dist = np.bitwise_count(queries[:, None, :] ^ base[None]).sum(-1)
    kk = min(D.shape[1], len(base))
    for q in range(len(queries)):
        want = sorted(zip(dist[q].tolist(), ids.tolist()))[:kk]
        assert list(zip(D[q, :kk].tolist(), I[q, :kk].tolist())) == want


def with_ids(spec: str) -> bool:
    """Variants that take explicit ids (annbin's own, IDMap-wrapped faiss, bare IVF)."""
    return not spec.startswith("B") or spec.startswith("BIVF")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2024)
    base = clustered_codes(rng, 1500, CS, n_clusters=20, flip=0.1)
    # queries near stored codes (4 bits flipped), so hashing and lists have something to find
    queries = base[rng.integers(0, 1500, 40)] ^ np.packbits(rng.random((40, D_BITS)) < 4 / 64, axis=1)
    return base, queries


def build(spec, base, ids=None):
    index = annbin.make_index(spec, D_BITS)
    index.add(base, ids=ids)
    return index


def true_dist(base_by_id, queries, I):
    """Popcount distance of each returned id (INT32_MAX for -1)."""
    valid = I >= 0
    codes = base_by_id(np.where(valid, I, 0))
    dist = np.bitwise_count(codes ^ queries[:, None, :]).sum(-1)
    return np.where(valid, dist, INT32_MAX)


def check_result_shape(D, I, k):
    assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == I.shape == (D.shape[0], k)
    assert (np.diff(D.astype(np.int64), axis=1) >= 0).all(), "distances not sorted"
    assert ((I == -1) == (D == INT32_MAX)).all(), "-1 ids must pair with INT32_MAX"
    for drow, irow in zip(D, I):
        found = irow[irow >= 0]
        assert len(set(found.tolist())) == found.size, "duplicate ids"
        assert (irow[found.size:] == -1).all(), "missing results must come last"
        for dist in np.unique(drow[: found.size]):
            assert (np.diff(irow[drow == dist]) > 0).all(), "ties not ordered by id"


@pytest.mark.parametrize("spec", SPECS)
def test_empty_index(spec):
    index = annbin.make_index(spec, D_BITS)
    q = np.zeros((3, CS), np.uint8)
    D, I = index.search(q, 5)
    assert (I == -1).all() and (D == INT32_MAX).all() and D.dtype == np.int32
    lims, Dr, Ir = index.range_search(q, 10)  # an empty index answers even where range is unsupported
    assert lims.tolist() == [0, 0, 0, 0] and Dr.size == Ir.size == 0
    assert index.ntotal == 0 and len(index) == 0 and index.d == D_BITS and index.code_size == CS


@pytest.mark.parametrize("spec", SPECS)
def test_distances_are_true_and_exact_where_promised(spec, data):
    base, queries = data
    exact, _, _ = VARIANTS[spec]
    index = build(spec, base)
    assert index.exact == exact
    for k in (1, 10, 1505):
        D, I = index.search(queries, k)
        check_own_work(spec, index)
        check_result_shape(D, I, k)
        assert np.array_equal(D, true_dist(lambda i: base[i], queries, I))
        ref = popcount_knn(base, queries, k)
        if exact:
            assert np.array_equal(D, ref)
            if spec in TIE_RULE:
                check_tie_rule(base, np.arange(len(base)), queries, D, I)
        else:
            # the r-th best found can never beat the true r-th best
            assert (D >= ref).all()


@pytest.mark.parametrize("spec", [s for s in SPECS if VARIANTS[s][1] != "ef_search"])
def test_exhaustive_budget_is_exact(spec, data):
    base, queries = data
    exact, param, _ = VARIANTS[spec]
    index = build(spec, base)
    params = {param: EXHAUSTIVE[param]} if param else None
    D, _ = index.search(queries, 10, params=params)
    check_own_work(spec, index)
    assert np.array_equal(D, popcount_knn(base, queries, 10))


@pytest.mark.parametrize("spec", SPECS)
def test_range_search_consistent_with_search(spec, data):
    base, queries = data
    exact, _, _ = VARIANTS[spec]
    index = build(spec, base)
    D, I = index.search(queries, 10)
    if spec.startswith(("hnsw", "BHNSW")):
        with pytest.raises(annbin.UnsupportedOperation, match="range_search"):
            index.range_search(queries, 5)
        return
    full = np.bitwise_count(queries[:, None, :] ^ base[None]).sum(-1)
    radius = int(np.median(popcount_knn(base, queries, 10)[:, -1])) + 1  # the median k-th distance is inside
    lims, Dr, Ir = index.range_search(queries, radius)
    check_own_work(spec, index)
    assert lims.dtype == np.int64 and Dr.dtype == np.int32 and Ir.dtype == np.int64
    assert lims[0] == 0 and (np.diff(lims) >= 0).all() and lims[-1] == Dr.size == Ir.size
    below = above = 0
    for q in range(len(queries)):
        ids, dists = Ir[lims[q]:lims[q + 1]], Dr[lims[q]:lims[q + 1]]
        assert len(set(ids.tolist())) == ids.size
        assert (np.diff(dists) >= 0).all()
        assert np.array_equal(dists, full[q, ids]) and (dists < radius).all()  # < radius, true distances
        truth = set(np.nonzero(full[q] < radius)[0].tolist())
        assert set(ids.tolist()) <= truth
        # whatever kNN found within the radius, range search found too (same lists / buckets)
        assert set(I[q][D[q] < radius].tolist()) <= set(ids.tolist())
        if exact:
            assert set(ids.tolist()) == truth
            if radius > D[q, -1]:
                assert set(I[q].tolist()) <= set(ids.tolist())
                above += 1
            else:
                assert set(ids.tolist()) <= set(I[q].tolist())
                below += 1
    if exact:
        assert above > 5 and below > 5  # both sides of the test were exercised


@pytest.mark.parametrize("spec", BUDGETED)
def test_recall_never_falls_as_budget_grows(spec, data):
    base, queries = data
    _, param, values = VARIANTS[spec]
    nthreads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # deterministic HNSW graph
    try:
        index = build(spec, base)
    finally:
        faiss.omp_set_num_threads(nthreads)
    ref = popcount_knn(base, queries, 10)
    recalls, kth, counts = [], [], []
    radius = int(np.median(ref[:, -1]))
    for value in values:
        index.set_search_params(**{param: value})
        D, _ = index.search(queries, 10)
        recalls.append(int((D <= ref[:, -1:]).sum()))  # tie-aware: at or under the true 10th distance
        kth.append(D[:, -1].astype(np.int64))
        if param in SUPERSET_BUDGET:
            counts.append(int(index.range_search(queries, radius)[0][-1]))
    assert recalls == sorted(recalls), f"recall fell as {param} grew: {recalls}"
    assert recalls[-1] > recalls[0]
    if param in SUPERSET_BUDGET:
        for a, b in zip(kth, kth[1:]):
            assert (b <= a).all()  # per query: more lists / buckets never make the k-th worse
        assert counts == sorted(counts)


@pytest.mark.parametrize("spec", SPECS)
def test_annbin_file_round_trip(spec, data, tmp_path):
    base, queries = data
    ids = np.arange(1500, dtype=np.int64) * 3 + 7 if with_ids(spec) else None
    index = build(spec, base, ids)
    D, I = index.search(queries, 10)
    index.save(tmp_path / "x.annbin")
    back = annbin.load_index(tmp_path / "x.annbin")
    assert type(back) is type(index) and back.spec == index.spec and back.ntotal == 1500
    D2, I2 = back.search(queries, 10)
    check_own_work(spec, back)
    assert np.array_equal(D, D2) and np.array_equal(I, I2)
    assert np.array_equal(np.sort(back.get_ids()), np.sort(index.get_ids()))


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.startswith("mih")])
def test_faiss_file_round_trip(spec, data, tmp_path):
    base, queries = data
    ids = np.arange(1500, dtype=np.int64) * 5 if with_ids(spec) else None
    index = build(spec, base, ids)
    D, I = index.search(queries, 10)
    path = str(tmp_path / "x.faissindex")
    faiss.write_index_binary(index.to_faiss(), path)
    back = annbin.load_index(path)
    assert isinstance(back, annbin.FaissIndex) and back.ntotal == 1500
    back.set_search_params(**index.get_search_params())
    D2, I2 = back.search(queries, 10)
    assert np.array_equal(D, D2) and np.array_equal(I, I2)
    # and faiss's in-memory serialization, twice (a deserialized index must serialize again)
    again = faiss.deserialize_index_binary(faiss.serialize_index_binary(back.to_faiss()))
    twice = annbin.from_faiss(faiss.deserialize_index_binary(faiss.serialize_index_binary(again)))
    twice.set_search_params(**index.get_search_params())
    assert np.array_equal(twice.search(queries, 10)[0], D)


@pytest.mark.parametrize("spec", SPECS)
def test_remove_ids_where_supported(spec, data):
    base, queries = data
    index = build(spec, base)
    gone = np.arange(0, 1500, 3, dtype=np.int64)
    supported = spec in ("flat", "mih", "mih:fallback=never", "ivf:nlist=16,nprobe=1", "IDMap2,BFlat", "BIVF16")
    if not supported:
        with pytest.raises(annbin.UnsupportedOperation, match="remove"):
            index.remove_ids(gone)
        assert index.ntotal == 1500
        return
    assert index.remove_ids(gone) == gone.size
    assert index.remove_ids(gone) == 0  # already gone: ignored
    assert index.ntotal == 1500 - gone.size
    assert not np.isin(index.get_ids(), gone).any()
    _, param, _ = VARIANTS[spec]
    D, I = index.search(queries, 20, params={param: EXHAUSTIVE[param]} if param else None)
    check_own_work(spec, index)
    assert not np.isin(I, gone).any()
    keep = np.setdiff1d(np.arange(1500), gone)
    assert np.array_equal(D, popcount_knn(base[keep], queries, 20))
    if spec in TIE_RULE:
        check_tie_rule(base[keep], keep, queries, D, I)
    assert np.array_equal(D, true_dist(lambda i: base[i], queries, I))


@pytest.mark.parametrize("spec", SPECS)
def test_reset_then_reuse(spec, data):
    base, queries = data
    index = build(spec, base)
    params = index.get_search_params()
    index.reset()
    assert index.ntotal == 0 and index.get_search_params() == params
    D, I = index.search(queries, 3)
    assert (I == -1).all() and (D == INT32_MAX).all()
    index.add(base[:100])
    assert index.ntotal == 100 and sorted(index.get_ids().tolist()) == list(range(100))


EXACT_SPECS = [s for s in SPECS if VARIANTS[s][0]] + ["ivf:nlist=4,nprobe=4", "BHash8:nflip=8"]


@st.composite
def adversarial_codes(draw):
    """All-equal, all-zero, duplicate-heavy or random codes; n from 0, k past n."""
    kind = draw(st.sampled_from(["equal", "zero", "dups", "random"]))
    n = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "equal":
        base = np.repeat(rng.integers(0, 256, (1, CS), dtype=np.uint8), n, axis=0)
    elif kind == "zero":
        base = np.zeros((n, CS), np.uint8)
    elif kind == "dups":
        base = rng.integers(0, 256, (3, CS), dtype=np.uint8)[rng.integers(0, 3, n)]
    else:
        base = rng.integers(0, 256, (n, CS), dtype=np.uint8)
    queries = np.concatenate([base[:3], rng.integers(0, 256, (3, CS), dtype=np.uint8)])
    k = draw(st.integers(1, n + 5))
    return base.reshape(n, CS), queries, k


@pytest.mark.parametrize("spec", EXACT_SPECS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=adversarial_codes())
def test_exact_on_adversarial_codes(spec, case):
    base, queries, k = case
    if spec.startswith("ivf") and base.shape[0] < 4:
        return  # k-means needs at least nlist codes in the first add
    index = annbin.make_index(spec, D_BITS)
    index.add(base)
    D, I = index.search(queries, k)
    check_result_shape(D, I, k)
    assert np.array_equal(D, popcount_knn(base, queries, k))
    if base.shape[0]:
        check_own_work(spec, index)
        assert np.array_equal(D, true_dist(lambda i: base[i], queries, I))
        if spec in TIE_RULE:
            check_tie_rule(base, np.arange(len(base)), queries, D, I)
