"""One index, many threads: per-call ``params=`` never change the index, and concurrent searches
with different parameters return exactly what serial calls return."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest
from conftest import clustered_codes

import annbin
from annbin import make_index
from annbin.bench.run import BenchConfig, run_bench
from annbin.embed.floats import make_float_index
from annbin.embed.rescore import RescoredIndex
from annbin.index.faiss_wrap import from_faiss

WORKERS = 8
REPEATS = 6  # each parameter set is searched this many times, interleaved with the others


def _concurrent_matches_serial(index, queries, k, settings):
    """Search every setting serially, then all of them REPEATS times on a pool; compare."""
    before = index.get_search_params()
    serial = [index.search(queries, k, params=p) for p in settings]
    jobs = [i for _ in range(REPEATS) for i in range(len(settings))]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        got = list(pool.map(lambda i: (i, index.search(queries, k, params=settings[i])), jobs))
    for i, (D, I) in got:
        np.testing.assert_array_equal(D, serial[i][0], err_msg=f"params={settings[i]}")
        np.testing.assert_array_equal(I, serial[i][1], err_msg=f"params={settings[i]}")
    assert index.get_search_params() == before
    return serial


pytestmark = pytest.mark.usefixtures("reference_costs")  # conftest.py


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return clustered_codes(rng, 6000, 8, n_clusters=32, flip=0.2), clustered_codes(rng, 60, 8, n_clusters=32, flip=0.2)


@pytest.mark.parametrize(
    ("spec", "settings"),
    [
        ("hnsw:M=8,ef_search=16", [{"ef_search": e} for e in (1, 4, 16, 64, 200)] + [None]),
        ("ivf:nlist=64,nprobe=2", [{"nprobe": p} for p in (1, 2, 4, 16, 64)] + [None]),
        ("BHNSW8", [{"ef_search": e} for e in (1, 8, 100)]),
        ("IDMap2,BIVF32", [{"nprobe": p} for p in (1, 4, 32)]),
        ("BHash16", [{"nflip": f} for f in (0, 1, 2)]),
    ],
)
def test_concurrent_searches_with_per_call_params(data, spec, settings):
    base, queries = data
    index = make_index(spec, d=64)
    index.add(base)
    serial = _concurrent_matches_serial(index, queries, 10, settings)
    # the settings really differ (else the test could not tell a leaked setting from the right one)
    assert len({I.tobytes() for _, I in serial}) > 1


def test_per_call_params_are_used_not_stored(data):
    base, queries = data
    index = make_index("hnsw:M=8,ef_search=1", d=64)
    index.add(base)
    wide = index.search(queries, 10, params={"ef_search": 200})
    assert index.get_search_params() == {"ef_search": 1}
    index.set_search_params(ef_search=200)
    np.testing.assert_array_equal(index.search(queries, 10)[1], wide[1])
    with pytest.raises(ValueError, match="ef_search"):
        index.search(queries, 10, params={"ef_search": 0})
    with pytest.raises(ValueError, match="unknown search parameter"):
        index.search(queries, 10, params={"nprobe": 3})
    assert index.get_search_params() == {"ef_search": 200}


def test_mih_concurrent_first_searches_build_once_and_agree(data, monkeypatch):
    import annbin.index.mih.index as mih_module

    builds = []
    real = mih_module.build_tables

    def slow_build(*args, **kwargs):  # slow enough that the other searches arrive while it builds
        builds.append(1)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(mih_module, "build_tables", slow_build)
    base, queries = data
    index = make_index("mih", d=64)
    index.add(base)  # tables not built: the concurrent searches below race to build them
    settings = [{"fallback": m} for m in ("auto", "never", "always")] + [{"num_threads": 2, "fallback_ratio": 0.5}]
    serial_ref = make_index("flat", d=64)
    serial_ref.add(base)
    D_ref, I_ref = serial_ref.search(queries, 10)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        got = list(pool.map(lambda p: index.search(queries, 10, params=p), settings * REPEATS))
    for D, I in got:  # exact: every path gives the flat answer
        np.testing.assert_array_equal(D, D_ref)
        np.testing.assert_array_equal(I, I_ref)
    assert len(builds) == 1 and index.rebuilds == 1  # one search built the tables, the others waited
    assert index.get_search_params() == {"fallback": "auto", "fallback_ratio": 1.0, "num_threads": None}
    # the per-call fallback was obeyed: "always" scans every query, "never" none
    index.search(queries, 10, params={"fallback": "always"})
    assert index.last_search_stats["fallback_queries"] == queries.shape[0]
    index.search(queries, 10, params={"fallback": "never"})
    assert index.last_search_stats["fallback_queries"] == 0


def test_rescored_index_concurrent(rng):
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    q = rng.standard_normal((40, 32)).astype(np.float32)
    inner = make_index("hnsw:M=8,ef_search=8", d=32)
    inner.add(annbin.binarize(x))
    rescored = RescoredIndex(inner, oversample=2, vectors=x)
    settings = [{"ef_search": e, "oversample": o} for e, o in itertools.product((2, 16, 100), (1, 4))]
    serial = _concurrent_matches_serial(rescored, q, 10, settings)
    assert len({I.tobytes() for _, I in serial}) > 1


@pytest.mark.parametrize(
    ("spec", "settings"),
    [
        ("float-hnsw:M=8,ef=8", [{"ef": e} for e in (1, 10, 100)]),
        ("ivf-rabitq:nlist=16,nprobe=1", [{"nprobe": p, "qb": b} for p, b in itertools.product((1, 8), (2, 4))]),
    ],
)
def test_float_indexes_concurrent(rng, spec, settings):
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = make_float_index(spec, 32, "ip")
    index.add(x)
    serial = _concurrent_matches_serial(index, x[:40] + 0.1, 10, settings)
    assert len({I.tobytes() for _, I in serial}) > 1


def test_hash_per_call_nflip_leaves_index_setting(data):
    base, queries = data
    index = from_faiss(faiss.IndexBinaryHash(64, 16))
    index.add(base)
    index.set_search_params(nflip=1)
    index.search(queries, 5, params={"nflip": 3})
    assert index.get_search_params() == {"nflip": 1}
    assert index.to_faiss().nflip == 1


def test_run_bench_restores_openmp_threads():
    before = faiss.omp_get_max_threads()
    target = 1 if before != 1 else 2
    faiss.omp_set_num_threads(target + 1)  # a value run_bench does not use
    try:
        cfg = BenchConfig(dataset="synthetic-small", indexes=["flat"], k=5, runs=1, latency_queries=2,
                          max_queries=10, threads=target)
        assert run_bench(cfg)
        assert faiss.omp_get_max_threads() == target + 1
    finally:
        faiss.omp_set_num_threads(before)
