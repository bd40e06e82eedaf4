"""RaBitQ float-in variants: recall, conventions, per-call params, build modes, save/load, errors."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

import annbin
from annbin._training import default_nlist
from annbin.bench.cli import main
from annbin.embed.float_files import load_float_file
from annbin.embed.rabitq import RaBitQFlat, RaBitQHNSW, RaBitQIVF
from annbin.index.registry import float_variants

DIM = 64
SPECS = ["rabitq", "ivf-rabitq:nlist=32,nprobe=8", "ivf-rabitq:nlist=32,nprobe=8,fastscan=true",
         "rabitq-hnsw", "rabitq-hnsw:build=codes"]
# Measured recall@10 of every variant on `data` below: 0.64-0.67 (1-bit codes at 64-d).
RECALL_FLOOR = 0.5


def _mixture(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    v = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, centres.shape[1]))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """2,000 base and 100 query unit vectors of a 100-centre Gaussian mixture in 64-d."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((100, DIM))
    return _mixture(rng, 2000, centres), _mixture(rng, 100, centres)


@pytest.fixture(scope="module")
def truth(data):
    base, queries = data
    return np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :10]


@pytest.fixture
def one_thread():
    """Single-threaded faiss: HNSW builds are then deterministic."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def recall(I, truth):
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, truth)]))


def built(spec, data, metric="ip"):
    index = annbin.make_float_index(spec, DIM, metric)
    index.add(data[0])
    return index


def test_registered_and_importable():
    assert {"rabitq", "ivf-rabitq", "rabitq-hnsw", "float-flat", "float-hnsw"} <= set(float_variants())
    assert annbin.is_float_spec("rabitq:qb=4") and annbin.is_float_spec(" IVF-RaBitQ:nprobe=2")
    assert isinstance(annbin.make_float_index("rabitq", 8), RaBitQFlat)
    assert isinstance(annbin.make_float_index("ivf-rabitq", 8), RaBitQIVF)
    assert isinstance(annbin.make_float_index("rabitq-hnsw", 8), RaBitQHNSW)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_recall_and_convention(spec, metric, data, truth):
    base, queries = data
    index = built(spec, data, metric)
    D, I = index.search(queries, 10)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (100, 10)
    assert recall(I, truth) >= RECALL_FLOOR  # unit vectors: the l2 top-10 is the ip top-10
    assert all(len(set(row)) == 10 for row in I) and I.min() >= 0
    step = np.diff(D, axis=1)
    assert (step <= 1e-6).all() if metric == "ip" else (step >= -1e-6).all()
    # the scores estimate the true ones (1-bit codes at 64-d: errors of a few hundredths)
    true = np.einsum("qd,qkd->qk", queries, base[I]) if metric == "ip" else ((queries[:, None] - base[I]) ** 2).sum(-1)
    assert np.abs(D - true).mean() < 0.1
    assert index.ntotal == len(index) == 2000
    assert not index.exact and index.is_trained


def test_flat_estimate_is_unbiased(data):
    """RaBitQ's inner-product estimate over *all* vectors: centred on the truth, well correlated,
    for a float query (qb=0) and a 4-bit one (qb=4), and the two settings really differ."""
    base, queries = data
    by_id = {}
    for qb in (0, 4):
        D, I = built(f"rabitq:qb={qb}", data).search(queries[:20], 2000)
        assert (np.sort(I, axis=1) == np.arange(2000)).all()  # every vector once per query
        true = np.einsum("qd,qkd->qk", queries[:20], base[I])
        assert abs(float((D - true).mean())) < 0.01
        assert np.corrcoef(D.ravel(), true.ravel())[0, 1] > 0.75  # measured 0.85 at 64-d
        by_id[qb] = np.take_along_axis(D, np.argsort(I, axis=1), axis=1)  # each vector's estimate, by id
    # the query's bits change the estimates (a setting that did not reach faiss would give equal ones)
    assert np.abs(by_id[0] - by_id[4]).mean() > 1e-3, np.abs(by_id[0] - by_id[4]).mean()


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("build", ["float", "codes"])
def test_hnsw_scores_are_the_rabitq_estimate(metric, build, data):
    """The L2-only HNSW gives, for the ids it returns, the flat index's estimate (ip converted back)."""
    queries = data[1]
    D, I = built(f"rabitq-hnsw:build={build}", data, metric).search(queries, 10)
    Dflat, Iflat = built("rabitq", data, metric).search(queries, 2000)
    expected = np.take_along_axis(np.take_along_axis(Dflat, np.argsort(Iflat, axis=1), axis=1), I, axis=1)
    if metric == "ip":  # faiss clamps a negative L2 estimate to 0: ip = (|q|^2 + 1) / 2 at most
        expected = np.minimum(expected, (np.einsum("qd,qd->q", queries, queries)[:, None] + 1) / 2)
    np.testing.assert_allclose(D, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("build", ["float", "codes"])
def test_hnsw_recall_grows_with_ef_search(build, data):
    """Against the flat scan of the same codes (what the graph loses): a sparse graph needs ef."""
    index = built(f"rabitq-hnsw:M=4,ef_construction=16,build={build}", data)
    reference = built("rabitq", data).search(data[1], 10)[1]
    recalls = [recall(index.search(data[1], 10, params={"ef_search": ef})[1], reference) for ef in (10, 20, 40, 80, 200)]
    assert all(b >= a - 0.01 for a, b in itertools.pairwise(recalls)), recalls
    assert recalls[0] < 0.9 and recalls[-1] >= 0.95, recalls  # measured 0.71-0.72 -> 0.985-0.989


@pytest.mark.parametrize("fastscan", ["false", "true"])
def test_ivf_recall_grows_with_nprobe(fastscan):
    """On diffuse data (5 close centres) whose neighbours spread over many of the 32 lists."""
    rng = np.random.default_rng(11)
    centres = 0.5 * rng.standard_normal((5, DIM))
    base, queries = _mixture(rng, 2000, centres), _mixture(rng, 100, centres)
    truth = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :10]
    index = annbin.make_float_index(f"ivf-rabitq:nlist=32,fastscan={fastscan}", DIM)
    index.add(base)
    recalls = [recall(index.search(queries, 10, params={"nprobe": p})[1], truth) for p in (1, 2, 4, 8, 32)]
    assert all(b >= a - 0.01 for a, b in itertools.pairwise(recalls)), recalls
    assert recalls[-1] >= recalls[0] + 0.05 and recalls[-1] >= 0.3, recalls  # measured ~0.26 -> ~0.40


@pytest.mark.parametrize("spec", ["rabitq", "ivf-rabitq:nlist=32", "rabitq-hnsw"])
def test_query_bits_and_per_call_params(spec, data, truth):
    index = built(spec, data)
    before = index.get_search_params()
    per_call = {qb: index.search(data[1], 10, params={"qb": qb}) for qb in (0, 4, 8)}
    assert index.get_search_params() == before  # params= changed nothing on the index
    for qb, (D, I) in per_call.items():
        assert recall(I, truth) >= RECALL_FLOOR
        index.set_search_params(qb=qb)
        D2, I2 = index.search(data[1], 10)
        assert np.array_equal(I, I2) and np.array_equal(D, D2)
    assert not np.array_equal(per_call[0][0], per_call[4][0])  # qb reaches faiss


@pytest.mark.parametrize("spec", ["ivf-rabitq:nlist=32", "rabitq-hnsw"])
def test_concurrent_searches_with_different_params(spec, data):
    index = built(spec, data)
    settings = [{"qb": 0}, {"qb": 4}, {"qb": 8}] * 4
    expected = [index.search(data[1], 10, params=p)[1] for p in settings]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: index.search(data[1], 10, params=p)[1], settings))
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trip(spec, data, one_thread):
    index = built(spec, data)
    again = annbin.make_float_index(index.spec, DIM, "ip")
    again.add(data[0])
    assert again.spec == index.spec and type(again) is type(index)
    assert np.array_equal(again.search(data[1], 10)[1], index.search(data[1], 10)[1])


def test_spec_values():
    assert annbin.make_float_index("rabitq", DIM).spec == "rabitq:qb=4"
    assert annbin.make_float_index("ivf-rabitq:nlist=256,nprobe=16,qb=4", DIM).spec == "ivf-rabitq:nlist=256,fastscan=False,nprobe=16,qb=4"
    assert annbin.make_float_index("rabitq-hnsw", DIM).spec == "rabitq-hnsw:M=16,ef_construction=100,nb_bits=1,build=float,ef_search=64,qb=4"


def test_ivf_default_nlist_and_training(data):
    index = annbin.make_float_index("ivf-rabitq", DIM)
    assert not index.is_trained and index.ntotal == 0 and index.get_params()["nlist"] is None
    with pytest.raises(ValueError, match="at least nlist=64 vectors, got 10"):
        annbin.make_float_index("ivf-rabitq:nlist=64", DIM).add(data[0][:10])
    index.add(data[0][:1000])
    assert index.get_params()["nlist"] == default_nlist(1000) and index.is_trained
    index.add(data[0][1000:])  # later adds are assigned to the trained lists
    assert index.ntotal == 2000
    assert type(index._index).__name__ == "IndexIVFRaBitQ"
    assert type(built("ivf-rabitq:nlist=32,fastscan=true", data)._index).__name__ == "IndexIVFRaBitQFastScan"


def test_hnsw_build_float_is_the_float_graph(data, one_thread):
    """build=float keeps exactly the graph faiss.IndexHNSWFlat builds; build=codes makes its own."""
    base = data[0]
    index = annbin.make_float_index("rabitq-hnsw:M=8,ef_construction=40", DIM)
    index.add(base[:1200])
    index.add(base[1200:])
    assert index.ntotal == 2000 and index._index is None
    assert index.memory_bytes() == base.nbytes  # the floats, held until the graph is built
    index.search(data[1][:1], 1)
    reference = faiss.IndexHNSWFlat(DIM, 8)
    reference.hnsw.efConstruction = 40
    reference.add(base)
    links = faiss.vector_to_array(index._index.hnsw.neighbors)
    assert np.array_equal(links, faiss.vector_to_array(reference.hnsw.neighbors))
    assert not index._pending and 0 < index.memory_bytes() < base.nbytes
    codes = built("rabitq-hnsw:M=8,ef_construction=40,build=codes", data)
    assert not np.array_equal(faiss.vector_to_array(codes._index.hnsw.neighbors), links)


def test_second_add_rules(data):
    base, queries = data
    index = built("rabitq-hnsw", data)
    I = index.search(queries, 10)[1]
    with pytest.raises(ValueError, match="builds its graph once"):
        index.add(base[:5])
    assert index.ntotal == 2000 and np.array_equal(index.search(queries, 10)[1], I)
    codes = annbin.make_float_index("rabitq-hnsw:build=codes", DIM)
    codes.add(base[:1500])
    codes.search(queries, 10)
    codes.add(base[1500:])
    assert codes.ntotal == 2000
    assert codes.search(base[1500:1510], 1)[1].ravel().tolist() == list(range(1500, 1510))
    for spec in ("rabitq", "ivf-rabitq:nlist=16"):
        other = annbin.make_float_index(spec, DIM)
        other.add(base[:1000])
        other.search(queries, 1)
        other.add(base[1000:])
        assert other.ntotal == 2000 and other.search(base[1990:], 1, params={"qb": 8})[1].ravel().tolist() == list(range(1990, 2000))


def test_k_above_ntotal_and_empty(data):
    for spec in SPECS:
        empty = annbin.make_float_index(spec, DIM, "l2")
        D, I = empty.search(data[1][:2], 3)
        assert (I == -1).all() and np.isinf(D).all() and (D > 0).all()
    index = annbin.make_float_index("rabitq-hnsw", DIM)
    index.add(data[0][:5])
    D, I = index.search(data[1][:2], 8)
    assert (I[:, 5:] == -1).all() and (D[:, 5:] == -np.inf).all() and sorted(I[0, :5]) == list(range(5))


@pytest.mark.parametrize("spec", SPECS)
def test_save_load_identical(spec, data, tmp_path):
    index = built(spec, data)
    index.set_search_params(qb=8)
    path = tmp_path / "index.annbin"
    index.save(path)
    loaded = load_float_file(path)
    assert type(loaded) is type(index) and loaded.spec == index.spec and loaded.ntotal == 2000
    assert loaded.metric == "ip" and loaded.memory_bytes() == index.memory_bytes()
    for a, b in zip(index.search(data[1], 10), loaded.search(data[1], 10)):
        assert np.array_equal(a, b)
    if "build=codes" in spec or "hnsw" not in spec:
        loaded.add(data[0][:3])  # a loaded index takes more vectors as the original would
        assert loaded.ntotal == 2003
    else:
        with pytest.raises(ValueError, match="builds its graph once"):
            loaded.add(data[0][:3])


def test_save_load_empty_and_unbuilt(data, tmp_path):
    for spec in SPECS:
        annbin.make_float_index(spec, DIM, "l2").save(tmp_path / "e")
        empty = load_float_file(tmp_path / "e")
        assert empty.ntotal == 0 and empty.metric == "l2" and not empty.is_trained
        empty.add(data[0])
        assert empty.ntotal == 2000
    index = annbin.make_float_index("rabitq-hnsw", DIM)
    index.add(data[0])
    index.save(tmp_path / "h")  # builds the graph first
    assert index._index is not None and load_float_file(tmp_path / "h").ntotal == 2000


def test_corrupted_or_foreign_files(data, tmp_path):
    path = tmp_path / "index.annbin"
    built("rabitq", data).save(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        load_float_file(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes(raw[:100]))
    with pytest.raises(ValueError):
        load_float_file(tmp_path / "short")
    with pytest.raises(ValueError, match="does not exist"):
        load_float_file(tmp_path / "missing")
    binary = annbin.make_index("flat", 64)
    binary.add(np.zeros((3, 8), np.uint8))
    binary.save(tmp_path / "binary")
    with pytest.raises(ValueError, match="not a saved float-in index"):  # a binary index's file
        load_float_file(tmp_path / "binary")


@pytest.mark.parametrize("call, error, match", [
    (lambda i, q: i.search(np.full((1, DIM), np.nan, np.float32), 5), ValueError, "NaN"),
    (lambda i, q: i.search(q[:, :32], 5), ValueError, "dimension mismatch"),
    (lambda i, q: i.search(q, 0), ValueError, "k must be >= 1"),
    (lambda i, q: i.search(q, 2.5), TypeError, "k must be an int"),
    (lambda i, q: i.search(q.astype(np.int32), 5), TypeError, "float"),
    (lambda i, q: i.search(q, 5, params={"qb": 9}), ValueError, "0..8"),
    (lambda i, q: i.search(q, 5, params={"qb": -1}), ValueError, "qb must be >= 0"),
    (lambda i, q: i.search(q, 5, params={"qb": 1.5}), TypeError, "qb must be an int"),
    (lambda i, q: i.search(q, 5, params={"ef": 5}), ValueError, "unknown search parameter"),
    (lambda i, q: i.set_search_params(nprobe=4), ValueError, "unknown search parameter"),
    (lambda i, q: i.add(np.ones((2, DIM), np.float32)), ValueError, "unit-norm"),
])
def test_bad_input(call, error, match, data):
    index = built("rabitq-hnsw:build=codes", data)
    with pytest.raises(error, match=match):
        call(index, data[1][:3])


@pytest.mark.parametrize("spec, metric, error, match", [
    ("rabitq:nlist=4", "ip", ValueError, "unknown parameter"),
    ("rabitq:qb=12", "ip", ValueError, "0..8"),
    ("ivf-rabitq:nprobe=0", "ip", ValueError, "nprobe must be >= 1"),
    ("ivf-rabitq:nlist=0", "ip", ValueError, "nlist must be >= 1"),
    ("ivf-rabitq:fastscan=yes", "ip", TypeError, "fastscan must be a bool"),
    ("ivf-rabitq:fastscan=true,qb=0", "ip", ValueError, "needs qb in 1..8"),
    ("rabitq-hnsw:build=gpu", "ip", ValueError, "build must be"),
    ("rabitq-hnsw:M=1", "ip", ValueError, "M must be >= 2"),
    ("rabitq-hnsw:nb_bits=0", "ip", ValueError, "nb_bits must be >= 1"),
    ("rabitq-hnsw:nb_bits=10", "ip", ValueError, "nb_bits must be in 1..9"),
    ("rabitq-hnsw:ef_search=0", "ip", ValueError, "ef_search must be >= 1"),
    ("rabitq", "cosine", ValueError, "metric must be one of"),
])
def test_bad_specs(spec, metric, error, match):
    with pytest.raises(error, match=match):
        annbin.make_float_index(spec, DIM, metric)


def test_l2_hnsw_takes_any_norm(data):
    index = annbin.make_float_index("rabitq-hnsw", DIM, "l2")
    index.add(data[0] * 3.0)  # only "ip" needs unit vectors
    I = index.search(data[0][:5] * 3.0, 1)[1]
    assert I.ravel().tolist() == list(range(5))


def test_bench_sweeps_rabitq():
    from annbin.bench.run import expand_spec

    assert expand_spec("rabitq-hnsw:M=8,ef_search=16|64") == [("rabitq-hnsw:M=8", [{"ef_search": 16}, {"ef_search": 64}])]


def test_cli_bench_runs_rabitq_variants(tmp_path):
    out = tmp_path / "o"
    args = ["bench", "--dataset", "synthetic-small", "--k", "5", "--runs", "1", "--latency-queries", "3",
            "--max-queries", "20", "--no-progress", "--index", "ivf-rabitq:nlist=16,nprobe=2|16",
            "--index", "rabitq-hnsw:ef_search=32", "--index", "rabitq", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == ["ivf-rabitq", "ivf-rabitq", "rabitq-hnsw", "rabitq"]
    assert all(r["recall_float"] >= 0.4 and r["recall_hamming"] is None and 0 < r["bytes_per_vector"] < 128 * 4 for r in rows)


@pytest.mark.parametrize("build", ["float", "codes"])
def test_more_bits_estimate_better_and_survive_save(build, data, truth, tmp_path):
    base, queries = data
    got = {}
    for bits in (1, 2):
        index = built(f"rabitq-hnsw:build={build},nb_bits={bits},ef_search=64", data)
        got[bits] = recall(index.search(queries, 10)[1], truth)
        if bits == 2:
            index.save(tmp_path / "two.annbin")
            back = load_float_file(tmp_path / "two.annbin")
            assert back.get_params()["nb_bits"] == 2
            assert np.array_equal(back.search(queries, 10)[1], index.search(queries, 10)[1])
    assert got[2] > got[1] + 0.05
