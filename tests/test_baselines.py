"""Float baselines: faiss flat and hnswlib HNSW in faiss's (D, I) convention."""

from __future__ import annotations

import numpy as np
import pytest

import annbin
from annbin.embed.floats import FloatFlat, FloatHNSW


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1540, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:1500], x[1500:]


def brute(base, queries, k, metric):
    if metric == "ip":
        s = queries @ base.T
        I = np.argsort(-s, axis=1, kind="stable")[:, :k]
    else:
        s = ((queries[:, None] - base[None]) ** 2).sum(-1)
        I = np.argsort(s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, I, axis=1), I


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_float_flat_is_exact(metric, data):
    base, queries = data
    index = annbin.make_float_index("float-flat", 32, metric)
    index.add(base[:700])
    index.add(base[700:])
    D, I = index.search(queries, 10)
    Dref, Iref = brute(base, queries, 10, metric)
    assert np.array_equal(I, Iref) and D.dtype == np.float32 and I.dtype == np.int64
    np.testing.assert_allclose(D, Dref, rtol=1e-4, atol=1e-5)
    assert index.memory_bytes() == 1500 * 32 * 4 and index.exact and index.spec == "float-flat"


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_float_hnsw_converts_hnswlib_conventions(metric, data):
    base, queries = data
    index = annbin.make_float_index("float-hnsw:M=16,ef_construction=100,ef=200", 32, metric)
    index.num_threads = 1
    index.add(base)
    D, I = index.search(queries, 10)
    Dref, Iref = brute(base, queries, 10, metric)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(I, Iref)]) >= 9.5
    # the scores are the true scores of the ids returned, in faiss's order
    true = brute(base, queries, 1500, metric)
    lookup = np.take_along_axis(true[0], np.argsort(true[1], axis=1), axis=1)
    np.testing.assert_allclose(D, np.take_along_axis(lookup, I, axis=1), rtol=1e-4, atol=1e-5)
    assert ((np.diff(D, axis=1) <= 1e-6) if metric == "ip" else (np.diff(D, axis=1) >= -1e-6)).all()


def test_float_hnsw_ef_recall_and_params(data):
    base, queries = data
    index = FloatHNSW(32, M=8, ef_construction=40, ef=10, num_threads=1)
    index.add(base)
    _, Iref = brute(base, queries, 10, "ip")
    recalls = []
    for ef in (10, 40, 160, 640):
        index.set_search_params(ef=ef)
        I = index.search(queries, 10)[1]
        recalls.append(np.mean([len(set(a) & set(b)) for a, b in zip(I, Iref)]))
    assert recalls[-1] >= recalls[0] and recalls[-1] >= 9.5
    index.set_search_params(ef=16)
    index.search(queries, 10, params={"ef": 300})
    assert index.get_search_params() == {"ef": 16} and index._index.ef == 16
    assert index.spec == "float-hnsw:M=8,ef_construction=40,seed=100,ef=16"
    assert index.memory_bytes() >= 1500 * (32 * 4 + 2 * 8 * 4)
    with pytest.raises(ValueError, match="unknown search parameter"):
        index.set_search_params(ef_search=3)
    with pytest.raises(ValueError, match="ef must be >= 1"):
        index.set_search_params(ef=0)


@pytest.mark.parametrize("spec", ["float-flat", "float-hnsw:ef=4"])
def test_padding_and_empty(spec, data):
    base, queries = data
    for metric, worst in (("ip", -np.inf), ("l2", np.inf)):
        index = annbin.make_float_index(spec, 32, metric)
        D, I = index.search(queries, 3)
        assert (I == -1).all() and (D == worst).all()
        index.add(base[:5])
        D, I = index.search(queries[:2], 8)  # k past ntotal, and past ef for hnswlib
        assert (I[:, :5] >= 0).all() and (I[:, 5:] == -1).all() and (D[:, 5:] == worst).all()
        assert sorted(I[0, :5].tolist()) == [0, 1, 2, 3, 4]


def test_specs_and_bad_input(data):
    base, _ = data
    assert annbin.is_float_spec("float-flat") and annbin.is_float_spec(" float-hnsw:M=8 ")
    assert not annbin.is_float_spec("flat") and not annbin.is_float_spec("hnsw:M=8") and not annbin.is_float_spec(3)
    assert isinstance(annbin.make_float_index("float-hnsw", 8), FloatHNSW)
    assert isinstance(annbin.make_float_index("float-flat", 8, metric="l2"), FloatFlat)
    with pytest.raises(ValueError, match="unknown float index spec"):
        annbin.make_float_index("float-ivf", 8)
    with pytest.raises(ValueError, match="unknown parameter"):
        annbin.make_float_index("float-hnsw:ef_search=3", 8)
    with pytest.raises(ValueError, match="metric must be"):
        annbin.make_float_index("float-flat", 8, metric="cosine")
    index = FloatFlat(32)
    with pytest.raises(TypeError, match="float array"):
        index.add(annbin.binarize(base))
    with pytest.raises(ValueError, match=r"expected \(n, 32\)"):
        index.add(base[:, :16])
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((2, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(base[:1], 0)
    with pytest.raises(ValueError, match="M must be >= 2"):
        FloatHNSW(8, M=1)
