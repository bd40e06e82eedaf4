"""Tune an index's search-time settings for a target recall: the fastest setting that meets it on
one half of the queries, and the recall that setting then gets on the other half.

faiss's ``AutoTune`` (``ParameterSpace.explore`` -> ``OperatingPoints``) measures settings and
returns the Pareto curve, leaving the choice to the user; ``tune`` makes the choice for one target
and checks it on queries it did not tune on.

Tuned (those of ``TUNABLE`` the index has): ``ef_search`` / ``ef`` (graph beam), ``nprobe`` (IVF
lists probed), ``oversample`` (first-stage candidates per result), ``rerank_oversample``
(candidates per result the asymmetric stage keeps) and ``qb`` (query bits of an asymmetric
estimate; 0, a float query, is left alone). Each is taken as monotone: a larger value costs time
and buys recall.

The search, on the tuning half (a seeded random half of the queries):

A trial *meets* the target when its recall on the tuning half, less a margin, reaches it: the
margin is ``z * sqrt(2) * se``, ``se`` the standard error of the mean per-query recall, ``z`` the
normal quantile of ``confidence`` (0.95 by default; 0.5 = no margin). The held-out half's recall
differs from the tuning half's by about ``sqrt(2) * se``, so with the margin a setting that just
passes also meets the target on the held-out half with probability ~``confidence``. (On the
shipped set, 500 queries at recall 0.95, the margin is about 0.008.)

1. walk: from the index's current settings, while recall is below the target, try each parameter
   doubled (one trial each); take the cheapest step that meets the target, else the step that buys
   the most recall per extra second of search; stop when no step buys recall (ceilings, plateau);
2. bisect the parameter raised last between its old and new value: the smallest that meets the target;
3. trim: bisect each parameter in turn down towards its floor while the target stays met;
4. choose, among the trials that met the target and are not above another such trial in every
   parameter, the fastest (measured queries/s); set it on the index and measure it once on the
   held-out half.

At most ``max_trials`` trials (a setting is never measured twice); bisection stops at 5% of the
value. The result is a local optimum along that path, not the whole Pareto front: for a grid, sweep
with ``annbin bench``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import check_int, check_k
from annbin._measure import float_knn, recall_per_query, time_batch
from annbin.embed.asymmetric import QB_MAX
from annbin.embed.embedding_index import BinaryEmbeddingIndex

__all__ = ["TUNABLE", "TuneResult", "tune"]

TUNABLE = ("ef_search", "ef", "nprobe", "oversample", "rerank_oversample", "qb")
_CEILING = {"ef_search": 4096, "ef": 4096, "nprobe": 1 << 16, "oversample": 64, "rerank_oversample": 64, "qb": QB_MAX}


@dataclass
class TuneResult:
    """What ``tune`` chose and measured.

    ``params``: the chosen settings (now set on the index). ``met``: the tuning half reached the
    target with the margin (see the module docstring). ``recall_tune`` / ``qps_tune``: measured on the tuning half; ``recall_holdout`` /
    ``qps``: on the held-out half (row numbers of ``queries`` in ``holdout``). ``curve``: every
    trial, in order: ``params``, ``recall``, ``margin``, ``qps``, ``seconds`` (one batch), ``phase``
    (start, walk, bisect, trim), ``met``, and the index's ``last_search_stats`` where it keeps them.
    """

    params: dict[str, int]
    target_recall: float
    met: bool
    recall_tune: float
    qps_tune: float
    recall_holdout: float
    qps: float
    k: int
    holdout: NDArray[np.int64]
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return len(self.curve)


class _OutOfTrials(Exception):
    pass


def _first_stage(index: Any) -> Any:
    for attr in ("index", "inner"):  # BinaryEmbeddingIndex.index, RescoredIndex.inner
        inner = getattr(index, attr, None)
        if inner is not None and hasattr(inner, "get_search_params"):
            return inner
    return index


def _truth_ids(index: Any, queries: NDArray[Any], k: int, ground_truth: Any, vectors: ArrayLike | None,
               progress: bool) -> NDArray[np.int64]:
    if ground_truth is not None:
        ids = ground_truth[1] if isinstance(ground_truth, tuple) else ground_truth
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] != queries.shape[0] or ids.shape[1] < k or ids.dtype.kind not in "iu":
            raise ValueError(f"ground_truth must be integer ids ({queries.shape[0]}, >= {k}) or a (D, I) pair, "
                             f"got {ids.dtype} {ids.shape}")
        return ids.astype(np.int64, copy=False)
    if queries.dtype == np.uint8:
        raise ValueError("queries are codes: exact float search needs float queries, so give ground_truth=")
    # RescoredIndex and BinaryEmbeddingIndex expose the float store their rescoring reads
    stored = vectors if vectors is not None else getattr(index, "vectors", None)
    if stored is None:
        raise ValueError(f"{type(index).__name__} holds no float vectors: give ground_truth= (ids (nq, >= k)) "
                         "or vectors= (the indexed floats, in the order they were added)")
    metric = getattr(index, "metric", "ip")
    stored = np.asarray(stored)
    live = np.arange(stored.shape[0])
    if isinstance(index, BinaryEmbeddingIndex):
        live = index.live_rows()  # removed rows stay in the store
    stored = np.ascontiguousarray(stored[live] if live.size < stored.shape[0] else stored, dtype=np.float32)
    # "cos": the store holds unit vectors, so ip ranks as cosine (the query's norm does not reorder)
    _, rows = float_knn(stored, np.ascontiguousarray(queries, dtype=np.float32), k, "ip" if metric == "cos" else metric, progress=progress)
    rows = live[rows]
    if isinstance(index, BinaryEmbeddingIndex):  # rows in storage order -> the user's ids
        return index.get_ids()[rows]
    return rows


def _bounds(index: Any, name: str, current: dict[str, Any], k: int) -> tuple[int, int]:
    """(floor, ceiling) of a parameter; the ceiling never below its current value."""
    ceiling = _CEILING[name]
    n = int(getattr(index, "ntotal", 0)) or ceiling
    if name in ("ef_search", "ef"):
        floor, ceiling = k, min(ceiling, max(k, n))  # a beam narrower than k is widened to k anyway
    elif name == "nprobe":
        nlist = _first_stage(index).get_params().get("nlist") if hasattr(_first_stage(index), "get_params") else None
        floor, ceiling = 1, int(nlist) if nlist else ceiling
    elif name == "oversample":
        floor, ceiling = 1, min(ceiling, max(1, n // k))
    else:
        floor = 1
    return floor, max(ceiling, int(current[name]))


def tune(index: Any, queries: ArrayLike, *, target_recall: float, ground_truth: Any = None,
         vectors: ArrayLike | None = None, k: int = 10, params: list[str] | tuple[str, ...] | None = None,
         confidence: float = 0.95, max_trials: int = 40, runs: int = 3, seed: int = 0, progress: bool = False) -> TuneResult:
    """Set ``index``'s search settings to the fastest found that reaches ``target_recall`` (recall@k
    against exact float search) on half of ``queries``; returns them with the held-out recall.

    ``index``: any annbin index with ``set_search_params`` (``BinaryEmbeddingIndex``,
    ``RescoredIndex``, ``FloatHNSW``, the RaBitQ variants, a ``BinaryIndex`` with ``ground_truth``).
    ``queries``: ``(nq, dim)`` float32 (``(nq, d // 8)`` uint8 codes for a ``BinaryIndex``), nq >= 2.
    ``ground_truth``: the true neighbour ids ``(nq, >= k)`` int64 (or a ``(D, I)`` pair); without it,
    exact float search over ``vectors`` (the indexed floats in the order added) or over the floats
    the index stores itself (``RescoredIndex``, ``BinaryEmbeddingIndex``). ``params``: names to tune
    (default: every one of ``TUNABLE`` the index has). ``confidence``: of meeting the target on
    the held-out half (sets the margin). ``runs``: batch timings per trial (median).
    On error the index's settings are restored. See the module docstring for the search.
    """
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) or not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    z = NormalDist().inv_cdf(confidence)
    k = check_k(k)
    max_trials = check_int(max_trials, "max_trials", minimum=1)
    runs = check_int(runs, "runs", minimum=1)
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[0] < 2:
        raise ValueError(f"queries must be (nq, dim) with nq >= 2 (one half tunes, the other checks), got shape {q.shape}")
    current = index.get_search_params()
    names = [n for n in TUNABLE if n in current and not (n == "qb" and current[n] == 0)]
    if params is not None:
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"cannot tune {unknown} on this index; tunable here: {', '.join(names) or 'none'}")
        names = [n for n in names if n in params]
    if not names:
        raise ValueError(f"nothing to tune: the index's search parameters {sorted(current)} hold none of {', '.join(TUNABLE)}")
    truth = _truth_ids(index, q, k, ground_truth, vectors, progress)
    order = np.random.default_rng(seed).permutation(q.shape[0])
    tune_rows, hold_rows = np.sort(order[: q.shape[0] // 2]), np.sort(order[q.shape[0] // 2 :])
    q_tune, q_hold = q[tune_rows], q[hold_rows]
    bounds = {n: _bounds(index, n, current, k) for n in names}
    saved = {n: current[n] for n in names}
    seen: dict[tuple[tuple[str, int], ...], dict[str, Any]] = {}
    curve: list[dict[str, Any]] = []
    bar = _bar(max_trials, progress)

    def trial(p: dict[str, int], phase: str) -> dict[str, Any]:
        key = tuple(sorted(p.items()))
        if key in seen:
            return seen[key]
        if len(curve) >= max_trials:
            raise _OutOfTrials
        index.set_search_params(**p)
        seconds, (_, found) = time_batch(lambda: index.search(q_tune, k), runs)
        per_query = recall_per_query(np.asarray(found), truth[tune_rows], k)
        recall = float(per_query.mean())
        margin = float(z * np.sqrt(2) * per_query.std(ddof=1) / np.sqrt(per_query.size))
        t = {"params": dict(p), "recall": recall, "margin": margin, "qps": q_tune.shape[0] / max(seconds, 1e-12),
             "seconds": seconds, "phase": phase, "met": bool(recall - margin >= target_recall),
             **dict(getattr(index, "last_search_stats", {}) or {})}
        seen[key] = t
        curve.append(t)
        bar.update(1)
        bar.set_postfix(recall=f"{recall:.3f}")
        return t

    def bisect(cur: dict[str, int], name: str, lo: int, hi: int, phase: str) -> dict[str, int]:
        """``lo`` fails, ``hi`` meets the target: the smallest value that meets it (to 5%)."""
        while hi - lo > max(1, hi // 20):
            mid = (lo + hi) // 2
            if trial({**cur, name: mid}, phase)["met"]:
                hi = mid
            else:
                lo = mid
        return {**cur, name: hi}

    try:
        index.search(q_tune[:1], k)  # lazy work (a graph built on first search, page-ins) stays out of trial 1
        cur = {n: min(max(int(current[n]), bounds[n][0]), bounds[n][1]) for n in names}
        try:
            r = trial(cur, "start")
            raised: tuple[str, int] | None = None
            while not r["met"]:
                steps = []
                for n in names:
                    up = min(bounds[n][1], max(cur[n] + 1, 2 * cur[n]))
                    if n == "rerank_oversample" and "oversample" in cur:
                        up = min(up, max(cur["oversample"], cur[n]))  # keeping more than the candidates is a no-op
                    if up > cur[n]:
                        steps.append((n, trial({**cur, n: up}, "walk")))
                met = [s for s in steps if s[1]["met"]]
                gaining = [s for s in steps if s[1]["recall"] > r["recall"]]
                if met:
                    n, t = max(met, key=lambda s: s[1]["qps"])
                elif gaining:  # recall per extra second; a step measured as free (noise) wins
                    n, t = max(gaining, key=lambda s: (s[1]["recall"] - r["recall"]) / max(s[1]["seconds"] - r["seconds"], 1e-9))
                else:
                    break
                raised, cur, r = (n, cur[n]), dict(t["params"]), t
            if r["met"] and raised is not None:
                cur = bisect(cur, raised[0], raised[1], cur[raised[0]], "bisect")
            if r["met"]:
                for n in names:
                    floor = bounds[n][0]
                    if cur[n] > floor:
                        cur = {**cur, n: floor} if trial({**cur, n: floor}, "trim")["met"] else bisect(cur, n, floor, cur[n], "trim")
        except _OutOfTrials:
            pass
        good = [t for t in curve if t["met"]]
        # Cost is monotone in every parameter: a met setting with another met one <= it everywhere
        # is not cheaper, whatever a noisy timing says; the fastest of the rest is chosen.
        minimal = [t for t in good if not any(o is not t and all(o["params"][n] <= t["params"][n] for n in names) for o in good)]
        best = max(minimal, key=lambda t: t["qps"]) if good else max(curve, key=lambda t: (t["recall"], t["qps"]))
        index.set_search_params(**best["params"])
        seconds, (_, found) = time_batch(lambda: index.search(q_hold, k), runs)
    except BaseException:
        index.set_search_params(**saved)
        raise
    finally:
        bar.close()
    return TuneResult(params=dict(best["params"]), target_recall=float(target_recall), met=bool(good),
                      recall_tune=best["recall"], qps_tune=best["qps"],
                      recall_holdout=float(recall_per_query(np.asarray(found), truth[hold_rows], k).mean()),
                      qps=q_hold.shape[0] / max(seconds, 1e-12), k=k, holdout=hold_rows.astype(np.int64), curve=curve)


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="tune", unit="trial", disable=not enabled, leave=False)
