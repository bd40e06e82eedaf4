"""``rq-ivf`` (rabitqlib's IVF): recall, its two routing paths, params, removal, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest

import annbin
from annbin.embed import rqivf
from annbin.embed.floats import make_float_index

pytest.importorskip("rabitqlib")

DIM = 96


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """3,000 base and 60 query unit vectors of a 40-centre mixture in 96-d, and the exact top-10."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, DIM)) * 2
    x = _unit(centres[rng.integers(0, 40, 3000)] + rng.standard_normal((3000, DIM)))
    q = _unit(centres[rng.integers(0, 40, 60)] + rng.standard_normal((60, DIM)))
    return x, q, np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]


def _recall(I: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, truth)]))


def _stage(spec: str, x: np.ndarray) -> rqivf.RQIVF:
    stage = make_float_index(spec, DIM, "ip")
    stage.add(x)
    return stage


def test_recall_grows_with_nprobe_and_scanning_every_list_finds_the_neighbours(data):
    x, q, truth = data
    stage = _stage("rq-ivf:nlist=64,nbits=4", x)
    assert stage.nlist == 64 and stage.ntotal == 3000
    got = [_recall(stage.search(q, 10, params={"nprobe": p})[1], truth) for p in (1, 8, 64)]
    assert got[0] < got[1] <= got[2] and got[2] >= 0.9  # 4-bit estimates over every list: near exact


def test_rows_past_the_first_block_are_routed_by_rabitqlib(data, monkeypatch):
    """A first add longer than ``_BUILD_ROWS`` is built from its first rows and adds the rest; the
    index must hold every row under its own id and find them as the exact route does."""
    x, q, truth = data
    exact = _stage("rq-ivf:nlist=32,nbits=4", x)
    monkeypatch.setattr(rqivf, "_BUILD_ROWS", 500)
    routed = _stage("rq-ivf:nlist=32,nbits=4", x)
    assert routed.ntotal == exact.ntotal == 3000
    D, I = routed.search(x[2500:2520], 1, params={"nprobe": 32})  # a stored row finds itself
    assert (I[:, 0] == np.arange(2500, 2520)).all()
    full = {"nprobe": 32}
    assert abs(_recall(routed.search(q, 10, params=full)[1], truth) - _recall(exact.search(q, 10, params=full)[1], truth)) <= 0.05


def test_default_nlist_is_four_root_n_of_the_first_add(data):
    x, _, _ = data
    stage = _stage("rq-ivf", x[:2500])
    assert stage.nlist == 200 and stage.get_params()["nlist"] == 200
    stage.add(x[2500:])  # later adds keep the lists
    assert stage.nlist == 200 and stage.ntotal == 3000


def test_more_bits_cost_more_ram_and_estimate_better(data):
    x, q, truth = data
    one, four = _stage("rq-ivf:nlist=16,nbits=1", x), _stage("rq-ivf:nlist=16,nbits=4", x)
    assert one.memory_bytes() < four.memory_bytes()
    full = {"nprobe": 16}
    assert _recall(one.search(q, 10, params=full)[1], truth) < _recall(four.search(q, 10, params=full)[1], truth)


def test_embedding_index_rescores_it_and_removes_ids(data):
    x, q, truth = data
    index = annbin.BinaryEmbeddingIndex("rq-ivf:nlist=32,nprobe=32", metric="ip")
    index.add(x)
    S, I = index.search(q, 10)
    np.testing.assert_allclose(S, np.einsum("qd,qkd->qk", q, x[I]), rtol=1e-5)  # scores are the floats'
    assert _recall(index.search(q, 10, params={"oversample": 8})[1], truth) >= 0.97
    gone = truth[:, 0]
    index.remove_ids(gone)
    assert not np.isin(index.search(q, 10)[1], gone).any()


@pytest.mark.parametrize("route, fast", [("hnsw", "true"), ("flat", "false")])
def test_save_load_gives_the_same_answers(data, tmp_path, route, fast):
    """The graph route keeps rabitqlib's centroid graph in a sidecar file: it travels as an array
    of annbin's file (``rabitqlib.hnsw``), under the file's checksum."""
    from annbin._io import read_index_file

    x, q, _ = data
    index = annbin.BinaryEmbeddingIndex(f"rq-ivf:nlist=24,nbits=3,route={route},fast={fast},nprobe=6")
    index.add(x)
    index.save(tmp_path / "i")
    _, arrays = read_index_file(tmp_path / "i" / "index.annbin")
    assert ("rabitqlib.hnsw" in arrays) == (route == "hnsw")
    back = annbin.load(tmp_path / "i")
    assert back.spec == index.spec and back.index.get_params() == index.index.get_params()
    assert back.index.nlist == 24 and back.index.get_search_params() == {"nprobe": 6}
    for a, b in zip(index.search(q, 10), back.search(q, 10)):
        np.testing.assert_array_equal(a, b)


def test_fast_quantization_and_both_routes_find_the_neighbours(data):
    x, q, truth = data
    full = {"nprobe": 32}
    for spec in ("rq-ivf:nlist=32,nbits=4,route=hnsw,fast=false", "rq-ivf:nlist=32,nbits=4,route=flat,fast=true"):
        assert _recall(_stage(spec, x).search(q, 10, params=full)[1], truth) >= 0.85, spec


@pytest.mark.parametrize("spec, match", [
    ("rq-ivf:nbits=10", "nbits must be in 1..9"),
    ("rq-ivf:nlist=0", "nlist"),
    ("rq-ivf:nprobe=0", "nprobe"),
    ("rq-ivf:route=ivf", "route must be 'hnsw' or 'flat'"),
])
def test_bad_params(spec, match):
    with pytest.raises(ValueError, match=match):
        annbin.BinaryEmbeddingIndex(spec)


def test_first_add_smaller_than_nlist_is_refused_and_nothing_is_kept(data):
    x, _, _ = data
    index = annbin.BinaryEmbeddingIndex("rq-ivf:nlist=64")
    index.add(x[:20])  # held: fewer than FIT_ROWS rows arrive before a search fits them
    with pytest.raises(ValueError, match="at least nlist=64"):
        index.search(x[:2], 1)
