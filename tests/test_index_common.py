"""The interface contract, checked on every variant: validation, padding, ids, persistence."""

import os

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import annbin
from annbin._checks import INT32_MAX
from tests.conftest import clustered_codes, popcount_knn

# "mih" answers indexes this small by the flat scan (its cost model says a scan is cheaper);
# "mih:fallback=never" runs multi-index hashing itself, and its tests check that it did
SPECS = ["flat", "hnsw:M=16,ef_search=64", "mih", "mih:fallback=never"]
EXACT = ["flat", "mih", "mih:fallback=never"]


def check_own_work(spec: str, index: annbin.BinaryIndex) -> None:
    """For ``mih:fallback=never``: the last search made bucket lookups and used no scan."""
    if spec == "mih:fallback=never":
        stats = index.last_search_stats
        assert stats["fallback_queries"] == 0 and stats.get("lookups", 1) > 0, stats


@pytest.fixture(params=SPECS)
def spec(request):
    return request.param


@pytest.fixture
def data(rng):
    base = clustered_codes(rng, 600, 8)
    queries = clustered_codes(rng, 20, 8)
    return base, queries


def test_empty_index_returns_missing(spec):
    index = annbin.make_index(spec, d=64)
    D, I = index.search(np.zeros((3, 8), np.uint8), 4)
    assert D.shape == (3, 4) and D.dtype == np.int32 and I.dtype == np.int64
    assert (I == -1).all() and (D == INT32_MAX).all()
    assert len(index) == 0 and index.ntotal == 0


def test_k_larger_than_ntotal_pads(spec, rng):
    index = annbin.make_index(spec, d=64)
    base = rng.integers(0, 256, (5, 8), dtype=np.uint8)
    index.add(base)
    D, I = index.search(base[:2], 8)
    assert (I[:, :5] >= 0).all() and (I[:, 5:] == -1).all() and (D[:, 5:] == INT32_MAX).all()
    assert sorted(I[0, :5].tolist()) == [0, 1, 2, 3, 4]
    assert D[0, 0] == 0


@pytest.mark.parametrize("spec_", EXACT)
def test_exact_variants_match_faiss_flat(spec_, data):
    base, queries = data
    index = annbin.make_index(spec_, d=64)
    index.add(base)
    ref = faiss.IndexBinaryFlat(64)
    ref.add(base)
    for k in (1, 10, 600, 605):
        D, I = index.search(queries, k)
        check_own_work(spec_, index)
        Dref, _ = ref.search(queries, min(k, 600))
        assert np.array_equal(D[:, : min(k, 600)], Dref)
        assert np.array_equal(D, popcount_knn(base, queries, k))
        # the ids returned do lie at the distances reported
        valid = I >= 0
        true = np.bitwise_count(base[np.where(valid, I, 0)] ^ queries[:, None, :]).sum(-1)
        assert np.array_equal(np.where(valid, true, INT32_MAX), D)


def test_results_sorted_no_duplicates_ties_by_id(spec, rng):
    base = np.repeat(rng.integers(0, 256, (4, 8), dtype=np.uint8), 10, axis=0)  # heavy ties
    index = annbin.make_index(spec, d=64)
    index.add(base)
    D, I = index.search(base[::10], 15)
    assert (np.diff(D, axis=1) >= 0).all()
    for drow, irow in zip(D, I):
        assert len(set(irow.tolist())) == len(irow)
        for dist in np.unique(drow):
            tied = irow[drow == dist]
            assert (np.diff(tied) > 0).all()


def test_user_ids(spec, rng):
    base = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    ids = rng.permutation(10_000)[:50].astype(np.int64)
    index = annbin.make_index(spec, d=64)
    index.add(base, ids=ids)
    _, I = index.search(base, 1)
    assert np.array_equal(I[:, 0], ids)
    assert set(index.get_ids().tolist()) == set(ids.tolist())
    with pytest.raises(ValueError, match="already in the index"):
        index.add(base[:2], ids=ids[:2])
    # sequential ids continue after the largest id seen
    index.add(base[:1])
    assert int(index.get_ids().max()) == int(ids.max()) + 1


def test_save_load_round_trip(spec, data, tmp_path):
    base, queries = data
    index = annbin.make_index(spec, d=64)
    index.add(base, ids=np.arange(600, dtype=np.int64) * 7)
    D, I = index.search(queries, 10)
    path = tmp_path / "i.annbin"
    index.save(str(path))
    back = annbin.load_index(str(path))
    assert type(back) is type(index) and back.ntotal == index.ntotal and back.d == 64
    assert back.get_search_params() == index.get_search_params()
    assert back.get_params() == index.get_params()
    D2, I2 = back.search(queries, 10)
    check_own_work(spec, back)
    assert np.array_equal(D, D2) and np.array_equal(I, I2)
    back.add(base[:1])
    assert int(back.get_ids().max()) == 599 * 7 + 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_corrupted_files_raise(data, tmp_path):
    base, _ = data
    index = annbin.FlatIndex(64)
    index.add(base)
    path = tmp_path / "i.annbin"
    index.save(str(path))
    raw = path.read_bytes()
    cases = {
        "missing.annbin": None,
        "truncated.annbin": raw[: len(raw) // 2],
        "flipped.annbin": raw[:100] + bytes([raw[100] ^ 1]) + raw[101:],
        "foreign.annbin": b"hello world, not an index" * 10,
        "version.annbin": raw[:8] + (99).to_bytes(4, "little") + raw[12:],
    }
    messages = {"missing": "does not exist", "truncated": "checksum", "flipped": "checksum",
                "foreign": "not an annbin index", "version": "format version 99"}
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(ValueError, match=messages[name.split(".")[0]]):
            annbin.load_index(str(p))


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    index = annbin.FlatIndex(64)
    index.add(np.zeros((3, 8), np.uint8))
    path = tmp_path / "i.annbin"
    index.save(str(path))
    before = path.read_bytes()
    index.add(np.ones((3, 8), np.uint8))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        index.save(str(path))
    assert path.read_bytes() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["i.annbin"]  # and no temp file is left behind


@pytest.mark.parametrize("bad, exc, match", [
    (np.zeros((2, 8), np.float32), TypeError, "dtype uint8"),
    (np.zeros((2, 8), np.int8), TypeError, "binary"),
    (np.zeros((2, 7), np.uint8), ValueError, r"expected \(n, 8\)"),
    (np.zeros((2, 2, 8), np.uint8), ValueError, "2-D"),
    ([[1, 2, 3, 4, 5, 6, 7, 8]], TypeError, "numpy uint8 array"),
])
def test_bad_codes(spec, bad, exc, match):
    index = annbin.make_index(spec, d=64)
    with pytest.raises(exc, match=match):
        index.add(bad)
    with pytest.raises(exc, match=match):
        index.search(bad, 1)


def test_bad_k_ids_d(spec):
    index = annbin.make_index(spec, d=64)
    codes = np.zeros((3, 8), np.uint8)
    for k, exc in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="k must"):
            index.search(codes, k)
    with pytest.raises(ValueError, match="length mismatch"):
        index.add(codes, ids=np.arange(2))
    with pytest.raises(ValueError, match="duplicates"):
        index.add(codes, ids=np.array([1, 1, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        index.add(codes, ids=np.array([-1, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        index.add(codes, ids=np.array([1.0, 2.0, 3.0]))
    assert index.ntotal == 0  # nothing half-added
    with pytest.raises(ValueError, match="multiple of 8"):
        annbin.make_index(spec, d=60)


def test_one_dimensional_query_is_one_row(spec, rng):
    index = annbin.make_index(spec, d=64)
    base = rng.integers(0, 256, (20, 8), dtype=np.uint8)
    index.add(base)
    D, I = index.search(base[3], 1)
    assert D.shape == (1, 1) and D[0, 0] == 0


def test_unknown_specs_and_params():
    with pytest.raises(ValueError, match="unknown index spec"):
        annbin.make_index("lsh", d=64)
    with pytest.raises(ValueError, match="unknown parameter"):
        annbin.make_index("hnsw:Q=3", d=64)
    with pytest.raises(ValueError, match="key=value"):
        annbin.make_index("hnsw:M", d=64)
    index = annbin.make_index("hnsw:M=8,ef_search=77", d=64)
    assert index.get_params()["M"] == 8 and index.get_search_params() == {"ef_search": 77}
    with pytest.raises(ValueError, match="unknown search parameter"):
        index.set_search_params(nprobe=3)
    with pytest.raises(ValueError, match="ef_search must be >= 1"):
        index.set_search_params(ef_search=0)


def test_spec_round_trips(spec):
    index = annbin.make_index(spec, d=64)
    again = annbin.make_index(index.spec, d=64)
    assert again.get_params() == index.get_params()
    assert again.get_search_params() == index.get_search_params()


def test_flat_remove_ids_and_range_search(data):
    base, queries = data
    index = annbin.FlatIndex(64)
    index.add(base)
    assert index.remove_ids(np.array([0, 1, 2, 9999])) == 3
    assert index.ntotal == 597 and not np.isin([0, 1, 2], index.get_ids()).any()
    D, I = index.search(queries, 600)
    assert not np.isin(I, [0, 1, 2]).any()
    lims, Dr, Ir = index.range_search(queries, 21)  # distance < 21
    full = np.bitwise_count(queries[:, None, :] ^ base[None]).sum(-1)
    for q in range(len(queries)):
        expect = {(i, int(full[q, i])) for i in np.nonzero(full[q] <= 20)[0] if i > 2}
        got = set(zip(Ir[lims[q]:lims[q + 1]].tolist(), Dr[lims[q]:lims[q + 1]].tolist()))
        assert got == expect
        assert (np.diff(Dr[lims[q]:lims[q + 1]]) >= 0).all()
    index.reset()
    assert index.ntotal == 0


def test_hnsw_unsupported_operations_and_recall(rng):
    base = clustered_codes(rng, 5000, 16, n_clusters=50, flip=0.1)
    # queries near the base: base rows with 5% of bits flipped
    queries = base[rng.integers(0, 5000, 200)] ^ np.packbits(rng.random((200, 128)) < 0.05, axis=1)
    hnsw = annbin.HNSWIndex(128, M=16, ef_search=128)
    flat = annbin.FlatIndex(128)
    hnsw.add(base)
    flat.add(base)
    Dh, _ = hnsw.search(queries, 10)
    Df, _ = flat.search(queries, 10)
    # tie-aware recall: a result at or under the true 10th distance counts
    hits = (Dh <= Df[:, -1:]).sum() / Df.size
    assert hits >= 0.95
    with pytest.raises(annbin.UnsupportedOperation, match="remove_ids"):
        hnsw.remove_ids(np.array([1]))
    with pytest.raises(annbin.UnsupportedOperation, match="range_search"):
        hnsw.range_search(queries, 3)
    # per-call params do not stick
    hnsw.search(queries[:3], 10, params={"ef_search": 300})
    assert hnsw.get_search_params() == {"ef_search": 128}


@pytest.mark.parametrize("spec_", EXACT)
def test_faiss_style_calls(spec_, rng):
    base = rng.integers(0, 256, (40, 8), dtype=np.uint8)
    index = annbin.make_index(spec_, d=64)
    index.add_with_ids(base, np.arange(100, 140))
    assert index.remove_ids(faiss.IDSelectorRange(100, 110)) == 10
    assert index.remove_ids(faiss.IDSelectorBatch(np.array([130, 131, 999]))) == 2
    assert sorted(index.get_ids().tolist()) == [i for i in range(110, 140) if i not in (130, 131)]
    keep = np.array([i for i in range(10, 40) if i not in (30, 31)])
    _, I = index.search(base[keep], 1)
    assert np.array_equal(I[:, 0], 100 + keep)


def test_sort_results_packed_and_lexsort_paths_agree(rng):
    from annbin.index.base import sort_results

    D = rng.integers(0, 5, (50, 30)).astype(np.int32)
    I = rng.integers(0, 1000, (50, 30)).astype(np.int64)
    D[:, -3:], I[:, -3:] = INT32_MAX, -1
    packed = sort_results(D, I)
    big = I.copy()
    big[big >= 0] += 2**40  # ids too large to pack: the lexsort path
    slow = sort_results(D, big)
    assert np.array_equal(packed[0], slow[0])
    assert np.array_equal(packed[1], np.where(slow[1] >= 0, slow[1] - 2**40, -1))
    for drow, irow in zip(*packed):
        pairs = list(zip(drow.tolist(), irow.tolist()))
        assert pairs[:-3] == sorted(pairs[:-3]) and pairs[-3:] == [(INT32_MAX, -1)] * 3


# --- one tie rule for every exact index ----------------------------------------------------------
def tie_rule(codes: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: each row's k smallest (distance, id) pairs in that order, padded with (INT32_MAX, -1)."""
    dist = np.bitwise_count(queries[:, None, :] ^ codes[None]).sum(-1)
    kk = min(k, len(codes))
    order = np.lexsort((np.broadcast_to(ids, dist.shape), dist), axis=1)[:, :kk]
    D = np.full((len(queries), k), INT32_MAX, np.int32)
    I = np.full((len(queries), k), -1, np.int64)
    D[:, :kk], I[:, :kk] = np.take_along_axis(dist, order, axis=1), ids[order]
    return D, I


@st.composite
def tie_heavy(draw):
    """A few distinct codes (lightly varied), many duplicates; ids shuffled, some removed, more added."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 400))
    pool = rng.integers(0, 256, (draw(st.integers(1, 5)), 8), dtype=np.uint8)
    flips = np.packbits(rng.random((n, 64)) < draw(st.sampled_from([0.0, 0.01, 0.03])), axis=1)
    codes = pool[rng.integers(0, len(pool), n)] ^ flips
    ids = rng.choice(10 * n + 10, n, replace=False).astype(np.int64)
    removed = rng.random(n) < draw(st.sampled_from([0.0, 0.3]))
    more = pool[rng.integers(0, len(pool), draw(st.integers(0, 50)))]
    more_ids = np.arange(len(more), dtype=np.int64) * 7 + 10 * n + 11  # above every other id, added last
    queries = np.concatenate([pool, codes[:3], rng.integers(0, 256, (2, 8), dtype=np.uint8)])
    return codes, ids, removed, more, more_ids, queries, draw(st.integers(1, n + 5))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy())
def test_exact_indexes_agree_on_ties(case):
    """Flat and MIH (scan or lookups) return the same (D, I): at the k-th distance the smallest ids
    win, rows ordered by (distance, id); range search returns every match in that order."""
    codes, ids, removed, more, more_ids, queries, k = case
    kept_codes = np.concatenate([codes[~removed], more])
    kept_ids = np.concatenate([ids[~removed], more_ids])
    want = tie_rule(kept_codes, kept_ids, queries, k)
    full = np.bitwise_count(queries[:, None, :] ^ kept_codes[None]).sum(-1)
    for spec in EXACT:
        index = annbin.make_index(spec, d=64)
        index.add(codes, ids=ids)
        index.remove_ids(ids[removed])
        index.add(more, ids=more_ids)
        D, I = index.search(queries, k)
        assert np.array_equal(D, want[0]) and np.array_equal(I, want[1]), spec
        if kept_ids.size:
            check_own_work(spec, index)
        lims, Dr, Ir = index.range_search(queries, 4)  # distance < 4
        for q in range(len(queries)):
            got = list(zip(Dr[lims[q]:lims[q + 1]].tolist(), Ir[lims[q]:lims[q + 1]].tolist()))
            assert got == sorted(zip(full[q][full[q] <= 3].tolist(), kept_ids[full[q] <= 3].tolist())), spec


@pytest.mark.parametrize("chunk", [1, 1 << 22])
def test_flat_completes_ties_past_the_searched_margin(chunk, monkeypatch):
    """500 equal codes with shuffled ids: every result is tied at the end of faiss's 2k + 32 list,
    so each row is completed by a range search (one query at a time with ``chunk`` = 1)."""
    import annbin.index._faiss as faiss_module

    monkeypatch.setattr(faiss_module, "_COMPLETION_RESULTS", chunk)
    rng = np.random.default_rng(21)
    codes = np.repeat(rng.integers(0, 256, (2, 8), dtype=np.uint8), 250, axis=0)
    ids = rng.permutation(5000)[:500].astype(np.int64)
    queries = np.concatenate([codes[:1], codes[-1:], rng.integers(0, 256, (3, 8), dtype=np.uint8)])
    calls = []
    index = annbin.FlatIndex(64)
    index.add(codes, ids=ids)
    index._index = SpyIndex(index._index, calls)
    for k in (1, 5, 40, 499):
        D, I = index.search(queries, k)
        want = tie_rule(codes, ids, queries, k)
        assert np.array_equal(D, want[0]) and np.array_equal(I, want[1])
    assert max(calls) == (1 if chunk == 1 else len(queries))


class SpyIndex:
    """Forwards to a faiss index, recording how many queries each range_search got."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def range_search(self, x, radius):
        self.calls.append(len(x))
        return self.inner.range_search(x, radius)

    def __getattr__(self, name):
        return getattr(self.inner, name)
