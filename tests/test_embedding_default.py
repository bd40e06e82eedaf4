"""The no-argument ``BinaryEmbeddingIndex``: rabitqlib's HNSW over 2-bit codes, its top ``2 * k``
rescored with floats memory-mapped from a file the index owns; faiss's ``rabitq-hnsw`` where
rabitqlib is missing.

Tests that name rabitqlib's path skip without it; the others run on whichever default is active,
so ``ANNBIN_HIDE_RABITQLIB=1 python -m pytest -q tests/test_embedding_default.py`` (conftest.py)
runs them on the fallback.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import annbin
import annbin.bench.datasets
import annbin.embed._vectors
from annbin.embed.embedding_index import DEFAULT_SPEC, FALLBACK_SPEC

N, NQ, K = 3000, 100, 10
#: recall@10 floors of the default index against exact cosine on minilm_wordnet's first 3,000 rows
#: and 100 queries, with room below what it reaches (benchmarks/RESULTS.md)
RECALL_FLOOR = 0.93
FALLBACK_RECALL_FLOOR = 0.88


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """minilm_wordnet: 3,600 base rows (the last 600 are added later by some tests), 100 queries."""
    ds = annbin.bench.datasets.get_dataset("minilm_wordnet")
    base = np.ascontiguousarray(ds.get_database()[: N + 600], dtype=np.float32)
    queries = np.ascontiguousarray(ds.get_queries()[:NQ], dtype=np.float32)
    assert np.unique(base, axis=0).shape[0] == base.shape[0]  # no duplicate rows: a self-query has one answer
    return base, queries


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_cos(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(unit(queries) @ unit(base).T), axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)]))


def check_cos_results(S: np.ndarray, I: np.ndarray, vectors_by_id: dict[int, np.ndarray] | np.ndarray, queries: np.ndarray) -> None:
    """float32 / int64 results, descending, no duplicates, each score the float cosine of its id."""
    assert S.dtype == np.float32 and I.dtype == np.int64 and S.shape == I.shape
    assert (I >= 0).all()
    assert (np.diff(S, axis=1) <= 0).all()
    assert all(np.unique(row).size == row.size for row in I)
    docs = unit(np.stack([vectors_by_id[int(i)] for i in I.ravel()])).reshape(*I.shape, -1)
    np.testing.assert_allclose(S, np.einsum("qd,qkd->qk", unit(queries), docs), rtol=0, atol=2e-5)


# --- 1. the default path against brute force ----------------------------------------------------


def test_default_is_rabitqlib_hnsw_with_exact_float_scores_and_recall(data):
    pytest.importorskip("rabitqlib")
    base, queries = data
    index = annbin.BinaryEmbeddingIndex()
    assert index.spec.startswith("rq-hnsw") and index.spec == DEFAULT_SPEC and index.oversample == 2
    index.add(base[:N])
    assert type(index.index).__name__ == "RQHNSW" and index.metric == "cos" and index.dim == 384
    S, I = index.search(queries, K)
    check_cos_results(S, I, base, queries)
    got = recall(I, exact_cos(base[:N], queries, K))
    assert got >= RECALL_FLOOR, got
    assert index.last_search_stats["candidates_per_query"] == 2 * K  # the 2 x k rescore ran


# --- 2. adds after searches, user ids, remove_ids, reset -----------------------------------------


def test_adds_after_searches_user_ids_removals_and_reset(data, tmp_path):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex()
    by_id: dict[int, np.ndarray] = {}
    index.add(base[:2000])
    by_id.update(enumerate(base[:2000]))
    index.search(queries, K)
    # three more adds, each after a search, the last two with user ids
    batches = [(base[2000:2600], None), (base[2600:3000], np.arange(10_000, 10_400)), (base[3000:3300], 50_000 + 3 * np.arange(300))]
    for rows, ids in batches:
        before = index.ntotal
        index.add(rows, ids)
        new_ids = np.arange(before, before + len(rows)) if ids is None else ids
        by_id.update(zip(new_ids.tolist(), rows))
        assert index.ntotal == before + len(rows)
        S, I = index.search(rows[::10], 5)  # a query equal to a new vector finds it first
        np.testing.assert_array_equal(I[:, 0], new_ids[::10])
        np.testing.assert_allclose(S[:, 0], 1.0, atol=1e-5)
        check_cos_results(S, I, by_id, rows[::10])
    index.add(base[3300:3310])  # sequential ids go on after the largest user id
    np.testing.assert_array_equal(index.get_ids()[-10:], np.arange(50_898, 50_908))
    by_id.update(zip(range(50_898, 50_908), base[3300:3310]))
    S, I = index.search(queries, K)
    check_cos_results(S, I, by_id, queries)

    gone = np.concatenate([np.arange(0, 2000, 7), np.arange(10_000, 10_400, 3), [50_003, 50_906], [987_654]])  # one unknown
    removable = index.spec.startswith("rq-")
    if not removable:  # faiss's rabitq-hnsw (the fallback) cannot remove: refused, nothing changed
        with pytest.raises(annbin.UnsupportedOperation, match=r"first stage 'rabitq-hnsw:.*' cannot remove vectors"):
            index.remove_ids(gone)
        assert index.ntotal == 3310
    else:
        total = index.ntotal
        assert index.remove_ids(gone) == gone.size - 1
        assert index.ntotal == total - (gone.size - 1)
        assert index.remove_ids(gone) == 0 and index.remove_ids([]) == 0  # twice: nothing more
        assert index.ntotal == total - (gone.size - 1)
        removed_rows = np.flatnonzero(np.isin(index.get_ids(), gone))
        assert np.intersect1d(index.live_rows(), removed_rows).size == 0
        probes = np.stack([by_id[int(i)] for i in gone[:-1]])
        for q in (probes, queries):
            S, I = index.search(q, 50)
            assert not np.isin(I, gone).any()
            assert (I >= 0).all()
        for i in gone[:-1]:
            del by_id[int(i)]
        check_cos_results(*index.search(queries, K), by_id, queries)

    root = tmp_path / "saved"
    index.save(root)
    saved = {p.name: p.read_bytes() for p in root.iterdir()}
    expect = annbin.BinaryEmbeddingIndex.load(root).search(queries, K)
    index.reset()
    assert index.ntotal == 0 and index.dim is None and index.vectors is None
    S, I = index.search(queries, K)
    assert (I == -1).all() and np.isneginf(S).all() and S.dtype == np.float32
    assert {p.name: p.read_bytes() for p in root.iterdir()} == saved  # the saved directory is left as it was
    index.add(base[:500])  # and it starts afresh, in a file of its own
    assert index.ntotal == 500 and Path(index.vectors.filename).parent != root
    check_cos_results(*index.search(queries, K), base, queries)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == saved
    for a, b in zip(annbin.BinaryEmbeddingIndex.load(root).search(queries, K), expect):
        np.testing.assert_array_equal(a, b)


# --- 3. save / load ------------------------------------------------------------------------------


def test_save_load_round_trip_moves_the_owned_file_and_later_adds_commit(data, tmp_path):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex()
    index.add(base[:2000])
    index.add(base[2000:N])
    owned = Path(index.vectors.filename).parent
    assert owned.is_dir() and owned != tmp_path
    expect = index.search(queries, K)
    memory = index.memory_bytes()
    root = tmp_path / "ix"
    index.save(root)
    assert not owned.exists()  # the temp directory of "auto" is gone: the floats live in the saved one
    assert Path(index.vectors.filename) == root / "vectors.npy"
    assert sorted(p.name for p in root.iterdir()) == ["embedding.annbin", "index.annbin", "vectors.npy"]
    np.testing.assert_array_equal(np.load(root / "vectors.npy"), unit(base[:N]))
    back = annbin.BinaryEmbeddingIndex.load(root)
    assert back.spec == index.spec and back.ntotal == N and back.get_search_params() == index.get_search_params()
    assert back.memory_bytes() == index.memory_bytes() == memory
    for a, b in zip(back.search(queries, K), expect):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(index.search(queries, K), expect):  # the saver still searches, from the moved file
        np.testing.assert_array_equal(a, b)

    index.add(base[N:])  # adds after the save: appended in place, committed by the next save only
    S, I = index.search(base[N::50], 1)
    np.testing.assert_array_equal(I[:, 0], np.arange(N, N + 600, 50))
    assert annbin.BinaryEmbeddingIndex.load(root).ntotal == N
    index.save(root)
    again = annbin.BinaryEmbeddingIndex.load(root)
    assert again.ntotal == N + 600
    np.testing.assert_array_equal(again.vectors, unit(base))
    np.testing.assert_array_equal(again.search(base[N::50], 1)[1][:, 0], np.arange(N, N + 600, 50))
    assert len(list(root.iterdir())) == 3


def test_load_keeps_removals(data, tmp_path):
    pytest.importorskip("rabitqlib")  # the fallback cannot remove (test above)
    base, queries = data
    index = annbin.BinaryEmbeddingIndex()
    index.add(base[:N], ids=np.arange(N) + 7)
    gone = np.arange(7, N + 7, 5)
    assert index.remove_ids(gone) == gone.size
    index.save(tmp_path / "ix")
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "ix")
    assert back.ntotal == N - gone.size
    np.testing.assert_array_equal(back.live_rows(), index.live_rows())
    S, I = back.search(base[gone - 7][:200], 20)
    assert not np.isin(I, gone).any()
    for a, b in zip(back.search(queries, K), index.search(queries, K)):
        np.testing.assert_array_equal(a, b)
    assert back.remove_ids(gone) == 0


_CHILD = textwrap.dedent(
    """
    import os, shutil, sys, time
    if os.environ.get("ANNBIN_HIDE_RABITQLIB") == "1":  # as conftest.py does for the parent
        sys.modules["rabitqlib"] = None
    import numpy as np
    import annbin, annbin._io, annbin.bench.datasets

    root, point = sys.argv[1], sys.argv[2]
    base = annbin.bench.datasets.get_dataset("minilm_wordnet").get_database()[:1500]

    def pause():  # the parent kills us here
        open(root + ".paused", "w").close()
        time.sleep(600)

    index = annbin.BinaryEmbeddingIndex()
    index.add(base[:1000])
    index.save(root)
    shutil.copytree(root, root + ".first")  # what a load must give after the kill
    index.add(base[1000:])  # appended to the saved directory's vectors.npy
    if index.spec.startswith("rq-"):
        index.remove_ids(np.arange(0, 1000, 9))
    if point == "stage":  # the second save wrote its first-stage file, not its commit
        cls = type(index.index)
        save = cls.save
        def hooked(self, path):
            save(self, path)
            pause()
        cls.save = hooked
    elif point == "commit":  # everything written but the commit record
        import annbin.embed._embedding_files as files
        write = files.write_index_file
        def commit_hook(path, header, arrays):
            if str(path).endswith("embedding.annbin"):
                pause()
            return write(path, header, arrays)
        files.write_index_file = commit_hook
    index.save(root)
    print("saved", flush=True)
    """
)


@pytest.mark.parametrize("point", ["stage", "commit"])
def test_killed_save_leaves_the_last_completed_save(point, data, tmp_path):
    base, queries = data
    root = tmp_path / "ix"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(annbin.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), point], stdout=subprocess.PIPE, env=env, text=True)
    flag = Path(str(root) + ".paused")
    deadline = time.monotonic() + 120
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"child never reached {point!r} (exit {proc.returncode})")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL and out == ""
    first = annbin.BinaryEmbeddingIndex.load(str(root) + ".first")
    for mmap in (True, False):
        back = annbin.BinaryEmbeddingIndex.load(root, mmap=mmap)
        assert back.ntotal == first.ntotal == 1000 and back.spec == first.spec
        np.testing.assert_array_equal(back.vectors, unit(base[:1000]))
        for a, b in zip(back.search(queries, K), first.search(queries, K)):
            np.testing.assert_array_equal(a, b)
    # it carries on from there: the uncommitted rows and files are overwritten and cleaned up
    back = annbin.BinaryEmbeddingIndex.load(root)
    back.add(base[1000:1500])
    back.save(root)
    again = annbin.BinaryEmbeddingIndex.load(root)
    assert again.ntotal == 1500
    np.testing.assert_array_equal(again.vectors, unit(base[:1500]))
    names = sorted(p.name for p in root.iterdir())  # the killed save's first-stage file is cleaned up
    assert len(names) == 3 and names[0] == "embedding.annbin" and names[2] == "vectors.npy" and names[1].startswith("index.")
    assert (root / "vectors.npy").stat().st_size == 128 + 1500 * 384 * 4
    shutil.rmtree(str(root) + ".first")


# --- 4. threads with per-call params ------------------------------------------------------------


def test_threaded_searches_with_per_call_params_equal_serial_ones(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex()
    index.add(base[:N])
    before = index.get_search_params()
    settings = [{"ef_search": e, "oversample": o} for e, o in [(16, 1), (24, 2), (48, 2), (64, 3), (100, 4), (20, 5), (32, 1), (80, 2)]]
    serial = [index.search(queries, K, params=p) for p in settings]
    assert not all(np.array_equal(serial[0][1], s[1]) for s in serial[1:])  # the params make a difference
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(index.search, queries, K, params=p) for p in settings * 3]
        results = [job.result() for job in jobs]
    for i, (S, I) in enumerate(results):
        np.testing.assert_array_equal(S, serial[i % len(settings)][0])
        np.testing.assert_array_equal(I, serial[i % len(settings)][1])
    assert index.get_search_params() == before
    np.testing.assert_array_equal(index.search(queries, K)[1], index.search(queries, K, params=before)[1])


# --- 5. the fallback path -----------------------------------------------------------------------


def test_fallback_without_rabitqlib(monkeypatch, caplog, data):
    base, queries = data
    monkeypatch.setitem(sys.modules, "rabitqlib", None)
    with caplog.at_level(logging.WARNING, logger="annbin"):
        index = annbin.BinaryEmbeddingIndex()
    lines = [r for r in caplog.records if r.name == "annbin"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and "rabitqlib is not available" in lines[0].getMessage()
    assert index.spec == FALLBACK_SPEC and index.oversample == 3
    with pytest.raises(ImportError):
        annbin.BinaryEmbeddingIndex("rq-hnsw")  # rabitqlib's own variants need it
    index.add(base[:2000])
    assert type(index.index).__module__ == "annbin.embed.rabitq"
    check_cos_results(*index.search(queries, K), base, queries)
    index.add(base[2000:N])  # an add after a search
    S, I = index.search(queries, K)
    check_cos_results(S, I, base, queries)
    got = recall(I, exact_cos(base[:N], queries, K))
    assert got >= FALLBACK_RECALL_FLOOR, got
    np.testing.assert_array_equal(index.search(base[2000:N:40], 1)[1][:, 0], np.arange(2000, N, 40))


def test_hide_rabitqlib_switch_makes_importorskip_skip(tmp_path):
    """conftest.py's ANNBIN_HIDE_RABITQLIB=1 hides rabitqlib for a whole run: the default index
    falls back and the tests that need rabitqlib skip."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(textwrap.dedent(
        """
        import pytest, annbin
        from annbin.embed.embedding_index import FALLBACK_SPEC

        def test_needs():
            pytest.importorskip("rabitqlib")

        def test_default():
            assert annbin.BinaryEmbeddingIndex().spec == FALLBACK_SPEC
        """
    ))
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    env = {**os.environ, "ANNBIN_HIDE_RABITQLIB": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(probe)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout and "could not import 'rabitqlib'" in run.stdout


# --- 6. memory -----------------------------------------------------------------------------------


def test_memory_holds_no_floats(data):
    base, _ = data
    index = annbin.BinaryEmbeddingIndex()
    index.add(base[:N])
    index.build()  # the faiss fallback holds the added floats until its graph is built; rq-hnsw has none to hold
    floats = N * 384 * 4
    assert index.disk_bytes() == floats
    # the fallback's random rotation (384 x 384 floats) is fixed, not per vector
    assert 0 < index.memory_bytes() - index.encoder.memory_bytes() < floats / 4


# --- 7. float32 scores for every configuration ---------------------------------------------------

CONFIGS = {
    "default": (None, {}),
    "rq-symqg": ("rq-symqg", {}),
    "rq-ivf": ("rq-ivf:nlist=16", {}),
    "rabitq-hnsw": ("rabitq-hnsw:build=codes", {}),
    "flat": ("flat", {}),
    "hnsw": ("hnsw:M=8", {}),
    "flat-rerank": ("flat", {"rerank": "asymmetric"}),
    "flat-codes-only": ("flat", {"rescore": None, "rerank": "asymmetric", "store_vectors": None}),
}


def _clustered(seed: int, n: int, dim: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim)) * 3
    x = centres[rng.integers(0, 12, n)] + rng.standard_normal((n, dim))
    return (x * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)  # norms vary: cos, ip and l2 rank differently


@pytest.mark.parametrize("metric", ["cos", "ip", "l2"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_scores_are_float32_for_every_configuration(name, metric):
    spec, kwargs = CONFIGS[name]
    if name.startswith("rq-"):
        pytest.importorskip("rabitqlib")
    x, q = _clustered(1, 1200), _clustered(2, 30)
    index = annbin.BinaryEmbeddingIndex(spec, metric=metric, **kwargs)
    if index.spec.startswith("rabitq-hnsw") and metric == "ip":  # faiss's RaBitQ HNSW (also the fallback) is L2 inside: "ip" on unit vectors only
        with pytest.raises(ValueError, match="unit-norm"):
            index.add(x)
        assert index.ntotal == 0 and index.dim is None
        x = unit(x)
    if name == "rq-symqg":  # built once, from one add
        index.add(x)
    else:
        index.add(x[:800])
        index.search(q, 5)
        index.add(x[800:])
    S, I = index.search(q, 10)
    assert S.dtype == np.float32 and I.dtype == np.int64 and S.shape == I.shape == (30, 10)
    assert (I >= 0).all() and np.isfinite(S).all()
    assert (np.diff(S, axis=1) >= 0 if metric == "l2" else np.diff(S, axis=1) <= 0).all()
    if kwargs.get("store_vectors", "auto") is None:
        return  # codes only: the scores are estimates
    docs, qq = (unit(x), unit(q)) if metric == "cos" else (x, q)
    if metric == "l2":
        want = ((qq[:, None, :] - docs[I]) ** 2).sum(axis=2)
    else:
        want = np.einsum("qd,qkd->qk", qq, docs[I])
    np.testing.assert_allclose(S, want, rtol=1e-5, atol=1e-4)
    S, I = index.search(q, 5000)  # more than stored: missing results are -1 with an infinite score
    assert S.dtype == np.float32 and (I[:, 1200:] == -1).all()
    assert (np.isinf(S) == (I == -1)).all() and (np.isposinf(S) if metric == "l2" else np.isneginf(S))[I == -1].all()


def test_symqg_search_for_k_near_ntotal_pads_missing_results():
    pytest.importorskip("rabitqlib")
    x, q = _clustered(1, 1200), _clustered(2, 30)
    for _ in range(6):  # SymQG's build is not seeded: most builds cannot reach k near ntotal, some can
        index = annbin.BinaryEmbeddingIndex("rq-symqg", metric="l2")
        index.add(x)
        for k in (600, 5000):  # k * oversample candidates asked of the graph: 1200 (= ntotal) or more
            S, I = index.search(q, k)
            assert S.dtype == np.float32 and (I[:, 1200:] == -1).all()
            finite = np.where(np.isinf(S), np.finfo(np.float32).max, S)  # inf - inf is nan
            assert (np.isposinf(S) == (I == -1)).all() and (np.diff(finite, axis=1) >= 0).all()


def test_plain_hamming_results_are_refused():
    with pytest.raises(ValueError, match="plain Hamming"):
        annbin.BinaryEmbeddingIndex("flat", rescore=None)


# --- 8. a refused add changes nothing on disk ----------------------------------------------------


def test_refused_symqg_add_after_load_leaves_the_file(data, tmp_path):
    pytest.importorskip("rabitqlib")
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("rq-symqg")
    index.add(base[:1000])
    index.save(tmp_path / "ix")
    vectors = tmp_path / "ix" / "vectors.npy"
    size, content = vectors.stat().st_size, vectors.read_bytes()
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "ix")
    assert Path(back.vectors.filename) == vectors  # mapped from the saved file: an add would grow it
    expect = back.search(queries, K)
    with pytest.raises(ValueError, match="built once"):
        back.add(base[1000:1100])
    assert vectors.stat().st_size == size and vectors.read_bytes() == content
    assert back.ntotal == 1000
    for a, b in zip(back.search(queries, K), expect):
        np.testing.assert_array_equal(a, b)


def _saved_default(base: np.ndarray, root: Path) -> tuple[annbin.BinaryEmbeddingIndex, Path, int]:
    index = annbin.BinaryEmbeddingIndex()
    index.add(base[:1000])
    index.save(root)
    back = annbin.BinaryEmbeddingIndex.load(root)
    path = root / "vectors.npy"
    assert Path(back.vectors.filename) == path
    return back, path, path.stat().st_size


def test_bad_adds_raise_before_writing(data, tmp_path):
    base, queries = data
    index, path, size = _saved_default(base, tmp_path / "ix")
    nan = base[1000:1010].copy()
    nan[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        index.add(nan)
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.add(base[1000:1010, :128])
    with pytest.raises(ValueError, match="nonzero"):
        index.add(np.zeros((2, 384), np.float32))
    with pytest.raises(ValueError, match="already in the index"):
        index.add(base[1000:1002], ids=[5, 123_456])
    assert path.stat().st_size == size and index.ntotal == 1000
    index.add(base[1000:1010])  # and it is usable after
    assert index.ntotal == 1010 and path.stat().st_size == size + 10 * 384 * 4


@pytest.mark.parametrize("torn", [False, True])
def test_failing_write_leaves_the_committed_file(torn, data, tmp_path, monkeypatch):
    base, queries = data
    index, path, size = _saved_default(base, tmp_path / "ix")
    expect = index.search(queries, K)

    def failing(f, data):
        if torn:  # half the rows reach the file, then the disk is full
            f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(annbin.embed._vectors, "_write_rows", failing)
        with pytest.raises(OSError, match="No space"):
            index.add(base[1000:1100])
    assert path.stat().st_size == size
    assert index.ntotal == 1000 and index.vectors.shape == (1000, 384)
    for a, b in zip(index.search(queries, K), expect):
        np.testing.assert_array_equal(a, b)
    index.add(base[1000:1100])  # usable: the next add writes where the failed one would have
    assert index.ntotal == 1100 and path.stat().st_size == size + 100 * 384 * 4
    np.testing.assert_array_equal(index.search(base[1000:1100:10], 1)[1][:, 0], np.arange(1000, 1100, 10))
    index.save(tmp_path / "ix")
    np.testing.assert_array_equal(annbin.BinaryEmbeddingIndex.load(tmp_path / "ix").vectors, unit(base[:1100]))


# --- 9. dim ----------------------------------------------------------------------------------------


def test_dim_comes_from_the_first_add(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex()
    assert index.dim is None
    index.add(base[:500])
    assert index.dim == 384
    with pytest.raises(ValueError, match=r"expected \(n, 384\)"):
        index.add(base[500:510, :256])
    with pytest.raises(ValueError, match=r"expected \(n, 384\)"):
        index.search(queries[:, :256], K)
    assert index.ntotal == 500 and index.dim == 384
    small = annbin.BinaryEmbeddingIndex()  # under rabitqlib's 64 dimensions: zero-padded inside
    x = _clustered(3, 400, dim=40)
    small.add(x)
    assert small.dim == 40
    check_cos_results(*small.search(x[:20], 5), x, x[:20])
    hits = float(np.mean(small.search(x, 10)[1][:, 0] == np.arange(400)))  # each vector finds itself first
    assert hits >= (1.0 if small.spec.startswith("rq-") else 0.95), hits  # the fallback's 1-bit codes miss a few


def test_cpu_without_avx2_falls_back(tmp_path, monkeypatch, caplog):
    """rabitqlib's kernels need AVX2 and FMA (or AVX-512): a CPU without them gets the faiss path."""
    from annbin.embed import rqlib

    old, new, avx512 = tmp_path / "old", tmp_path / "new", tmp_path / "avx512"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx\n")
    new.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n")
    avx512.write_text("flags\t\t: fpu sse2 avx avx512f\n")
    assert not rqlib._cpu_ok(str(old)) and rqlib._cpu_ok(str(new)) and rqlib._cpu_ok(str(avx512))
    monkeypatch.setattr(rqlib, "_cpu_ok", lambda: False)
    with caplog.at_level(logging.WARNING, logger="annbin"):
        index = annbin.BinaryEmbeddingIndex()
    assert index.spec == FALLBACK_SPEC and "AVX2" in caplog.text


def test_fallback_graph_is_rebuilt_by_an_add_after_a_search(data, tmp_path):
    """faiss's rabitq-hnsw:build=float refuses adds once its graph is built; the embedding index
    rebuilds it from the stored floats, so adds go on after searches, saves and loads."""
    base, queries = data
    index = annbin.BinaryEmbeddingIndex(FALLBACK_SPEC, rotation="random")
    index.add(base[:1000])
    index.search(queries[:2], 5)  # the graph is built here
    first_graph = index.index
    index.add(base[1000:1500])
    assert index.index is not first_graph and index.ntotal == 1500 and index.index.ntotal == 1500
    index.save(tmp_path / "ix")
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "ix")
    back.add(base[1500:2000])
    S, I = back.search(base[1990:1992], 1)
    assert I[:, 0].tolist() == [1990, 1991] and np.allclose(S[:, 0], 1.0, atol=1e-5)
