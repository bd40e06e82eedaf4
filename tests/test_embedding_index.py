"""``BinaryEmbeddingIndex`` on its own: per-thread stats and per-call params, what ``memory_bytes``
counts, adds after save / load, float32 scores for every metric and kind of first stage, and the
operations its first stage allows (``range_search``, ``remove_ids``, ``reset``) or refuses.

Small data (dim 64, about a thousand rows) so the file runs in seconds; the default index on real
embeddings is tests/test_embedding_default.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import annbin
from annbin.embed.rescore import RescoredIndex

DIM, N, NQ = 64, 1200, 20


def _clustered(seed: int, n: int, dim: int = DIM) -> np.ndarray:
    """Clustered rows whose norms vary, so "cos", "ip" and "l2" rank them differently."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, dim)) * 3
    x = centres[rng.integers(0, 10, n)] + rng.standard_normal((n, dim))
    return (x * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _clustered(1, N), _clustered(2, NQ)


def _flat(base: np.ndarray, **kwargs) -> annbin.BinaryEmbeddingIndex:
    index = annbin.BinaryEmbeddingIndex("flat", metric="ip", **kwargs)
    index.add(base)
    return index


# --- 1. last_search_stats is per thread ------------------------------------------------------------


def _stats_seen_by_two_threads(search, rounds: int = 40) -> list[tuple[dict, dict]]:
    """Two threads, each searching with its own (k, oversample) then reading ``last_search_stats``
    once both have searched (a barrier between): a shared attribute shows both the last writer's."""
    barrier = threading.Barrier(2)
    seen: list[list[tuple[dict, dict]]] = [[], []]
    settings = [(5, 2), (10, 3)]  # k * oversample candidates: 10 and 30

    def worker(t: int) -> None:
        k, over = settings[t]
        for _ in range(rounds):
            stats = search(k, over)
            barrier.wait()  # both searched: a shared attribute now holds one thread's stats only
            seen[t].append((dict(stats()), {"candidates_per_query": float(k * over), "vectors_read_per_query": float(k * over)}))
            barrier.wait()  # both read before either searches again

    threads = [threading.Thread(target=worker, args=(t,)) for t in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return seen[0] + seen[1]


def test_last_search_stats_are_the_calling_threads_own(data):
    base, queries = data
    index = _flat(base, oversample=4)
    inner = annbin.make_index("flat", d=DIM)
    inner.add(annbin.binarize(base))
    rescored = RescoredIndex(inner, vectors=base)
    assert index.last_search_stats == {} and rescored.last_search_stats == {}  # before any search
    for obj in (index, rescored):
        def search(k: int, over: int, obj=obj):
            obj.search(queries, k, params={"oversample": over})
            return lambda: obj.last_search_stats
        pairs = _stats_seen_by_two_threads(search)
        wrong = [got for got, want in pairs if got != want]
        assert not wrong, f"{type(obj).__name__}: {len(wrong)} of {len(pairs)} reads saw another thread's stats"
    # and a thread that never searched sees none of the others'
    other: list[dict] = []
    th = threading.Thread(target=lambda: other.append(dict(index.last_search_stats)))
    th.start()
    th.join()
    assert other == [{}]


# --- 2. threads with per-call params -------------------------------------------------------------


@pytest.mark.parametrize(("spec", "kwargs", "settings"), [
    ("hnsw:M=8,ef_search=16", {}, [{"oversample": o, "ef_search": e} for o, e in [(1, 8), (2, 16), (4, 40), (8, 100)]]),
    ("flat", {"rerank": "asymmetric"}, [{"oversample": o, "rerank_oversample": r, "qb": b} for o, r, b in [(2, 1, 4), (8, 1, 0), (8, 3, 2), (4, 2, 8)]]),
])
def test_threads_with_per_call_params_equal_serial_searches(spec, kwargs, settings, data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex(spec, metric="cos", **kwargs)
    index.add(base)
    before = index.get_search_params()
    serial = [index.search(queries, 10, params=p) for p in settings]
    assert len({s[1].tobytes() for s in serial}) > 1  # the params make a difference
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: index.search(queries, 10, params=p), settings * 4))
    for i, (S, I) in enumerate(results):
        np.testing.assert_array_equal(S, serial[i % len(settings)][0])
        np.testing.assert_array_equal(I, serial[i % len(settings)][1])
    assert index.get_search_params() == before  # per-call params never touch the shared ones


# --- 3. memory_bytes counts what its docstring says ----------------------------------------------


def test_memory_bytes_counts_codes_graph_and_side_data_not_mapped_floats(data, tmp_path):
    base, _ = data
    floats = N * DIM * 4
    mapped = _flat(base)  # store_vectors="auto": floats memory-mapped from a file the index owns
    codes = N * DIM // 8
    assert mapped.index.memory_bytes() >= codes  # the first stage holds the codes
    assert mapped.memory_bytes() == mapped.index.memory_bytes() + mapped.encoder.memory_bytes()
    assert mapped.disk_bytes() == floats and isinstance(mapped.vectors, np.memmap)
    ram = _flat(base, store_vectors="ram")
    assert ram.memory_bytes() == mapped.memory_bytes() + floats and ram.disk_bytes() == 0
    graph = annbin.BinaryEmbeddingIndex("hnsw:M=8", metric="ip")
    graph.add(base)
    assert graph.index.memory_bytes() > codes  # codes + graph: both counted
    assert graph.memory_bytes() == graph.index.memory_bytes() + graph.encoder.memory_bytes()
    # user ids (8 B a row) and, once any row is removed, the removal marks (1 B a row)
    ids = annbin.BinaryEmbeddingIndex("flat", metric="ip")
    ids.add(base, ids=np.arange(N) * 7 + 3)
    assert ids.memory_bytes() == ids.index.memory_bytes() + ids.encoder.memory_bytes() + 8 * N
    ids.remove_ids(np.array([3, 10]))
    assert ids.memory_bytes() == ids.index.memory_bytes() + ids.encoder.memory_bytes() + 9 * N
    # a rerank keeps per-row data: factors (4 B), squared norms for l2 (4 B), the 2-bit plane and levels
    rerank = annbin.BinaryEmbeddingIndex("flat", metric="l2", rerank="asymmetric", rerank_bits=2, rotation="random")
    rerank.add(base)
    assert rerank.encoder.memory_bytes() == DIM * DIM * 4 + DIM * 4  # rotation and thresholds
    side = N * 4 + N * 4 + codes + N * 8
    assert rerank.memory_bytes() == rerank.index.memory_bytes() + rerank.encoder.memory_bytes() + side
    # the floats move into a saved directory, still mapped: the count does not change
    before = mapped.memory_bytes()
    mapped.save(tmp_path / "ix")
    assert mapped.memory_bytes() == before == annbin.BinaryEmbeddingIndex.load(tmp_path / "ix").memory_bytes()
    assert annbin.BinaryEmbeddingIndex.load(tmp_path / "ix", mmap=False).memory_bytes() == before + floats


# --- 4. adds after save / load ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["flat", None])
def test_adds_after_save_and_load_are_found_and_saved_again(spec, data, tmp_path):
    base, queries = data
    first, more = base[:800], base[800:]
    index = annbin.BinaryEmbeddingIndex(spec)
    index.add(first)
    root = tmp_path / "ix"
    index.save(root)
    back = annbin.BinaryEmbeddingIndex.load(root)
    new_ids = 100_000 + np.arange(more.shape[0])
    back.add(more, ids=new_ids)
    assert back.ntotal == N
    S, I = back.search(more[::10], 1, params={"oversample": 30})  # each new vector finds itself (once a candidate)
    np.testing.assert_array_equal(I[:, 0], new_ids[::10])
    np.testing.assert_allclose(S[:, 0], 1.0, atol=1e-5)
    expect = back.search(queries, 10)
    back.save(root)
    again = annbin.BinaryEmbeddingIndex.load(root)
    assert again.ntotal == N and again.spec == back.spec
    np.testing.assert_array_equal(again.vectors, unit(base))
    np.testing.assert_array_equal(again.get_ids(), np.concatenate([np.arange(800), new_ids]))
    for a, b in zip(again.search(queries, 10), expect):
        np.testing.assert_array_equal(a, b)
    assert len(list(root.iterdir())) == 3  # the first save's files are gone


def test_load_keeps_the_encoder_settings_for_reset(data, tmp_path):
    base, _ = data
    index = annbin.BinaryEmbeddingIndex("flat", metric="ip", rotation="itq", thresholds=0.25, rerank="asymmetric", rerank_bits=2, seed=3)
    index.add(base[:300])
    index.save(tmp_path / "ix")
    back = annbin.BinaryEmbeddingIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(back.thresholds, np.full(DIM, 0.25, np.float32))
    np.testing.assert_array_equal(back.encoder.matrix, index.encoder.matrix)
    back.reset()  # a fresh encoder from the saved settings, fitted again by the next add
    assert back.encoder.rotation == "itq" and back.encoder.matrix is None and back.encoder.rerank_bits == 2
    back.add(base[:300])
    np.testing.assert_array_equal(back.encoder.matrix, index.encoder.matrix)  # same seed, same data
    np.testing.assert_array_equal(back.thresholds, index.thresholds)


# --- 5. float32 scores for every metric and kind of first stage -----------------------------------


@pytest.mark.parametrize("metric", ["cos", "ip", "l2"])
@pytest.mark.parametrize(("spec", "kwargs"), [(None, {}), ("flat", {"rerank": "asymmetric"}), ("flat", {})],
                         ids=["default", "binary-rerank", "flat"])
def test_scores_are_exact_float32_for_every_metric_and_stage(spec, kwargs, metric, data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex(spec, metric=metric, **kwargs)
    if metric == "ip" and index.spec.startswith("rabitq-hnsw"):  # faiss's RaBitQ HNSW (the fallback): "ip" on unit vectors
        base, queries = unit(base), unit(queries)
    index.add(base)
    S, I = index.search(queries, 10)
    assert S.dtype == np.float32 and I.dtype == np.int64 and S.shape == I.shape == (NQ, 10)
    assert (I >= 0).all() and (np.diff(S, axis=1) >= 0 if metric == "l2" else np.diff(S, axis=1) <= 0).all()
    docs, qq = (unit(base), unit(queries)) if metric == "cos" else (base, queries)
    want = ((qq[:, None, :] - docs[I]) ** 2).sum(axis=2) if metric == "l2" else np.einsum("qd,qkd->qk", qq, docs[I])
    np.testing.assert_allclose(S, want, rtol=1e-5, atol=1e-3)


# --- 6. range_search where the first stage has one; UnsupportedOperation where not ---------------


def _range_reference(index: annbin.BinaryEmbeddingIndex, x: np.ndarray, queries: np.ndarray, ids: np.ndarray, radius: int):
    """Plain numpy: the codes of (unit) vectors are bits of ``x R - t > 0``; every pair at Hamming
    distance < radius, each query's by (distance, id)."""
    enc = index.encoder
    code = lambda v: np.packbits(unit(v) @ enc.matrix - enc.thresholds > 0, axis=1)  # noqa: E731
    dist = np.bitwise_count(code(queries)[:, None, :] ^ code(x)[None, :, :]).sum(axis=2)
    lims, D, I = [0], [], []
    for row in dist:
        hit = np.flatnonzero(row < radius)
        order = np.lexsort((ids[hit], row[hit]))
        D.extend(row[hit][order])
        I.extend(ids[hit][order])
        lims.append(len(D))
    return np.array(lims), np.array(D), np.array(I)


@pytest.mark.parametrize("spec", ["flat", "mih", "ivf:nlist=8,nprobe=8"])
def test_range_search_is_the_binary_stages_by_hamming_distance_of_codes(spec, data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex(spec, metric="cos", rotation="random", thresholds="median")
    empty = index.range_search(queries, 10)  # nothing added: nothing found
    assert empty[0].tolist() == [0] * (NQ + 1) and empty[1].size == empty[2].size == 0
    ids = 5_000 - 3 * np.arange(N)  # descending user ids: (distance, id) order is not row order
    index.add(base, ids=ids)
    for radius in (0, 12, 20):
        lims, D, I = index.range_search(queries, radius)
        assert lims.dtype == np.int64 and D.dtype == np.int32 and I.dtype == np.int64 and lims.shape == (NQ + 1,)
        want = _range_reference(index, base, queries, ids, radius)
        for got, ref in zip((lims, D, I), want):
            np.testing.assert_array_equal(got, ref)
    assert lims[-1] > NQ  # radius 20 finds several per query: the comparison above had work to do
    gone = I[: lims[1]]  # the first query's hits
    assert index.remove_ids(gone) == gone.size
    lims2, _, I2 = index.range_search(queries, 20)
    assert lims2[1] == 0 and not np.isin(I2, gone).any() and lims2[-1] == lims[-1] - np.isin(I, gone).sum()
    index.reset()
    assert index.range_search(queries, 20)[0].tolist() == [0] * (NQ + 1)


def test_first_stages_without_an_operation_refuse_it_by_name(data):
    base, queries = data
    float_in = annbin.BinaryEmbeddingIndex("rabitq", metric="ip")
    with pytest.raises(annbin.UnsupportedOperation, match="first stage 'rabitq' has no range_search"):
        float_in.range_search(queries, 10)  # known from the spec, before any add
    float_in.add(base)
    with pytest.raises(annbin.UnsupportedOperation, match="first stage 'rabitq' has no range_search: it ranks float queries"):
        float_in.range_search(queries, 10)
    with pytest.raises(annbin.UnsupportedOperation, match="first stage 'rabitq' cannot remove vectors"):
        float_in.remove_ids([1, 2])
    graph = annbin.BinaryEmbeddingIndex("hnsw:M=8", metric="ip")
    graph.add(base)
    with pytest.raises(annbin.UnsupportedOperation, match=r"first stage 'hnsw:M=8' has no range_search \(.*hnsw"):
        graph.range_search(queries, 10)
    with pytest.raises(annbin.UnsupportedOperation, match="first stage 'hnsw:M=8' cannot remove vectors"):
        graph.remove_ids([1, 2])
    assert graph.ntotal == float_in.ntotal == N  # a refusal changes nothing
    with pytest.raises(ValueError, match="radius must be >= 0"):
        annbin.BinaryEmbeddingIndex("flat").range_search(queries, -1)


def test_reset_empties_and_the_next_add_starts_afresh(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("flat", metric="ip", thresholds="mean", store_vectors="ram")
    index.add(base[:500], ids=np.arange(500) + 10)
    index.remove_ids([10, 11])
    index.reset()
    assert index.ntotal == 0 and index.dim is None and index.vectors is None and index.thresholds is None
    S, I = index.search(queries, 3)
    assert (I == -1).all() and np.isneginf(S).all()
    index.add(base[500:, :32].copy())  # a new dimension, new thresholds, sequential ids from 0
    assert index.dim == 32 and index.ntotal == N - 500 and index.get_ids()[0] == 0
    np.testing.assert_allclose(index.thresholds, base[500:, :32].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert index.memory_bytes() == index.index.memory_bytes() + index.encoder.memory_bytes() + (N - 500) * 32 * 4


# ---------------------------------------------------------------- float16 rescoring vectors
@pytest.mark.parametrize("store", ["auto", "ram"])
def test_float16_store_halves_the_floats_and_survives_save_load(tmp_path, data, store):
    base, queries = data
    half = annbin.BinaryEmbeddingIndex("flat", store_vectors=store, store_dtype="float16", metric="ip", oversample=20)
    full = annbin.BinaryEmbeddingIndex("flat", store_vectors=store, metric="ip", oversample=20)
    for index in (half, full):
        index.add(base[:700])
        index.add(base[700:])  # a second add appends in the same precision
    assert half.vectors.dtype == np.float16 and full.vectors.dtype == np.float32
    kept = half.disk_bytes() if store == "auto" else half.memory_bytes() - full.memory_bytes() + full.vectors.nbytes
    assert kept == N * DIM * 2  # float16 rows: half of float32's
    S16, I16 = half.search(queries, 10)
    S32, I32 = full.search(queries, 10)
    assert S16.dtype == np.float32 and np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I16, I32)]) >= 0.95
    np.testing.assert_allclose(S16, S32, rtol=2e-2, atol=2e-2)  # scores from float16 rows, computed in float32
    half.save(tmp_path / "h")
    back = annbin.load(tmp_path / "h")
    assert back.store_dtype == "float16" and back.vectors.dtype == np.float16
    np.testing.assert_array_equal(back.search(queries, 10)[1], I16)
    back.add(base[:5])  # appends to the saved float16 file
    assert back.vectors.shape == (N + 5, DIM) and back.vectors.dtype == np.float16


def test_store_dtype_is_checked():
    with pytest.raises(ValueError, match="store_dtype must be one of"):
        annbin.BinaryEmbeddingIndex("flat", store_dtype="int8")
