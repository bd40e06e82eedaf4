"""``annbin tune`` on a dataset: build the index once, ``annbin.tune`` it, and turn its trials into
result rows of the bench's shape (``annbin.bench.run``), ready for results.jsonl and ``annbin report``.

Binary specs (and the RaBitQ specs with ``rescore``) are built as a ``BinaryEmbeddingIndex`` from
the dataset's floats, so what is tuned is what a user would run; ``float-flat`` / ``float-hnsw``
(and RaBitQ without rescoring) as the float index itself. The dataset's cached exact float
ground truth is the tuner's.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annbin._checks import check_int, check_k
from annbin.bench.evaluation import time_per_query
from annbin.bench.rows import make_row
from annbin.bench.run import DEFAULT_VECTORS, check_stage_options
from annbin.embed.embedding_index import BinaryEmbeddingIndex
from annbin.embed.tune import TUNABLE, TuneResult, tune
from annbin.index.registry import expand_spec, float_variants
from annbin.quantize import code_size_for
from annbin.spec import variant_name

__all__ = ["TuneConfig", "run_tune"]

@dataclass
class TuneConfig:
    """One ``annbin tune`` run; field names match the CLI options.

    ``oversample``: switch float rescoring on, starting at this oversample; ``rerank_oversample``:
    switch the asymmetric stage on, starting there; ``qb``: its starting query bits.
    ``params``: the search parameters to tune (default: all that apply).
    """

    index: str
    dataset: str = ""
    target_recall: float = 0.95
    k: int = 10
    oversample: int | None = None
    rerank_oversample: int | None = None
    rotation: str | None = None
    thresholds: str = "zero"
    rerank_bits: int = 1
    qb: int = 4
    vectors: str = DEFAULT_VECTORS  # where rescoring reads float vectors: "mmap" (a .npy on disk) or "ram", as bench
    params: list[str] | None = None
    confidence: float = 0.95
    threads: int = 1
    runs: int = 3
    latency_queries: int = 200
    max_queries: int | None = None
    max_trials: int = 40
    seed: int = 0

    def validate(self) -> TuneConfig:
        if not isinstance(self.target_recall, (int, float)) or not 0 < self.target_recall <= 1:
            raise ValueError(f"--target-recall must be in (0, 1], got {self.target_recall!r}")
        check_k(self.k)
        if "|" in self.index:
            raise ValueError(f"tune takes one index spec, not a sweep ('|' in {self.index!r}): the tuner picks the values")
        expand_spec(self.index)  # unknown variants and parameters fail here
        for name, value in (("--oversample", self.oversample), ("--rerank-oversample", self.rerank_oversample)):
            if value is not None:
                check_int(value, name, minimum=1)
        if self.rerank_oversample and not self.oversample:
            raise ValueError("--rerank-oversample keeps part of the --oversample candidates: give --oversample too")
        check_stage_options(self.rotation, self.thresholds, self.rerank_bits, self.qb, self.vectors)
        unknown = sorted(set(self.params or ()) - set(TUNABLE))
        if unknown:
            raise ValueError(f"--params: unknown {unknown}; tunable: {', '.join(TUNABLE)}")
        if not isinstance(self.confidence, (int, float)) or not 0.5 <= self.confidence < 1:
            raise ValueError(f"--confidence must be in [0.5, 1), got {self.confidence!r}")
        for name in ("threads", "runs", "max_trials"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.latency_queries, "latency_queries", minimum=0)
        if not self._searches_floats() and not self.oversample:
            raise ValueError(f"{self.index!r} alone gives Hamming distances, not float results: add --oversample N "
                             "(N x k candidates rescored with the floats)")
        if self._searches_floats() and (self.rotation or self.rerank_oversample or self.thresholds != "zero"):
            raise ValueError(f"{self._variant()!r} without --oversample searches the floats as they are: "
                             "--rotation / --rerank-oversample / --thresholds need a code first stage with --oversample")
        return self

    def _variant(self) -> str:
        return variant_name(self.index)

    def _searches_floats(self) -> bool:
        """float-flat / float-hnsw, or a RaBitQ spec alone: built as the float index itself."""
        cls = float_variants().get(self._variant())
        return cls is not None and (not cls.rescorable or not self.oversample)

    def build(self, dim: int, metric: str, tmp: Path) -> Any:
        """The empty index this config tunes."""
        from annbin.embed.floats import make_float_index

        if self._searches_floats():
            return make_float_index(self.index, dim, metric)
        return BinaryEmbeddingIndex(
            self.index, oversample=self.oversample, rerank="asymmetric" if self.rerank_oversample else None,
            rerank_oversample=self.rerank_oversample or 3, thresholds=self.thresholds,
            rotation=self.rotation, rerank_bits=self.rerank_bits, qb=self.qb,
            store_vectors="ram" if self.vectors == "ram" else tmp / "vectors.npy", metric=metric, seed=self.seed)


def run_tune(cfg: TuneConfig, *, progress: bool = False) -> tuple[TuneResult, list[dict[str, Any]]]:
    """Build ``cfg.index`` on ``cfg.dataset``, tune it; returns the result and its rows (the trials
    on the tuning half, then the chosen setting on the held-out half, ``tune.half``)."""
    import faiss

    from annbin.bench.datasets import DEFAULT_DATASET, get_dataset

    cfg.validate()
    ds = get_dataset(cfg.dataset or DEFAULT_DATASET)
    base = np.ascontiguousarray(ds.get_database(), dtype=np.float32)
    queries = ds.get_queries()
    queries = np.ascontiguousarray(queries[: cfg.max_queries] if cfg.max_queries else queries, dtype=np.float32)
    if cfg.k > base.shape[0]:
        raise ValueError(f"k={cfg.k} is larger than the dataset ({base.shape[0]} vectors)")
    _, truth = ds.get_groundtruth(cfg.k, progress=progress)
    with tempfile.TemporaryDirectory(prefix="annbin-tune-") as tmp:
        index = cfg.build(base.shape[1], ds.metric, Path(tmp))
        # The build runs on every core (what is tuned is search); searches on cfg.threads.
        build_threads = os.cpu_count() or 1
        faiss.omp_set_num_threads(build_threads)
        if hasattr(index, "num_threads"):
            index.num_threads = -1
        t0 = time.perf_counter()
        index.add(base)
        index.search(queries[:1], 1)  # lazy builds (rabitq-hnsw's graph) belong to the build time
        build_s = time.perf_counter() - t0
        faiss.omp_set_num_threads(cfg.threads)
        if hasattr(index, "num_threads"):
            index.num_threads = cfg.threads  # hnswlib takes threads per call, not from OpenMP
        result = tune(index, queries, target_recall=cfg.target_recall, ground_truth=truth[: queries.shape[0]],
                      k=cfg.k, params=cfg.params, confidence=cfg.confidence, max_trials=cfg.max_trials, runs=cfg.runs, seed=cfg.seed, progress=progress)
        hold = queries[result.holdout]
        nlat = min(cfg.latency_queries, hold.shape[0])
        lat = time_per_query(lambda i: index.search(hold[i : i + 1], cfg.k), nlat)
        facts = {"dataset": ds.name, "n": int(base.shape[0]), "dim": int(base.shape[1]), "metric": ds.metric,
                 "build_s": build_s, "build_threads": build_threads, "index_bytes": int(index.memory_bytes()),
                 "disk": int(index.disk_bytes()) if hasattr(index, "disk_bytes") else 0, "latencies": lat}
        rows = [_row(cfg, facts, t, "tune", queries.shape[0] - result.holdout.size, False) for t in result.curve]
        chosen = {**next(t for t in result.curve if t["params"] == result.params),
                  "recall": result.recall_holdout, "qps": result.qps, **dict(getattr(index, "last_search_stats", {}) or {})}
        final = _row(cfg, facts, chosen, "holdout", result.holdout.size, True)
        final["tune"].update(recall_tune=result.recall_tune, qps_tune=result.qps_tune, trials=result.trials)
        rows.append(final)
    return result, rows


def _row(cfg: TuneConfig, facts: dict[str, Any], t: dict[str, Any], half: str, nq: int, chosen: bool) -> dict[str, Any]:
    """A trial as a bench row (``annbin.bench.rows``), with a ``tune`` object."""
    p = dict(t["params"])
    over = p.pop("oversample", None) if cfg.oversample else None
    kept = p.pop("rerank_oversample", None) if cfg.rerank_oversample else None
    qb = p.pop("qb", None) if cfg.rerank_oversample else None
    codes = variant_name(cfg.index) not in float_variants()
    extra: dict[str, Any] = {key: t[key] for key in ("candidates_per_query", "vectors_read_per_query") if key in t}
    if over is not None:
        extra["rescore_vectors"] = f"{cfg.vectors}:float32"
        extra["disk_bytes_per_vector"] = facts["disk"] / facts["n"]
    if qb is not None:
        extra["qb"], extra["rerank_bits"] = qb, cfg.rerank_bits
    row = make_row(dataset=facts["dataset"], spec=cfg.index, params=p, k=cfg.k, n=facts["n"], nq=int(nq), dim=facts["dim"],
                   metric=facts["metric"], library="annbin", recall_float=t["recall"], qps=t["qps"], threads=cfg.threads,
                   build_s=facts["build_s"], index_bytes=facts["index_bytes"], oversample=over, rerank_oversample=kept,
                   rotation=cfg.rotation, bits=code_size_for(facts["dim"]) * 8 if codes else None,
                   latencies=facts.get("latencies") if chosen else None, build_threads=facts["build_threads"], **extra)
    row["tune"] = {"target_recall": cfg.target_recall, "confidence": cfg.confidence, "margin": t["margin"], "half": half,
                   "phase": t["phase"], "met": t["met"], "chosen": chosen}
    return row
