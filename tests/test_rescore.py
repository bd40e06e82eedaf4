"""Rescoring: RescoredIndex (float and asymmetric), BinaryEmbeddingIndex end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import annbin
from annbin.embed.rescore import RescoredIndex

DIM = 100  # not a multiple of 8: codes carry 4 padding bits


def clustered_floats(rng, n, dim, n_clusters=10, rank=12, noise=0.1):
    """Normalized vectors near a few centres, spread over a rank-12 subspace plus a little noise
    (like real embeddings, far fewer directions matter than there are dimensions)."""
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    basis = rng.standard_normal((rank, dim)).astype(np.float32) / np.sqrt(rank)
    x = (0.5 * centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, rank)).astype(np.float32) @ basis
         + noise * rng.standard_normal((n, dim)).astype(np.float32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered_floats(np.random.default_rng(99), 2040, DIM)
    return x[:2000], x[2000:]


def exact_ip(base, queries, k):
    scores = queries @ base.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def recall(I, ref):
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / ref.shape[1] for a, b in zip(I, ref)])


def flat_over(base, spec="flat", thresholds=None):
    index = annbin.make_index(spec, 104)
    index.add(annbin.binarize(base, thresholds))
    return index


@pytest.mark.parametrize("spec", ["flat", "mih", "hnsw:M=16,ef_search=32"])
def test_oversample_covering_everything_is_exact_float_search(spec, data):
    base, queries = data
    index = flat_over(base, spec)
    rescored = RescoredIndex(index, oversample=2000, vectors=base)
    S, I = rescored.search(queries, 10)
    Sref, Iref = exact_ip(base, queries, 10)
    if spec == "hnsw:M=16,ef_search=32":  # the graph may not reach every node: near-exact only
        assert recall(I, Iref) > 0.98
        return
    assert np.array_equal(I, Iref)
    np.testing.assert_allclose(S, Sref, rtol=1e-5, atol=1e-6)
    assert S.dtype == np.float32 and I.dtype == np.int64 and (np.diff(S, axis=1) <= 0).all()


def test_l2_metric_is_exact_when_everything_is_a_candidate(data):
    base, queries = data
    rescored = RescoredIndex(flat_over(base), oversample=500, vectors=base, metric="l2")
    D, I = rescored.search(queries, 5)
    dist = ((queries[:, None, :] - base[None]) ** 2).sum(-1)
    ref = np.argsort(dist, axis=1, kind="stable")[:, :5]
    assert np.array_equal(I, ref)
    np.testing.assert_allclose(D, np.take_along_axis(dist, ref, axis=1), rtol=1e-4, atol=1e-5)
    assert (np.diff(D, axis=1) >= 0).all()


def test_asymmetric_score_by_hand():
    # dim 10: bits = x > 0; score = q . (2 * bits - 1) over the 10 real dimensions only
    docs = np.array([
        [0.3, -1, 2, 0, 0.1, -0.2, 5, 7, -3, 0.9],  # bits 1010101101
        [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1],  # all 0 -> all -1
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],            # all 1 -> all +1
    ], dtype=np.float32)
    codes = annbin.binarize(docs)
    assert codes.tolist() == [[171, 64], [0, 0], [255, 192]]
    index = annbin.FlatIndex(16)
    index.add(codes)
    q = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], dtype=np.float32)
    rescored = RescoredIndex(index, rerank="asymmetric", codes=codes, dim=10, oversample=3, qb=0)
    S, I = rescored.search(q, 3)
    pm1 = {0: np.array([1, -1, 1, -1, 1, -1, 1, 1, -1, 1]), 1: -np.ones(10), 2: np.ones(10)}
    by_hand = {i: float(q[0] @ v) for i, v in pm1.items()}  # 0: 1-2+3-4+5-6+7+8-9+10 = 13
    assert by_hand == {0: 13.0, 1: -55.0, 2: 55.0}
    assert I.tolist() == [[2, 0, 1]]
    np.testing.assert_array_equal(S, [[55.0, 13.0, -55.0]])


def test_asymmetric_matches_pm1_packing(data):
    base, queries = data
    codes = annbin.binarize(base)
    rescored = RescoredIndex(flat_over(base), rerank="asymmetric", codes=codes, dim=DIM, oversample=10, qb=0)
    S, I = rescored.search(queries, 10)
    pm1 = annbin.to_packing(codes, "pm1", dim=DIM)
    np.testing.assert_allclose(S, np.einsum("qd,qkd->qk", queries, pm1[I]), rtol=1e-5, atol=1e-4)
    assert (np.diff(S, axis=1) <= 0).all()


@pytest.mark.parametrize("mode", ["float", "asymmetric"])
def test_memory_mapped_store_gives_identical_results(mode, data, tmp_path):
    base, queries = data
    codes = annbin.binarize(base)
    store = base if mode == "float" else codes
    np.save(tmp_path / "store.npy", store)
    key = "vectors" if mode == "float" else "codes"
    extra = {} if mode == "float" else {"rerank": "asymmetric", "qb": 0}
    inner = flat_over(base)
    ram = RescoredIndex(inner, dim=DIM, **{key: store}, **extra)
    disk = RescoredIndex(inner, dim=DIM, **{key: str(tmp_path / "store.npy")}, **extra)
    assert isinstance(getattr(disk, f"_{key}"), np.memmap)
    S1, I1 = ram.search(queries, 10)
    S2, I2 = disk.search(queries, 10)
    assert np.array_equal(I1, I2) and np.array_equal(S1, S2)
    thresholds = ram.encoder.memory_bytes()  # the thresholds (zeros here): dim float32
    assert thresholds == DIM * 4
    assert ram.memory_bytes() == inner.memory_bytes() + store.nbytes + thresholds and ram.disk_bytes() == 0
    assert disk.memory_bytes() == inner.memory_bytes() + thresholds and disk.disk_bytes() == store.nbytes


def test_float16_vectors_are_accepted(data):
    base, queries = data
    rescored = RescoredIndex(flat_over(base), vectors=base.astype(np.float16), oversample=8)
    S, I = rescored.search(queries, 10)
    ref = RescoredIndex(flat_over(base), vectors=base, oversample=8).search(queries, 10)[1]
    assert recall(I, ref) > 0.95 and rescored.memory_bytes() < flat_over(base).memory_bytes() + base.nbytes


def test_recall_never_falls_as_oversample_grows(data):
    base, queries = data
    _, Iref = exact_ip(base, queries, 10)
    thresholds = annbin.fit_thresholds(base)
    rescored = RescoredIndex(flat_over(base, thresholds=thresholds), vectors=base, thresholds=thresholds)
    recalls = []
    for oversample in (1, 2, 4, 8, 16, 32):
        _, I = rescored.search(queries, 10, params={"oversample": oversample})
        recalls.append(recall(I, Iref))
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0] and recalls[-1] > 0.97
    assert rescored.oversample == 4  # per-call params do not stick


def test_thresholds_are_applied_to_queries(data):
    base, queries = data
    t = annbin.fit_thresholds(base)
    good = RescoredIndex(flat_over(base, thresholds=t), vectors=base, thresholds=t, oversample=4)
    bad = RescoredIndex(flat_over(base, thresholds=t), vectors=base, thresholds=None, oversample=4)
    _, Iref = exact_ip(base, queries, 10)
    assert recall(good.search(queries, 10)[1], Iref) > recall(bad.search(queries, 10)[1], Iref)


def test_k_past_ntotal_pads_and_ids_follow_the_inner_index(data):
    base, queries = data
    index = annbin.FlatIndex(104)
    index.add(annbin.binarize(base[:5]), ids=np.array([4, 0, 3, 1, 2]))
    rescored = RescoredIndex(index, vectors=base[[1, 3, 4, 2, 0]], oversample=3)
    S, I = rescored.search(queries[:2], 8)
    assert (I[:, 5:] == -1).all() and np.isneginf(S[:, 5:]).all()
    assert sorted(I[0, :5].tolist()) == [0, 1, 2, 3, 4]
    stored = base[[1, 3, 4, 2, 0]]
    np.testing.assert_allclose(S[:, :5], np.einsum("qd,qkd->qk", queries[:2], stored[I[:, :5]]), rtol=1e-5)
    l2 = RescoredIndex(index, vectors=stored, metric="l2")
    D, I = l2.search(queries[:1], 7)
    assert np.isposinf(D[0, 5:]).all() and (I[0, 5:] == -1).all()


def test_search_params_pass_through():
    rng = np.random.default_rng(0)
    base = clustered_floats(rng, 300, 64)
    index = annbin.HNSWIndex(64, M=8, ef_search=16)
    index.add(annbin.binarize(base))
    rescored = RescoredIndex(index, vectors=base)
    assert rescored.search_params == ("oversample", "ef_search")
    rescored.set_search_params(oversample=3, ef_search=40)
    assert rescored.get_search_params() == {"oversample": 3, "ef_search": 40}
    rescored.search(base[:2], 5, params={"oversample": 9, "ef_search": 100})
    assert rescored.get_search_params() == {"oversample": 3, "ef_search": 40}
    with pytest.raises(ValueError, match="unknown search parameter"):
        rescored.set_search_params(nprobe=2)
    assert rescored.oversample == 3  # a failed call changes nothing
    with pytest.raises(ValueError, match="oversample must be >= 1"):
        rescored.set_search_params(oversample=0)


def test_bad_inputs(data, tmp_path):
    base, queries = data
    index = flat_over(base)
    with pytest.raises(TypeError, match="BinaryIndex"):
        RescoredIndex("flat", vectors=base)
    with pytest.raises(ValueError, match="rerank must be"):
        RescoredIndex(index, vectors=base, rerank="cosine")
    with pytest.raises(ValueError, match="metric must be"):
        RescoredIndex(index, vectors=base, metric="cos")
    with pytest.raises(ValueError, match="needs encoded="):
        RescoredIndex(index, codes=annbin.binarize(base), rerank="asymmetric", metric="l2")
    with pytest.raises(ValueError, match="without vectors="):
        RescoredIndex(index)
    with pytest.raises(TypeError, match="float array"):
        RescoredIndex(index, vectors=(base * 100).astype(np.int32))
    with pytest.raises(ValueError, match="NaN"):
        RescoredIndex(index, vectors=np.where(np.eye(2000, DIM) > 0, np.nan, base))
    with pytest.raises(ValueError, match="no row in vectors"):
        RescoredIndex(index, vectors=base[:100])
    with pytest.raises(ValueError, match="index has d=104 bits"):
        RescoredIndex(index, vectors=np.zeros((2000, 64), np.float32))
    with pytest.raises(ValueError, match="dim mismatch"):
        RescoredIndex(index, vectors=base, dim=99)
    with pytest.raises(ValueError, match="cannot open vectors file"):
        RescoredIndex(index, vectors=str(tmp_path / "missing.npy"))
    with pytest.raises(TypeError, match="dtype uint8"):
        RescoredIndex(index, rerank="asymmetric", codes=base, dim=DIM)
    with pytest.raises(ValueError, match="codes width mismatch"):
        RescoredIndex(index, rerank="asymmetric", codes=np.zeros((2000, 4), np.uint8), dim=DIM)
    with pytest.raises(ValueError, match="thresholds must be a scalar or shape"):
        RescoredIndex(index, vectors=base, thresholds=np.zeros(5))
    for oversample, exc in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="oversample must"):
            RescoredIndex(index, vectors=base, oversample=oversample)
    rescored = RescoredIndex(index, vectors=base)
    with pytest.raises(TypeError, match="float array"):
        rescored.search(annbin.binarize(queries), 5)  # codes are not float queries
    with pytest.raises(ValueError, match=r"expected \(n, 100\)"):
        rescored.search(queries[:, :50], 5)
    with pytest.raises(ValueError, match="NaN"):
        rescored.search(np.full((1, DIM), np.nan, np.float32), 5)
    for k, exc in ((0, ValueError), (2.0, TypeError)):
        with pytest.raises(exc, match="k must"):
            rescored.search(queries, k)
    with pytest.raises(ValueError, match="no row in vectors"):
        index.add(annbin.binarize(base[:1]), ids=np.array([5000]))
        rescored.search(base[:1], 3, params={"oversample": 2001})


def test_asymmetric_scores_refuses_what_it_cannot_score(data):
    base, queries = data
    cand = np.zeros((queries.shape[0], 3), np.int64)
    float_in = annbin.make_float_index("rabitq", DIM)
    float_in.add(base)
    with pytest.raises(annbin.UnsupportedOperation, match="has no codes to score"):
        RescoredIndex(float_in, vectors=base).asymmetric_scores(queries, cand)
    encoder = annbin.Encoder(DIM).fit(base)
    no_norms = dataclasses.replace(encoder.encode(base), sqnorms=None)  # a holder may drop them (metric "ip")
    rescored = RescoredIndex(flat_over(base), vectors=base, metric="l2", encoder=encoder, encoded=no_norms)
    assert rescored.search(queries, 3)[1].shape == (queries.shape[0], 3)  # float rescoring needs no norms
    with pytest.raises(ValueError, match="squared norms"):
        rescored.asymmetric_scores(queries, cand)


# --- BinaryEmbeddingIndex ------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["flat", "mih", "hnsw:M=16,ef_search=64", "ivf:nlist=8,nprobe=8", "IDMap2,BFlat"])
def test_embedding_index_end_to_end(spec, data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex(spec, oversample=10, thresholds="median", metric="ip")
    index.add(base[:1200])
    index.add(base[1200:])
    assert index.ntotal == 2000 and index.dim == DIM and index.index.d == 104
    S, I = index.search(queries, 10)
    _, Iref = exact_ip(base, queries, 10)
    assert recall(I, Iref) > 0.9
    np.testing.assert_allclose(S, np.einsum("qd,qkd->qk", queries, base[I]), rtol=1e-5, atol=1e-6)


def test_embedding_index_user_ids_and_modes(data):
    base, queries = data
    ids = np.arange(2000, dtype=np.int64) * 1_000_003 + 11
    full = annbin.BinaryEmbeddingIndex("flat", oversample=2000, metric="ip")
    full.add(base, ids=ids)
    _, Iref = exact_ip(base, queries, 10)
    assert np.array_equal(full.search(queries, 10)[1], ids[Iref])
    with pytest.raises(ValueError, match="already in the index"):
        full.add(base[:2], ids=ids[:2])
    asym = annbin.BinaryEmbeddingIndex("flat", rescore=None, rerank="asymmetric", store_vectors=None, oversample=4, qb=0)
    asym.add(base, ids=ids)
    S, I = asym.search(queries, 10)
    pm1 = annbin.to_packing(annbin.binarize(base), "pm1", dim=DIM)
    rows = np.searchsorted(ids, I)
    factor = (base**2).sum(1) / np.abs(base).sum(1)  # RaBitQ's |x|^2 / |x|_1 (no rotation, thresholds 0)
    np.testing.assert_allclose(S, factor[rows] * np.einsum("qd,qkd->qk", queries, pm1[rows]), rtol=1e-4, atol=1e-5)
    # ids, factors and the encoder's thresholds; the codes are read from the index, not copied
    assert asym.memory_bytes() == asym.index.memory_bytes() + 2000 * 8 + 2000 * 4 + DIM * 4
    with pytest.raises(ValueError, match="plain Hamming results come from the binary indexes"):
        annbin.BinaryEmbeddingIndex("flat", rescore=None, store_vectors=None, metric="ip")


def test_embedding_index_empty_and_bad_args(data, tmp_path):
    base, queries = data
    S, I = annbin.BinaryEmbeddingIndex(metric="ip").search(queries, 3)
    assert np.isneginf(S).all() and (I == -1).all()
    S, I = annbin.BinaryEmbeddingIndex(metric="l2").search(queries, 3)
    assert S.dtype == np.float32 and np.isposinf(S).all() and (I == -1).all()
    for alias in ("exact", "asymmetric"):  # rescore is "float" or None; the rerank is rerank="asymmetric"
        with pytest.raises(ValueError, match="rescore must be 'float' or None"):
            annbin.BinaryEmbeddingIndex("flat", rescore=alias, metric="ip")
    with pytest.raises(ValueError, match="needs the float vectors"):
        annbin.BinaryEmbeddingIndex(rescore="float", store_vectors=None, metric="ip")
    with pytest.raises(ValueError, match="returns estimates only: use rescore='float'"):
        annbin.BinaryEmbeddingIndex(rescore=None, metric="l2")  # the default first stage
    with pytest.raises(ValueError, match="rescore=None needs rerank='asymmetric'"):
        annbin.BinaryEmbeddingIndex("flat", rescore=None, metric="l2")
    with pytest.raises(ValueError, match="unknown index spec"):
        annbin.BinaryEmbeddingIndex("lsh", metric="ip")
    with pytest.raises(ValueError, match="unknown parameter"):
        annbin.BinaryEmbeddingIndex("hnsw:Q=2", metric="ip")
    with pytest.raises(ValueError, match="factory string"):
        annbin.BinaryEmbeddingIndex("BHash4x", dim=64, metric="ip")
    with pytest.raises(ValueError, match="thresholds must be"):
        annbin.BinaryEmbeddingIndex(thresholds="mode", metric="ip")
    with pytest.raises(ValueError, match=r"\.npy"):
        annbin.BinaryEmbeddingIndex(store_vectors=str(tmp_path / "v.bin"), metric="ip")
    with pytest.raises(ValueError, match="oversample must be >= 1"):
        annbin.BinaryEmbeddingIndex(oversample=0, metric="ip")
    index = annbin.BinaryEmbeddingIndex(metric="ip")
    with pytest.raises(TypeError, match="float array"):
        index.add(annbin.binarize(base))
    index.add(base)
    with pytest.raises(ValueError, match=r"expected \(n, 100\)"):
        index.add(base[:, :64])
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, DIM), np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(queries, 0)
    # a failed first add leaves the object unstarted
    ivf = annbin.BinaryEmbeddingIndex("ivf:nlist=500", thresholds="median", metric="ip")
    with pytest.raises(ValueError, match="at least nlist=500"):
        ivf.add(base[:100])
    assert ivf.index is None and ivf.dim is None and ivf.ntotal == 0
    ivf_ok = annbin.BinaryEmbeddingIndex("ivf:nlist=4", metric="ip")
    ivf_ok.add(base[:, :64].copy())
    assert ivf_ok.dim == 64


def test_embedding_index_memory_mapped_vectors(data, tmp_path):
    base, queries = data
    path = tmp_path / "vectors.npy"
    disk = annbin.BinaryEmbeddingIndex("flat", store_vectors=path, oversample=8, metric="ip")
    ram = annbin.BinaryEmbeddingIndex("flat", store_vectors="ram", oversample=8, metric="ip")
    for lo, hi in ((0, 700), (700, 2000)):
        disk.add(base[lo:hi])
        ram.add(base[lo:hi])
    assert np.array_equal(np.load(path), base) and not list(tmp_path.glob("*.tmp"))
    S1, I1 = disk.search(queries, 10)
    S2, I2 = ram.search(queries, 10)
    assert np.array_equal(I1, I2) and np.array_equal(S1, S2)
    assert disk.memory_bytes() == ram.memory_bytes() - base.nbytes and disk.disk_bytes() == base.nbytes
    with pytest.raises(ValueError, match="already exists"):
        annbin.BinaryEmbeddingIndex("flat", store_vectors=path, metric="ip").add(base[:3])


@pytest.mark.parametrize("store, rescore", [("ram", "float"), ("disk", "float"), (None, None)])
def test_embedding_index_save_load(store, rescore, data, tmp_path):
    base, queries = data
    vectors = tmp_path / "live.npy" if store == "disk" else store
    rerank = None if rescore else "asymmetric"
    index = annbin.BinaryEmbeddingIndex("hnsw:M=8,ef_search=32", rescore=rescore, rerank=rerank, store_vectors=vectors,
                                        thresholds="median", oversample=3, metric="ip")
    index.add(base, ids=np.arange(2000) + 500)
    S, I = index.search(queries, 10)
    index.save(tmp_path / "saved")
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "saved")
    S2, I2 = back.search(queries, 10)
    assert np.array_equal(S, S2) and np.array_equal(I, I2)
    assert back.get_search_params() == index.get_search_params() and back.ntotal == 2000
    with pytest.warns(UserWarning, match="one stage of a saved BinaryEmbeddingIndex"):  # readable alone, said so
        assert annbin.load_index(tmp_path / "saved" / "index.annbin").ntotal == 2000
    if rescore == "float":
        assert isinstance(back.vectors, np.memmap) == (store == "disk")
        flipped = annbin.BinaryEmbeddingIndex.load(tmp_path / "saved", mmap=store != "disk")
        assert isinstance(flipped.vectors, np.memmap) == (store != "disk")
        assert np.array_equal(flipped.search(queries, 10)[1], I)
    back.add(base[:5])  # keeps growing after a load
    assert back.ntotal == 2005 and int(back.search(base[:1], 1)[1][0, 0]) in (500, 2500)


def test_embedding_index_load_errors(data, tmp_path):
    base, _ = data
    index = annbin.BinaryEmbeddingIndex("flat", metric="ip")
    index.add(base)
    index.save(tmp_path / "s")
    np.save(tmp_path / "s" / "vectors.npy", base[:10])
    with pytest.raises(ValueError, match="vectors.npy has shape"):
        annbin.BinaryEmbeddingIndex.load(tmp_path / "s")
    with pytest.raises(ValueError, match="does not exist"):
        annbin.BinaryEmbeddingIndex.load(tmp_path / "nothing")
    (tmp_path / "s" / "embedding.annbin").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="not an annbin index"):
        annbin.BinaryEmbeddingIndex.load(tmp_path / "s")


def test_embedding_index_keeps_no_id_map_while_ids_are_rows(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("flat", oversample=4, metric="ip", store_vectors="ram")
    index.add(base[:1000])
    index.add(base[1000:1500])
    assert index.ntotal == 1500
    assert np.array_equal(index.vectors, base[:1500]) and annbin.BinaryEmbeddingIndex("flat", metric="ip").vectors is None
    # no id map: nothing beside the first stage, the floats and the encoder
    assert index.memory_bytes() == index.index.memory_bytes() + 1500 * DIM * 4 + index.encoder.memory_bytes()
    _, I = index.search(queries, 5)
    index.add(base[1500:], ids=np.arange(500) + 10_000)  # user ids: the map appears, 8 bytes a row
    assert index.memory_bytes() == index.index.memory_bytes() + 2000 * DIM * 4 + index.encoder.memory_bytes() + 2000 * 8
    assert np.array_equal(index.get_ids()[:1500], np.arange(1500))
    _, I2 = index.search(queries, 5)
    assert ((I2 < 1500) | (I2 >= 10_000)).all() and np.isin(I2, index.get_ids()).all()
    with pytest.raises(ValueError, match="already in the index"):
        index.add(base[:1], ids=np.array([3]))
