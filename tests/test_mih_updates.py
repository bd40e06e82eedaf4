"""MIHIndex updates: adds go to a scanned tail, removes to tombstones, the tables are rebuilt past
``tail_fraction``; saved files hold the tables. Checked exact against faiss-flat and the tie rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import annbin
from annbin import MIHIndex
from annbin._io import read_index_file, write_index_file
from tests.test_mih import check_knn, check_range, make_codes, make_queries, tie_rule_knn

pytestmark = pytest.mark.usefixtures("reference_costs")  # conftest.py


def built(kind: str, n: int, seed: int, **kwargs: object) -> tuple[np.ndarray, MIHIndex, np.random.Generator]:
    rng = np.random.default_rng(seed)
    codes = make_codes(kind, n, 64, rng)
    index = MIHIndex(64, m=4, fallback="never", **kwargs)
    index.add(codes)
    index.build()
    return codes, index, rng


def check_exact(index: MIHIndex, codes: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, radius: int = 8) -> dict:
    """kNN equal to the tie rule's brute force (and faiss's distances), range search exact;
    returns the kNN search's ``last_search_stats``."""
    D, I = index.search(q, k)
    stats = dict(index.last_search_stats)
    check_knn(D, I, codes, ids, q, k)
    tD, tI = tie_rule_knn(codes, ids, q, k)
    np.testing.assert_array_equal(D[:, : tD.shape[1]], tD)
    np.testing.assert_array_equal(I[:, : tI.shape[1]], tI)
    check_range(*index.range_search(q, radius), codes, ids, q, radius)
    assert index.last_search_stats["tail_codes"] == stats["tail_codes"]
    return stats


def test_adds_are_scanned_in_the_tail_until_it_passes_the_fraction():
    codes, index, rng = built("duplicates", 2000, 1, tail_fraction=0.1)
    assert index.rebuilds == 1
    extra = make_codes("duplicates", 150, 64, rng)
    index.add(extra)
    q = make_queries(np.concatenate([codes, extra]), "duplicates", 30, 64, rng)
    all_codes, all_ids = np.concatenate([codes, extra]), np.arange(2150)
    stats = check_exact(index, all_codes, all_ids, q, 10)
    assert index.rebuilds == 1 and stats["tail_codes"] == 150  # the tail path ran ...
    assert stats["lookups"] > 0 and stats["fallback_queries"] == 0  # ... beside the tables'
    assert index._store.nmain == 2000 and index._store.ntail == 150
    more = make_codes("duplicates", 51, 64, rng)  # 201 > 0.1 x 2000: the next search rebuilds
    index.add(more)
    assert index.rebuilds == 1  # add alone never rebuilds
    all_codes, all_ids = np.concatenate([all_codes, more]), np.arange(2201)
    stats = check_exact(index, all_codes, all_ids, q, 10)
    assert index.rebuilds == 2 and stats["tail_codes"] == 0
    assert index._store.nmain == 2201 and index._store.ntail == 0


def test_tail_ids_below_the_tables_ids_follow_the_tie_rule():
    """Explicit ids in the tail smaller than those in the tables: ties at the k-th distance still
    go to the smallest ids (the two parts merge by (distance, id))."""
    rng = np.random.default_rng(2)
    codes = make_codes("duplicates", 1500, 64, rng)
    ids = np.arange(1500, dtype=np.int64) * 3 + 1000
    index = MIHIndex(64, m=4, fallback="never", tail_fraction=0.5)
    index.add(codes, ids=ids)
    index.build()
    extra = codes[rng.choice(1500, 300, replace=False)]  # the same codes again: ties across the parts
    extra_ids = rng.permutation(1000)[:300].astype(np.int64)
    index.add(extra, ids=extra_ids)
    q = make_queries(codes, "duplicates", 40, 64, rng)
    for k in (1, 5, 40):
        stats = check_exact(index, np.concatenate([codes, extra]), np.concatenate([ids, extra_ids]), q, k)
        assert stats["tail_codes"] == 300 and stats["lookups"] > 0 and index.rebuilds == 1
    assert sorted(index.get_ids().tolist()) == sorted(np.concatenate([ids, extra_ids]).tolist())


@pytest.mark.parametrize("fallback", ["never", "always"])
def test_removes_are_tombstones_until_the_fraction(fallback):
    codes, index, rng = built("duplicates", 2000, 3, tail_fraction=0.1)
    index.set_search_params(fallback=fallback)
    extra = make_codes("duplicates", 60, 64, rng)
    index.add(extra)
    all_codes, all_ids = np.concatenate([codes, extra]), np.arange(2060)
    gone = np.concatenate([rng.choice(2000, 80, replace=False), 2000 + rng.choice(60, 20, replace=False)])
    assert index.remove_ids(gone) == 100 and index.remove_ids(gone) == 0
    assert index._store.ndead == 80 and index._store.ntail == 40 and index.ntotal == 1960
    keep = ~np.isin(all_ids, gone)
    q = make_queries(all_codes, "duplicates", 30, 64, rng)
    stats = check_exact(index, all_codes[keep], all_ids[keep], q, 10)
    assert index.rebuilds == 1 and index._store.ndead == 80  # tombstones, no rebuild
    if fallback == "never":
        assert stats["lookups"] > 0 and stats["fallback_queries"] == 0
    else:  # the scan of the main codes skips the tombstoned rows
        assert stats["fallback_queries"] == 30
    np.testing.assert_array_equal(index.get_codes(all_ids[keep]), all_codes[keep])
    with pytest.raises(ValueError, match="not in the index"):
        index.get_codes(gone[:3])
    more = rng.choice(np.flatnonzero(keep[:2000]), 81, replace=False)  # 161 dead + 40 tail > 200
    index.remove_ids(more)
    keep &= ~np.isin(all_ids, more)
    check_exact(index, all_codes[keep], all_ids[keep], q, 10)
    assert index.rebuilds == 2 and index._store.dead is None and index._store.ntail == 0


def test_k_beyond_the_live_codes_of_the_tables():
    """Most of the tables' codes removed (a large fraction keeps them as tombstones): k exceeds
    what the tables still hold, the tail fills the rest."""
    codes, index, rng = built("clustered", 300, 4, tail_fraction=10.0)
    index.remove_ids(np.arange(295))
    extra = make_codes("clustered", 50, 64, rng)
    index.add(extra)
    q = make_queries(codes, "clustered", 10, 64, rng)
    all_codes, all_ids = np.concatenate([codes[295:], extra]), np.concatenate([np.arange(295, 300), np.arange(300, 350)])
    for k in (3, 20, 60):
        check_exact(index, all_codes, all_ids, q, k)
    assert index.rebuilds == 1 and index._store.ndead == 295
    index.remove_ids(np.arange(295, 300))  # every code of the tables gone: the tail alone answers
    check_exact(index, extra, np.arange(300, 350), q, 7)
    assert index.rebuilds == 1


def test_memory_bytes_never_builds():
    rng = np.random.default_rng(5)
    codes = make_codes("random", 4000, 64, rng)
    index = MIHIndex(64, m=4)
    index.add(codes)
    assert index.memory_bytes() == 4000 * 8 * 2  # codes + ids, nothing built
    assert index._tables is None and index.rebuilds == 0
    index.build()
    built_bytes = index.memory_bytes()
    assert built_bytes > 4000 * 16
    index.add(make_codes("random", 100, 64, rng))
    assert index.memory_bytes() == built_bytes + 100 * 16 and index.rebuilds == 1  # the tail's codes and ids
    index.remove_ids(np.arange(10))
    assert index.memory_bytes() == built_bytes + 100 * 16 + 4000  # one tombstone flag per main row


def test_save_load_keeps_tables_tail_and_tombstones(tmp_path):
    codes, index, rng = built("duplicates", 3000, 6, tail_fraction=0.2)
    extra = make_codes("duplicates", 200, 64, rng)
    index.add(extra, ids=np.arange(200) + 10_000)
    index.remove_ids(np.concatenate([np.arange(0, 3000, 13), [10_003]]))  # 231 + 199 < 0.2 x 3000: no rebuild
    q = make_queries(codes, "duplicates", 25, 64, rng)
    before = index.search(q, 12)
    rebuilds = index.rebuilds
    index.save(tmp_path / "mih.annbin")
    _, arrays = read_index_file(tmp_path / "mih.annbin")
    assert {"table_lengths", "t0.occupancy", "t0.starts", "t0.rows", "dead", "tail_codes"} <= set(arrays)
    loaded = annbin.load_index(tmp_path / "mih.annbin")
    assert loaded._tables is not None and loaded.rebuilds == 0  # restored, not rebuilt
    assert loaded.spec == index.spec and loaded.tail_fraction == 0.2
    assert loaded.memory_bytes() == index.memory_bytes()
    after = loaded.search(q, 12)
    assert loaded.rebuilds == 0 and loaded.last_search_stats["tail_codes"] == 199
    assert loaded.last_search_stats["lookups"] > 0
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(np.sort(loaded.get_ids()), np.sort(index.get_ids()))
    for mine, theirs in zip(index._tables, loaded._tables):
        np.testing.assert_array_equal(mine.rows, theirs.rows)
        np.testing.assert_array_equal(mine.words, theirs.words)
    assert index.rebuilds == rebuilds
    loaded.add(make_codes("duplicates", 500, 64, rng))  # past the fraction: the loaded index rebuilds
    loaded.search(q, 3)
    assert loaded.rebuilds == 1 and loaded._store.dead is None


def test_unbuilt_index_saves_without_tables(tmp_path):
    rng = np.random.default_rng(7)
    codes = make_codes("clustered", 500, 64, rng)
    index = MIHIndex(64, m=4, fallback="never")
    index.add(codes)
    index.save(tmp_path / "raw.annbin")
    loaded = annbin.load_index(tmp_path / "raw.annbin")
    assert loaded._tables is None and loaded.ntotal == 500
    q = make_queries(codes, "clustered", 10, 64, rng)
    check_exact(loaded, codes, np.arange(500), q, 5)
    assert loaded.rebuilds == 1


def test_old_files_without_tables_load_and_rebuild(tmp_path):
    """A file written before tables were saved: ``codes`` and ``ids`` only."""
    rng = np.random.default_rng(8)
    codes = make_codes("duplicates", 800, 64, rng)
    ids = rng.permutation(5000)[:800].astype(np.int64)
    header = {"variant": "mih", "d": 64, "ntotal": 800, "params": {"m": 4}, "next_id": 5000,
              "search_params": {"fallback": "never", "fallback_ratio": 1.0, "num_threads": None}}
    write_index_file(tmp_path / "old.annbin", header, {"codes": codes, "ids": ids})
    loaded = annbin.load_index(tmp_path / "old.annbin")
    assert loaded._tables is None and loaded.ntotal == 800 and loaded.rebuilds == 0
    q = make_queries(codes, "duplicates", 20, 64, rng)
    stats = check_exact(loaded, codes, ids, q, 9)
    assert loaded.rebuilds == 1 and stats["lookups"] > 0


def _rewrite(path, change) -> None:
    """Re-save ``path`` (valid checksum) with ``change(arrays)`` applied."""
    header, arrays = read_index_file(path)
    change(arrays)
    write_index_file(path, header, arrays)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"t1.starts": a["t1.starts"][:-1]}), "starts do not match"),
    (lambda a: a.update({"t0.rows": a["t0.rows"].astype(np.int64)}), "rows must be int32"),
    (lambda a: a.update({"t2.rows": np.full_like(a["t2.rows"], 10**6)}), "rows must be int32"),
    (lambda a: a.pop("t3.occupancy"), "incomplete"),
    (lambda a: a.update({"table_lengths": a["table_lengths"][:3]}), "do not split"),
    (lambda a: a.update({"ids": a["ids"][::-1].copy()}), "ascending"),
    (lambda a: a.update({"dead": np.full(a["codes"].shape[0], 2, np.uint8)}), "tombstones"),
    (lambda a: a.update({"tail_ids": a["ids"][:a["tail_ids"].size].copy()}), "repeat"),
])
def test_inconsistent_tables_in_a_file_are_refused(tmp_path, change, message):
    codes, index, rng = built("clustered", 1000, 9)
    index.add(make_codes("clustered", 20, 64, rng))
    index.save(tmp_path / "mih.annbin")
    _rewrite(tmp_path / "mih.annbin", change)
    with pytest.raises(ValueError, match=message):
        annbin.load_index(tmp_path / "mih.annbin")


def test_load_trusts_the_checksum_instead_of_sorting_the_ids(tmp_path, monkeypatch):
    """A file with tables loads without checking its main ids by a sort (``as_ids``' np.unique,
    np.intersect1d): the checksum vouches for them; the small tail is still checked in full. The
    ids are explicit (not 0..n-1), so they are what a load reads."""
    rng = np.random.default_rng(12)
    codes = make_codes("clustered", 3000, 64, rng)
    ids = np.sort(rng.choice(10**9, 3000, replace=False)).astype(np.int64)
    index = MIHIndex(64, m=4, fallback="never")
    index.add(codes, ids=ids)
    index.build()
    index.add(make_codes("clustered", 20, 64, rng), ids=np.arange(20) + 10**9)
    index.save(tmp_path / "mih.annbin")
    sizes: list[int] = []

    def spy(name, fn):
        def wrapper(a, *args, **kwargs):
            sizes.append(np.size(a))
            return fn(a, *args, **kwargs)
        monkeypatch.setattr(np, name, wrapper)

    spy("unique", np.unique)
    spy("intersect1d", np.intersect1d)
    spy("argsort", np.argsort)
    loaded = annbin.load_index(tmp_path / "mih.annbin")
    monkeypatch.undo()
    assert sizes and max(sizes) <= 20  # the tail's ids only
    assert loaded.rebuilds == 0 and loaded._tables is not None
    q = codes[:50]
    for a, b in zip(loaded.search(q, 10), index.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    # what the load no longer checks, the checksum still does: one id changed in place is refused
    raw = bytearray((tmp_path / "mih.annbin").read_bytes())
    at = raw.find(ids[1500].tobytes())
    assert at > 0
    raw[at] ^= 0x01
    (tmp_path / "mih.annbin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        annbin.load_index(tmp_path / "mih.annbin")


def test_corrupted_file_is_refused(tmp_path):
    _, index, _ = built("clustered", 1000, 10)
    index.save(tmp_path / "mih.annbin")
    raw = bytearray((tmp_path / "mih.annbin").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "mih.annbin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        annbin.load_index(tmp_path / "mih.annbin")


def test_bad_tail_fraction_raises():
    with pytest.raises(TypeError, match="tail_fraction"):
        MIHIndex(64, tail_fraction="0.1")
    with pytest.raises(ValueError, match="tail_fraction"):
        MIHIndex(64, tail_fraction=-0.5)
    with pytest.raises(ValueError, match="tail_fraction"):
        MIHIndex(64, tail_fraction=float("nan"))


@st.composite
def update_sequences(draw: st.DrawFn) -> list[tuple[str, int]]:
    ops = st.one_of(st.tuples(st.just("add"), st.integers(1, 120)), st.tuples(st.just("remove"), st.integers(1, 80)),
                    st.tuples(st.just("search"), st.integers(1, 30)))
    return draw(st.lists(ops, min_size=1, max_size=12))


@given(update_sequences(), st.sampled_from([0.0, 0.1, 0.5, 3.0]), st.integers(0, 2**16))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_sequence_of_updates_stays_exact(ops, fraction, seed):
    rng = np.random.default_rng(seed)
    index = MIHIndex(64, m=4, fallback="never", tail_fraction=fraction)
    codes, ids, next_id = np.empty((0, 8), np.uint8), np.empty(0, np.int64), 0
    for op, count in [*ops, ("search", 10)]:
        if op == "add":
            new = make_codes("duplicates", count, 64, rng)
            new_ids = next_id + rng.permutation(2 * count)[:count]  # not in insertion order
            index.add(new, ids=new_ids)
            codes, ids, next_id = np.concatenate([codes, new]), np.concatenate([ids, new_ids]), next_id + 2 * count
        elif op == "remove" and ids.size:
            gone = rng.choice(ids, min(count, ids.size), replace=False)
            assert index.remove_ids(gone) == gone.size
            keep = ~np.isin(ids, gone)
            codes, ids = codes[keep], ids[keep]
        elif op == "search" and ids.size:
            q = make_queries(codes, "duplicates", 8, 64, rng)
            check_exact(index, codes, ids, q, count, radius=6)
        assert index.ntotal == ids.size
    assert json.dumps(index.get_params())  # a saved header holds it
