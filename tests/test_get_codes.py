"""get_codes / reconstruct on every variant, against the codes that were added (a dict is the oracle).

ShardedIndex's get_codes is tested in test_distributed.py, beside its Ray fixtures.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import annbin
from annbin.index._faiss import flat_storage
from annbin.index._rows import DENSE_SPAN, RowMap

D_BITS = 64
CS = D_BITS // 8

# spec -> (explicit ids allowed, remove_ids supported)
SPECS = {
    "flat": (True, True),
    "hnsw:M=16": (True, False),
    "mih": (True, True),
    "mih:fallback=never": (True, True),  # "mih" answers 900 codes by the scan; this runs MIH's lookups
    "ivf:nlist=8": (True, True),
    "BFlat": (False, False),
    "IDMap2,BFlat": (True, True),
    "BHNSW16": (False, False),
    "IDMap,BHNSW16": (True, False),
    "BIVF8": (True, True),
    "IDMap,BIVF8": (True, False),
    "IDMap2,BHash2x8": (True, False),
}


class Oracle:
    """What was added: id -> code, with faiss's -1 mapping to an all-zero code."""

    def __init__(self) -> None:
        self.codes: dict[int, np.ndarray] = {}

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self.codes.update(zip(ids.tolist(), codes))

    def remove(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self.codes.pop(i, None)

    def expect(self, ids: np.ndarray) -> np.ndarray:
        zero = np.zeros(CS, np.uint8)
        return np.array([zero if i == -1 else self.codes[i] for i in ids.ravel().tolist()], np.uint8).reshape(ids.shape + (CS,))

    def ids(self) -> np.ndarray:
        return np.array(sorted(self.codes), np.int64)


def _check(index: annbin.BinaryIndex, oracle: Oracle, rng: np.random.Generator) -> None:
    stored = oracle.ids()
    every = index.get_codes(rng.permutation(stored))
    assert every.dtype == np.uint8 and every.shape == (stored.size, CS)
    assert np.array_equal(index.get_codes(stored), oracle.expect(stored))
    # a search's (nq, k) id matrix, with missing results (-1) and repeated ids
    matrix = rng.choice(stored, size=(40, 15))
    matrix[rng.random(matrix.shape) < 0.1] = -1
    got = index.get_codes(matrix)
    assert got.shape == (40, 15, CS) and got.dtype == np.uint8
    assert np.array_equal(got, oracle.expect(matrix))
    assert not got[matrix == -1].any()
    one = int(stored[stored.size // 2])
    assert np.array_equal(index.reconstruct(one), oracle.codes[one])
    assert np.array_equal(index.reconstruct_batch(stored[:7]), oracle.expect(stored[:7]))
    # rescoring's use: the codes of a search's ids are the codes at the distances it reported
    queries = oracle.expect(stored[:5]) ^ np.uint8(1)
    D, I = index.search(queries, 4)
    codes = index.get_codes(I)
    assert np.array_equal(codes, oracle.expect(I))
    assert np.array_equal(np.where(I >= 0, np.bitwise_count(codes ^ queries[:, None]).sum(-1), D), D)
    if index.spec.startswith("mih:fallback=never"):
        stats = index.last_search_stats
        assert stats["lookups"] > 0 and stats["fallback_queries"] == 0, stats


@pytest.mark.parametrize("spec", list(SPECS))
def test_get_codes_returns_what_was_added(spec, rng, tmp_path):
    explicit, removes = SPECS[spec]
    index = annbin.make_index(spec, d=D_BITS)
    oracle = Oracle()
    first = rng.integers(0, 256, (600, CS), dtype=np.uint8)
    index.add(first)
    oracle.add(first, np.arange(600))
    _check(index, oracle, rng)
    if removes:
        gone = rng.choice(600, 50, replace=False)
        assert index.remove_ids(gone) == 50
        oracle.remove(gone)
        _check(index, oracle, rng)
        with pytest.raises(ValueError, match="ids not in the index"):
            index.get_codes(gone[:3])
    second = rng.integers(0, 256, (300, CS), dtype=np.uint8)
    if explicit:  # sparse ids: the sorted map
        ids = rng.choice(10**12, 300, replace=False).astype(np.int64) + 10**6
        index.add(second, ids=ids)
    else:
        ids = np.arange(600, 900)
        index.add(second)
    oracle.add(second, ids)
    _check(index, oracle, rng)
    if removes:
        assert index.remove_ids(ids[:20]) == 20
        oracle.remove(ids[:20])
        _check(index, oracle, rng)
    index.save(str(tmp_path / "i.annbin"))
    back = annbin.load_index(str(tmp_path / "i.annbin"))
    _check(back, oracle, rng)
    index.reset()
    assert index.get_codes(np.array([-1, -1])).shape == (2, CS)
    with pytest.raises(ValueError, match="ids not in the index"):
        index.get_codes(ids[:1])


def test_each_lookup_path_runs(rng):
    """Sequential ids: no map (identity); after removals: the dense table; sparse ids: sorted keys."""
    index = annbin.FlatIndex(D_BITS)
    oracle = Oracle()
    codes = rng.integers(0, 256, (1000, CS), dtype=np.uint8)
    index.add(codes)
    oracle.add(codes, np.arange(1000))
    before = index.memory_bytes()
    _check(index, oracle, rng)
    assert index._code_map_cache.kind == "identity" and index.memory_bytes() == before
    index.remove_ids(np.arange(0, 1000, 3))
    oracle.remove(np.arange(0, 1000, 3))
    assert index._code_map_cache is None  # dropped by remove_ids
    _check(index, oracle, rng)
    assert index._code_map_cache.kind == "dense"
    sparse = rng.choice(2**50, 200, replace=False).astype(np.int64)
    index.add(codes[:200], ids=sparse)
    oracle.add(codes[:200], sparse)
    _check(index, oracle, rng)
    assert index._code_map_cache.kind == "sorted"
    assert index.memory_bytes() == before - 334 * (CS + 8) + 200 * (CS + 8) + index._code_map_cache.nbytes


@pytest.mark.parametrize("kind", ["identity", "dense", "sorted"])
def test_row_map_against_a_dict(kind, rng):
    n = 500
    ids = {
        "identity": np.arange(n),
        "dense": rng.permutation(2 * n)[:n] + 7,
        "sorted": rng.choice(2**62, n, replace=False),
    }[kind].astype(np.int64)
    rows_of = {int(i): r for r, i in enumerate(ids)}
    m = RowMap(ids)
    assert m.kind == kind and m.ntotal == n
    lo, hi = int(ids.min()), int(ids.max())
    for queries in (
        ids[::-1].copy(),  # all present
        np.concatenate([rng.choice(ids, 300), [-1, -5, lo - 1, hi + 1, 2**63 - 1, -(2**63)], rng.integers(lo, hi, 50)]),
        np.empty(0, np.int64),
    ):
        rows, found = m.lookup(queries)
        present = np.array([int(q) in rows_of for q in queries], bool)
        assert (found is None) == bool(present.all())
        assert np.array_equal(present, np.ones(queries.size, bool) if found is None else found)
        expect = np.array([rows_of.get(int(q), 0) for q in queries], np.int64)
        assert np.array_equal(rows, expect)
    if kind == "dense":
        assert m.nbytes <= DENSE_SPAN * n * 4


def test_bad_ids(rng):
    index = annbin.MIHIndex(D_BITS)
    index.add(rng.integers(0, 256, (50, CS), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"ids not in the index: \[50, 51, 52, 53, 54\] \(7 distinct in all\)"):
        index.get_codes(np.array([[0, 56, 55, 54], [53, 52, 51, 50]]))
    with pytest.raises(ValueError, match=r"ids not in the index: \[-2\]"):
        index.get_codes([-1, -2])
    with pytest.raises(TypeError, match="integers"):
        index.get_codes(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="integers"):
        index.get_codes(np.array([True, False]))
    with pytest.raises(TypeError, match="id must be an int"):
        index.reconstruct(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        index.reconstruct_batch(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="not in the index"):
        index.get_codes(np.array([2**64 - 1], np.uint64))
    assert index.get_codes([]).shape == (0, CS)
    assert index.get_codes(np.zeros((3, 0), np.int64)).shape == (3, 0, CS)
    assert np.array_equal(index.get_codes([3, 4]), index.get_codes(np.array([3, 4], np.uint16)))
    assert not index.reconstruct(-1).any()


def test_shared_faiss_index_grown_from_outside(rng):
    raw = faiss.IndexBinaryFlat(D_BITS)
    codes = rng.integers(0, 256, (300, CS), dtype=np.uint8)
    raw.add(codes[:100])
    index = annbin.from_faiss(raw)
    assert np.array_equal(index.get_codes(np.arange(100)), codes[:100])
    raw.add(codes[100:])  # the cached map was for 100 codes: ntotal tells it is stale
    assert np.array_equal(index.get_codes(np.arange(300)), codes)


def test_faiss_reconstruct_fallback_and_unsupported(rng):
    codes = rng.integers(0, 256, (200, CS), dtype=np.uint8)
    replicas = faiss.IndexBinaryReplicas(D_BITS)  # no flat storage to view: faiss's own reconstruct
    replicas.addIndex(faiss.IndexBinaryFlat(D_BITS))
    index = annbin.from_faiss(replicas)
    index.add(codes)
    assert flat_storage(index._core) is None
    ids = rng.integers(-1, 200, (20, 9))
    assert np.array_equal(index.get_codes(ids), np.where((ids >= 0)[..., None], codes[ids], 0))
    for factory in ("BHash8", "IDMap2,BHash8"):
        hashed = annbin.make_index(factory, d=D_BITS)
        hashed.add(codes)
        with pytest.raises(annbin.UnsupportedOperation, match="IndexBinaryHash"):
            hashed.get_codes(np.arange(3))
    from_float = faiss.IndexBinaryFromFloat(faiss.IndexFlatL2(D_BITS))
    wrapped = annbin.from_faiss(from_float)
    wrapped.add(codes[:10])
    with pytest.raises(annbin.UnsupportedOperation, match="cannot return stored codes"):
        wrapped.get_codes(np.array([-1]))


def test_ivf_gather_spans_lists(rng):
    """Ids from many lists, in any order, come back in the caller's order (list-by-list gather)."""
    index = annbin.IVFIndex(D_BITS, nlist=16)
    codes = rng.integers(0, 256, (2000, CS), dtype=np.uint8)
    index.add(codes)
    assert index._code_map().kind == "dense"  # sequential ids in list order: a permutation
    ids = rng.integers(0, 2000, (100, 30))
    assert np.array_equal(index.get_codes(ids), codes[ids])
    lists = np.searchsorted(index._code_map().starts, index._code_map().lookup(ids.ravel())[0], side="right") - 1
    assert np.unique(lists).size == 16
