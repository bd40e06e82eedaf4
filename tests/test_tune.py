"""annbin.tune: the fastest search settings for a target recall, checked on held-out queries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import annbin
from annbin.bench.cli import main
from annbin.bench.datasets import SyntheticDataset, float_knn
from annbin.embed.floats import make_float_index
from annbin.embed.tune import TUNABLE, TuneResult, tune


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data():
    ds = SyntheticDataset(n=3000, nq=400, dim=64, seed=3)
    return np.ascontiguousarray(ds.get_database()), np.ascontiguousarray(ds.get_queries())


def _truth(base, queries, k=10):
    return float_knn(base, queries, k, "ip")[1]


#: The held-out half meets the target only with probability ~``confidence`` (0.95: the margin is
#: sized for that), so it is bounded loosely; what the tuner guarantees is checked exactly below.
HOLDOUT_SLACK = 0.05


def check_met(result: TuneResult, target: float) -> None:
    """The tuning half met the target: the chosen trial's recall less its margin reaches it."""
    chosen = next(t for t in result.curve if t["params"] == result.params)
    assert result.met and chosen["met"] and chosen["recall"] == result.recall_tune
    assert result.recall_tune - chosen["margin"] >= target
    assert result.recall_holdout >= target - HOLDOUT_SLACK


def test_meets_target_on_held_out_half_and_sets_the_index(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("hnsw:M=8,ef_search=4", oversample=1, metric="ip")
    index.add(base)
    result = tune(index, queries, target_recall=0.9, runs=1)
    assert isinstance(result, TuneResult) and annbin.tune is tune
    check_met(result, 0.9)
    assert index.get_search_params() == {**index.get_search_params(), **result.params}
    assert set(result.params) == {"oversample", "ef_search"} and result.qps > 0
    assert result.holdout.size == 200 and len(set(result.holdout)) == 200
    assert 1 <= result.trials <= 40
    for trial in result.curve:
        assert {"params", "recall", "margin", "qps", "seconds", "phase", "met"} <= set(trial)
        assert trial["met"] == (trial["recall"] - trial["margin"] >= 0.9)
    # the chosen one met the target, and no other trial that met it is <= it in every parameter
    met = [t["params"] for t in result.curve if t["met"]]
    assert result.params in met
    assert not any(p != result.params and all(p[n] <= result.params[n] for n in p) for p in met)
    # the start (oversample 1: Hamming top-10) misses; the walk raised something
    assert result.curve[0]["phase"] == "start" and not result.curve[0]["met"]


def test_ground_truth_from_stored_vectors_maps_user_ids(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("flat", oversample=2, metric="ip")
    index.add(base, ids=np.arange(base.shape[0], dtype=np.int64) * 7 + 3)
    result = tune(index, queries, target_recall=0.85, runs=1)  # ground truth from its own float store
    check_met(result, 0.85)  # wrong id mapping would give recall ~0
    given = tune(index, queries, target_recall=0.85, runs=1, ground_truth=_truth(base, queries) * 7 + 3)
    check_met(given, 0.85)


def test_rescored_index_and_float_index_with_vectors(data):
    base, queries = data
    codes = annbin.binarize(base)
    inner = annbin.make_index("hnsw:M=8,ef_search=8", d=codes.shape[1] * 8)
    inner.add(codes)
    rescored = annbin.RescoredIndex(inner, oversample=1, vectors=base)
    result = tune(rescored, queries, target_recall=0.9, runs=1, params=["oversample"])
    assert set(result.params) == {"oversample"}
    check_met(result, 0.9)
    hnsw = make_float_index("float-hnsw:M=8,ef_construction=40,ef=10", base.shape[1], "ip")
    hnsw.add(base)
    result = tune(hnsw, queries, target_recall=0.97, vectors=base, runs=1)
    assert set(result.params) == {"ef"}
    check_met(result, 0.97)
    assert hnsw.get_search_params() == result.params


def test_asymmetric_stage_tunes_rerank_and_qb(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("flat", oversample=2, rerank="asymmetric", rerank_oversample=1, qb=2)
    index.add(base)
    result = tune(index, queries, target_recall=0.9, runs=1, max_trials=30)
    assert set(result.params) == {"oversample", "rerank_oversample", "qb"}
    assert result.trials <= 30
    check_met(result, 0.9)


def test_unreachable_target_returns_the_best_it_found(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("hnsw:M=8,ef_search=4", oversample=1, metric="ip")  # Hamming order, rescored: tops out low
    index.add(base)
    result = tune(index, queries, target_recall=0.999, ground_truth=_truth(base, queries), runs=1, max_trials=6)
    assert not result.met and result.trials <= 6
    assert result.recall_tune == max(t["recall"] for t in result.curve)


def test_bad_input(data):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("hnsw:M=8,ef_search=4", oversample=1, metric="ip")
    index.add(base[:500])
    before = index.get_search_params()
    for kwargs, message in (({"target_recall": 0}, "target_recall must be in"), ({"target_recall": 1.5}, "target_recall must be in"),
                            ({"target_recall": 0.9, "params": ["nprobe"]}, "cannot tune"),
                            ({"target_recall": 0.9, "confidence": 1.0}, "confidence must be"),
                            ({"target_recall": 0.9, "ground_truth": np.zeros((3, 10), np.int64)}, "ground_truth must be")):
        with pytest.raises(ValueError, match=message):
            tune(index, queries, **kwargs)
    with pytest.raises(ValueError, match="nq >= 2"):
        tune(index, queries[:1], target_recall=0.9)
    flat = make_float_index("float-flat", base.shape[1], "ip")
    flat.add(base)
    with pytest.raises(ValueError, match="nothing to tune"):
        tune(flat, queries, target_recall=0.9)
    hnsw = make_float_index("float-hnsw:M=8,ef=10", base.shape[1], "ip")
    hnsw.add(base)
    with pytest.raises(ValueError, match="holds no float vectors"):
        tune(hnsw, queries, target_recall=0.9)
    assert index.get_search_params() == before


def test_settings_restored_when_a_search_fails(data, monkeypatch):
    base, queries = data
    index = annbin.BinaryEmbeddingIndex("hnsw:M=8,ef_search=4", oversample=1, metric="ip")
    index.add(base[:500])
    before = index.get_search_params()
    real, calls = index.search, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(index, "search", flaky)
    with pytest.raises(RuntimeError, match="disk gone"):
        tune(index, queries, target_recall=0.99, runs=1)
    assert index.get_search_params() == before


def test_tunable_names_are_the_documented_ones():
    assert TUNABLE == ("ef_search", "ef", "nprobe", "oversample", "rerank_oversample", "qb")


def test_cli_tune_on_the_shipped_set_meets_target_on_held_out_half(tmp_path):
    """The shipped real set: flat sign codes + float rescoring, 0.95 on the tuning half (with the
    margin), about that on the queries not tuned on."""
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["tune", "--index", "flat", "--oversample", "2", "--target-recall", "0.95",
                                       "--runs", "1", "--latency-queries", "5", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    final = rows[-1]
    assert final["dataset"] == "minilm_wordnet" and final["tune"]["half"] == "holdout" and final["tune"]["chosen"]
    assert final["tune"]["met"] and final["tune"]["recall_tune"] - final["tune"]["margin"] >= 0.95
    assert final["recall_float"] >= 0.95 - HOLDOUT_SLACK and final["nq"] == 500 and final["latency_p50_ms"] > 0
    assert all(r["tune"]["half"] == "tune" for r in rows[:-1])
    assert "held-out half: recall" in result.output and "meets the target" in result.output
