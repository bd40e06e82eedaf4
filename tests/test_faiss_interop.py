"""faiss interop: from_faiss on every binary kind, factory strings, faiss files, IVFIndex, and
annbin indexes used by code written for faiss."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import annbin
from annbin._checks import INT32_MAX
from annbin._training import TRAIN_POINTS_PER_LIST
from tests.conftest import clustered_codes, popcount_knn

D_BITS = 64


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    base = clustered_codes(rng, 2000, 8, n_clusters=16, flip=0.1)
    queries = base[rng.integers(0, 2000, 30)] ^ np.packbits(rng.random((30, D_BITS)) < 0.05, axis=1)
    return base, queries


def same_results(D1, I1, D2, I2):
    """Same (distance, id) multiset per row: faiss does not order ties, annbin orders them by id."""
    assert np.array_equal(D1, D2)
    for a, b, da in zip(I1, I2, D1):
        # the set of ids strictly inside the k-th distance must agree; at the k-th, ties may differ
        inside = da < da[-1]
        assert set(a[inside].tolist()) == set(b[inside].tolist())


def native(kind: str):
    """A faiss binary index built with faiss's own constructors (not the factory)."""
    if kind == "flat":
        return faiss.IndexBinaryFlat(D_BITS)
    if kind == "hnsw":
        return faiss.IndexBinaryHNSW(D_BITS, 16)
    if kind == "ivf":
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(D_BITS), D_BITS, 8)
        index.nprobe = 3
        return index
    if kind == "hash":
        index = faiss.IndexBinaryHash(D_BITS, 10)
        index.nflip = 2
        return index
    if kind == "multihash":
        index = faiss.IndexBinaryMultiHash(D_BITS, 3, 10)
        index.nflip = 1
        return index
    if kind == "idmap-flat":
        return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(D_BITS))
    if kind == "idmap2-hnsw":
        return faiss.IndexBinaryIDMap2(faiss.IndexBinaryHNSW(D_BITS, 16))
    raise AssertionError(kind)


KINDS = ["flat", "hnsw", "ivf", "hash", "multihash", "idmap-flat", "idmap2-hnsw"]


@pytest.mark.parametrize("kind", KINDS)
def test_from_faiss_matches_faiss_itself(kind, data):
    base, queries = data
    index = native(kind)
    if not index.is_trained:
        index.train(base)
    if isinstance(index, faiss.IndexBinaryIDMap):
        index.add_with_ids(base, np.arange(2000, dtype=np.int64) * 10)
    else:
        index.add(base)
    Dref, Iref = index.search(queries, 10)
    wrapped = annbin.from_faiss(index)
    assert wrapped.ntotal == 2000 and wrapped.d == D_BITS and wrapped.code_size == 8 and wrapped.is_trained
    assert wrapped.exact == (kind in ("flat", "idmap-flat"))
    D, I = wrapped.search(queries, 10)
    Dref = np.where(Iref < 0, INT32_MAX, Dref)
    same_results(D, I, Dref, Iref)
    assert wrapped.to_faiss() is index
    # ids continue after the largest one; the wrapper shares the faiss object
    expect = np.arange(2000) * 10 if kind.startswith("idmap") else np.arange(2000)
    assert np.array_equal(np.sort(wrapped.get_ids()), expect)
    wrapped.add(base[:5])
    assert index.ntotal == 2005 and wrapped.get_ids().max() == expect.max() + 5


def test_search_params_follow_the_faiss_kind():
    assert annbin.make_index("BHNSW16", D_BITS).search_params == ("ef_search",)
    assert annbin.make_index("IDMap2,BIVF8", D_BITS).search_params == ("nprobe",)
    assert annbin.make_index("BHash3x10", D_BITS).search_params == ("nflip",)
    assert annbin.make_index("BFlat", D_BITS).search_params == ()
    index = annbin.make_index("BIVF8:nprobe=5", D_BITS)
    assert index.to_faiss().nprobe == 5 and index.get_search_params() == {"nprobe": 5}
    with pytest.raises(ValueError, match="unknown search parameter"):
        index.set_search_params(ef_search=4)
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        index.set_search_params(nprobe=0)


@pytest.mark.parametrize("spec, cls, core", [
    ("BFlat", faiss.IndexBinaryFlat, faiss.IndexBinaryFlat),
    ("BHNSW32", faiss.IndexBinaryHNSW, faiss.IndexBinaryHNSW),
    ("BIVF16", faiss.IndexBinaryIVF, faiss.IndexBinaryIVF),
    ("BHash16", faiss.IndexBinaryHash, faiss.IndexBinaryHash),
    ("BHash4x16", faiss.IndexBinaryMultiHash, faiss.IndexBinaryMultiHash),
    ("IDMap2,BHash4x16", faiss.IndexBinaryIDMap2, faiss.IndexBinaryMultiHash),
    ("IDMap,BHNSW32", faiss.IndexBinaryIDMap, faiss.IndexBinaryHNSW),
    ("IDMap2,BIVF16:nprobe=4", faiss.IndexBinaryIDMap2, faiss.IndexBinaryIVF),
    ("BIVF16_HNSW8", faiss.IndexBinaryIVF, faiss.IndexBinaryIVF),
    ("BFlat,IDMap2", faiss.IndexBinaryIDMap2, faiss.IndexBinaryFlat),
])
def test_factory_specs(spec, cls, core):
    index = annbin.make_index(spec, D_BITS)
    assert isinstance(index, annbin.FaissIndex) and isinstance(index.to_faiss(), cls)
    assert isinstance(faiss.downcast_IndexBinary(getattr(index.to_faiss(), "index", index.to_faiss())), core)
    if not spec.endswith("IDMap2"):  # the suffix form reads back as the prefix form
        assert index.spec.split(":")[0] == spec.split(":")[0]
    again = annbin.make_index(index.spec, D_BITS)
    assert again.spec == index.spec and again.get_params() == index.get_params()


# faiss's parser is lenient: "BHash4x" builds BHash4, "BHash99" a 99-bit hash of 64-bit codes,
# "BIVF16_BHNSW32" a flat quantizer (the HNSW one is spelled "BIVF16_HNSW32")
@pytest.mark.parametrize("bad", ["BHNSWx", "BIVF", "BHash4x", "BHash99", "BHash0", "BIVF0", "BHNSW1",
                                 "BIVF16_BHNSW32", "BHash5x16", "BFlat junk"])
def test_bad_factory_strings_are_value_errors(bad):
    with pytest.raises(ValueError, match="factory string"):
        annbin.make_index(bad, D_BITS)


def test_lowercase_is_not_a_factory_string():
    with pytest.raises(ValueError, match="unknown index spec"):
        annbin.make_index("bflat", D_BITS)


def test_from_faiss_rejects_non_binary_indexes():
    with pytest.raises(TypeError, match="float faiss index"):
        annbin.from_faiss(faiss.IndexFlatL2(8))
    with pytest.raises(TypeError, match="faiss.IndexBinary"):
        annbin.from_faiss("BFlat")


def test_sequential_kinds_refuse_explicit_ids_and_flat_refuses_renumbering(data):
    base, _ = data
    index = annbin.make_index("BFlat", D_BITS)
    index.add(base[:10])
    index.add(base[10:20], ids=np.arange(10, 20))  # the ids faiss would give: fine
    with pytest.raises(annbin.UnsupportedOperation, match="IDMap2"):
        index.add(base[:3], ids=np.array([100, 101, 102]))
    assert index.ntotal == 20
    with pytest.raises(annbin.UnsupportedOperation, match="renumbers"):
        index.remove_ids(np.array([1]))
    hnsw = annbin.make_index("IDMap2,BHNSW16", D_BITS)
    hnsw.add(base[:10], ids=np.arange(10) + 50)
    with pytest.raises(annbin.UnsupportedOperation, match="remove_ids"):
        hnsw.remove_ids(np.array([50]))


def test_idmap_around_ivf_refuses_remove(data):
    """faiss's IDMap.remove_ids compacts its map as for a flat index: around an IVF it corrupts it."""
    base, _ = data
    index = annbin.make_index("IDMap2,BIVF8", D_BITS)
    index.add(base)
    with pytest.raises(annbin.UnsupportedOperation, match="only correct around IndexBinaryFlat"):
        index.remove_ids(np.array([3]))


def test_untrained_faiss_ivf_trains_on_first_add(data):
    base, queries = data
    index = annbin.make_index("BIVF8:nprobe=8", D_BITS)
    assert not index.is_trained
    index.add(base)
    assert index.is_trained and index.ntotal == 2000
    D, _ = index.search(queries, 5)
    assert np.array_equal(D, popcount_knn(base, queries, 5))
    small = annbin.make_index("BIVF64", D_BITS)
    with pytest.raises(ValueError, match="at least nlist=64"):
        small.add(base[:10])
    assert small.ntotal == 0 and not small.is_trained


@pytest.mark.parametrize("kind", KINDS)
def test_load_index_reads_faiss_files(kind, data, tmp_path):
    base, queries = data
    index = native(kind)
    if not index.is_trained:
        index.train(base)
    if isinstance(index, faiss.IndexBinaryIDMap):
        index.add_with_ids(base, np.arange(2000, dtype=np.int64) + 7)
    else:
        index.add(base)
    path = str(tmp_path / "f.bin")
    faiss.write_index_binary(index, path)
    back = annbin.load_index(path)
    assert isinstance(back, annbin.FaissIndex) and back.ntotal == 2000
    Dref, Iref = index.search(queries, 10)
    D, I = back.search(queries, 10)
    same_results(D, I, np.where(Iref < 0, INT32_MAX, Dref), Iref)
    # and into annbin's own format and back
    back.save(tmp_path / "a.annbin")
    again = annbin.load_index(tmp_path / "a.annbin")
    D2, I2 = again.search(queries, 10)
    assert np.array_equal(D, D2) and np.array_equal(I, I2) and again.spec == back.spec


def test_unreadable_faiss_files_are_value_errors(data, tmp_path):
    base, _ = data
    index = faiss.IndexBinaryFlat(D_BITS)
    index.add(base)
    good = tmp_path / "good.bin"
    faiss.write_index_binary(index, str(good))
    raw = good.read_bytes()
    (tmp_path / "trunc.bin").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.bin").write_bytes(b"IBxF" + b"\x00" * 3)
    (tmp_path / "tiny.bin").write_bytes(b"ab")
    (tmp_path / "float.bin").write_bytes(b"")
    faiss.write_index(faiss.IndexFlatL2(4), str(tmp_path / "float.bin"))
    for name in ("trunc.bin", "junk.bin", "tiny.bin", "float.bin"):
        with pytest.raises(ValueError, match="not an annbin index"):
            annbin.load_index(tmp_path / name)


def test_to_faiss_on_annbin_variants(data):
    base, queries = data
    for spec in ("flat", "hnsw:M=16,ef_search=64", "ivf:nlist=8,nprobe=8"):
        index = annbin.make_index(spec, D_BITS)
        index.add(base, ids=np.arange(2000, dtype=np.int64) + 1000)
        D, I = index.search(queries, 10)
        raw = index.to_faiss()
        assert isinstance(raw, faiss.IndexBinary)
        Dr, Ir = raw.search(queries, 10)
        same_results(D, I, Dr, Ir)


# --- IVFIndex ------------------------------------------------------------------------------


def test_ivf_trains_on_first_add_and_is_exact_at_full_nprobe(data):
    base, queries = data
    index = annbin.IVFIndex(D_BITS, nlist=16, nprobe=2)
    assert not index.is_trained and index.spec == "ivf:nlist=16,nprobe=2"
    index.add(base)
    assert index.is_trained and index.ntotal == 2000
    index.add(base[:10])  # later adds are only assigned to lists
    assert index.ntotal == 2010
    D, _ = index.search(queries, 10, params={"nprobe": 16})
    ref = np.concatenate([base, base[:10]])
    assert np.array_equal(D, popcount_knn(ref, queries, 10))
    assert index.get_search_params() == {"nprobe": 2}
    assert index.memory_bytes() == 2010 * (8 + 8) + 16 * 8


def test_ivf_default_nlist_and_training_rules(data):
    base, _ = data
    index = annbin.make_index("ivf", D_BITS)
    assert index.get_params() == {"nlist": None}
    index.add(base)
    assert index.get_params() == {"nlist": 2000 // 39}
    with pytest.raises(ValueError, match="cannot retrain"):
        index.train(base)
    index.reset()
    assert index.is_trained and index.ntotal == 0  # reset keeps the centroids
    index.train(base)  # allowed once empty
    too_few = annbin.IVFIndex(D_BITS, nlist=100)
    with pytest.raises(ValueError, match="at least nlist=100"):
        too_few.add(base[:50])
    assert too_few.ntotal == 0 and not too_few.is_trained
    explicit = annbin.IVFIndex(D_BITS, nlist=8)
    explicit.train(base[:500])
    assert explicit.is_trained
    with pytest.raises(ValueError, match="nlist must be >= 1"):
        annbin.IVFIndex(D_BITS, nlist=0)
    with pytest.raises(TypeError, match="nprobe must be an int"):
        annbin.IVFIndex(D_BITS, nprobe=2.5)


def test_ivf_large_first_add_is_subsampled_for_training(monkeypatch, data):
    base, _ = data
    seen = []
    import annbin.index._faiss as fw

    real = fw.train_on_sample

    def spy(index, codes, cap):
        seen.append(cap)
        return real(index, codes, cap)

    monkeypatch.setattr("annbin.index.ivf.train_on_sample", spy)
    index = annbin.IVFIndex(D_BITS, nlist=4)
    index.add(base)
    assert seen == [4 * TRAIN_POINTS_PER_LIST]


# --- annbin indexes where code expects a faiss binary index --------------------------------


def faiss_style_pipeline(index, xb, xq):
    """Written against faiss's API only: attributes, argument order, dtypes."""
    assert index.d == xb.shape[1] * 8 and index.code_size == xb.shape[1]
    assert index.is_trained and index.ntotal == 0
    index.add(xb)
    assert index.ntotal == len(xb)
    D, I = index.search(xq, 5)
    lims, Dr, Ir = index.range_search(xq, 12)
    removed = index.remove_ids(np.array([0, 1, 2], dtype="int64"))
    after = index.ntotal
    D2, I2 = index.search(xq, 5)
    index.reset()
    return D, I, lims, Dr, removed, after, D2, I2, index.ntotal


@pytest.mark.parametrize("make", [lambda: annbin.MIHIndex(D_BITS), lambda: annbin.FlatIndex(D_BITS),
                                  lambda: annbin.make_index("IDMap2,BFlat", D_BITS)])
def test_annbin_index_drops_into_faiss_code(make, data):
    base, queries = data
    ref = faiss_style_pipeline(faiss.IndexBinaryFlat(D_BITS), base, queries)
    got = faiss_style_pipeline(make(), base, queries)
    same_results(got[0], got[1], ref[0], ref[1])
    # range search keeps distance < radius, as faiss does: same lims, same distances
    assert np.array_equal(got[2], ref[2]) and (got[3] < 12).all()
    assert np.array_equal(np.sort(got[3]), np.sort(ref[3]))
    assert got[4] == ref[4] == 3 and got[5] == ref[5] == 1997 and got[8] == ref[8] == 0
    assert np.array_equal(got[6], ref[6])


def test_range_search_equals_faiss(data):
    base, queries = data
    flat = faiss.IndexBinaryFlat(D_BITS)
    flat.add(base)
    mih = annbin.MIHIndex(D_BITS)
    mih.add(base)
    for radius in (0, 1, 8, 15, D_BITS + 1):
        lf, Df, If = flat.range_search(queries, radius)
        la, Da, Ia = mih.range_search(queries, radius)
        assert np.array_equal(lf, la) and np.array_equal(np.sort(Df), np.sort(Da))
        for q in range(len(queries)):
            assert set(If[lf[q]:lf[q + 1]].tolist()) == set(Ia[la[q]:la[q + 1]].tolist())
