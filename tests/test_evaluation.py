import sys
from types import SimpleNamespace

import numpy as np
import pytest

from annbin.bench.evaluation import hamming_distances, hamming_groundtruth, kendall_tau, recall_ids, recall_tie_aware, time_batch


def test_recall_ids_hand_made():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 9, 1], [-1, -1, -1]])
    assert recall_ids(found, truth, 3) == pytest.approx(2 / 6)
    assert recall_ids(truth, truth, 3) == 1.0
    # only the first k columns count on either side
    assert recall_ids(np.array([[1, 7, 2]]), np.array([[1, 2, 8]]), 1) == 1.0
    assert recall_ids(np.array([[7, 1]]), np.array([[1, 2]]), 1) == 0.0
    with pytest.raises(ValueError, match="at least k=4"):
        recall_ids(found, truth, 4)


def test_tie_aware_recall_counts_ties_at_kth_distance():
    # true distances of the 2-NN: 1, 3; an item at distance 3 that is not in the id list is a hit
    true_d = np.array([[1, 3, 3, 3]])
    assert recall_tie_aware(np.array([[1, 3]]), true_d, 2) == 1.0
    assert recall_tie_aware(np.array([[3, 3]]), true_d, 2) == 1.0
    assert recall_tie_aware(np.array([[1, 4]]), true_d, 2) == 0.5
    missing = np.iinfo(np.int64).max
    assert recall_tie_aware(np.array([[1, missing]]), true_d, 2) == 0.5


def test_id_overlap_understates_correct_tied_search():
    # 5 identical items: any 2 of them are an exact answer, but id overlap may say 0
    base = np.zeros((5, 4), np.uint8)
    q = np.zeros((1, 4), np.uint8)
    D, I = hamming_groundtruth(base, q, 2)
    other = np.array([[i for i in range(5) if i not in I[0]][:2]])
    assert recall_ids(other, I, 2) == 0.0
    assert recall_tie_aware(hamming_distances(base, q, other), D, 2) == 1.0


def test_hamming_distances_recomputed_from_codes(rng):
    base = rng.integers(0, 256, (30, 8), dtype=np.uint8)
    q = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    ids = np.array([[0, 5, -1]] * 3)
    d = hamming_distances(base, q, ids)
    for i in range(3):
        for j, idx in enumerate(ids[i]):
            if idx < 0:
                assert d[i, j] == np.iinfo(np.int64).max
            else:
                assert d[i, j] == sum(bin(a ^ b).count("1") for a, b in zip(base[idx], q[i]))


def test_kendall_tau_values():
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    assert kendall_tau(scores, np.array([[1, 2, 3, 4]])) == pytest.approx(1.0)
    assert kendall_tau(scores, np.array([[4, 3, 2, 1]])) == pytest.approx(-1.0)
    # tau-b with ties: x strict, y = [1,1,2,2]: C=4, D=0, pairs untied in y = 4 -> 4/sqrt(6*4)
    assert kendall_tau(scores, np.array([[1, 1, 2, 2]])) == pytest.approx(4 / np.sqrt(24))
    # rows with every pair tied are skipped, not counted as 0
    both = kendall_tau(np.vstack([scores, scores]), np.array([[1, 2, 3, 4], [5, 5, 5, 5]]))
    assert both == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        kendall_tau(scores, np.array([[1, 2]]))


def test_time_batch_returns_median_and_result(monkeypatch):
    """A scripted clock: each call's start and end. The figure is the median of the durations (not
    their mean, minimum or last), and the result is the last call's."""
    def scripted(durations):
        ticks = iter([t for i, d in enumerate(durations) for t in (10.0 * i, 10.0 * i + d)])
        monkeypatch.setattr(sys.modules[time_batch.__module__], "time", SimpleNamespace(perf_counter=lambda: next(ticks)))

    calls = []
    scripted([5.0, 2.0, 1.0])  # median 2; mean 2.67, min 1, last 1
    seconds, result = time_batch(lambda: calls.append(1) or len(calls), runs=3)
    assert seconds == pytest.approx(2.0) and result == 3 and len(calls) == 3
    scripted([4.0, 1.0, 2.0, 8.0])  # an even count: the mean of the middle two, 3
    seconds, result = time_batch(lambda: calls.append(1) or len(calls), runs=4)
    assert seconds == pytest.approx(3.0) and result == 7
