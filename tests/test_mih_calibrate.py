"""MIH self-calibration: measured cost constants (once per process) and the measured choice of m."""

from __future__ import annotations

import math
from dataclasses import fields
from unittest import mock

import faiss
import numpy as np
import pytest

import annbin
from annbin import MIHIndex
from annbin.index.mih import _calibrate as cal
from annbin.index.mih._cost import COSTS, CostModel
from annbin.index.mih._tables import default_m
from tests.conftest import clustered_codes


def flat_distances(codes: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    flat.add(codes)
    return flat.search(q, k)[0]


@pytest.fixture
def small_threshold(monkeypatch):
    """Measure m from 3,000 codes on, so a measured build takes well under a second."""
    monkeypatch.setattr(cal, "MEASURE_M_MIN_N", 3000)
    monkeypatch.setattr(cal, "MEASURE_M_QUERIES", 64)
    monkeypatch.delenv(cal.CALIBRATE_ENV, raising=False)


# --- cost constants ----------------------------------------------------------------------------
def test_measured_costs_are_positive_finite_and_within_the_clamp():
    costs = cal.measure_costs(repeats=1)
    for f in fields(CostModel):
        value, ref = getattr(costs, f.name), getattr(COSTS, f.name)
        assert math.isfinite(value) and ref / cal.CLAMP <= value <= ref * cal.CLAMP, f.name
    # the scan of 72-bit codes (not a multiple of 64) is priced at least as a 64-bit one
    assert costs.flat_cost(1000, 64) > 0 and costs.flat_cost(1000, 128) >= costs.flat_cost(1000, 64)


def test_clamp_bounds_each_constant():
    wild = CostModel(lookup=1e6, candidate=1e-6, candidate_word=8.0, step=0.0, flat_code=0.65, flat_word=0.3, flat_odd_code=2.0)
    kept = cal.clamp(wild)
    assert kept.lookup == COSTS.lookup * cal.CLAMP and kept.candidate == COSTS.candidate / cal.CLAMP
    assert kept.step == COSTS.step / cal.CLAMP and kept.candidate_word == 8.0


def test_calibration_runs_once_per_process(monkeypatch):
    monkeypatch.delenv(cal.CALIBRATE_ENV, raising=False)
    cal.calibrated_costs.cache_clear()
    try:
        with mock.patch.object(cal, "measure_costs", wraps=cal.measure_costs) as measure:
            first = cal.calibrated_costs()
            second = cal.calibrated_costs()
            index = MIHIndex(64)  # an index's default model is the process's
            assert index.cost_model is first
        assert measure.call_count == 1 and second is first
        assert MIHIndex(64, cost_model=COSTS).cost_model is COSTS
    finally:
        cal.calibrated_costs.cache_clear()


def test_environment_switch_turns_calibration_off(monkeypatch):
    monkeypatch.setenv(cal.CALIBRATE_ENV, "0")
    cal.calibrated_costs.cache_clear()
    try:
        with mock.patch.object(cal, "measure_costs", side_effect=AssertionError("measured")):
            assert cal.calibrated_costs() is COSTS
        assert cal.planned_m(None, 64, 10**7, None) == default_m(64, 10**7)
    finally:
        cal.calibrated_costs.cache_clear()


# --- choosing m -------------------------------------------------------------------------------
def test_choose_m_walks_to_the_fastest_and_reports_every_time():
    times = {3: 5.0, 4: 3.0, 5: 2.0, 6: 1.5, 7: 4.0, 8: 0.1}  # 8 is faster, but past a slower 7
    seen = []

    def measure(m):
        seen.append(m)
        return times[m]

    m, measured = cal.choose_m(4, measure, lo=3, hi=64)
    assert m == 6 and measured == {k: times[k] for k in (3, 4, 5, 6, 7)}
    assert seen == [4, 3, 5, 6, 7]  # start, neighbours, then onward while it improves
    assert m == min(measured, key=measured.__getitem__)


def test_choose_m_respects_bounds_and_span():
    m, measured = cal.choose_m(3, lambda m: float(m), lo=3, hi=64)  # fastest at the lower bound
    assert m == 3 and sorted(measured) == [3, 4]
    m, measured = cal.choose_m(10, lambda m: -float(m), lo=1, hi=64, span=2)  # faster and faster upward
    assert m == 12 and sorted(measured) == [9, 10, 11, 12]
    with pytest.raises(ValueError, match="outside"):
        cal.choose_m(2, float, lo=3, hi=64)


def test_planned_m_follows_the_mode_and_the_kept_choice(small_threshold):
    assert cal.planned_m(5, 64, 10**6, None) == 5
    assert cal.planned_m("formula", 64, 10**6, None) == default_m(64, 10**6)
    assert cal.planned_m(None, 64, 2999, None) == default_m(64, 2999)
    assert cal.planned_m(None, 64, 3000, None) is None  # to be measured
    kept = {"m": 7, "ntotal": 10_000, "seconds": {}}
    assert [cal.planned_m(None, 64, n, kept) for n in (5000, 20_000)] == [7, 7]
    assert cal.planned_m(None, 64, 4999, kept) is None and cal.planned_m(None, 64, 20_001, kept) is None


def test_index_measures_m_and_stays_exact(small_threshold):
    rng = np.random.default_rng(3)
    codes = clustered_codes(rng, 6000, 16, n_clusters=40, flip=0.06)
    index = MIHIndex(128)
    index.add(codes)
    index.build()
    choice = index.measured_m
    assert choice is not None and choice["ntotal"] == 6000
    seconds = choice["seconds"]
    start = default_m(128, 6000)
    assert {start - 1, start, start + 1} & set(seconds) == {m for m in (start - 1, start, start + 1) if m >= 6}
    assert all(s > 0 for s in seconds.values())
    assert choice["m"] == min(seconds, key=seconds.__getitem__) == index.effective_m == len(index._tables)
    q = np.concatenate([clustered_codes(rng, 40, 16, n_clusters=40, flip=0.06), codes[:10]])
    D, _ = index.search(q, 10)
    np.testing.assert_array_equal(D, flat_distances(codes, q, 10))
    assert index.last_search_stats["queries"] == len(q)  # the measuring searches' stats are not left behind


def test_explicit_and_formula_m_measure_nothing(small_threshold):
    codes = clustered_codes(np.random.default_rng(4), 5000, 8)
    with mock.patch.object(cal, "choose_m", side_effect=AssertionError("measured")):
        for m, expected in ((5, 5), ("formula", default_m(64, 5000))):
            index = MIHIndex(64, m=m)
            index.add(codes)
            index.build()
            assert index.effective_m == expected and index.measured_m is None
    assert annbin.make_index("mih:m=formula", 64).m == "formula"


def test_measured_m_is_saved_and_not_measured_again(small_threshold, tmp_path):
    rng = np.random.default_rng(5)
    codes = clustered_codes(rng, 5000, 8, n_clusters=20)
    index = MIHIndex(64)
    index.add(codes)
    index.build()
    m = index.measured_m["m"]
    index.save(tmp_path / "mih.annbin")
    with mock.patch.object(cal, "choose_m", side_effect=AssertionError("measured again")):
        loaded = annbin.load_index(tmp_path / "mih.annbin")
        assert loaded.m is None and loaded.effective_m == m
        assert loaded.measured_m == {"m": m, "ntotal": 5000, "seconds": {}}
        q = codes[:20] ^ np.uint8(1)
        np.testing.assert_array_equal(loaded.search(q, 5)[0], index.search(q, 5)[0])
        assert len(loaded._tables) == m
        loaded.add(clustered_codes(rng, 4000, 8, n_clusters=20))  # 9,000 codes: within 2x, kept
        loaded.build()
        assert loaded.effective_m == m
    loaded.add(clustered_codes(rng, 2000, 8, n_clusters=20))  # 11,000 > 2 x 5,000: measured again
    with mock.patch.object(cal, "choose_m", wraps=cal.choose_m) as choose:
        loaded.build()
    assert choose.call_count == 1 and loaded.measured_m["ntotal"] == 11_000
    loaded.reset()
    assert loaded.measured_m is None


def test_slow_sample_searches_are_cut_for_every_candidate(small_threshold, monkeypatch):
    monkeypatch.setattr(cal, "MEASURE_M_SEARCH_S", 1e-12)  # every search counts as slow
    monkeypatch.setattr(cal, "MEASURE_M_MIN_QUERIES", 10)
    sizes, installed = [], []
    work = np.random.default_rng(0).random(20_000)

    def search(x, k):
        sizes.append((installed[-1], x.shape[0], k))
        np.sort(work)  # some CPU time to measure

    def build(m):
        installed.append(m)
        return m

    codes = clustered_codes(np.random.default_rng(6), 4000, 8)
    choice, built = cal.measure_m(64, codes, build, installed.append, search)
    assert sizes[0] == (default_m(64, 4000), 64, cal.MEASURE_M_K + 1)  # the first warm-up: the full sample
    assert {s[1] for s in sizes[1:]} == {10} and len(sizes) > 10
    assert built == choice["m"] == installed[-1] and set(choice["seconds"]) >= {4, 5, 6}
