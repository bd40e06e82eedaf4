"""Asymmetric scoring (annbin.embed.asymmetric), better codes (annbin.embed.encoder) and the three-stage search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import annbin
from annbin.embed.asymmetric import dot_bits, dot_bits_reference, prepare_queries
from annbin.embed.encoder import Encoder, check_rerank_bits, check_rotation, check_thresholds, itq_rotation, random_rotation
from annbin.embed.rescore import RescoredIndex


def clustered(rng, n, dim, n_clusters=8, rank=10):
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    basis = rng.standard_normal((rank, dim)).astype(np.float32) / np.sqrt(rank)
    x = 0.5 * centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, rank)).astype(np.float32) @ basis
    x += 0.1 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered(np.random.default_rng(5), 1540, 64)
    return x[:1500], x[1500:]


# --- the scorer ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(1, 130), c=st.integers(1, 7), qb=st.integers(0, 8), seed=st.integers(0, 2**16))
def test_popcount_scores_equal_the_float_reference_on_the_quantized_query(dim, c, qb, seed):
    rng = np.random.default_rng(seed)
    cs = (dim + 7) // 8
    q = (rng.standard_normal((3, dim)) * rng.uniform(0.01, 100)).astype(np.float32)
    bits = rng.integers(0, 2, (3 * c, dim)).astype(bool)
    codes = np.packbits(bits, axis=1).reshape(3, c, cs)
    prep = prepare_queries(q, cs, qb)
    got = dot_bits(prep, codes)
    # the plain reference: unpack the bits, multiply by the query the scores are exact for
    ref = np.einsum("qcd,qd->qc", bits.reshape(3, c, dim).astype(np.float64), prep.dequantized.astype(np.float64))
    scale = np.abs(prep.dequantized).sum(axis=1, keepdims=True) + 1e-6
    assert np.all(np.abs(got - ref) <= 1e-5 * scale)
    np.testing.assert_allclose(dot_bits_reference(prep.dequantized, codes), ref, rtol=1e-4, atol=1e-4 * scale.max())
    np.testing.assert_allclose(prep.sums, prep.dequantized.sum(axis=1, dtype=np.float64), rtol=1e-5, atol=1e-5 * scale.max())
    if qb == 0:
        assert np.array_equal(prep.dequantized, q)
    else:  # quantization error per dimension is at most half a step
        assert np.abs(prep.dequantized - q).max() <= 0.5 * float(prep.step.max()) * (1 + 1e-5) + 1e-6


def test_quantized_query_ranks_like_the_float_query(data):
    base, queries = data
    codes = annbin.binarize(base)[None].repeat(len(queries), axis=0)
    exact = dot_bits(prepare_queries(queries, 8, 0), codes)
    for qb, floor in ((8, 0.99), (4, 0.9)):
        approx = dot_bits(prepare_queries(queries, 8, qb), codes)
        corr = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(exact, approx)])
        assert corr > floor


def test_bad_scorer_input():
    q = np.zeros((2, 16), np.float32)
    with pytest.raises(ValueError, match="qb must be in 0..8"):
        prepare_queries(q, 2, 9)
    with pytest.raises(ValueError, match="dimension 16"):
        prepare_queries(q, 3, 4)
    with pytest.raises(ValueError, match="NaN"):
        prepare_queries(np.full((1, 16), np.nan, np.float32), 2, 4)
    with pytest.raises(ValueError, match=r"codes must have shape \(2, c, 2\)"):
        dot_bits(prepare_queries(q, 2, 4), np.zeros((3, 4, 2), np.uint8))


# --- the encoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", ["random", "itq"])
def test_rotation_round_trips_and_is_orthogonal(rotation, data):
    base, _ = data
    enc = Encoder(rotation=rotation, thresholds="mean").fit(base)
    m = enc.matrix
    np.testing.assert_allclose(m @ m.T, np.eye(64), atol=1e-4)
    np.testing.assert_allclose(enc.unrotate(enc.rotate(base)), base, atol=1e-5)
    rotated = enc.rotate(base)
    np.testing.assert_allclose(rotated @ rotated[:5].T, base @ base[:5].T, atol=1e-4)  # inner products kept
    back = Encoder.from_state(enc.get_params(), enc.state_arrays())
    assert np.array_equal(back.encode_codes(base), enc.encode_codes(base))
    given_ = Encoder(rotation=m).fit(base)
    assert given_.rotation == "given" and np.array_equal(given_.rotate(base), base @ m)


def test_itq_lowers_the_quantization_error(data):
    base, _ = data
    v = base - base.mean(axis=0)
    err = {}
    for name, r in (("random", random_rotation(64, 0)), ("itq", itq_rotation(v, iterations=20, seed=0))):
        y = v @ r
        err[name] = float(np.square(np.sign(y) * np.abs(y).mean() - y).sum())
    assert err["itq"] < err["random"]


def test_factor_is_rabitqs_estimator_and_two_bits_estimate_better(data):
    base, queries = data
    one = Encoder(rotation="random", thresholds="mean").fit(base)
    e1 = one.encode(base)
    v = one.rotate(base) - one.thresholds
    np.testing.assert_allclose(e1.factors, (v**2).sum(1) / np.abs(v).sum(1), rtol=1e-5)
    two = Encoder(rotation="random", thresholds="mean", rerank_bits=2).fit(base)
    e2 = two.encode(base)
    assert e2.planes.shape == e1.codes.shape and e2.levels.shape == (1500, 2)
    errors = {}
    for name, enc, encoded in (("one", one, e1), ("two", two, e2)):
        index = annbin.FlatIndex(64)
        index.add(encoded.codes)
        r = RescoredIndex(index, rerank="asymmetric", encoder=enc, encoded=encoded, qb=0)
        cand = np.tile(np.arange(1500), (len(queries), 1))
        est = r.asymmetric_scores(queries, cand)
        errors[name] = float(np.abs(est - queries @ base.T).mean())
    assert errors["two"] < 0.6 * errors["one"]
    # the 2-bit estimate of <v, v> is exact by construction
    s = np.where(np.unpackbits(e2.codes, axis=1, count=64) > 0, 1.0, -1.0)
    m = np.unpackbits(e2.planes, axis=1, count=64)
    approx = s * (e2.levels[:, :1] + e2.levels[:, 1:] * m)
    np.testing.assert_allclose((approx * v).sum(1), (v * v).sum(1), rtol=1e-4)


def test_bad_encoder_input(data):
    base, _ = data
    with pytest.raises(ValueError, match="rotation has dimension 32, but the encoder's is 64"):
        Encoder(64, rotation=random_rotation(32))
    enc = Encoder(rotation="random").fit(base)
    with pytest.raises(ValueError, match=r"expected \(n, 64\)"):
        enc.encode(base[:, :32])
    with pytest.raises(ValueError, match="orthogonal"):
        Encoder(rotation=np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="rotation must be None"):
        Encoder(rotation="pca")
    with pytest.raises(ValueError, match="rerank_bits must be 1 or 2"):
        Encoder(rerank_bits=3)
    with pytest.raises(ValueError, match="NaN"):
        Encoder().fit(np.full((3, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="not fitted"):
        Encoder(rotation="itq").encode(base)
    with pytest.raises(ValueError, match="rotation has shape"):
        Encoder.from_state({"dim": 64, "rotation": "random"}, {"rotation": np.eye(8, dtype=np.float32)})


BAD_OPTIONS = [
    ({"rotation": "pca"}, ValueError, "rotation must be None, 'random', 'itq' or a"),
    ({"rotation": np.eye(4, dtype=np.int64)}, TypeError, "rotation must be a float matrix"),
    ({"rotation": np.ones((4, 3), np.float32)}, ValueError, "square"),
    ({"thresholds": "mode"}, ValueError, "thresholds must be None, 'zero', 'median', 'mean', a number"),
    ({"thresholds": np.array([0.0, np.nan])}, ValueError, "thresholds must be a finite number or a finite 1-D"),
    ({"thresholds": np.zeros((2, 2))}, ValueError, "finite 1-D"),
    ({"rerank_bits": 3}, ValueError, "rerank_bits must be 1 or 2, got 3"),
    ({"rerank_bits": 1.5}, TypeError, "rerank_bits"),
]


@pytest.mark.parametrize(("option", "error", "message"), BAD_OPTIONS)
def test_each_option_has_one_check_that_every_taker_calls(option, error, message):
    (name, value), = option.items()
    check = {"rotation": check_rotation, "thresholds": check_thresholds, "rerank_bits": check_rerank_bits}[name]
    with pytest.raises(error, match=message) as direct:
        check(value)
    for make in (lambda: Encoder(**option), lambda: annbin.BinaryEmbeddingIndex("flat", **option)):
        with pytest.raises(error) as raised:
            make()
        assert str(raised.value) == str(direct.value)  # the same check said it, not a copy of it


def test_checks_normalize_and_settings_round_trip(data):
    base, _ = data
    assert check_thresholds(None) == check_thresholds("zero") == "zero" and check_thresholds(np.int64(2)) == 2.0
    assert check_thresholds([1, 2]).dtype == np.float32 and check_rotation(None) is None and check_rerank_bits(2) == 2
    m = random_rotation(64, 5)
    for thresholds in ("zero", "median", 0.5, np.linspace(-0.1, 0.1, 64)):
        enc = Encoder(rotation=m.astype(np.float64), thresholds=thresholds, rerank_bits=2, seed=1).fit(base)
        assert enc.rotation == "given" and enc.matrix.dtype == np.float32
        back = Encoder.from_state(enc.get_params(), enc.state_arrays())
        assert back.get_params() == enc.get_params()
        np.testing.assert_array_equal(back.thresholds, enc.thresholds)
        np.testing.assert_array_equal(back.encode_codes(base), enc.encode_codes(base))
    np.testing.assert_array_equal(Encoder(thresholds=0.5).fit(base).thresholds, np.full(64, 0.5, np.float32))


# --- three stages --------------------------------------------------------------------------


def three_stage_reference(base, codes, factors, queries, k, oversample, keep):
    """Brute force: Hamming top (distance, id), then RaBitQ estimate top (score desc, id), then floats."""
    qcodes = annbin.binarize(queries)
    bits = np.unpackbits(codes, axis=1).astype(np.int64)
    qbits = np.unpackbits(qcodes, axis=1).astype(np.int64)
    out = []
    for qi in range(len(queries)):
        ham = (bits != qbits[qi]).sum(1)
        cand = np.lexsort((np.arange(len(base)), ham))[: k * oversample]
        s = np.where(bits[cand, : base.shape[1]] > 0, 1.0, -1.0)
        est = factors[cand] * (s @ queries[qi].astype(np.float64))
        kept = cand[np.lexsort((cand, -est))[:keep]]
        score = base[kept] @ queries[qi]
        out.append(kept[np.lexsort((kept, -score))[:k]])
    return np.array(out)


def test_three_stage_search_equals_a_brute_force_reference(data):
    base, queries = data
    enc = Encoder().fit(base)  # sign bits, no rotation: the reference above needs no rotation
    encoded = enc.encode(base)
    index = annbin.FlatIndex(64)
    index.add(encoded.codes)
    r = RescoredIndex(index, oversample=8, rerank="asymmetric", rerank_oversample=3, vectors=base,
                      encoder=enc, encoded=encoded, qb=0)
    _, I = r.search(queries, 5)
    assert np.array_equal(I, three_stage_reference(base, encoded.codes, encoded.factors, queries, 5, 8, 15))
    assert r.last_search_stats == {"candidates_per_query": 40.0, "vectors_read_per_query": 15.0}
    # rerank=None keeps today's two stages: every candidate is read
    two = RescoredIndex(index, oversample=8, vectors=base, encoder=enc)
    two.search(queries, 5)
    assert two.last_search_stats == {"candidates_per_query": 40.0, "vectors_read_per_query": 40.0}


def test_asymmetric_rerank_beats_hamming_at_the_same_float_reads(data):
    base, queries = data
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    enc = Encoder(thresholds="mean").fit(base)
    encoded = enc.encode(base)
    index = annbin.FlatIndex(64)
    index.add(encoded.codes)

    def recall(I):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), exact.tolist())])

    ham = recall(RescoredIndex(index, oversample=2, vectors=base, encoder=enc).search(queries, 10)[1])
    asym = RescoredIndex(index, oversample=10, rerank="asymmetric", rerank_oversample=2, vectors=base,
                         encoder=enc, encoded=encoded)
    got = recall(asym.search(queries, 10)[1])
    assert asym.last_search_stats["vectors_read_per_query"] == 20.0
    assert got > ham + 0.05


def test_per_call_params_do_not_stick_and_bad_params_fail(data):
    base, queries = data
    index = annbin.HNSWIndex(64, M=8, ef_search=16)
    index.add(annbin.binarize(base))
    r = RescoredIndex(index, oversample=5, rerank="asymmetric", vectors=base)
    assert r.search_params == ("oversample", "rerank_oversample", "qb", "ef_search")
    r.search(queries, 3, params={"rerank_oversample": 1, "oversample": 2, "qb": 0, "ef_search": 40})
    assert r.last_search_stats["vectors_read_per_query"] == 3.0
    assert r.get_search_params() == {"oversample": 5, "rerank_oversample": 3, "qb": 4, "ef_search": 16}
    with pytest.raises(ValueError, match="qb must be in 0..8"):
        r.set_search_params(qb=9)
    with pytest.raises(ValueError, match="rerank_oversample must be >= 1"):
        r.search(queries, 3, params={"rerank_oversample": 0})
    with pytest.raises(ValueError, match="unknown search parameter"):
        r.search(queries, 3, params={"nprobe": 3})
    with pytest.raises(ValueError, match="NaN"):
        r.search(np.full((1, 64), np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="no row in vectors"):
        RescoredIndex(index, rerank="asymmetric", vectors=base[:10])
    with pytest.raises(ValueError, match="encoder has dim 32"):
        RescoredIndex(index, rerank="asymmetric", vectors=base, encoder=Encoder(rotation="random").fit(base[:, :32]))


# --- BinaryEmbeddingIndex ------------------------------------------------------------------


@pytest.mark.parametrize("rotation, bits", [(None, 1), ("random", 1), ("itq", 2)])
def test_embedding_index_three_stages_save_load(rotation, bits, data, tmp_path):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("flat", oversample=8, rerank="asymmetric", rerank_oversample=2,
                                        rotation=rotation, rerank_bits=bits, thresholds="mean",
                                        store_vectors=tmp_path / "v.npy")
    index.add(base[:700], ids=np.arange(700) * 3)
    index.add(base[700:], ids=np.arange(700, 1500) * 3)
    S, I = index.search(queries, 10)
    assert index.last_search_stats == {"candidates_per_query": 80.0, "vectors_read_per_query": 20.0}
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10] * 3
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), exact.tolist())]) > 0.75  # 64 bits, 2x reads
    np.testing.assert_allclose(S, np.einsum("qd,qkd->qk", queries, base[I // 3]), rtol=1e-5, atol=1e-6)
    index.save(tmp_path / "saved")
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "saved")
    S2, I2 = back.search(queries, 10)
    assert np.array_equal(I, I2) and np.array_equal(S, S2)
    assert back.get_search_params() == {"oversample": 8, "rerank_oversample": 2, "qb": 4}
    per_vector = 4 + (8 + 8 if bits == 2 else 0)  # factor; with 2 bits the plane (8 B) and 2 levels
    rotation_bytes = 0 if rotation is None else 64 * 64 * 4
    assert index.memory_bytes() == index.index.memory_bytes() + 1500 * (8 + per_vector) + 64 * 4 + rotation_bytes
    index.set_search_params(rerank_oversample=1, oversample=4)
    index.search(queries, 10)
    assert index.last_search_stats == {"candidates_per_query": 40.0, "vectors_read_per_query": 10.0}
    with pytest.raises(ValueError, match="needs a rerank stage"):
        annbin.BinaryEmbeddingIndex("flat", metric="ip").set_search_params(rerank_oversample=2)


@pytest.mark.parametrize("spec", ["rabitq-hnsw:M=8,ef_search=32", "rabitq-hnsw:M=8,build=codes", "ivf-rabitq:nlist=16,nprobe=16", "rabitq"])
def test_embedding_index_float_in_first_stage(spec, data, tmp_path):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex(spec, oversample=3, rotation="random", store_vectors=tmp_path / "v.npy", metric="ip")
    index.add(base)
    S, I = index.search(queries, 10)
    assert index.last_search_stats == {"candidates_per_query": 30.0, "vectors_read_per_query": 30.0}
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), exact.tolist())]) > 0.6
    np.testing.assert_allclose(S, np.einsum("qd,qkd->qk", queries, base[I]), rtol=1e-5, atol=1e-6)  # float scores
    inner = index.index.search_params
    index.set_search_params(oversample=2, qb=8)  # qb is the RaBitQ variant's own search parameter here
    assert index.get_search_params()["qb"] == 8 and "qb" in inner
    index.search(queries, 10)
    assert index.last_search_stats["vectors_read_per_query"] == 20.0
    index.save(tmp_path / "saved")
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "saved")
    assert np.array_equal(back.search(queries, 10)[1], index.search(queries, 10)[1])
    assert back.get_search_params() == index.get_search_params()
    # the first stage holds codes, the floats stay on disk
    assert index.memory_bytes() == index.index.memory_bytes() + index.encoder.memory_bytes()
    assert index.disk_bytes() == base.nbytes


def test_float_in_first_stage_bad_options():
    x = clustered(np.random.default_rng(1), 300, 16)
    inner = annbin.make_float_index("rabitq", 16)
    inner.add(x)
    with pytest.raises(ValueError, match="rerank must be None"):
        RescoredIndex(inner, vectors=x, rerank="asymmetric")
    with pytest.raises(ValueError, match="codes= .* does not apply"):
        RescoredIndex(inner, vectors=x, codes=annbin.binarize(x))
    _, I = RescoredIndex(inner, vectors=x, oversample=3).search(x[:4], 3)
    assert (I[:, 0] == np.arange(4)).all()  # a vector's own row comes first
    with pytest.raises(ValueError, match="ranks its candidates asymmetrically already"):
        annbin.BinaryEmbeddingIndex("rabitq-hnsw", rerank="asymmetric")
    with pytest.raises(ValueError, match="use rescore='float'"):
        annbin.BinaryEmbeddingIndex("rabitq", rescore=None, rerank=None, store_vectors=None, metric="ip")
    with pytest.raises(ValueError, match="unknown parameter"):
        annbin.BinaryEmbeddingIndex("rabitq-hnsw:efs=3", metric="ip")
    with pytest.raises(ValueError, match="needs a rerank stage"):
        annbin.BinaryEmbeddingIndex("flat", metric="ip").set_search_params(rerank_oversample=2)
