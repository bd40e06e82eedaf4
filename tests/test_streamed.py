"""Streamed builds: adds of any size, any number of times (small first adds held until FIT_ROWS rows,
then fitted as one add of them would be), and ``add_from`` over a ``.npy`` file, a directory of
``.npy`` shards and Parquet, a chunk at a time, in RAM bounded by the index and a chunk."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import annbin
from annbin._extras import MissingExtraError
from annbin.embed import _contents
from annbin.embed.encoder import Encoder
from annbin.embed.first_stage import FALLBACK_SPEC, FIT_ROWS
from annbin.embed.sources import open_source

DIM, N, NQ, K = 64, 3000, 30, 10
CUTS = (0, 1, 17, 400, 401, 1111, 2500, N)  # seven uneven adds


def _clustered(seed: int, n: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, dim)) * 3
    x = centres[rng.integers(0, 10, n)] + rng.standard_normal((n, dim))
    return (x * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _clustered(1, N), _clustered(2, NQ)


def _same_results(a: annbin.BinaryEmbeddingIndex, b: annbin.BinaryEmbeddingIndex, q: np.ndarray) -> None:
    for got, want in zip(a.search(q, K), b.search(q, K)):
        np.testing.assert_array_equal(got, want)


def _held(index: annbin.BinaryEmbeddingIndex) -> bool:
    """Rows stored and counted, no first stage yet (read without fitting them)."""
    return index._contents.index is None and index._contents.rows.rows > 0


def _untouched(index: annbin.BinaryEmbeddingIndex) -> bool:
    return index.ntotal == 0 and index.dim is None and index.vectors is None


# --- 1. adds of any size: held rows, fitted as one add ---------------------------------------------
CONFIGS = {  # name: (spec, keywords); each fits something on its first rows
    "rq-hnsw": ("rq-hnsw:M=16,ef_construction=40", {"threads": 1}),  # k-means centroids
    "rq-hnsw-itq": ("rq-hnsw:M=16,ef_construction=40", {"threads": 1, "rotation": "itq", "metric": "l2"}),
    "rq-ivf": ("rq-ivf:nlist=64", {"threads": 1}),  # k-means centroids of the lists
    "flat-median-itq": ("flat", {"thresholds": "median", "rotation": "itq"}),
    "flat-mean-rerank": ("flat", {"thresholds": "mean", "rerank": "asymmetric", "rerank_bits": 2, "metric": "l2"}),
    "float16-store": ("flat", {"thresholds": "median", "store_dtype": "float16", "metric": "ip"}),  # held as float32 copies
    "ram-store": ("flat", {"thresholds": "median", "store_vectors": "ram"}),
    "codes-only": ("flat", {"thresholds": "mean", "rescore": None, "rerank": "asymmetric", "store_vectors": None}),
}


def _make(name: str, **extra: object) -> annbin.BinaryEmbeddingIndex:
    spec, kwargs = CONFIGS[name]
    if spec.startswith("rq-"):
        pytest.importorskip("rabitqlib")
    return annbin.BinaryEmbeddingIndex(spec, **{**kwargs, **extra})


@pytest.mark.parametrize("name", list(CONFIGS))
def test_seven_uneven_adds_give_what_one_add_gives(name, data):
    x, q = data
    one = _make(name)
    one._contents.fit_rows = N  # this one add is fitted at once, as every add was before
    one.add(x)
    assert not _held(one)
    chunks = _make(name)
    for lo, hi in zip(CUTS, CUTS[1:]):
        chunks.add(x[lo:hi])
    assert _held(chunks) and chunks.ntotal == N and chunks.dim == DIM and N < FIT_ROWS
    if name == "rq-ivf":  # rabitqlib's IvfIndex draws its rotation unseeded: two builds rank alike, not equally
        every = {"nprobe": 64, "oversample": 10}  # every list, 10 x k rescored: both near exact
        found, want = chunks.search(q, K, params=every)[1], one.search(q, K, params=every)[1]
        assert np.mean([len(set(a) & set(b)) / K for a, b in zip(found, want)]) >= 0.9
    else:
        _same_results(chunks, one, q)  # the first search fits the held rows: one add of all N
    assert not _held(chunks) and chunks.index.ntotal == N
    for part in ("thresholds", "matrix"):
        a, b = getattr(chunks.encoder, part), getattr(one.encoder, part)
        assert (a is None and b is None) or np.array_equal(a, b)
    if one.vectors is not None:
        np.testing.assert_array_equal(np.asarray(chunks.vectors), np.asarray(one.vectors))
    assert chunks.memory_bytes() == one.memory_bytes()
    chunks.add(x[:100])  # after the fit an add goes straight in
    assert chunks.index.ntotal == N + 100


@pytest.mark.parametrize("name", ["flat-median-itq", "rq-hnsw"])
def test_adds_past_fit_rows_fit_on_the_first_fit_rows(name, data, monkeypatch):
    monkeypatch.setattr(_contents, "FIT_ROWS", 1000)
    x, q = data
    chunks, one = _make(name), _make(name)
    one.add(x)  # >= FIT_ROWS: fitted on all 3000
    for lo, hi in zip(CUTS[:5], CUTS[1:5]):
        chunks.add(x[lo:hi])
    assert _held(chunks) and chunks.ntotal == 401
    chunks.add(x[401:1111])  # brings 1111 >= 1000 rows: fitted on those, and all of them inserted
    assert not _held(chunks) and chunks._contents.index.ntotal == 1111
    for lo, hi in zip(CUTS[5:], CUTS[6:]):
        chunks.add(x[lo:hi])
    expect = Encoder(rotation=chunks.encoder.rotation, thresholds=chunks.encoder.get_params()["thresholds"]).fit(
        x[:1111] / np.linalg.norm(x[:1111], axis=1, keepdims=True))
    np.testing.assert_array_equal(chunks.encoder.thresholds, expect.thresholds)
    exact = np.argsort(-(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T, axis=1)[:, :K]

    def recall(index: annbin.BinaryEmbeddingIndex) -> float:
        return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(index.search(q, K)[1], exact)]))

    assert chunks.ntotal == N and abs(recall(chunks) - recall(one)) <= 0.05  # the same recall within noise


def test_stages_trained_by_their_first_add_are_not_held(data):
    x, _ = data
    ivf = annbin.BinaryEmbeddingIndex("ivf:nlist=500", thresholds="median", metric="ip")
    with pytest.raises(ValueError, match="at least nlist=500"):
        ivf.add(x[:100])  # its refusal stays at the add
    assert _untouched(ivf)
    deferred = annbin.BinaryEmbeddingIndex(FALLBACK_SPEC, rotation="random")  # builds from every row at build() anyway
    deferred.add(x[:100])
    assert deferred._contents.index is not None
    plain = annbin.BinaryEmbeddingIndex("flat")  # nothing fitted on the data: nothing held
    plain.add(x[:100])
    assert plain._contents.index is not None


FORCES = {  # what fits the held rows first
    "search": lambda ix, q: ix.search(q, K),
    "range_search": lambda ix, q: ix.range_search(q, 10),
    "build": lambda ix, q: ix.build(),
    "index": lambda ix, q: ix.index,
    "encoder": lambda ix, q: ix.encoder,
    "thresholds": lambda ix, q: ix.thresholds,
    "memory_bytes": lambda ix, q: ix.memory_bytes(),
    "remove_ids": lambda ix, q: ix.remove_ids([3]),
    "set_search_params": lambda ix, q: ix.set_search_params(oversample=5),
}


@pytest.mark.parametrize("force", list(FORCES))
def test_whatever_reads_the_first_stage_fits_the_held_rows(force, data):
    x, q = data
    index = _make("flat-median-itq")
    index.add(x[:500])
    index.add(x[500:700])
    assert _held(index) and index.ntotal == 700
    FORCES[force](index, q)
    assert not _held(index) and index._contents.index.ntotal == (699 if force == "remove_ids" else 700)


def test_held_rows_save_load_and_reset(data, tmp_path):
    x, q = data
    index = _make("flat-median-itq")
    index.add(x[:500], ids=np.arange(500) * 7)
    index.save(tmp_path / "ix")  # fits them first
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "ix")
    assert back.ntotal == 500 and not _held(back)
    _same_results(back, index, q)
    np.testing.assert_array_equal(back.get_ids(), np.arange(500) * 7)
    held = _make("flat-median-itq")
    held.add(x[:500])
    held.reset()
    assert _untouched(held) and held.search(q, K)[1].max() == -1
    held.add(x[:300])
    assert _held(held) and held.ntotal == 300


def _failing_fit(self: Encoder, v: np.ndarray) -> Encoder:
    raise RuntimeError("fit failed")


def test_a_fit_that_fails_leaves_the_rows_held(data, monkeypatch):
    x, q = data
    want = _make("flat-median-itq")
    want.add(x[:800])
    index = _make("flat-median-itq")
    index.add(x[:800])
    fit = Encoder.fit
    monkeypatch.setattr(Encoder, "fit", _failing_fit)
    with pytest.raises(RuntimeError, match="fit failed"):
        index.search(q, K)
    assert _held(index) and index.ntotal == 800 and not index._contents.encoder.is_fitted
    monkeypatch.setattr(Encoder, "fit", fit)
    _same_results(index, want, q)


def test_an_add_whose_fit_fails_changes_nothing(data, monkeypatch, tmp_path):
    monkeypatch.setattr(_contents, "FIT_ROWS", 1000)
    x, q = data
    want = _make("flat-median-itq")
    want.add(x[:1200])
    index = _make("flat-median-itq", store_vectors=tmp_path / "v.npy")
    index.add(x[:600])
    size = (tmp_path / "v.npy").stat().st_size
    fit = Encoder.fit
    monkeypatch.setattr(Encoder, "fit", _failing_fit)
    with pytest.raises(RuntimeError, match="fit failed"):
        index.add(x[600:1200])  # the add that brings FIT_ROWS fits, and fails
    assert _held(index) and index.ntotal == 600 and (tmp_path / "v.npy").stat().st_size == size
    monkeypatch.setattr(Encoder, "fit", fit)
    index.add(x[600:1200])
    assert not _held(index)
    _same_results(index, want, q)


def test_concurrent_first_searches_fit_once(data, monkeypatch):
    x, q = data
    index = _make("flat-median-itq")
    index.add(x)
    starts = []
    start = _contents.Contents._start

    def counting(self, rows):
        starts.append(rows.shape[0])
        return start(self, rows)

    monkeypatch.setattr(_contents.Contents, "_start", counting)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    threads = [threading.Thread(target=lambda: results.append(index.search(q, K))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert starts == [N] and len(results) == 4
    for S, I in results[1:]:
        np.testing.assert_array_equal(S, results[0][0])
        np.testing.assert_array_equal(I, results[0][1])


# --- 2. add_from: every source kind round-trips ---------------------------------------------------
def _reference(x: np.ndarray, ids: np.ndarray | None = None, spec: str = "flat", **kwargs: object) -> annbin.BinaryEmbeddingIndex:
    index = annbin.BinaryEmbeddingIndex(spec, thresholds="median", **kwargs)  # type: ignore[arg-type]
    index.add(x, ids)
    return index


def _from(source: Path, spec: str = "flat", **kwargs: object) -> annbin.BinaryEmbeddingIndex:
    index = annbin.BinaryEmbeddingIndex(spec, thresholds="median")
    assert index.add_from(source, **kwargs) == N  # type: ignore[arg-type]
    return index


def test_npy_file_round_trips_with_ids(data, tmp_path):
    x, q = data
    np.save(tmp_path / "x.npy", x)
    ids = np.random.default_rng(0).permutation(10 * N)[:N].astype(np.int64)
    index = _from(tmp_path / "x.npy", chunk_rows=333, ids=ids)  # 333 does not divide 3000
    want = _reference(x, ids)
    _same_results(index, want, q)
    np.testing.assert_array_equal(index.get_ids(), ids)


@pytest.mark.parametrize("layout", ["float16", "float64", "fortran"])
def test_npy_dtypes_and_fortran_order(layout, data, tmp_path):
    x, q = data
    a = x.astype(np.float16) if layout == "float16" else x.astype(np.float64)
    np.save(tmp_path / "x.npy", np.asfortranarray(a) if layout == "fortran" else a)
    _same_results(_from(tmp_path / "x.npy", chunk_rows=1000), _reference(a), q)


def test_rq_hnsw_from_a_file_is_one_add(data, tmp_path):
    pytest.importorskip("rabitqlib")
    x, q = data
    np.save(tmp_path / "x.npy", x)
    index = annbin.BinaryEmbeddingIndex("rq-hnsw:M=16,ef_construction=40", threads=1)
    index.add_from(tmp_path / "x.npy", chunk_rows=256)  # 12 adds held, one build
    want = annbin.BinaryEmbeddingIndex("rq-hnsw:M=16,ef_construction=40", threads=1)
    want.add(x)
    _same_results(index, want, q)


def test_npy_shards_are_read_in_name_order(data, tmp_path):
    x, q = data
    bounds = [0, 1000, 1001, 2000, N]
    for i in reversed(range(4)):  # written last to first: the order is the names'
        np.save(tmp_path / f"part_{i:02d}.npy", x[bounds[i]:bounds[i + 1]])
    (tmp_path / "README.txt").write_text("not a shard")
    np.save(tmp_path / ".hidden.npy", x[:5])  # hidden: skipped
    _same_results(_from(tmp_path, chunk_rows=700), _reference(x), q)
    sizes = [c.shape[0] for c in open_source(tmp_path).chunks(700)]  # chunks span shard boundaries
    assert sizes == [700, 700, 700, 700, 200]


def _write_parquet(path: Path, x: np.ndarray, kind: str, *, row_group_size: int = 256) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    flat = pa.array(x.ravel())
    if kind == "fixed":
        column = pa.FixedSizeListArray.from_arrays(flat, x.shape[1])
    else:
        offsets = pa.array(np.arange(0, x.size + 1, x.shape[1]), pa.int64() if kind == "large" else pa.int32())
        column = (pa.LargeListArray if kind == "large" else pa.ListArray).from_arrays(offsets, flat)
    table = pa.table({"id": np.arange(x.shape[0]), "embedding": column})
    pq.write_table(table, path, row_group_size=row_group_size)


@pytest.mark.parametrize("kind", ["fixed", "list", "large"])
def test_parquet_file_round_trips(kind, data, tmp_path):
    x, q = data
    values = x.astype(np.float64) if kind == "large" else x
    _write_parquet(tmp_path / "x.parquet", values, kind)
    _same_results(_from(tmp_path / "x.parquet", chunk_rows=1000), _reference(values), q)


def test_parquet_directory_round_trips(data, tmp_path):
    x, q = data
    root = tmp_path / "ds"
    (root / "b").mkdir(parents=True)
    _write_parquet(root / "a.parquet", x[:1200], "fixed", row_group_size=100)
    _write_parquet(root / "b" / "part-0.parquet", x[1200:2000], "list")
    _write_parquet(root / "c.parquet", x[2000:], "fixed")
    (root / "_SUCCESS").write_text("")
    ids = np.arange(N, dtype=np.int64) + 10_000
    index = _from(root, chunk_rows=512, ids=ids)
    _same_results(index, _reference(x, ids), q)


def test_chunk_rows_one_on_a_tiny_set(tmp_path):
    x = _clustered(5, 7)
    np.save(tmp_path / "x.npy", x)
    index = annbin.BinaryEmbeddingIndex("flat", thresholds="median")
    assert index.add_from(tmp_path / "x.npy", chunk_rows=1) == 7
    assert [c.shape[0] for c in open_source(tmp_path / "x.npy").chunks(1)] == [1] * 7
    _same_results(index, _reference(x), x[:3])


def test_add_from_appends_to_an_index_holding_rows(data, tmp_path):
    x, q = data
    np.save(tmp_path / "rest.npy", x[1000:])
    index = annbin.BinaryEmbeddingIndex("flat", thresholds="median")
    index.add(x[:1000])
    assert index.add_from(tmp_path / "rest.npy", chunk_rows=512) == N - 1000
    _same_results(index, _reference(x), q)


def test_progress_bar_on_stderr_when_asked(data, tmp_path, capsys):
    x, _ = data
    np.save(tmp_path / "x.npy", x)
    _from(tmp_path / "x.npy", progress=True)
    err = capsys.readouterr().err
    assert "add_from x.npy" in err and "rows" in err and "3.00k/3.00k" in err
    _from(tmp_path / "x.npy", progress=False)
    _from(tmp_path / "x.npy")  # None: only when stderr is a terminal (not under pytest)
    assert capsys.readouterr().err == ""


# --- 3. bad input: one clear error, nothing added where it can be checked up front -----------------
def _bad_npy(tmp_path: Path, name: str) -> Path:
    x = _clustered(3, 50)
    path = tmp_path / "bad"
    path.mkdir()
    if name == "missing":
        return path / "nowhere.npy"
    if name == "other-kind":
        (path / "x.npy").write_text("id,embedding\n")
        return path / "x.npy"
    if name == "empty-dir":
        (path / "notes.txt").write_text("")
        return path
    if name == "mixed-dir":
        np.save(path / "a.npy", x)
        _write_parquet(path / "b.parquet", x, "fixed")
        return path
    if name == "dims":  # the bad shard is the last one: checked before the first is added
        np.save(path / "a.npy", x)
        np.save(path / "b.npy", x[:, :32])
        return path
    if name == "one-d":
        np.save(path / "x.npy", x[0])
        return path / "x.npy"
    if name == "int-dtype":
        np.save(path / "x.npy", (x * 100).astype(np.int32))
        return path / "x.npy"
    if name == "truncated":
        np.save(path / "x.npy", x)
        data = (path / "x.npy").read_bytes()
        (path / "x.npy").write_bytes(data[:-100])
        return path / "x.npy"
    if name in ("no-column", "int-column", "string-column"):
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        columns = {"no-column": {"vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)},
                   "int-column": {"embedding": pa.array([[1, 2]] * 50)},
                   "string-column": {"embedding": pa.array(["a"] * 50)}}[name]
        pq.write_table(pa.table(columns), path / "x.parquet")
        return path / "x.parquet"
    raise AssertionError(name)


BAD = {  # name: (error, message)
    "missing": (ValueError, "no such file or directory"),
    "other-kind": (ValueError, "neither a .npy nor a Parquet file"),
    "empty-dir": (ValueError, "holds no .npy or Parquet"),
    "mixed-dir": (ValueError, "both .npy and Parquet"),
    "dims": (ValueError, "b.npy holds rows of dim 32, but a.npy's are of dim 64"),
    "one-d": (ValueError, r"shape \(64,\): embeddings must be 2-D"),
    "int-dtype": (TypeError, "dtype int32: embeddings must be float"),
    "truncated": (ValueError, "truncated"),
    "no-column": (ValueError, "no column 'embedding' .*pass column="),
    "int-column": (TypeError, "list<.*int64>: embeddings must be a list of floats"),
    "string-column": (TypeError, "string: embeddings must be a list of floats"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_sources_are_refused_before_anything_is_added(name, tmp_path):
    error, message = BAD[name]
    source = _bad_npy(tmp_path, name)
    index = annbin.BinaryEmbeddingIndex("flat", thresholds="median")
    with pytest.raises(error, match=message):
        index.add_from(source)
    assert _untouched(index)


def test_bad_arguments_are_refused_before_anything_is_added(data, tmp_path):
    x, _ = data
    np.save(tmp_path / "x.npy", x)
    index = annbin.BinaryEmbeddingIndex("flat", thresholds="median")
    with pytest.raises(TypeError, match="source must be a path"):
        index.add_from(x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        index.add_from(tmp_path / "x.npy", chunk_rows=0)
    with pytest.raises(ValueError, match="ids length mismatch"):
        index.add_from(tmp_path / "x.npy", ids=np.arange(N - 1))
    with pytest.raises(ValueError, match="duplicates"):
        index.add_from(tmp_path / "x.npy", ids=np.zeros(N, np.int64))
    assert _untouched(index)
    index.add(x[:10, :32].copy(), ids=np.arange(10) + 5)
    with pytest.raises(ValueError, match="dim 64, but the index's dim is 32"):
        index.add_from(tmp_path / "x.npy")
    np.save(tmp_path / "y.npy", x[:, :32])
    with pytest.raises(ValueError, match=r"ids already in the index: \[5, 6"):
        index.add_from(tmp_path / "y.npy", ids=np.arange(N))
    assert index.ntotal == 10


@pytest.mark.parametrize("bad", ["nan", "inf", "zero-row"])
def test_a_bad_row_stops_at_its_chunk(bad, data, tmp_path):
    x, _ = data
    x = x.copy()
    x[2100, 5] = {"nan": np.nan, "inf": np.inf, "zero-row": 0.0}[bad]
    if bad == "zero-row":
        x[2100] = 0.0
    np.save(tmp_path / "x.npy", x)
    index = annbin.BinaryEmbeddingIndex("flat", thresholds="median")
    message = "NaN or inf" if bad != "zero-row" else "nonzero vectors"
    with pytest.raises(ValueError, match=rf"x.npy, rows 2,000 to 2,499: .*{message}.*the 2,000 rows before were added"):
        index.add_from(tmp_path / "x.npy", chunk_rows=500)  # checked a chunk at a time: the chunks before stay
    assert index.ntotal == 2000


@pytest.mark.parametrize("bad", ["null-row", "short-row"])
def test_a_bad_list_row_stops_at_its_chunk(bad, data, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x, _ = data
    rows: list[list[float] | None] = [list(map(float, r)) for r in x[:1000]]
    rows[700] = None if bad == "null-row" else rows[700][:-1]
    pq.write_table(pa.table({"embedding": pa.array(rows, pa.list_(pa.float32()))}), tmp_path / "x.parquet")
    index = annbin.BinaryEmbeddingIndex("flat", thresholds="median")
    message = "row 700 of column 'embedding' is null" if bad == "null-row" else "row 700 of column 'embedding' has 63 values, expected 64"
    with pytest.raises(ValueError, match=f"{message} .*the 500 rows before were added"):
        index.add_from(tmp_path / "x.parquet", chunk_rows=500)
    assert index.ntotal == 500


def test_parquet_without_pyarrow_names_the_extra(data, tmp_path, monkeypatch):
    x, _ = data
    _write_parquet(tmp_path / "x.parquet", x, "fixed")
    for name in ("pyarrow", "pyarrow.parquet", "pyarrow.compute"):
        monkeypatch.setitem(__import__("sys").modules, name, None)
    index = annbin.BinaryEmbeddingIndex("flat")
    with pytest.raises(MissingExtraError, match=r"needs pyarrow: pip install 'annbin\[parquet\]'"):
        index.add_from(tmp_path / "x.parquet")
    assert _untouched(index)


# --- 4. RAM: the index and one chunk, never the file -----------------------------------------------
MEMORY_SPECS = {  # name: spec; faiss's rabitq-hnsw:build=float (the fallback) holds every float until its graph build
    "rq-hnsw": "rq-hnsw:M=8,ef_construction=16,nbits=1",
    "rq-ivf": "rq-ivf:nlist=64",
    "flat": "flat",
    "fallback": FALLBACK_SPEC,
}


@pytest.fixture(scope="module")
def big_npy(tmp_path_factory) -> Path:
    """30k x 384 float32 (44 MiB), written a block at a time."""
    path = tmp_path_factory.mktemp("big") / "big.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(30_000, 384))
    rng = np.random.default_rng(0)
    for lo in range(0, 30_000, 5000):
        out[lo:lo + 5000] = rng.standard_normal((5000, 384), dtype=np.float32)
    out.flush()
    del out
    return path


def _traced_peak(index: annbin.BinaryEmbeddingIndex, path: Path, chunk_rows: int) -> int:
    tracemalloc.start()  # numpy's buffers are traced; faiss's and rabitqlib's C++ ones are not (memory_bytes counts them)
    try:
        tracemalloc.reset_peak()
        index.add_from(path, chunk_rows=chunk_rows)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(MEMORY_SPECS))
def test_add_from_holds_a_chunk_not_the_file(name, big_npy):
    if name.startswith("rq-"):
        pytest.importorskip("rabitqlib")
    index = annbin.BinaryEmbeddingIndex(MEMORY_SPECS[name], rotation="random" if name == "fallback" else None)
    chunk_rows, file_bytes = 2048, big_npy.stat().st_size
    peak = _traced_peak(index, big_npy, chunk_rows)
    assert index.ntotal == 30_000 and not _held(index)
    chunk_bytes = chunk_rows * 384 * 4
    assert peak < index.memory_bytes() + 4 * chunk_bytes + (16 << 20), (peak, index.memory_bytes())
    if name != "fallback":
        assert peak < file_bytes / 2, (peak, file_bytes)


def test_the_memory_bound_catches_a_whole_file_read(big_npy):
    """The control: one chunk of every row is what reading the file into RAM would cost."""
    index = annbin.BinaryEmbeddingIndex("flat")
    peak = _traced_peak(index, big_npy, 10**9)
    assert peak > big_npy.stat().st_size
    assert peak > index.memory_bytes() + 4 * 2048 * 384 * 4 + (16 << 20)
