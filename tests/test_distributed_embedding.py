"""ShardedEmbeddingIndex on the local Ray of tests/test_distributed.py: the float pipeline per shard,
merged exactly, saved, reloaded and restarted.

The oracle is plain: the same shards built in this process as ``BinaryEmbeddingIndex`` objects
(the same rows, in the same order, under the same ids), each searched, their results merged by
hand by (score, id). Two indexes are shared by the module (each test resets them): every actor is
a new worker process, slow to start on a 2-core machine.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import annbin
from annbin.distributed import ShardedEmbeddingIndex, ShardedIndex, ShardError, shard_of
from tests.test_distributed import kill_actor, ray_session  # noqa: F401 - the session's one local Ray

DIM = 32
# (spec, route, BinaryEmbeddingIndex keywords): the default first stage by cosine, and a flat
# Hamming first stage with the asymmetric rerank by L2; threads=1 builds the same graph every time
SETUPS = {
    "rq-hnsw/round-robin/cos": (None, "round-robin", {"threads": 1}),
    "flat/id/l2": ("flat", "id", {"metric": "l2", "rerank": "asymmetric", "oversample": 8}),
}


@pytest.fixture(scope="module", params=sorted(SETUPS))
def sharded(request, ray_session):  # noqa: F811
    spec, route, kwargs = SETUPS[request.param]
    index = ShardedEmbeddingIndex(spec, shards=2, route=route, **kwargs)
    index.kwargs = kwargs  # what the local oracle shards are built with
    index.defaults = annbin.BinaryEmbeddingIndex(index.spec, **kwargs).get_search_params()
    yield index
    index.close()


@pytest.fixture
def fresh(sharded):
    sharded.reset()
    sharded.set_search_params(**sharded.defaults)
    return sharded


def _data(seed: int, n: int, nq: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Clustered floats with exact duplicates (equal scores on both shards: ties) and queries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    x = (centres[rng.integers(0, 8, n)] + 0.4 * rng.standard_normal((n, DIM))).astype(np.float32)
    m = min(40, n // 4)
    x[n // 2 : n // 2 + m] = x[:m]  # the same vectors again, under other ids, often on the other shard
    q = np.concatenate([x[:5], (centres[rng.integers(0, 8, nq - 5)] + 0.4 * rng.standard_normal((nq - 5, DIM)))]).astype(np.float32)
    return x, q


def _owners(index: ShardedEmbeddingIndex, ids: np.ndarray, first_row: int) -> np.ndarray:
    """The shard of each row: in turn from the row's place in all adds, or by the id's hash."""
    return shard_of(ids, 2) if index.route == "id" else (first_row + np.arange(ids.size)) % 2


def _local_shards(index: ShardedEmbeddingIndex, adds: list[tuple[np.ndarray, np.ndarray]]) -> list[annbin.BinaryEmbeddingIndex]:
    local = [annbin.BinaryEmbeddingIndex(index.spec, **index.kwargs) for _ in range(2)]
    row = 0
    for x, ids in adds:
        owner = _owners(index, ids, row)
        for s in range(2):
            if (owner == s).any():
                local[s].add(x[owner == s], ids[owner == s])
        row += ids.size
    return local


def _merge_by_hand(parts: list[tuple[np.ndarray, np.ndarray]], k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    S = np.empty((parts[0][0].shape[0], k), np.float32)
    I = np.empty((parts[0][0].shape[0], k), np.int64)
    for qi in range(S.shape[0]):
        pairs = [(float(s), int(i)) for scores, ids in parts for s, i in zip(scores[qi], ids[qi])]
        pairs.sort(key=lambda p: (p[1] < 0, p[0] if metric == "l2" else -p[0], p[1]))  # missing last
        S[qi], I[qi] = [p[0] for p in pairs[:k]], [p[1] for p in pairs[:k]]
    return S, I


def _assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    assert a[0].dtype == np.float32 and a[1].dtype == np.int64
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_equals_the_local_shards_merged_by_hand(fresh):
    x, q = _data(1, 2001)
    ids = np.random.default_rng(2).choice(10**6, 1001, replace=False).astype(np.int64)
    fresh.add(x[:1001], ids=ids)  # odd: round-robin's next add starts on shard 1
    fresh.add(x[1001:])  # sequential ids after the largest one seen
    adds = [(x[:1001], ids), (x[1001:], np.arange(ids.max() + 1, ids.max() + 1001))]
    local = _local_shards(fresh, adds)
    assert fresh.shard_sizes.tolist() == [shard.ntotal for shard in local] and fresh.ntotal == 2001
    assert fresh.dim == DIM
    for k in (1, 10, 60):
        got = fresh.search(q, k)
        _assert_same(got, _merge_by_hand([shard.search(q, k) for shard in local], k, fresh.metric))
        order = -got[0] if fresh.metric != "l2" else got[0]
        assert (np.diff(order, axis=1) >= 0).all()
    all_ids = np.concatenate([a[1] for a in adds])
    S, I = fresh.search(x[1:5], 2)  # rows 1..4 are stored twice (rows 1001..1004): equal scores, smaller id first
    assert (S[:, 0] == S[:, 1]).all() and (I[:, 0] < I[:, 1]).all()
    assert np.array_equal(np.sort(I, axis=1), np.sort(np.stack([all_ids[1:5], all_ids[1001:1005]], axis=1), axis=1))
    params = {"oversample": 3, "ef_search": 40} if "ef_search" in fresh.get_search_params() else {"oversample": 2, "rerank_oversample": 1}
    for shard in local:
        shard.set_search_params(**params)
    expect = _merge_by_hand([shard.search(q, 10) for shard in local], 10, fresh.metric)
    before = fresh.get_search_params()
    _assert_same(fresh.search(q, 10, params=params), expect)  # per call: nothing stored
    assert fresh.get_search_params() == before
    fresh.set_search_params(**params)
    assert fresh.get_search_params() == {**before, **params}
    _assert_same(fresh.search(q, 10), expect)
    assert fresh.memory_bytes() == sum(shard.memory_bytes() for shard in local)
    assert fresh.disk_bytes() == sum(shard.disk_bytes() for shard in local) > 0


def test_padding_empty_shards_and_held_params(fresh):
    worst = np.inf if fresh.metric == "l2" else -np.inf
    x, q = _data(3, 40)
    S, I = fresh.search(q[:3], 4)  # nothing added: every result missing
    assert (I == -1).all() and (S == worst).all()
    with pytest.raises(ValueError, match="first-stage search parameters"):
        fresh.set_search_params(**({"ef_search": 50} if fresh.spec.startswith("rq") else {"nprobe": 2}))
    fresh.add(x[:1], ids=[7])  # one row: one shard stays empty
    assert sorted(fresh.shard_sizes.tolist()) == [0, 1]
    S, I = fresh.search(q[:3], 4)
    assert (I[:, 0] == 7).all() and (I[:, 1:] == -1).all() and (S[:, 1:] == worst).all()
    if fresh.spec.startswith("rq"):
        fresh.set_search_params(ef_search=33)  # the empty shard holds it until its first add
        fresh.add(x[1:])
        assert fresh.search(q, 5, params={"ef_search": 40})[1].shape == (q.shape[0], 5)
        local = _local_shards(fresh, [(x[:1], np.array([7])), (x[1:], np.arange(8, 47))])
        for shard in local:
            shard.set_search_params(ef_search=33)
        _assert_same(fresh.search(q, 5), _merge_by_hand([shard.search(q, 5) for shard in local], 5, fresh.metric))


def test_ids_duplicates_and_removal(fresh):
    x, q = _data(4, 600)
    ids = np.arange(1000, 1600, dtype=np.int64)
    fresh.add(x, ids=ids)
    with pytest.raises(ValueError, match=r"ids already in the index: \[1001, 1003\]"):
        fresh.add(x[:3], ids=[5, 1001, 1003])  # stored on either shard, whatever the route
    assert fresh.ntotal == 600
    assert fresh.remove_ids(np.concatenate([ids[:50], [3, 10**9]])) == 50
    assert fresh.ntotal == 550 and fresh.shard_sizes.sum() == 550
    assert not set(fresh.search(x[:50], 10)[1].ravel().tolist()) & set(ids[:50].tolist())
    fresh.add(x[:50], ids=ids[:50])  # removed ids can come back
    fresh.add(x[:2])
    S, I = fresh.search(x[:1], 3)
    assert {1600, 1000} <= set(I[0].tolist())  # sequential ids continue after the largest one seen


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_merge_of_many_shards_is_the_plain_merge(metric):
    """The driver's merge for many shards (its fast path) against the hand merge: tie-heavy
    scores, missing results, a row with fewer than k found."""
    from annbin.distributed.embedding import merge_top_k

    rng = np.random.default_rng(10)
    shards, k = 60, 10
    scores = np.round(rng.random((30, shards * k)), 2).astype(np.float32)
    ids = rng.permutation(10**6)[: scores.size].reshape(scores.shape).astype(np.int64)
    missing = rng.random(scores.shape) < 0.3
    missing[0, 5:] = True  # row 0: only 5 found
    ids[missing], scores[missing] = -1, (np.inf if metric == "l2" else -np.inf)
    parts = [(scores[:, s * k : (s + 1) * k], ids[:, s * k : (s + 1) * k]) for s in range(shards)]
    _assert_same(merge_top_k(scores, ids, k, metric), _merge_by_hand(parts, k, metric))


def test_bad_inputs(fresh):
    x, _ = _data(5, 50)
    fresh.add(x)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fresh.search(x[:2], 0)
    with pytest.raises(TypeError, match="k must be an int"):
        fresh.search(x[:2], 2.5)
    with pytest.raises(ValueError, match=r"dimension mismatch: expected \(n, 32\)"):
        fresh.search(x[:2, :16], 3)
    with pytest.raises(ValueError, match=r"dimension mismatch"):
        fresh.add(np.zeros((2, 33), np.float32))
    bad = x[:3].copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fresh.add(bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        fresh.search(bad, 3)
    with pytest.raises(TypeError, match="float array"):
        fresh.add(np.ones((2, DIM), np.int32))
    with pytest.raises(ValueError, match="length mismatch"):
        fresh.add(x[:3], ids=[1, 2])
    with pytest.raises(ValueError, match="duplicates"):
        fresh.add(x[:3], ids=[900, 900, 901])
    if fresh.metric == "cos":
        with pytest.raises(ValueError, match="nonzero vectors: row 1"):
            fresh.add(np.stack([x[0], np.zeros(DIM, np.float32)]))
    with pytest.raises(ValueError, match="unknown search parameter"):
        fresh.search(x[:2], 3, params={"nprobes": 3})
    with pytest.raises(ValueError, match="oversample must be >= 1"):
        fresh.set_search_params(oversample=0)
    assert fresh.ntotal == 50  # nothing reached a shard


def test_bad_constructor_arguments():
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'annbin[distributed]'")
    # every check runs before an actor (or Ray) starts
    with pytest.raises(ValueError, match="shards must be >= 1"):
        ShardedEmbeddingIndex(shards=0)
    with pytest.raises(ValueError, match="route must be one of 'round-robin', 'id'"):
        ShardedEmbeddingIndex(route="hash")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        ShardedEmbeddingIndex(timeout_s=0)
    with pytest.raises(ValueError, match="each shard's own file"):
        ShardedEmbeddingIndex("flat", store_vectors="vectors.npy")
    with pytest.raises(ValueError, match="unknown index spec"):
        ShardedEmbeddingIndex("nope")
    with pytest.raises(ValueError, match="metric"):
        ShardedEmbeddingIndex("flat", metric="hamming")
    with pytest.raises(TypeError, match="unexpected keyword argument 'ef'"):
        ShardedEmbeddingIndex("flat", ef=3)


def test_save_load_round_trip(fresh, tmp_path):
    x, q = _data(6, 800)
    fresh.add(x[:501])
    fresh.set_search_params(oversample=5)
    fresh.save(tmp_path / "idx")
    fresh.add(x[501:])
    fresh.save(tmp_path / "idx")  # a second save commits the rows added since, in place
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["manifest.json", "shard-00000", "shard-00001"]
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["format"] == "annbin-sharded-embedding" and manifest["ntotal"] == 800 and manifest["route"] == fresh.route
    assert len(manifest["files"][1]["sha256"]) == 64 and manifest["search_params"]["oversample"] == 5
    expect = fresh.search(q, 10)
    loaded = annbin.load(tmp_path / "idx")  # ShardedEmbeddingIndex.load, as the manifest says
    try:
        assert isinstance(loaded, ShardedEmbeddingIndex)
        assert (loaded.ntotal, loaded.dim, loaded.route, loaded.spec) == (800, DIM, fresh.route, fresh.spec)
        assert loaded.get_search_params() == fresh.get_search_params()
        _assert_same(loaded.search(q, 10), expect)
        assert loaded.disk_bytes() == fresh.disk_bytes()
        loaded.add(x[:3])  # sequential ids and the round-robin turn survive the round trip
        owners = _owners(loaded, np.arange(800, 803), 800)
        assert (loaded.shard_sizes - fresh.shard_sizes).tolist() == np.bincount(owners, minlength=2).tolist()
        assert loaded.search(x[:3], 3)[1].tolist() == [[i, 400 + i, 800 + i] for i in range(3)]  # rows 400.. repeat rows 0..
    finally:
        loaded.close()


def test_load_rejects_damage(fresh, tmp_path):
    fresh.add(_data(7, 200)[0])
    fresh.save(tmp_path)
    with pytest.raises(ValueError, match="manifest.json not found"):
        ShardedEmbeddingIndex.load(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="not an annbin sharded index manifest"):
        ShardedIndex.load(tmp_path)  # the other kind's loader names what it found
    shard_dir = tmp_path / json.loads((tmp_path / "manifest.json").read_text())["files"][1]["file"]
    index_file = next(p for p in shard_dir.iterdir() if p.name.startswith("index"))
    data = bytearray(index_file.read_bytes())
    data[-100] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest"):
        ShardedEmbeddingIndex.load(tmp_path)
    for p in shard_dir.iterdir():
        p.unlink()
    shard_dir.rmdir()
    with pytest.raises(ValueError, match="missing shard directory"):
        annbin.load(tmp_path)


def test_killed_actor_restarts_from_its_directory(fresh, ray_session, tmp_path):  # noqa: F811
    x, q = _data(8, 600)
    fresh.add(x)
    expect = fresh.search(q, 10)
    fresh.save(tmp_path)
    before = fresh.restarts
    kill_actor(ray_session, fresh._group.actors[1])
    with pytest.warns(RuntimeWarning, match="shard 1 of 2 died during search; restarted it from"):
        got = fresh.search(q, 10)
    _assert_same(got, expect)
    assert fresh.restarts == before + 1 and fresh.ntotal == 600
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(fresh.search(q, 10), expect)  # the new actor serves from now on


def test_killed_actor_with_unsaved_changes_raises_naming_the_shard(ray_session, tmp_path):  # noqa: F811
    x, q = _data(9, 300)
    index = ShardedEmbeddingIndex("hnsw:M=8", shards=2, metric="ip")
    try:
        index.add(x[:200])
        with pytest.raises(NotImplementedError, match="'hnsw:M=8' cannot remove"):  # a shard's refusal, raised as itself
            index.remove_ids([1, 2, 3])
        assert index.ntotal == 200
        index.save(tmp_path)
        index.add(x[200:])  # both shards change after the save
        kill_actor(ray_session, index._group.actors[0])
        with pytest.raises(ShardError, match=r"shard 0 of 2 died during search .*load the last save with ShardedEmbeddingIndex.load") as info:
            index.search(q, 3)
        assert info.value.shard == 0
        with pytest.raises(ShardError, match="shard 0"):  # and keeps saying so: never a partial answer
            index.search(q, 3)
    finally:
        index.close()
    with pytest.raises(RuntimeError, match="this ShardedEmbeddingIndex is closed"):
        index.search(q, 3)
