"""ShardedIndex on a local Ray started once for the session: exactness, ids, persistence, failure.

Tests that need Ray skip with a reason when it is not installed (``annbin[distributed]``); the
ones that check Ray stays optional run either way. Shards are kept at 2 and indexes are reused
(``reset()``) because every actor is a new worker process, slow to start on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import annbin
from annbin._checks import INT32_MAX
from annbin.distributed import ShardedIndex, ShardError, parse_sharded_spec, shard_of
from tests.conftest import clustered_codes, popcount_knn

D_BITS = 64
CS = D_BITS // 8
# "mih" answers shards this small by the flat scan; "mih:fallback=never" runs its own lookups
EXACT = ["flat", "mih", "mih:fallback=never"]


# --- no Ray needed -------------------------------------------------------------------------------
def test_import_annbin_never_imports_ray():
    code = "import sys, annbin, annbin.distributed; annbin.make_index('flat', 64); assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ImportError, match=r"annbin\[distributed\]"):
        ShardedIndex("flat", D_BITS, shards=2)
    with pytest.raises(ImportError, match=r"annbin\[distributed\]"):
        annbin.make_index("sharded:shards=2:flat", D_BITS)


def test_spec_grammar():
    assert parse_sharded_spec("sharded:shards=2:mih") == ("mih", {"shards": 2})
    assert parse_sharded_spec("sharded:shards=3,num_cpus=1:mih:m=4") == ("mih:m=4", {"shards": 3, "num_cpus": 1})
    assert parse_sharded_spec("sharded:mih:m=4") == ("mih:m=4", {})
    assert parse_sharded_spec(" Sharded:shards=2:hnsw:M=16,ef_search=32") == ("hnsw:M=16,ef_search=32", {"shards": 2})


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("sharded", "names no index"),
        ("sharded:shards=2", "names no index"),
        ("sharded:shards=0:flat", "int >= 1"),
        ("sharded:shards=two:flat", "int >= 1"),
        ("sharded:replicas=2:flat", "unknown option 'replicas'"),
        ("sharded:shards=2,shards=3:flat", "given twice"),
        ("sharded:shards=2:sharded:flat", "nests"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_sharded_spec(spec)
    with pytest.raises(ValueError, match=match):  # make_index checks before needing Ray
        annbin.make_index(spec, D_BITS)


def test_partition_is_deterministic_and_balanced():
    ids = np.arange(100_000, dtype=np.int64)
    for shards in (2, 3, 8):
        owner = shard_of(ids, shards)
        assert np.array_equal(owner, shard_of(ids, shards))
        counts = np.bincount(owner, minlength=shards)
        assert counts.min() > 0.95 * ids.size / shards  # sequential ids spread evenly
        strided = np.bincount(shard_of(ids * shards, shards), minlength=shards)
        assert strided.min() > 0.95 * ids.size / shards  # so do ids that id % shards would pile up
    assert shard_of(np.array([2**62 + 5], np.int64), 4)[0] in range(4)


# --- on a local Ray --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'annbin[distributed]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    if started:
        ray.shutdown()


def kill_actor(ray, actor, timeout_s: float = 30.0) -> None:
    """Kill ``actor`` and return once Ray reports it dead: ``ray.kill`` is asynchronous, and a search
    sent before the kill lands would be answered by the dying actor."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError(f"actor still answering {timeout_s} s after ray.kill")


@pytest.fixture(scope="module", params=EXACT)
def sharded(request, ray_session):
    """A 2-shard index per exact variant, shared by the module's tests (each resets it)."""
    index = ShardedIndex(request.param, D_BITS, shards=2)
    yield index
    index.close()


@pytest.fixture
def fresh(sharded):
    sharded.reset()
    sharded.set_search_params(**_single(sharded).get_search_params())  # back to the defaults
    return sharded


def _single(index: ShardedIndex) -> annbin.BinaryIndex:
    return annbin.make_index(index.inner_spec, D_BITS)


def _check_own_work(index: ShardedIndex) -> None:
    """For a sharded ``mih:fallback=never``: every shard's last kNN search made bucket lookups and
    sent no query to the flat scan."""
    if index.get_search_params().get("fallback") == "never":
        stats = index.search_stats()
        assert stats and all(s["lookups"] > 0 and s["fallback_queries"] == 0 for s in stats.values()), stats


def _check_valid(base, ids, queries, D, I):
    """Ids exist, lie at the reported distances, no duplicates, rows sorted by (distance, id)."""
    lookup = {int(i): row for row, i in enumerate(ids)}
    for q, drow, irow in zip(queries, D, I):
        real = irow >= 0
        assert len(set(irow[real].tolist())) == int(real.sum())
        rows = np.array([lookup[int(i)] for i in irow[real]], dtype=np.int64)
        assert np.array_equal(np.bitwise_count(base[rows] ^ q).sum(axis=1), drow[real])
        assert (drow[~real] == INT32_MAX).all()
        order = np.lexsort((irow, drow))
        assert np.array_equal(order, np.arange(irow.size))


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_sharded_equals_unsharded(fresh, kind):
    rng = np.random.default_rng(7)
    if kind == "random":
        base, queries = rng.integers(0, 256, (3000, CS), dtype=np.uint8), rng.integers(0, 256, (40, CS), dtype=np.uint8)
    else:
        both = clustered_codes(rng, 3040, CS, flip=0.05)
        base, queries = both[:3000], both[3000:]
    single = _single(fresh)
    fresh.add(base)
    single.add(base)
    assert fresh.ntotal == single.ntotal == 3000 and len(fresh) == 3000
    assert (fresh.shard_sizes > 1300).all()
    for k in (1, 10, 257):
        D, I = fresh.search(queries, k)
        Ds, Is = single.search(queries, k)
        assert np.array_equal(D, Ds)  # exact: the very same distances
        assert np.array_equal(D, popcount_knn(base, queries, k))
        _check_valid(base, np.arange(3000), queries, D, I)
        _check_own_work(fresh)
        assert np.array_equal(I, Is)  # one tie rule: the very same ids
    lims, D, I = fresh.range_search(queries, 20)
    lims_s, D_s, I_s = single.range_search(queries, 20)
    assert np.array_equal(lims, lims_s) and np.array_equal(D, D_s) and np.array_equal(I, I_s)


def test_heavy_ties_and_padding(fresh):
    rng = np.random.default_rng(3)
    base = np.repeat(rng.integers(0, 256, (3, CS), dtype=np.uint8), 7, axis=0)  # 21 codes, 3 values
    empty_D, empty_I = fresh.search(base[:2], 4)
    assert (empty_I == -1).all() and (empty_D == INT32_MAX).all()
    fresh.add(base)
    single = _single(fresh)
    single.add(base)
    D, I = fresh.search(base[::7], 25)  # k > ntotal, and > each shard's size
    Ds, Is = single.search(base[::7], 25)
    assert np.array_equal(D, Ds) and np.array_equal(I, Is)  # ties are all returned: ids agree too
    assert (I[:, 21:] == -1).all() and (D[:, 21:] == INT32_MAX).all()
    _check_valid(base, np.arange(21), base[::7], D, I)


def test_ties_are_the_unsharded_ties(fresh):
    """Tie-heavy codes, ids shuffled, some removed, more added: exactly FlatIndex's (D, I), so at
    the k-th distance the smallest ids win whichever shard holds them; range search agrees too."""
    rng = np.random.default_rng(17)
    pool = rng.integers(0, 256, (3, CS), dtype=np.uint8)
    base = pool[rng.integers(0, 3, 600)] ^ np.packbits(rng.random((600, D_BITS)) < 0.01, axis=1)
    ids = rng.choice(np.arange(10, 10**6), 600, replace=False).astype(np.int64)
    queries = np.concatenate([pool, base[:5], rng.integers(0, 256, (2, CS), dtype=np.uint8)])
    flat = annbin.FlatIndex(D_BITS)
    for index in (fresh, flat):
        index.add(base, ids=ids)
        index.remove_ids(ids[::4])
        index.add(pool, ids=np.array([5, 3, 1]))  # smaller than every other id, added last
    for k in (1, 7, 60):
        D, I = fresh.search(queries, k)
        Df, If = flat.search(queries, k)
        assert np.array_equal(D, Df) and np.array_equal(I, If)
        _check_own_work(fresh)
    for a, b in zip(fresh.range_search(queries, 2), flat.range_search(queries, 2)):
        assert np.array_equal(a, b)


def test_user_ids_kept_and_removed(fresh):
    rng = np.random.default_rng(11)
    base = clustered_codes(rng, 500, CS)
    ids = rng.choice(2**40, size=500, replace=False).astype(np.int64)
    fresh.add(base, ids=ids)
    assert sorted(fresh.get_ids().tolist()) == sorted(ids.tolist())
    D, I = fresh.search(base[:5], 3)
    assert (D[:, 0] == 0).all() and set(I.ravel().tolist()) <= set(ids.tolist())
    _check_valid(base, ids, base[:5], D, I)
    with pytest.raises(ValueError, match="already in the index"):
        fresh.add(base[:3], ids=np.array([7, ids[4], 9]))
    assert fresh.ntotal == 500  # nothing added on any shard
    assert fresh.remove_ids(np.concatenate([ids[:50], [123456789]])) == 50
    assert fresh.ntotal == 450
    assert not set(fresh.search(base[:50], 10)[1].ravel().tolist()) & set(ids[:50].tolist())
    fresh.add(base[:50], ids=ids[:50])  # ids can come back once removed
    assert fresh.ntotal == 500
    fresh.add(base[:10])  # sequential ids continue after the largest id seen
    assert fresh.get_ids().max() == ids.max() + 10


def test_get_codes_one_call_per_shard(fresh, monkeypatch):
    rng = np.random.default_rng(13)
    base = rng.integers(0, 256, (500, CS), dtype=np.uint8)
    ids = np.concatenate([np.arange(300), rng.choice(2**40, 200, replace=False) + 300]).astype(np.int64)
    fresh.add(base[:300])
    fresh.add(base[300:], ids=ids[300:])
    fresh.remove_ids(ids[:10])
    expect = dict(zip(ids[10:].tolist(), base[10:]))
    calls = []
    real_call = fresh._group.call
    monkeypatch.setattr(fresh._group, "call", lambda method, args=(): calls.append((method, sorted(args))) or real_call(method, args))
    matrix = rng.choice(ids[10:], (60, 20))
    matrix[::7, -3:] = -1
    got = fresh.get_codes(matrix)
    assert got.shape == (60, 20, CS) and got.dtype == np.uint8
    assert np.array_equal(got[matrix >= 0], np.array([expect[i] for i in matrix[matrix >= 0].tolist()]))
    assert not got[matrix < 0].any()
    assert calls == [("get_codes", [0, 1])]  # one batched call per shard
    assert np.array_equal(fresh.reconstruct(int(ids[400])), base[400])
    with pytest.raises(ValueError, match=r"ids not in the index: \[0, 1, 2\]"):
        fresh.get_codes(np.array([ids[20], 2, 1, 0, -1]))
    with pytest.raises(TypeError, match="integers"):
        fresh.get_codes(matrix.astype(np.float64))


def test_interface_and_params(fresh):
    assert isinstance(fresh, annbin.BinaryIndex) and fresh.exact
    base = clustered_codes(np.random.default_rng(5), 400, CS)
    fresh.add(base)
    single = _single(fresh)
    single.add(base)
    if fresh.inner_spec.startswith("flat"):
        assert fresh.memory_bytes() == single.memory_bytes()
    else:
        assert fresh.memory_bytes() > 0
        fresh.set_search_params(fallback="always")
        assert fresh.get_search_params()["fallback"] == "always"
        assert "fallback=always" in fresh.spec
        assert np.array_equal(fresh.search(base[:9], 5, params={"fallback": "never"})[0], single.search(base[:9], 5)[0])
    assert fresh.spec.startswith("sharded:shards=2:")
    with pytest.raises(ValueError, match="unknown search parameter"):
        fresh.set_search_params(nprobe=3)
    with pytest.raises(ValueError, match="unknown search parameter"):
        fresh.search(base[:2], 3, params={"nprobe": 3})


def test_per_call_params_reach_the_shards_and_stay_per_call(fresh):
    """params= travel with one call to every shard (the shards' counters show it) and are never stored,
    so searches with different params from a thread pool equal serial ones."""
    if fresh.inner_spec.startswith("flat"):
        pytest.skip("flat has no search parameters")
    from concurrent.futures import ThreadPoolExecutor

    base = clustered_codes(np.random.default_rng(8), 400, CS)
    fresh.add(base)
    fresh.set_search_params(fallback="never")
    before = fresh.get_search_params()
    fresh.search(base[:10], 5, params={"fallback": "always"})
    assert all(st["fallback_queries"] == st["queries"] > 0 for st in fresh.search_stats().values() if st)
    fresh.search(base[:10], 5)
    assert all(st["fallback_queries"] == 0 for st in fresh.search_stats().values() if st)
    asks = [{"fallback": "always"}, None, {"fallback": "auto", "fallback_ratio": 0.5}] * 3
    serial = [fresh.search(base[:30], 7, params=p) for p in asks]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda p: fresh.search(base[:30], 7, params=p), asks))
    for (D, I), (Dt, It) in zip(serial, together):
        assert np.array_equal(D, Dt) and np.array_equal(I, It)
    assert fresh.get_search_params() == before


def test_bad_inputs(fresh):
    with pytest.raises(TypeError, match="uint8"):
        fresh.add(np.zeros((3, CS), np.float32))
    with pytest.raises(TypeError, match="uint8"):
        fresh.search(np.zeros((3, CS), np.int8), 1)
    with pytest.raises(ValueError, match="width mismatch"):
        fresh.add(np.zeros((3, CS + 1), np.uint8))
    with pytest.raises(ValueError, match="k must be >= 1"):
        fresh.search(np.zeros((3, CS), np.uint8), 0)
    with pytest.raises(ValueError, match="length mismatch"):
        fresh.add(np.zeros((3, CS), np.uint8), ids=[1, 2])
    with pytest.raises(ValueError, match="duplicates"):
        fresh.add(np.zeros((3, CS), np.uint8), ids=[1, 1, 2])
    assert fresh.ntotal == 0


def test_bad_constructor_arguments(ray_session):
    with pytest.raises(ValueError, match="shards must be >= 1"):
        ShardedIndex("flat", D_BITS, shards=0)
    with pytest.raises(ValueError, match="unknown index spec"):
        ShardedIndex("nope", D_BITS, shards=2)
    with pytest.raises(ValueError, match="sharded spec"):
        ShardedIndex("sharded:shards=2:flat", D_BITS)
    with pytest.raises(ValueError, match="multiple of 8"):
        ShardedIndex("flat", 60, shards=2)
    with pytest.raises(ValueError, match="plain index spec"):  # refused before any actor starts
        ShardedIndex("flat+rescore:rerank=asymmetric", d=D_BITS, shards=2)


def test_make_index_spec(ray_session):
    index = annbin.make_index("sharded:shards=2:mih:m=4", d=D_BITS)
    try:
        assert isinstance(index, ShardedIndex) and index.num_shards == 2 and index.inner_spec.startswith("mih:m=4")
        assert index.spec.startswith("sharded:shards=2:mih:m=4")
        index.set_search_params(fallback="never")
        again = annbin.make_index(index.spec, d=index.d)  # the spec round-trips, search parameters included
        try:
            assert isinstance(again, ShardedIndex) and again.spec == index.spec and "fallback=never" in again.spec
            assert again.num_shards == 2 and again.get_search_params() == index.get_search_params()
            # get_params()["spec"] is the spec the shards were built from, search values of that time
            assert _single(again).get_params() == _single(index).get_params()
        finally:
            again.close()
        index.add(clustered_codes(np.random.default_rng(1), 100, CS))
        assert index.ping() == index.shard_sizes.tolist()
    finally:
        index.close()
    with pytest.raises(RuntimeError, match="closed"):
        index.search(np.zeros((1, CS), np.uint8), 1)


def test_save_load_round_trip(fresh, tmp_path):
    rng = np.random.default_rng(21)
    base = clustered_codes(rng, 800, CS)
    ids = rng.permutation(10_000)[:800].astype(np.int64)
    fresh.add(base, ids=ids)
    fresh.save(tmp_path / "idx")
    fresh.remove_ids(ids[:100])
    fresh.save(tmp_path / "idx")  # a second save replaces the first one's files
    files = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert len(files) == 3 and "manifest.json" in files
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["shards"] == 2 and manifest["ntotal"] == 700 and len(manifest["files"][0]["sha256"]) == 64
    loaded = ShardedIndex.load(tmp_path / "idx")
    try:
        assert loaded.ntotal == 700 and loaded.spec == fresh.spec
        assert np.array_equal(loaded.shard_sizes, fresh.shard_sizes)
        for a, b in zip(loaded.search(base[:30], 10), fresh.search(base[:30], 10)):
            assert np.array_equal(a, b)
        assert np.array_equal(loaded.get_codes(ids[100:]), base[100:])
        loaded.add(base[:1])
        assert loaded.get_ids().max() == ids.max() + 1  # next sequential id survives the round trip
    finally:
        loaded.close()
    via_registry = annbin.load_index(str(tmp_path / "idx"))  # a saved directory loads like a file
    try:
        assert isinstance(via_registry, ShardedIndex) and via_registry.ntotal == 700
    finally:
        via_registry.close()


def test_load_rejects_damage(ray_session, tmp_path):
    index = ShardedIndex("flat", D_BITS, shards=2)
    try:
        index.add(np.random.default_rng(2).integers(0, 256, (200, CS), dtype=np.uint8))
        index.save(tmp_path)
    finally:
        index.close()
    with pytest.raises(ValueError, match="manifest.json not found"):
        ShardedIndex.load(tmp_path / "nothing-here")
    shard_file = tmp_path / json.loads((tmp_path / "manifest.json").read_text())["files"][1]["file"]
    data = bytearray(shard_file.read_bytes())
    data[100] ^= 0xFF
    shard_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest"):
        ShardedIndex.load(tmp_path)
    shard_file.unlink()
    with pytest.raises(ValueError, match="missing shard file"):
        ShardedIndex.load(tmp_path)


def test_killed_actor_restarts_from_file_when_saved(fresh, ray_session, tmp_path):
    base = clustered_codes(np.random.default_rng(8), 600, CS)
    fresh.add(base)
    expected = fresh.search(base[:20], 10)
    fresh.save(tmp_path)
    before = fresh.restarts
    kill_actor(ray_session, fresh._group.actors[1])
    with pytest.warns(RuntimeWarning, match="shard 1 of 2 died during search; restarted it from"):
        D, I = fresh.search(base[:20], 10)
    assert np.array_equal(D, expected[0]) and np.array_equal(I, expected[1])
    assert fresh.restarts == before + 1 and fresh.ntotal == 600
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.search(base[:20], 10)  # the new actor serves from now on


def test_killed_actor_with_unsaved_changes_raises_naming_the_shard(ray_session, tmp_path):
    index = ShardedIndex("flat", D_BITS, shards=2)
    try:
        base = clustered_codes(np.random.default_rng(9), 300, CS)
        index.add(base)
        index.save(tmp_path)
        index.add(base[:10])  # both shards change after the save (ids 300..309 hash to both)
        assert index._group.sources == [None, None]
        kill_actor(ray_session, index._group.actors[0])
        with pytest.raises(ShardError, match=r"shard 0 of 2 died during search .*cannot be restored") as info:
            index.search(base[:5], 3)
        assert info.value.shard == 0
        with pytest.raises(ShardError, match="shard 0"):  # and keeps saying so: never a partial answer
            index.search(base[:5], 3)
    finally:
        index.close()


def test_unanswered_shard_times_out_naming_it(ray_session):
    index = ShardedIndex("flat", D_BITS, shards=2, actor_options={"num_cpus": 1000}, timeout_s=0.5)  # never placed
    try:
        with pytest.raises(ShardError, match=r"shard \d of 2 did not answer ping within 0.5 s"):
            index.ping()
    finally:
        index.close()


def test_bench_runs_sharded_specs(ray_session, tmp_path, monkeypatch):
    """`annbin bench --index "sharded:shards=2:mih"` measures a sharded index like any other."""
    from click.testing import CliRunner

    from annbin.bench.cli import main

    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", "--dataset", "synthetic-small", "--k", "5", "--runs", "1", "--latency-queries", "2",
                                       "--max-queries", "20", "--no-progress", "--project-bits", "64", "--index", "sharded:shards=2:mih",
                                       "--index", "mih", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == ["sharded-mih", "mih"]
    assert rows[0]["params"]["shards"] == 2
    assert rows[0]["recall_hamming"] == rows[1]["recall_hamming"] == 1.0
