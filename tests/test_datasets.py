"""Datasets: file formats, ground truth and its cache, errors, the synthetic and shipped sets."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from annbin.bench import formats as _formats
from annbin.bench.datasets import (
    RECIPES,
    ArrayDataset,
    HDF5Dataset,
    NpyDataset,
    Recipe,
    ShippedDataset,
    SyntheticDataset,
    build_dataset,
    built_dir,
    cache_dir,
    data_dir,
    float_knn,
    get_dataset,
    list_datasets,
)

SHIPPED = "minilm_wordnet"
REPO_DATA = Path(__file__).resolve().parent.parent / "annbin" / "bench" / "data"  # package data: the wheel ships it
BUILD_SCRIPTS = Path(__file__).resolve().parent.parent / "datasets"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty ground-truth cache and the repo's data folder."""
    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANNBIN_DATA_DIR", raising=False)


def brute_force(base, queries, k, metric):
    """Reference kNN in float64 numpy: (D, I) in annbin's convention."""
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "ip":
        s = q @ b.T
        idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    else:
        s = (q**2).sum(1)[:, None] - 2 * q @ b.T + (b**2).sum(1)[None, :]
        idx = np.argsort(s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


# ---------------------------------------------------------------- file formats

@pytest.mark.parametrize(("ext", "make"), [
    (".fvecs", lambda r: r.standard_normal((37, 12)).astype(np.float32)),
    (".bvecs", lambda r: r.integers(0, 256, (37, 16)).astype(np.uint8)),
    (".ivecs", lambda r: r.integers(-2**31, 2**31 - 1, (37, 5)).astype(np.int32)),
])
def test_vecs_round_trip(tmp_path, rng, ext, make):
    x = make(rng)
    path = tmp_path / f"x{ext}"
    getattr(_formats, f"write_{ext[1:]}")(path, x)
    assert path.stat().st_size == x.shape[0] * (4 + x.shape[1] * x.itemsize)
    y = getattr(_formats, f"read_{ext[1:]}")(path)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    # the layout is TEXMEX's: int32 dim before each row
    raw = np.fromfile(path, dtype=np.uint8).reshape(x.shape[0], -1)
    assert (raw[:, :4].copy().view("<i4") == x.shape[1]).all()


def test_vecs_writers_refuse_silent_casts(tmp_path):
    with pytest.raises(TypeError, match="float"):
        _formats.write_bvecs(tmp_path / "x.bvecs", np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="range"):
        _formats.write_bvecs(tmp_path / "x.bvecs", np.full((2, 3), 300))
    with pytest.raises(ValueError, match="2-D"):
        _formats.write_fvecs(tmp_path / "x.fvecs", np.ones(3, dtype=np.float32))


def test_vecs_reader_rejects_broken_files(tmp_path, rng):
    path = tmp_path / "x.fvecs"
    _formats.write_fvecs(path, rng.standard_normal((4, 8)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated"):
        _formats.read_fvecs(path)
    mixed = bytearray(data)
    mixed[36:40] = np.array([7], dtype="<i4").tobytes()  # row 1 claims dim 7
    path.write_bytes(bytes(mixed))
    with pytest.raises(ValueError, match="row 1 has dimension 7"):
        _formats.read_fvecs(path)
    path.write_bytes(b"\xff\xff\xff\xff" + b"\0" * 64)  # dim -1
    with pytest.raises(ValueError, match="dimension -1"):
        _formats.read_fvecs(path)


def test_vecs_pair_folder_and_single_file_split(tmp_path, rng):
    base = rng.standard_normal((60, 8)).astype(np.float32)
    queries = rng.standard_normal((7, 8)).astype(np.float32)
    _formats.write_fvecs(tmp_path / "sift_base.fvecs", base)
    _formats.write_fvecs(tmp_path / "sift_query.fvecs", queries)
    ds = get_dataset(tmp_path)
    assert (ds.n, ds.nq, ds.dim, ds.metric) == (60, 7, 8, "l2")
    np.testing.assert_array_equal(ds.get_queries(), queries)
    single = get_dataset(tmp_path / "sift_base.fvecs")  # < 10,000 rows: a tenth becomes queries
    assert (single.n, single.nq) == (54, 6)
    np.testing.assert_array_equal(single.get_queries(), base[-6:])
    b8 = rng.integers(0, 256, (40, 16)).astype(np.uint8)
    _formats.write_bvecs(tmp_path / "b.bvecs", b8)
    ds8 = get_dataset(tmp_path / "b.bvecs")
    assert ds8.get_database().dtype == np.float32
    np.testing.assert_array_equal(ds8.get_database(), b8[:36].astype(np.float32))


def test_texmex_folder_uses_its_groundtruth_ivecs(tmp_path, rng):
    base = rng.standard_normal((200, 6)).astype(np.float32)
    queries = rng.standard_normal((9, 6)).astype(np.float32)
    _, rI = brute_force(base, queries, 20, "l2")
    _formats.write_fvecs(tmp_path / "toy_base.fvecs", base)
    _formats.write_fvecs(tmp_path / "toy_query.fvecs", queries)
    _formats.write_ivecs(tmp_path / "toy_groundtruth.ivecs", rI)
    ds = get_dataset(tmp_path)
    _, I = ds.get_groundtruth(20)
    assert ds.gt_source == "file"
    np.testing.assert_array_equal(I, rI)
    ds.get_groundtruth(21)
    assert ds.gt_source == "computed"
    _formats.write_ivecs(tmp_path / "toy_groundtruth.ivecs", rI[:5])  # wrong number of rows
    with pytest.raises(ValueError, match=r"neighbour ids must be \(9, K\)"):
        get_dataset(tmp_path)


def test_npy_pair_and_split(tmp_path, rng):
    base = rng.standard_normal((12_000, 4)).astype(np.float32)
    np.save(tmp_path / "big.npy", base)
    ds = get_dataset(tmp_path / "big.npy", metric="ip", normalize=True)
    assert (ds.n, ds.nq, ds.metric) == (11_000, 1_000, "ip")
    np.testing.assert_allclose(np.linalg.norm(ds.get_database(), axis=1), 1.0, rtol=1e-6)
    folder = tmp_path / "pair"
    folder.mkdir()
    np.save(folder / "base.npy", base[:100].astype(np.float16))
    np.save(folder / "queries.npy", base[100:110].astype(np.float64))
    (folder / "meta.json").write_text(json.dumps({"metric": "ip"}))
    pair = get_dataset(folder)
    assert (pair.n, pair.nq, pair.metric) == (100, 10, "ip")
    assert pair.get_database().dtype == np.float32 and pair.get_queries().dtype == np.float32
    np.testing.assert_allclose(pair.get_queries(), base[100:110], rtol=1e-6)
    assert isinstance(NpyDataset(folder / "base.npy", folder / "queries.npy"), NpyDataset)
    shipped_as_path = get_dataset(REPO_DATA / SHIPPED)  # its meta.json: ip, normalized
    assert shipped_as_path.metric == "ip"
    np.testing.assert_array_equal(shipped_as_path.get_database(), get_dataset(SHIPPED).get_database())


# ---------------------------------------------------------------- HDF5

def write_ann_hdf5(path, train, test, distance, k=None):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = distance
        f.create_dataset("train", data=train)
        f.create_dataset("test", data=test)
        if k:
            D, I = brute_force(train, test, k, "l2")
            f.create_dataset("neighbors", data=I.astype(np.int32))
            f.create_dataset("distances", data=np.sqrt(np.maximum(D, 0)).astype(np.float32))


def test_hdf5_euclidean_round_trip_uses_shipped_neighbors(tmp_path, rng):
    train = rng.standard_normal((300, 10)).astype(np.float32)
    test = rng.standard_normal((20, 10)).astype(np.float32)
    write_ann_hdf5(tmp_path / "e.hdf5", train, test, "euclidean", k=5)
    ds = get_dataset(tmp_path / "e.hdf5")
    assert isinstance(ds, HDF5Dataset) and ds.metric == "l2"
    np.testing.assert_array_equal(ds.get_database(), train)
    np.testing.assert_array_equal(ds.get_queries(), test)
    D, I = ds.get_groundtruth(5)
    assert ds.gt_source == "file"
    rD, rI = brute_force(train, test, 5, "l2")
    np.testing.assert_array_equal(I, rI)
    np.testing.assert_allclose(D, rD, rtol=1e-4)  # squared distances, not the file's sqrt
    _, I8 = ds.get_groundtruth(8)  # wider than the file's neighbours: computed
    assert ds.gt_source == "computed"
    np.testing.assert_array_equal(I8[:, :5], rI)


def test_hdf5_angular_is_normalized_ip(tmp_path, rng):
    train = rng.standard_normal((200, 6)) * 5
    test = rng.standard_normal((9, 6)) * 5
    write_ann_hdf5(tmp_path / "a.h5", train, test, "angular")
    ds = get_dataset(tmp_path / "a.h5")
    assert ds.metric == "ip"
    np.testing.assert_allclose(np.linalg.norm(ds.get_database(), axis=1), 1.0, rtol=1e-6)
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    np.testing.assert_allclose(ds.get_database(), unit, rtol=1e-5, atol=1e-6)


def test_hdf5_bad_files(tmp_path, rng):
    h5py = pytest.importorskip("h5py")
    write_ann_hdf5(tmp_path / "h.hdf5", rng.random((10, 4)), rng.random((2, 4)), "hamming")
    with pytest.raises(ValueError, match="'hamming' is not supported"):
        get_dataset(tmp_path / "h.hdf5")
    with h5py.File(tmp_path / "n.hdf5", "w") as f:
        f.create_dataset("vectors", data=np.ones((3, 3)))
    with pytest.raises(ValueError, match="no 'train' or 'test'"):
        get_dataset(tmp_path / "n.hdf5")
    with h5py.File(tmp_path / "i.hdf5", "w") as f:
        f.attrs["distance"] = "euclidean"
        f.create_dataset("train", data=np.ones((5, 3)))
        f.create_dataset("test", data=np.ones((2, 3)))
        f.create_dataset("neighbors", data=np.array([[0, 1], [4, 5]]))  # id 5 >= n
    with pytest.raises(ValueError, match=r"neighbour ids must be \(2, K\) in 0..4"):
        get_dataset(tmp_path / "i.hdf5")
    (tmp_path / "g.hdf5").write_bytes(b"this is not hdf5 at all" * 10)
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        get_dataset(tmp_path / "g.hdf5")


# ---------------------------------------------------------------- ground truth

@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_groundtruth_matches_brute_force(rng, metric):
    base = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    ds = ArrayDataset(base, queries, metric=metric)
    D, I = ds.get_groundtruth(10)
    assert D.shape == I.shape == (40, 10) and D.dtype == np.float32 and I.dtype == np.int64
    rD, rI = brute_force(base, queries, 10, metric)
    np.testing.assert_array_equal(I, rI)
    np.testing.assert_allclose(D, rD, rtol=1e-4, atol=1e-4)
    step = np.diff(D, axis=1)
    assert (step <= 0).all() if metric == "ip" else (step >= 0).all()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_float_knn_blocked_over_database_and_queries(rng, metric):
    base = rng.standard_normal((1000, 8)).astype(np.float32)
    queries = rng.standard_normal((33, 8)).astype(np.float32)
    D, I = float_knn(base, queries, 7, metric, query_block=10, base_block=128)
    rD, rI = brute_force(base, queries, 7, metric)
    np.testing.assert_array_equal(I, rI)
    np.testing.assert_allclose(D, rD, rtol=1e-4, atol=1e-4)


def test_groundtruth_k_out_of_range(rng):
    ds = ArrayDataset(rng.random((5, 3)), rng.random((2, 3)))
    for k in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            ds.get_groundtruth(k)
    _, I = ds.get_groundtruth(5)  # k == n is allowed
    assert sorted(I[0]) == [0, 1, 2, 3, 4]


def test_cache_hit_miss_and_invalidation(tmp_path, rng):
    base = rng.standard_normal((400, 8)).astype(np.float32)
    queries = rng.standard_normal((15, 8)).astype(np.float32)
    first = ArrayDataset(base, queries, metric="l2")
    D1, I1 = first.get_groundtruth(10)
    assert first.gt_source == "computed"
    path = first.groundtruth_cache_path(10)
    assert path.is_file() and path.parent == tmp_path / "cache" == cache_dir()
    second = ArrayDataset(base.copy(), queries.copy(), metric="l2")  # same data, new object
    D2, I2 = second.get_groundtruth(10)
    assert second.gt_source == "cache"
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    second.get_groundtruth(3)  # one cache file (width 100 capped at n) serves smaller k
    assert second.gt_source == "cache" and second.groundtruth_cache_path(3) == path
    changed = base.copy()
    changed[0, 0] += 1e-3
    third = ArrayDataset(changed, queries, metric="l2")
    assert third.fingerprint() != first.fingerprint()
    assert third.groundtruth_cache_path(10) != path
    third.get_groundtruth(10)
    assert third.gt_source == "computed"
    as_ip = ArrayDataset(base, queries, metric="ip")  # same bytes, other metric: other key
    as_ip.get_groundtruth(10)
    assert as_ip.gt_source == "computed" and as_ip.groundtruth_cache_path(10) != path
    assert as_ip.fingerprint() != first.fingerprint()


def test_corrupted_cache_is_recomputed(rng):
    base = rng.standard_normal((300, 8)).astype(np.float32)
    queries = rng.standard_normal((12, 8)).astype(np.float32)
    ds = ArrayDataset(base, queries, metric="ip")
    _, I = ds.get_groundtruth(10)
    path = ds.groundtruth_cache_path(10)
    path.write_bytes(path.read_bytes()[:200])  # truncated zip
    again = ArrayDataset(base, queries, metric="ip")
    _, I2 = again.get_groundtruth(10)
    assert again.gt_source == "recomputed"
    np.testing.assert_array_equal(I2, I)
    # a well-formed npz whose ids were tampered with fails the checksum
    with np.load(path) as z:
        fields = {key: z[key] for key in z.files}
    fields["I"] = fields["I"][:, ::-1].copy()
    with open(path, "wb") as f:
        np.savez(f, **fields)
    third = ArrayDataset(base, queries, metric="ip")
    _, I3 = third.get_groundtruth(10)
    assert third.gt_source == "recomputed"
    np.testing.assert_array_equal(I3, I)
    fourth = ArrayDataset(base, queries, metric="ip")  # the repaired file is trusted again
    fourth.get_groundtruth(10)
    assert fourth.gt_source == "cache"


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("ANNBIN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "annbin"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "annbin"


# ---------------------------------------------------------------- errors

def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'; known: .*synthetic"):
        get_dataset("nope")
    with pytest.raises(ValueError, match="file not found"):
        get_dataset(tmp_path / "absent.fvecs")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unknown dataset file type '.csv'"):
        get_dataset(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="neither base.npy"):
        get_dataset(tmp_path)


def test_garbage_files(tmp_path, rng):
    (tmp_path / "g.npy").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="not a readable .npy file"):
        get_dataset(tmp_path / "g.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="2-D array"):
        get_dataset(tmp_path / "s.npy")
    (tmp_path / "g.fvecs").write_bytes(b"garbage!" * 3)
    with pytest.raises(ValueError, match="not a .fvecs file"):
        get_dataset(tmp_path / "g.fvecs")


def test_nan_and_inf_data_rejected(tmp_path, rng):
    x = rng.standard_normal((50, 4))
    x[47, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match="NaN or infinite values"):
        get_dataset(tmp_path / "nan.npy")
    y = rng.standard_normal((50, 4))
    y[3, 0] = 1e300  # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"database has NaN or infinite values \(first in row 3\)"):
        ArrayDataset(y, y[:2]).load()
    with pytest.raises(ValueError, match="dim 4, queries have dim 3"):
        ArrayDataset(y[:, :4] * 0, y[:2, :3]).load()
    with pytest.raises(ValueError, match="all zeros"):
        ArrayDataset(np.zeros((3, 4)), np.ones((1, 4)), metric="ip", normalize=True).load()


# ---------------------------------------------------------------- synthetic

def test_synthetic_is_seeded_and_has_neighbours():
    a = SyntheticDataset(n=3000, nq=100, dim=64, seed=1)
    b = SyntheticDataset(n=3000, nq=100, dim=64, seed=1)
    np.testing.assert_array_equal(a.get_database(), b.get_database())
    assert a.fingerprint() == b.fingerprint()
    c = SyntheticDataset(n=3000, nq=50, dim=64, seed=1)  # other nq, same base
    np.testing.assert_array_equal(c.get_database(), a.get_database())
    assert not np.array_equal(SyntheticDataset(n=3000, nq=100, dim=64, seed=2).get_database(), a.get_database())
    xb, xq = a.get_database(), a.get_queries()
    assert xb.dtype == np.float32 and xb.shape == (3000, 64) and xq.shape == (100, 64)
    with pytest.raises(ValueError, match="read-only"):  # a cached fingerprint must stay true
        xb[0, 0] = 1.0
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, rtol=1e-5)
    # sign codes find a real share of the float top-10 (random codes would find ~0.003)
    _, I = a.get_groundtruth(10)
    ham = (xq[:, None, :] > 0) != (xb[None, :, :] > 0)
    J = np.argsort(ham.sum(axis=2), axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(i) & set(j)) / 10 for i, j in zip(I, J)])
    assert recall > 0.3
    l2 = SyntheticDataset(n=100, nq=5, dim=8, metric="l2")
    assert l2.metric == "l2" and not np.allclose(np.linalg.norm(l2.get_database(), axis=1), 1.0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        SyntheticDataset(n=0)


def test_named_synthetic_presets_and_listing():
    small = get_dataset("synthetic-small")
    assert (small.name, small.n, small.nq, small.dim, small.metric) == ("synthetic-small", 2000, 100, 128, "ip")
    rows = {row["name"]: row for row in list_datasets()}
    assert {"synthetic", "synthetic-small", "synthetic-1m", SHIPPED} <= set(rows)
    assert rows["synthetic-small"]["n"] == 2000
    assert (rows["synthetic-1m"]["n"], rows["synthetic-1m"]["dim"]) == (1_000_000, 128)  # listed, not generated
    assert set(rows[SHIPPED]) == {"name", "n", "nq", "dim", "metric", "description", "status"}
    assert rows[SHIPPED]["status"] == "shipped" and rows["synthetic"]["status"] == "generated"
    built = build_dataset("synthetic-small", k=10)
    assert built["gt_source"] == "computed" and Path(built["cache"]).is_file()
    assert build_dataset("synthetic-small", k=10)["gt_source"] == "cache"


# ---------------------------------------------------------------- the shipped real set

def test_shipped_dataset_shapes_normalized_and_checksums():
    meta = json.loads((REPO_DATA / SHIPPED / "meta.json").read_text())
    for fname, digest in meta["sha256"].items():
        assert hashlib.sha256((REPO_DATA / SHIPPED / fname).read_bytes()).hexdigest() == digest
    raw = np.load(REPO_DATA / SHIPPED / "base.npy")
    assert raw.dtype == np.float16
    ds = get_dataset(SHIPPED)
    assert isinstance(ds, ShippedDataset) and ds.metric == "ip"
    xb, xq = ds.get_database(), ds.get_queries()
    assert xb.dtype == xq.dtype == np.float32
    assert xb.shape == (meta["n"], meta["dim"]) == (20_000, 384) and xq.shape == (meta["nq"], 384) == (1_000, 384)
    np.testing.assert_allclose(np.linalg.norm(raw.astype(np.float32), axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(xq, axis=1), 1.0, atol=1e-5)
    ds.verify()
    # queries are held out: no query vector repeats a base vector
    assert not set(map(bytes, raw)) & set(map(bytes, np.load(REPO_DATA / SHIPPED / "queries.npy")))


def test_shipped_data_is_package_data(tmp_path, monkeypatch):
    """The default data folder is inside the package (so a wheel has it); ANNBIN_DATA_DIR still wins."""
    import annbin

    assert data_dir() == Path(annbin.__file__).resolve().parent / "bench" / "data" == REPO_DATA
    assert SHIPPED in {row["name"] for row in list_datasets() if row["status"] == "shipped"}
    monkeypatch.setenv("ANNBIN_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path and data_dir(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(ValueError, match="set ANNBIN_DATA_DIR"):
        get_dataset(SHIPPED)


def test_shipped_verify_detects_tampering(tmp_path, monkeypatch):
    copy = tmp_path / "data" / SHIPPED
    shutil.copytree(REPO_DATA / SHIPPED, copy)
    monkeypatch.setenv("ANNBIN_DATA_DIR", str(tmp_path / "data"))
    info = build_dataset(SHIPPED, k=10)
    assert info["n"] == 20_000 and info["gt_source"] == "computed"
    x = np.load(copy / "queries.npy")
    x[0, 0] = -x[0, 0] if x[0, 0] != 0 else 1
    np.save(copy / "queries.npy", x)
    with pytest.raises(ValueError, match="does not match meta.json"):
        build_dataset(SHIPPED)
    with pytest.raises(ValueError, match="shipped dataset 'other' not found"):
        ShippedDataset("other")


# ---------------------------------------------------------------- sets built by a script (RECIPES)

FAKE_BUILD_SCRIPT = '''
import argparse, hashlib, json, sys
from pathlib import Path
import numpy as np
ap = argparse.ArgumentParser()
ap.add_argument("--out", type=Path, required=True)
out = ap.parse_args().out
if {fail}:
    sys.exit(3)
x = np.random.default_rng(0).standard_normal((230, 16)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
out.mkdir(parents=True, exist_ok=True)
np.save(out / "base.npy", x[:200].astype(np.float16))
np.save(out / "queries.npy", x[200:].astype(np.float16))
sha = {{f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in ("base.npy", "queries.npy")}}
meta = {{"name": "fake_tiny", "description": "a tiny fake", "metric": "ip", "normalized": True, "n": 200,
        "nq": 30, "dim": 16, "files": {{"base": "base.npy", "queries": "queries.npy"}}, "sha256": sha}}
(out / "meta.json").write_text(json.dumps(meta))
'''


def _fake_recipe(tmp_path, monkeypatch, *, modules=("numpy",), fail=False):
    script = tmp_path / "build_fake_tiny.py"
    script.write_text(FAKE_BUILD_SCRIPT.format(fail=fail))
    recipe = Recipe(name="fake_tiny", script=str(script), modules=modules, install="pip install fake-model==1.0",
                    description="a tiny fake", n=200, nq=30, dim=16)
    monkeypatch.setitem(RECIPES, "fake_tiny", recipe)
    return recipe


def test_recipe_not_built_then_built_and_loaded(tmp_path, monkeypatch):
    _fake_recipe(tmp_path, monkeypatch)
    rows = {row["name"]: row for row in list_datasets()}
    assert rows["fake_tiny"]["status"] == "not built" and rows["fake_tiny"]["n"] == 200
    with pytest.raises(ValueError, match="not built.*annbin datasets build fake_tiny"):
        get_dataset("fake_tiny")
    info = build_dataset("fake_tiny", k=10)
    assert info["built"] and info["gt_source"] == "computed" and (info["n"], info["nq"], info["dim"]) == (200, 30, 16)
    folder = built_dir() / "fake_tiny"
    assert folder == cache_dir() / "datasets" / "fake_tiny" and (folder / "meta.json").is_file()
    assert {row["name"]: row for row in list_datasets()}["fake_tiny"]["status"] == "built"
    ds = get_dataset("fake_tiny")
    assert isinstance(ds, ShippedDataset) and ds.metric == "ip"
    np.testing.assert_allclose(np.linalg.norm(ds.get_database(), axis=1), 1.0, atol=1e-5)
    again = build_dataset("fake_tiny", k=10)  # already built: not rerun, ground truth from the cache
    assert not again["built"] and again["gt_source"] == "cache"


def test_recipe_checksum_mismatch_fails_until_rebuilt(tmp_path, monkeypatch):
    _fake_recipe(tmp_path, monkeypatch)
    build_dataset("fake_tiny", k=5)
    base = built_dir() / "fake_tiny" / "base.npy"
    raw = bytearray(base.read_bytes())
    raw[-1] ^= 0xFF  # corrupt one byte of the last vector
    base.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match meta.json"):
        build_dataset("fake_tiny", k=5)
    assert build_dataset("fake_tiny", k=5, rebuild=True)["built"]


def test_recipe_missing_requirements_name_the_install_command(tmp_path, monkeypatch):
    _fake_recipe(tmp_path, monkeypatch, modules=("numpy", "annbin_no_such_module_xyz"))
    with pytest.raises(ValueError, match=r"annbin_no_such_module_xyz.*pip install fake-model==1\.0.*--python"):
        build_dataset("fake_tiny")
    assert not (built_dir() / "fake_tiny").exists()
    # an explicit interpreter skips the check: the script itself must say what it lacks
    assert build_dataset("fake_tiny", k=5, python=sys.executable)["built"]


def test_recipe_script_failure_is_reported(tmp_path, monkeypatch):
    _fake_recipe(tmp_path, monkeypatch, fail=True)
    with pytest.raises(ValueError, match="failed \\(exit code 3\\)"):
        build_dataset("fake_tiny")


def test_cli_lists_and_refuses_unbuildable_recipe(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from annbin.bench.cli import main

    _fake_recipe(tmp_path, monkeypatch, modules=("annbin_no_such_module_xyz",))
    listing = CliRunner().invoke(main, ["datasets"])
    assert listing.exit_code == 0
    line = next(ln for ln in listing.output.splitlines() if "fake_tiny" in ln)
    assert "not built" in line
    real = next(ln for ln in listing.output.splitlines() if "m2v_mpnet_500k" in ln)
    assert "not built" in real  # ANNBIN_CACHE is an empty temp folder here
    result = CliRunner().invoke(main, ["datasets", "build", "fake_tiny"])
    assert result.exit_code == 2 and "pip install fake-model==1.0" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- sets read in prefixes (m2v_mpnet_10m)

def test_read_npy_rows_reads_a_block_without_loading_the_file(tmp_path):
    from annbin.bench.formats import read_npy_rows

    x = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    got = read_npy_rows(tmp_path / "x.npy", 12, 31)
    assert got.dtype == np.float32 and np.array_equal(got, x[12:31].astype(np.float32))
    assert read_npy_rows(tmp_path / "x.npy", 50, 50).shape == (0, 7)
    with pytest.raises(ValueError, match="rows 40:60"):
        read_npy_rows(tmp_path / "x.npy", 40, 60)
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-30])
    with pytest.raises(ValueError, match="truncated"):
        read_npy_rows(tmp_path / "cut.npy", 0, 50)
    np.save(tmp_path / "one.npy", np.arange(5.0))
    with pytest.raises(ValueError, match="2-D"):
        read_npy_rows(tmp_path / "one.npy", 0, 1)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_prefix_knn_equals_exact_search_of_each_prefix(tmp_path, metric):
    from annbin.bench.groundtruth import prefix_knn

    rng = np.random.default_rng(1)
    base, queries = rng.standard_normal((300, 12)).astype(np.float32), rng.standard_normal((9, 12)).astype(np.float32)
    np.save(tmp_path / "b.npy", base)
    seen = []
    out = prefix_knn(tmp_path / "b.npy", queries, [40, 130, 300], 20, metric, block=64,
                     done=lambda n, D, I: seen.append(n))
    assert seen == [40, 130, 300]  # a block never crosses a prefix's end, so each is exact as it ends
    for n, (D, I) in out.items():
        want_D, want_I = brute_force(base[:n], queries, 20, metric)
        np.testing.assert_array_equal(I, want_I)
        np.testing.assert_allclose(D, want_D, rtol=1e-5, atol=1e-5)


def _prefix_recipe(tmp_path, monkeypatch):
    recipe = _fake_recipe(tmp_path, monkeypatch)
    prefixed = Recipe(**{**recipe.__dict__, "prefixes": (50, 200)})
    monkeypatch.setitem(RECIPES, "fake_tiny", prefixed)
    return prefixed


def test_a_prefix_recipe_is_never_loaded_whole_and_its_truth_is_cached(tmp_path, monkeypatch):
    from annbin.bench import datasets as datasets_module
    from annbin.bench.datasets import prefix_truth

    _prefix_recipe(tmp_path, monkeypatch)
    info = build_dataset("fake_tiny", k=10)
    assert info["built"] and info["gt_source"] == "prefixes" and info["n"] == 200
    with pytest.raises(ValueError, match="too big to load at once"):
        get_dataset("fake_tiny")
    folder = built_dir() / "fake_tiny"
    base = np.load(folder / "base.npy").astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)  # a "normalized" set is ranked on unit rows
    queries = np.load(folder / "queries.npy").astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = prefix_truth("fake_tiny", k=10)
    for n in (50, 200):
        np.testing.assert_array_equal(truth[n], brute_force(base[:n], queries, 10, "ip")[1])

    def no_pass(*args, **kwargs):
        raise AssertionError("recomputed a cached prefix")

    monkeypatch.setattr(datasets_module, "prefix_knn", no_pass)
    again = prefix_truth("fake_tiny", [50], k=10)
    np.testing.assert_array_equal(again[50], truth[50])


def test_a_prefix_recipe_with_a_corrupted_base_is_refused(tmp_path, monkeypatch):
    _prefix_recipe(tmp_path, monkeypatch)
    build_dataset("fake_tiny", k=5)
    base = built_dir() / "fake_tiny" / "base.npy"
    raw = bytearray(base.read_bytes())
    raw[-1] ^= 0xFF
    base.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match meta.json"):
        build_dataset("fake_tiny", k=5)


# ---------------------------------------------------------------- the m2v_mpnet_500k build script's helpers

@pytest.fixture(scope="module")
def m2v_script():
    """The build script as a module (its top level imports only the standard library and numpy)."""
    path = BUILD_SCRIPTS / RECIPES["m2v_mpnet_500k"].script
    spec = importlib.util.spec_from_file_location("build_m2v_mpnet_500k", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_m2v_script_text_readers(tmp_path, m2v_script):
    gcide = (
        "00-database-info\n   header\n\n Begin file 1 of 26:  Letter A (Version 0.48)\n\n"
        'Abdication \\Ab`di*ca"tion\\, n. [L. abdicatio: cf. F.\n   abdication.]\n'
        "   The act of abdicating; the renunciation of a high office, dignity, or trust.\n"
        "   [1913 Webster]\n\n"
        "            The apostolical benediction dichotomizes all good\n"
        "            things into grace and peace.          --Bp. Hall.\n"
        "      [1913 Webster]\n\n"
        "Abdicator \\Ab\"di*ca`tor\\, n.\n   One who abdicates.\n   [1913 Webster]\n"
        "   2. (Zool.) Having abdominal fins; as, abdominal fishes. [R.]\n   [1913 Webster]\n"
    )
    gz = tmp_path / "gcide.dict.dz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(gcide)
    assert list(m2v_script.gcide_texts(gz)) == [
        "The act of abdicating; the renunciation of a high office, dignity, or trust.",
        "The apostolical benediction dichotomizes all good things into grace and peace.",
        "Having abdominal fins; as, abdominal fishes.",
    ]  # "One who abdicates." has 3 words: dropped
    wn = tmp_path / "wordnet"
    wn.mkdir()
    (wn / "data.noun").write_text('  1 licence header line\n00001740 03 n 01 entity 0 000 | that which is '
                                  'perceived to exist; "the entity was seen near the river"; "ok"  \n')
    for pos in ("verb", "adj", "adv"):
        (wn / f"data.{pos}").write_text("")
    assert list(m2v_script.wordnet_texts(wn)) == ["that which is perceived to exist",
                                                  "the entity was seen near the river"]
    (tmp_path / "pod").mkdir()
    (tmp_path / "pod" / "x.pod").write_text("=head1 NAME\n\nThe B<print> function writes C<< $x >> to a "
                                            "L<file handle|perlfunc>.X<print> It returns true.\n\n    my $code = 1;\n")
    assert list(m2v_script.pod_texts(tmp_path / "pod")) == ["The print function writes $x to a file handle."]
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "a.html").write_text("<p>Call <code>open()</code> to read a file.¶ Then close it "
                                              "again, please.</p><pre><p>not this one at all</p></pre>")
    assert list(m2v_script.html_texts(tmp_path / "html")) == ["Call open() to read a file.",
                                                             "Then close it again, please."]
    assert not m2v_script.natural("x = 1 + 2 * (3 / 4)")


def test_m2v_script_sign_code_stats_match_brute_force(rng, m2v_script):
    base = rng.standard_normal((700, 64)).astype(np.float16)
    queries = rng.standard_normal((9, 64)).astype(np.float16)
    stats = m2v_script.sign_code_stats(base, queries, widths=(16, 64), k=5, block=128)
    for w in (16, 64):
        bb, qb = base[:, :w] > 0, queries[:, :w] > 0
        ham = (qb[:, None, :] != bb[None, :, :]).sum(2)
        kth = np.sort(ham, axis=1)[:, 4]
        assert stats["widths"][str(w)]["kth_nn_distance"]["median"] == float(np.median(kth))
    ham = ((queries[:, None, :] > 0) != (base[None, :, :] > 0)).sum(2)
    found = np.argsort(ham, axis=1, kind="stable")[:, :5]
    true = np.argsort(-(queries.astype(np.float32) @ base.astype(np.float32).T), axis=1)[:, :5]
    want = sum(len(set(t) & set(f)) for t, f in zip(true, found)) / true.size
    assert stats["widths"]["64"]["recall_at_k_vs_float"] == pytest.approx(want)
    assert stats["widths"]["16"]["recall_at_k_vs_float"] is None
