"""Peer libraries (annbin.bench.peers) in faiss's float convention, their rows in the bench, the summary line."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import annbin
from annbin.bench.report import summary_line
from annbin.bench.run import BenchConfig, run_bench

# spec with a beam wide enough for the recall floor on 2,000 x 64 Gaussian data, and the module it needs
PEERS = [
    ("faiss-hnsw-sq8:M=16,ef_construction=100,ef=64", "faiss", 0.9),
    ("usearch:dtype=f16,M=16,ef_construction=128,ef=64", "usearch", 0.9),
    ("scann:num_leaves=20,leaves_to_search=20,reorder=100", "scann", 0.9),
    ("rabitqlib-hnsw:M=16,ef_construction=100,ef_search=100", "rabitqlib", 0.85),
    ("rabitqlib-symqg:max_degree=32,ef_construction=200,ef_search=200", "rabitqlib", 0.9),
]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2040, 64)).astype(np.float32)  # rabitqlib needs dim >= 64
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:2000], x[2000:]


def exact(base, queries, k, metric):
    s = queries @ base.T if metric == "ip" else -((queries[:, None] - base[None]) ** 2).sum(-1)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize(("spec", "module", "floor"), PEERS, ids=[p[0].split(":")[0] for p in PEERS])
def test_peer_returns_faiss_convention(spec, module, floor, metric, data):
    pytest.importorskip(module)
    base, queries = data
    index = annbin.make_float_index(spec, 64, metric)
    index.num_threads = 1
    assert not index.exact and index.peer and index.spec.split(":")[0] == spec.split(":")[0]
    if spec.startswith("rabitqlib-symqg"):  # builds at its first add, once
        index.add(base)
    else:
        index.add(base[:1000])
        index.add(base[1000:])
    D, I = index.search(queries, 10)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (40, 10)
    assert ((np.diff(D, axis=1) <= 1e-6) if metric == "ip" else (np.diff(D, axis=1) >= -1e-6)).all()
    ref = exact(base, queries, 10, metric)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, ref)])
    assert recall >= floor, (spec, metric, recall)
    assert all(len(set(row)) == 10 for row in I)  # no duplicate ids
    assert index.ntotal == 2000 and 0 < index.memory_bytes() < 10 * 2000 * 64 * 4

    # per-call params do not touch the index's own; a narrower beam does no better
    before = index.get_search_params()
    narrow = {name: 1 for name in index.search_params}
    _, I1 = index.search(queries, 10, params=narrow)
    assert index.get_search_params() == before
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I1, ref)]) <= recall + 1e-9

    # k > n: -1 padding with the worst D, sorted last
    small = annbin.make_float_index(spec, 64, metric)
    small.num_threads = 1
    small.add(base[:50])
    D2, I2 = small.search(queries[:3], 60)
    assert (I2[:, 50:] == -1).all() and np.isinf(D2[:, 50:]).all()
    assert ((I2[:, :50] >= 0) | (I2[:, :50] == -1)).all() and I2.max() < 50


def test_build_once_peer_refuses_a_later_add(data):
    pytest.importorskip("rabitqlib")
    base, queries = data
    index = annbin.make_float_index("rabitqlib-symqg", 64, "l2")
    index.num_threads = 1
    index.add(base[:500])
    index.search(queries[:1], 1)
    with pytest.raises(ValueError, match="built once"):
        index.add(base[500:600])
    grows = annbin.make_float_index("rabitqlib-hnsw", 64, "l2")  # rabitqlib's HNSW takes later adds
    grows.num_threads = 1
    grows.add(base[:500])
    grows.search(queries[:1], 1)
    grows.add(base[500:600])
    _, I = grows.search(base[550:551], 1, params={"ef_search": 64})
    assert grows.ntotal == 600 and I[0, 0] == 550


def test_importing_peers_does_not_import_the_libraries():
    import subprocess

    code = "import annbin.bench.peers, sys; print(sorted(m for m in ('scann', 'usearch', 'rabitqlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_peer_is_skipped_with_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "scann", None)  # import scann now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'annbin\[peers\]'"):
        annbin.make_float_index("scann", 64, "ip")
    cfg = BenchConfig(dataset="synthetic-small", indexes=["scann:leaves_to_search=5|10", "faiss-hnsw-sq8:ef=16"], max_queries=10, runs=1, latency_queries=0)
    rows = run_bench(cfg)
    err = capsys.readouterr().err
    assert err.splitlines() == ["skipping scann: needs scann (pip install 'annbin[peers]')"]  # its build spec, once
    assert [(r["index"], r["library"]) for r in rows] == [("faiss-hnsw-sq8", "faiss")]
    assert rows[0]["rotation"] is None and rows[0]["recall_float"] > 0.5


def _row(index, library, recall, qps, params=None):
    return {"index": index, "library": library, "recall_float": recall, "qps": qps, "params": params or {}, "bytes_per_vector": 100.0, "oversample": None}


def test_summary_names_the_fastest_peer_at_equal_or_better_recall():
    rows = [
        _row("hnsw", "annbin", 0.96, 9000.0, {"M": 16}),
        _row("float-flat", "faiss", 1.0, 99999.0),  # exact scan: not a peer
        _row("float-hnsw", "hnswlib", 0.97, 3000.0, {"ef": 32}),
        _row("scann", "scann", 0.95, 50000.0),  # faster, but below the binary row's recall
        _row("usearch", "usearch", 0.961, 4000.0, {"ef": 64}),
        _row("rabitqlib-hnsw", "rabitqlib", 0.99, 4500.0, {"ef": 100}),
    ]
    line = summary_line(rows)
    assert "float HNSW (ef=32)" in line
    assert "fastest peer at recall >= 0.960: rabitqlib rabitqlib-hnsw ef=100: 0.990 at 4,500 q/s" in line
    assert line.endswith("binary is 2.00x its queries/s")
    slow = [r for r in rows if r["library"] in ("annbin", "hnswlib", "scann")]
    assert "no peer row reaches 0.960 (best: scann scann at 0.950)" in summary_line(slow)
    assert "peer" not in summary_line(rows[:3])
