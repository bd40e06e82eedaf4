"""Issue 22, "A new user's first hour": points 1, 2, 5, 6 and 9.

1. An add that fails changes nothing on disk.  2. No search pays for a hidden build.
5. Code that runs twice works twice.  6. ``bench`` and ``tune`` agree.  9. Bring a faiss float index.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

import annbin
import annbin.embed._vectors
from annbin.bench.datasets import get_dataset

ROOT = Path(__file__).resolve().parent.parent
# faiss's rabitq-hnsw with its deferred build (the graph is built once, from every vector added)
DEFERRED = "rabitq-hnsw:M=16,ef_construction=40,build=float,ef_search=48"


@pytest.fixture(scope="module")
def minilm() -> tuple[np.ndarray, np.ndarray]:
    """The shipped set's first 3,000 vectors and 100 queries (unit length, float32, 384-d)."""
    ds = get_dataset("minilm_wordnet")
    return np.ascontiguousarray(ds.get_database()[:3000]), np.ascontiguousarray(ds.get_queries()[:100])


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


# --- 1. an add that fails changes nothing on disk ------------------------------------------------
REFUSALS = {  # kind: (first stage, error, message); None: the default index, which takes more rows
    "dimension": (None, ValueError, "dimension mismatch"),
    "nan": (None, ValueError, "NaN"),
    "first-stage": ("rq-symqg", ValueError, "built once"),  # built by its first add, saved, loaded
    "disk-full": (None, OSError, "No space left"),
}


@pytest.mark.parametrize("kind", list(REFUSALS))
def test_a_refused_add_leaves_the_saved_vectors_file_as_it_was(kind, minilm, tmp_path, monkeypatch):
    emb, queries = minilm
    spec, error, message = REFUSALS[kind]
    if spec == "rq-symqg":
        pytest.importorskip("rabitqlib")
    first = annbin.BinaryEmbeddingIndex(spec)
    first.add(emb[:1500])
    first.search(queries[:1], 10)  # rabitq-hnsw:build=float builds its graph here
    first.save(tmp_path / "ix")
    index = annbin.BinaryEmbeddingIndex.load(tmp_path / "ix")  # adds now grow ix/vectors.npy in place
    vectors_file = tmp_path / "ix" / "vectors.npy"
    assert isinstance(index.vectors, np.memmap) and Path(index.vectors.filename) == vectors_file
    files, data = sorted(os.listdir(tmp_path / "ix")), vectors_file.read_bytes()
    expected = index.search(queries, 10)

    writes = []
    write = annbin.embed._vectors._write_rows

    def spy(f, rows):
        writes.append(len(rows))
        if kind == "disk-full":  # half of the rows reach the file, then the disk is full
            f.write(rows[: len(rows) // 2])
            f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(f, rows)

    monkeypatch.setattr(annbin.embed._vectors, "_write_rows", spy)
    batch = emb[1500:1600].copy()
    if kind == "dimension":
        batch = batch[:, :100]
    elif kind == "nan":
        batch[7, 3] = np.nan
    with pytest.raises(error, match=message):
        index.add(batch)

    assert vectors_file.read_bytes() == data and sorted(os.listdir(tmp_path / "ix")) == files
    assert writes == ([len(batch.tobytes())] if kind == "disk-full" else [])  # the others refuse before writing
    assert index.ntotal == 1500
    for got, want in zip(index.search(queries, 10), expected):
        np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(annbin.embed._vectors, "_write_rows", write)
    if kind == "first-stage":
        return
    index.add(emb[1500:1600])  # the failed add left nothing in the way
    index.save(tmp_path / "ix")
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "ix")
    assert back.ntotal == 1600 and vectors_file.stat().st_size == len(data) + 100 * 384 * 4
    np.testing.assert_allclose(np.asarray(back.vectors[1500:]), emb[1500:1600], atol=1e-6)  # "cos": renormalized


def test_rabitq_hnsw_check_add_raises_what_its_add_raises(minilm):
    from annbin.embed.rabitq import RaBitQHNSW

    emb, queries = minilm
    stage = RaBitQHNSW(384, M=8, ef_construction=20)
    stage.check_add(10)  # not built: adds are welcome
    stage.add(emb[:500])
    stage.check_add(10)
    stage.search(queries[:1], 5)
    stage.check_add(0)  # nothing to add is never refused
    with pytest.raises(ValueError, match="builds its graph once") as checked:
        stage.check_add(10)
    with pytest.raises(ValueError, match="builds its graph once") as added:
        stage.add(emb[500:510])
    assert str(checked.value) == str(added.value) and stage.ntotal == 500
    codes = RaBitQHNSW(384, M=8, ef_construction=20, build="codes")
    codes.add(emb[:200])
    codes.search(queries[:1], 5)
    codes.check_add(10)  # build="codes" inserts every add


# --- 2. no search pays for a hidden build --------------------------------------------------------
def test_build_does_the_deferred_work_so_no_search_builds(minilm, monkeypatch):
    emb, queries = minilm
    index = annbin.BinaryEmbeddingIndex(DEFERRED)
    index.add(emb[:1000])
    index.add(emb[1000:2000])
    stage = index.index
    assert stage._index is None and len(stage._pending) == 2  # deferred: held floats, no graph yet
    index.build()
    assert stage._pending == [] and stage._index is not None and stage._index.ntotal == 2000

    def no_build(*args, **kwargs):
        raise AssertionError("a search built an HNSW graph")

    monkeypatch.setattr(faiss, "IndexHNSWFlat", no_build)  # what a build at search would make
    scores, ids = index.search(queries, 10)
    index.build()  # nothing left to do: no second build either
    assert stage._pending == [] and ids.shape == (100, 10) and (ids >= 0).all()
    exact = np.argsort(-(queries @ emb[:2000].T), axis=1)[:, :10]
    assert _recall(ids, exact) >= 0.9
    monkeypatch.undo()
    index.add(emb[2000:2010])  # after the build the graph takes no more: rebuilt from the stored floats
    assert index.ntotal == 2010 and index.index is not stage and index.index.ntotal == 2010


def test_graph_build_shows_a_bar_when_large(minilm, capsys):
    emb, queries = minilm
    from annbin.embed.rabitq import _PROGRESS_ROWS, RaBitQHNSW

    assert _PROGRESS_ROWS == 100_000
    quiet = RaBitQHNSW(384, M=8, ef_construction=40)
    quiet.add(emb[:2000])
    quiet.search(queries[:1], 5)
    assert "rabitq-hnsw graph" not in capsys.readouterr().err  # small builds: no bar
    shown = RaBitQHNSW(384, M=8, ef_construction=40)
    shown.progress = True  # as a build of 100k vectors or more does by default
    shown.add(emb[:2000])
    _, ids = shown.search(queries, 10)
    assert re.search(r"rabitq-hnsw graph \(2,000 vectors\): \d\d:\d\d", capsys.readouterr().err)  # the time it took
    _, quiet_ids = quiet.search(queries, 10)
    assert _recall(ids, quiet_ids) >= 0.9  # the same single faiss call, watched (threads may order inserts apart)


def test_docstrings_say_what_each_call_costs():
    from annbin.embed.rabitq import RaBitQHNSW

    for doc in (annbin.BinaryEmbeddingIndex.add.__doc__, annbin.BinaryEmbeddingIndex.search.__doc__,
                annbin.BinaryEmbeddingIndex.build.__doc__, RaBitQHNSW.__doc__):
        assert doc is not None and "Cost" in doc and "build" in doc


# --- 5. code that runs twice works twice ---------------------------------------------------------
# The quickstart, run again where it ran before. ARGS: "" (the defaults) or "threads=1".
SNIPPET = """
import numpy as np
import annbin
from annbin.bench.datasets import get_dataset

ds = get_dataset("minilm_wordnet")
emb, queries = ds.get_database()[:2000], ds.get_queries()[:50]
index = annbin.BinaryEmbeddingIndex(ARGS)
index.add(emb)
scores, ids = index.search(queries, 10)
index.save("ix")
again = annbin.BinaryEmbeddingIndex.load("ix")
scores2, ids2 = again.search(queries, 10)
"""
DIGEST = """
import hashlib
print(hashlib.sha256(ids.tobytes() + scores.tobytes() + ids2.tobytes() + scores2.tobytes()).hexdigest())
"""


def _digest(scope: dict) -> str:
    return hashlib.sha256(b"".join(scope[k].tobytes() for k in ("ids", "scores", "ids2", "scores2"))).hexdigest()


def _run_in(scope: dict, args: str) -> dict:
    exec(SNIPPET.replace("ARGS", args), scope)
    assert scope["ids"].shape == (50, 10) and scope["scores"].dtype == np.float32
    np.testing.assert_array_equal(scope["ids2"], scope["ids"])  # saved and loaded: the same answers
    np.testing.assert_array_equal(scope["scores2"], scope["scores"])
    return scope


def test_the_quickstart_runs_twice_in_one_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = _run_in({}, ""), _run_in({}, "")  # the defaults: the second run no longer stops at the file
    # the default build inserts on every core, in an order the threads decide: nearly the same graph
    assert _recall(second["ids"], first["ids"]) >= 0.95
    # the second save committed beside the first one's files, then removed them
    assert sorted(os.listdir(tmp_path / "ix")) == ["embedding.annbin", "index.1.annbin", "vectors.1.npy"]
    assert sorted(os.listdir(tmp_path)) == ["ix"]  # the floats lived in directories the indexes owned
    one, two = _run_in({}, "threads=1"), _run_in({}, "threads=1")  # one build thread: the same answers
    assert _digest(one) == _digest(two)


def test_the_quickstart_runs_twice_in_two_processes(tmp_path, monkeypatch):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    outs = []
    for _ in range(2):
        code = SNIPPET.replace("ARGS", "threads=1") + DIGEST
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout.strip())
    assert outs[0] == outs[1] and len(outs[0]) == 64
    monkeypatch.chdir(tmp_path)
    assert _digest(_run_in({}, "threads=1")) == outs[0]  # and a third time, in this process


# --- 6. bench and tune agree ---------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["hnsw:M=8,ef_search=16", "rabitq-hnsw:M=12,ef_search=32"])
def test_bench_and_tune_report_the_same_bytes_per_vector(spec, tmp_path, monkeypatch):
    from annbin.bench.run import BenchConfig, run_bench
    from annbin.bench.tune_run import TuneConfig, run_tune

    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "cache"))
    bench_rows = run_bench(BenchConfig(dataset="synthetic-small", indexes=[spec], oversample=[4], runs=1, latency_queries=0, max_queries=40))
    bench = next(r for r in bench_rows if r["oversample"] == 4)
    _, tune_rows = run_tune(TuneConfig(index=spec, dataset="synthetic-small", oversample=4, runs=1, latency_queries=0, max_queries=40, max_trials=3))
    tune = tune_rows[-1]
    assert bench["rescore_vectors"] == tune["rescore_vectors"] == "mmap:float32"  # one default: floats on disk
    assert tune["bytes_per_vector"] == pytest.approx(bench["bytes_per_vector"], rel=0.05)
    assert bench["bytes_per_vector"] < 4 * bench["dim"]  # RAM holds codes, not the floats


def test_bench_and_tune_say_vectors_the_same_way():
    from click.testing import CliRunner

    from annbin.bench.cli import main
    from annbin.bench.run import DEFAULT_VECTORS, BenchConfig
    from annbin.bench.tune_run import TuneConfig

    assert BenchConfig().vectors == TuneConfig(index="flat").vectors == DEFAULT_VECTORS == "mmap"
    options = {}
    for command in ("bench", "tune"):
        option = next(p for p in main.commands[command].params if p.name == "vectors")
        options[command] = (option.opts, list(option.type.choices), option.help)
        help_text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
        assert "--vectors [mmap|ram]" in help_text and "Default: mmap" in help_text
    assert options["bench"] == options["tune"]
    for cfg in (BenchConfig(vectors="disk"), TuneConfig(index="flat", oversample=2, vectors="disk")):
        with pytest.raises(ValueError, match="vectors must be one of 'mmap', 'ram'"):
            cfg.validate()


# --- 9. bring a faiss float index ----------------------------------------------------------------
def _faiss_index(kind: str, emb: np.ndarray) -> tuple[object, np.ndarray]:
    """A faiss index of ``kind`` over ``emb`` and the ids it gives them."""
    d = emb.shape[1]
    ids = np.arange(emb.shape[0], dtype=np.int64)
    if kind == "IndexFlatIP":
        index = faiss.IndexFlatIP(d)
    elif kind == "IndexFlatL2":
        index = faiss.IndexFlatL2(d)
    elif kind == "IndexHNSWFlat":
        index = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    else:
        index = (faiss.IndexIDMap if kind == "IndexIDMap(IndexFlatIP)" else faiss.IndexIDMap2)(faiss.IndexFlatIP(d))
        ids = 1_000_000 + 7 * ids[::-1]  # neither the rows nor in their order
        index.add_with_ids(emb, ids)
        return index, ids
    index.add(emb)
    return index, ids


@pytest.mark.parametrize("kind", ["IndexFlatIP", "IndexHNSWFlat", "IndexIDMap(IndexFlatIP)", "IndexIDMap2(IndexFlatIP)", "IndexFlatL2"])
def test_from_faiss_keeps_ids_and_finds_what_faiss_finds(kind, minilm):
    emb, queries = minilm
    source, ids = _faiss_index(kind, emb)
    _, want = source.search(queries, 10)
    index = annbin.BinaryEmbeddingIndex.from_faiss(source, chunk=1000)  # three chunks
    assert index.ntotal == 3000 and index.metric == ("l2" if kind == "IndexFlatL2" else "ip")
    assert isinstance(index.vectors, np.memmap)  # the default store: floats mapped from a file
    np.testing.assert_array_equal(np.sort(index.get_ids()), np.sort(ids))
    np.testing.assert_array_equal(np.asarray(index.vectors), emb)  # row order kept, ids beside
    scores, got = index.search(queries, 10)
    assert set(got.ravel()) <= set(ids)  # the faiss ids, not annbin's rows
    assert _recall(got, want) >= 0.9
    assert source.ntotal == 3000  # the faiss index is left as it was


def test_from_faiss_options_and_refusals(minilm, tmp_path):
    emb, queries = minilm
    flat = faiss.IndexFlatIP(384)
    flat.add(emb[:500])
    cos = annbin.BinaryEmbeddingIndex.from_faiss(flat, "rabitq-hnsw:M=8,ef_search=32", metric="cos", store_vectors="ram")
    assert cos.metric == "cos" and cos.spec.startswith("rabitq-hnsw") and not isinstance(cos.vectors, np.memmap)
    assert cos.index._pending == []  # deferred work done before from_faiss returns
    empty = annbin.BinaryEmbeddingIndex.from_faiss(faiss.IndexFlatL2(384))
    assert empty.ntotal == 0 and empty.dim == 384
    with pytest.raises(TypeError, match="expects a faiss float index, got ndarray"):
        annbin.BinaryEmbeddingIndex.from_faiss(emb)
    with pytest.raises(TypeError, match="annbin.from_faiss wraps those"):
        annbin.BinaryEmbeddingIndex.from_faiss(faiss.IndexBinaryFlat(64))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(384), 384, 4)
    with pytest.raises(ValueError, match="IndexFlatIP, IndexFlatL2, IndexHNSWFlat .* got IndexIVFFlat$"):
        annbin.BinaryEmbeddingIndex.from_faiss(ivf)
    with pytest.raises(ValueError, match="got IndexIDMap around IndexPQ"):
        annbin.BinaryEmbeddingIndex.from_faiss(faiss.IndexIDMap(faiss.IndexPQ(384, 8, 8)))
    with pytest.raises(ValueError, match="does not match the faiss index's \\(L2\\)"):
        annbin.BinaryEmbeddingIndex.from_faiss(faiss.IndexFlatL2(384), metric="cos")
    with pytest.raises(ValueError, match="faiss metric type"):
        annbin.BinaryEmbeddingIndex.from_faiss(faiss.IndexFlat(384, faiss.METRIC_L1))
    with pytest.raises(ValueError, match="chunk must be"):
        annbin.BinaryEmbeddingIndex.from_faiss(flat, chunk=0)


DOCS = (ROOT / "docs" / "faiss.md").read_text()


def _docs_block(marker: str) -> str:
    found = re.findall(rf"<!-- test: {marker} -->\n```python\n(.*?)```", DOCS, flags=re.S)
    assert len(found) == 1, f"docs/faiss.md: one block marked {marker!r} expected"
    return found[0]


def test_docs_binary_swap_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(_docs_block("faiss-binary"), scope)
    D_faiss, I_faiss = scope["faiss_binary_index"].search(scope["codes"][:5], 10)
    np.testing.assert_array_equal(scope["D"], D_faiss)
    assert scope["I"][:, 0].tolist() == [0, 1, 2, 3, 4] and (scope["D"][:, 0] == 0).all()
    assert annbin.load_index("codes.annbin").ntotal == 5000


def test_docs_float_swap_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(_docs_block("faiss-float"), scope)
    _, want = scope["faiss_index"].search(scope["queries"], 10)
    assert scope["ids"].min() >= 10_000 and _recall(scope["ids"], want) >= 0.9
    back = annbin.BinaryEmbeddingIndex.load("my_index")
    np.testing.assert_array_equal(back.search(scope["queries"], 10)[1], scope["ids"])
