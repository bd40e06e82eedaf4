"""Ground truth, recall measures and timing for the harness.

Two ground truths: exact float kNN (from ``Dataset.get_groundtruth``) and exact
Hamming kNN (here, on faiss-flat). Against the float truth a report shows what binarization plus the
index lose; against the Hamming truth, what the index alone loses. Hamming distances tie heavily, so
Hamming recall is reported two ways: plain id overlap, and tie-aware (a returned item at distance <=
the true k-th distance is a hit, as ann-benchmarks counts).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from annbin._checks import as_codes, check_k
from annbin._measure import recall_per_query, time_batch, time_per_query

__all__ = [
    "hamming_groundtruth",
    "hamming_distances",
    "recall_ids",
    "recall_tie_aware",
    "kendall_tau",
    "time_batch",
    "time_per_query",
]


def hamming_groundtruth(base: NDArray[np.uint8], queries: NDArray[np.uint8], k: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Exact Hamming kNN ``(D int32 (nq, k), I int64 (nq, k))`` of uint8 codes, by faiss-flat."""
    import faiss

    base = as_codes(base, name="base")
    queries = as_codes(queries, base.shape[1], name="queries")
    k = check_k(k)
    index = faiss.IndexBinaryFlat(base.shape[1] * 8)
    index.add(base)
    D, I = index.search(queries, min(k, base.shape[0]))
    return D.astype(np.int32), I.astype(np.int64)


def hamming_distances(base: NDArray[np.uint8], queries: NDArray[np.uint8], ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """True Hamming distance of ``queries[i]`` to ``base[ids[i, j]]``; -1 ids give a huge value.

    Recomputed from the codes, so recall never trusts an index's own distances.
    """
    valid = ids >= 0
    rows = base[np.where(valid, ids, 0)]
    dist = np.bitwise_count(rows ^ queries[:, None, :]).sum(axis=2, dtype=np.int64)
    return np.where(valid, dist, np.iinfo(np.int64).max)


def recall_ids(found: NDArray[np.int64], truth: NDArray[np.int64], k: int) -> float:
    """Mean fraction of each query's true top-k ids found in its returned top-k (plain overlap)."""
    return float(recall_per_query(found, truth, k).mean())


def recall_tie_aware(found_dist: NDArray[np.integer], true_dist: NDArray[np.integer], k: int) -> float:
    """Fraction of returned top-k whose true distance is <= the true k-th distance of the query.

    ``found_dist``: true distances of the returned items (use ``hamming_distances``; missing
    results must carry a huge value); ``true_dist``: exact kNN distances (ascending).
    """
    k = check_k(k)
    if true_dist.shape[1] < k or found_dist.shape[1] < k:
        raise ValueError(f"need at least k={k} columns, got {found_dist.shape} and {true_dist.shape}")
    kth = true_dist[:, k - 1 : k]
    return float((found_dist[:, :k] <= kth).sum() / (found_dist.shape[0] * k))


def kendall_tau(float_scores: NDArray[np.floating], hamming: NDArray[np.integer], *, higher_is_closer: bool = True) -> float:
    """Mean Kendall tau-b between the float and the Hamming ordering of each row's items.

    Both arrays are ``(nq, m)`` over the same items (e.g. each query's top-100 float neighbours).
    Float scores that grow with similarity (inner product) use ``higher_is_closer=True``; Hamming
    distance shrinks with similarity. tau-b handles the heavy ties of Hamming distance; a row whose
    pairs are all tied contributes nothing.
    """
    x = np.asarray(float_scores, dtype=np.float64)
    y = np.asarray(hamming, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"float_scores and hamming must be 2-D of one shape, got {x.shape} and {y.shape}")
    if higher_is_closer:
        x = -x  # make both "smaller is closer"
    i, j = np.triu_indices(x.shape[1], k=1)
    taus = []
    for start in range(0, x.shape[0], 256):  # blocks keep the pair arrays small
        sx = np.sign(x[start : start + 256, i] - x[start : start + 256, j])
        sy = np.sign(y[start : start + 256, i] - y[start : start + 256, j])
        num = (sx * sy).sum(axis=1)
        den = np.sqrt(np.count_nonzero(sx, axis=1).astype(np.float64) * np.count_nonzero(sy, axis=1))
        ok = den > 0
        taus.append(num[ok] / den[ok])
    allt = np.concatenate(taus) if taus else np.empty(0)
    return float(allt.mean()) if allt.size else float("nan")
