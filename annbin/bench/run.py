"""Recall / speed sweeps: build once per build setting, loop over search settings, emit rows.

Sweep grammar (command line and config files): an index spec whose values may list alternatives
separated by ``|``::

    hnsw:M=16|32,ef_search=16|32|64|128   ->  2 builds x 4 searches = 8 rows
    float-hnsw:M=16,ef=10|20|40

Build parameters (the variant's ``build_params``) multiply builds; search parameters
(``search_params``) are looped over each built index. Each row is one JSON object: tables and plots are made from rows.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annbin._checks import check_int, check_k
from annbin._extras import MissingExtraError, require
from annbin.bench import peers  # noqa: F401  (registers the peer libraries' specs for make_float_index)
from annbin.bench.evaluation import hamming_distances, hamming_groundtruth, kendall_tau, recall_ids, recall_tie_aware, time_batch, time_per_query
from annbin.bench.rows import make_row
from annbin.embed._vectors import check_store_dtype
from annbin.embed.asymmetric import check_qb
from annbin.embed.encoder import Encoder, check_rerank_bits, check_rotation, check_thresholds
from annbin.index.registry import expand_spec, float_variants, make_index
from annbin.spec import variant_name

# A config without indexes (e.g. `--project-bits 64` alone); the plain `annbin bench` runs annbin.bench.default_plan's plan.
DEFAULT_INDEXES = ("flat", "hnsw:M=32,ef_search=16|64", "mih")
KENDALL_TOP = 100  # rank quality over each query's top-100 float neighbours, as in the literature
#: where rescoring reads the float vectors, ``annbin bench`` and ``annbin tune`` alike (``--vectors``):
#: a memory-mapped ``.npy`` (what ``BinaryEmbeddingIndex`` does by default) or RAM
VECTOR_STORES = ("mmap", "ram")
DEFAULT_VECTORS = "mmap"


def check_stage_options(rotation: str | None, thresholds: str, rerank_bits: int, qb: int, vectors: str) -> None:
    """The encoding and rescoring options ``annbin bench`` and ``annbin tune`` share, checked by the
    library's own checks (the Encoder's, the asymmetric stage's); ``vectors`` is the CLI's."""
    check_rotation(rotation)
    check_thresholds(thresholds)
    check_rerank_bits(rerank_bits)
    check_qb(qb)
    if vectors not in VECTOR_STORES:
        raise ValueError(f"vectors must be one of {', '.join(map(repr, VECTOR_STORES))}, got {vectors!r}")


@dataclass
class BenchConfig:
    """Everything one ``annbin bench`` run needs; field names match the CLI options and config keys."""

    dataset: str = ""
    indexes: list[str] = field(default_factory=lambda: list(DEFAULT_INDEXES))
    k: int = 10
    oversample: list[int] = field(default_factory=list)  # float rescoring of oversample x k candidates; empty: none
    rerank_oversample: list[int] = field(default_factory=list)  # asymmetric stage: float vectors read per result
    rotation: str | None = None  # None, "random" or "itq": rotate floats before the sign (annbin.Encoder)
    rerank_bits: int = 1  # 2: a second bit plane for the asymmetric rerank
    qb: int = 4  # query bits of the asymmetric rerank (0 = float query)
    vectors: str = DEFAULT_VECTORS  # where rescoring reads float vectors: "mmap" (a .npy on disk) or "ram"
    vector_dtype: str = "float32"  # precision of the rescoring store: float16 halves its bytes
    project_bits: int | None = None  # project floats to this many bits (random hyperplanes) before binarizing
    thresholds: str = "zero"  # "zero" (sign bits), "median" (balances bits) or "mean" (centring)
    runs: int = 3
    latency_queries: int = 200
    max_queries: int | None = None
    threads: int = 1
    seed: int = 0

    def validate(self) -> BenchConfig:
        check_k(self.k)
        for r in self.oversample:
            check_int(r, "oversample", minimum=1)
        for r in self.rerank_oversample:
            check_int(r, "rerank_oversample", minimum=1)
        if self.rerank_oversample and not self.oversample:
            raise ValueError("--rerank-oversample keeps part of the --oversample candidates: give --oversample factors too")
        check_stage_options(self.rotation, self.thresholds, self.rerank_bits, self.qb, self.vectors)
        check_int(self.runs, "runs", minimum=1)
        check_int(self.latency_queries, "latency_queries", minimum=0)
        check_int(self.threads, "threads", minimum=1)
        if self.project_bits is not None and (check_int(self.project_bits, "project_bits", minimum=8) % 8):
            raise ValueError(f"project_bits must be a multiple of 8, got {self.project_bits}")
        check_store_dtype(self.vector_dtype)
        if (self.oversample or self.rotation) and self.project_bits is not None:
            raise ValueError("--oversample / --rotation work on the dataset's own float vectors; they cannot be combined with --project-bits")
        if not self.indexes:
            raise ValueError("no index spec given")
        for spec in self.indexes:
            expand_spec(spec)  # raises on unknown variants or parameters
        return self


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) sweep file into BenchConfig fields."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"config {str(path)!r} must end in .yaml, .yml or .toml")
    if path.suffix != ".toml":  # outside the parse-error net below: a missing extra is no parse error
        yaml = require("yaml", package="pyyaml", extra="yaml", purpose=f"config {path.name!r} (YAML)")
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10: the same parser, from PyPI
                import tomli as tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # parser errors come in many classes; one line is what a user needs
        raise ValueError(f"cannot parse config {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {str(path)!r} must be a mapping of option names to values")
    known = set(BenchConfig.__dataclass_fields__) | {"out", "plot"}  # the last two are the CLI's
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config {str(path)!r}; expected some of {sorted(known)}")
    return data


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit="q" if "query" in desc else "it")


@dataclass
class BenchData:
    """A dataset's float vectors and exact float ground truth, loaded once for every config of a
    run (``load_data``): the configs of the default plan share it."""

    ds: Any
    base: np.ndarray  # (n, dim) float32
    queries: np.ndarray  # (nq, dim) float32, the first max_queries
    gt_scores: np.ndarray  # (nq, depth) float32
    gt_ids: np.ndarray  # (nq, depth) int64


def load_data(cfg: BenchConfig, progress: bool = False) -> BenchData:
    """Load ``cfg.dataset`` (default: the shipped real set) and its float ground truth, deep enough
    for ``cfg.k`` and the Kendall tau over each query's top ``KENDALL_TOP``."""
    from annbin.bench.datasets import get_dataset

    ds = get_dataset(cfg.dataset) if cfg.dataset else get_dataset(_default_dataset())
    base = np.ascontiguousarray(ds.get_database(), dtype=np.float32)
    queries = ds.get_queries()
    queries = np.ascontiguousarray(queries[: cfg.max_queries] if cfg.max_queries else queries, dtype=np.float32)
    if cfg.k > base.shape[0]:
        raise ValueError(f"k={cfg.k} is larger than the dataset ({base.shape[0]} vectors)")
    depth = min(max(cfg.k, KENDALL_TOP), base.shape[0])
    scores, ids = ds.get_groundtruth(depth, progress=progress)
    nq = queries.shape[0]
    return BenchData(ds, base, queries, scores[:nq], ids[:nq])


class _Prepared:
    """The dataset, its codes and both ground truths, computed once per bench config."""

    def __init__(self, cfg: BenchConfig, progress: bool, data: BenchData) -> None:
        self.ds, self.base, self.queries = data.ds, data.base, data.queries
        self.gt_scores, self.gt_ids = data.gt_scores, data.gt_ids
        depth = self.gt_ids.shape[1]
        if cfg.k > depth:
            raise ValueError(f"k={cfg.k} is deeper than the loaded ground truth ({depth}): load_data with this config")
        self.metric = self.ds.metric
        self.projection = None
        feats_b, feats_q = self.base, self.queries
        if cfg.project_bits is not None and cfg.project_bits != self.base.shape[1]:
            # Random hyperplanes (SimHash): short codes for MIH studies, independent of the data.
            rng = np.random.default_rng(cfg.seed)
            self.projection = rng.standard_normal((self.base.shape[1], cfg.project_bits)).astype(np.float32)
            feats_b, feats_q = self.base @ self.projection, self.queries @ self.projection
        with _progress(1, "encode", progress) as bar:
            self.encoder = Encoder(rotation=cfg.rotation, thresholds=cfg.thresholds, rerank_bits=cfg.rerank_bits, seed=cfg.seed).fit(feats_b)
            self.encoded = self.encoder.encode(feats_b) if cfg.project_bits is None else None
            if self.encoded is not None and self.ds.metric == "ip":
                self.encoded.sqnorms = None  # only l2 estimates read them: not counted in RAM
            bar.update(1)
        self.codes = self.encoded.codes if self.encoded is not None else self.encoder.encode_codes(feats_b)
        self.qcodes = self.encoder.encode_codes(feats_q)
        self.d = self.codes.shape[1] * 8
        with _progress(1, "hamming ground truth", progress) as bar:
            self.ham_D, self.ham_I = hamming_groundtruth(self.codes, self.qcodes, cfg.k)
            bar.update(1)
        top = self.gt_ids[:, :depth]
        ham_top = hamming_distances(self.codes, self.qcodes, top)
        sign = 1.0 if self.metric == "ip" else -1.0  # l2 ground truth is distances: flip to scores
        self.kendall = kendall_tau(sign * self.gt_scores[:, :depth], ham_top)


def _default_dataset() -> str:
    from annbin.bench.datasets import DEFAULT_DATASET

    return DEFAULT_DATASET


def run_bench(cfg: BenchConfig, *, progress: bool = False, on_row: Callable[[dict[str, Any]], None] | None = None,
              data: BenchData | None = None) -> list[dict[str, Any]]:
    """Run every index spec of ``cfg``; returns the result rows (also passed to ``on_row``).

    ``data``: what ``load_data`` returned for a config of the same dataset, k and max_queries
    (default: loaded here). faiss's OpenMP thread count is ``cfg.threads`` during the run and
    restored after it.
    """
    import faiss

    cfg.validate()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(cfg.threads)
    try:
        return _run(cfg, progress, on_row, data)
    finally:
        faiss.omp_set_num_threads(before)


def _run(cfg: BenchConfig, progress: bool, on_row: Callable[[dict[str, Any]], None] | None, data: BenchData | None) -> list[dict[str, Any]]:
    prep = _Prepared(cfg, progress, data if data is not None else load_data(cfg, progress))
    rows: list[dict[str, Any]] = []
    for spec in cfg.indexes:
        for build_spec, searches in expand_spec(spec):
            for row in _bench_one(cfg, prep, build_spec, searches, progress):
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def _library(cls: Any) -> str:
    """Which library a row's index runs on: annbin's own indexes and pipelines (a rescorable first
    stage is one), a peer's ``library``, hnswlib, or faiss (``float-flat``)."""
    if cls is None or cls.rescorable:
        return "annbin"
    return str(getattr(cls, "library", "") or ("hnswlib" if cls.variant == "float-hnsw" else "faiss"))


def _bench_one(cfg: BenchConfig, prep: _Prepared, build_spec: str, searches: list[dict[str, Any]], progress: bool) -> Iterator[dict[str, Any]]:
    """The rows of one build: a float index (baselines, peers) searched as it is; a code first stage
    alone (Hamming or RaBitQ estimates); and, with ``cfg.oversample``, the ``BinaryEmbeddingIndex``
    a user would build from the same spec and options, searched at each oversample."""
    cls = float_variants().get(variant_name(build_spec))
    if cls is not None and not cls.rescorable:
        yield from _bench_float(cfg, prep, build_spec, searches, cls, progress)
    elif cfg.oversample:
        yield from _bench_embedding(cfg, prep, build_spec, searches, cls, progress)
    else:
        yield from _bench_stage(cfg, prep, build_spec, searches, cls, progress)


def _timed_build(index: Any, data: np.ndarray, probe: np.ndarray, desc: str, progress: bool, chunks: int = 1) -> float:
    """Seconds to add ``data`` (in ``chunks`` adds) and answer one query: lazy builds (MIH's tables,
    a graph built at the first search) are charged to the build, not to search."""
    n = data.shape[0]
    step = max(1, -(-n // chunks))
    t0 = time.perf_counter()
    with _progress(n, desc, progress) as bar:
        for start in range(0, n, step):
            index.add(data[start : start + step])
            bar.update(min(step, n - start))
        index.search(probe[:1], 1)
    return time.perf_counter() - t0


def _bench_float(cfg: BenchConfig, prep: _Prepared, build_spec: str, searches: list[dict[str, Any]], cls: Any, progress: bool) -> Iterator[dict[str, Any]]:
    from annbin.embed.floats import make_float_index

    index: Any = _or_skip(lambda: make_float_index(build_spec, prep.base.shape[1], prep.metric), build_spec, cls)
    if index is None:
        return
    index.num_threads = cfg.threads  # hnswlib takes threads per call, not from OpenMP
    build_s = _timed_build(index, prep.base, prep.queries, f"build {build_spec}", progress)
    for params in searches or [{}]:
        index.set_search_params(**params)
        yield _measure(cfg, prep, index, prep.queries, build_spec, params, build_s, int(index.memory_bytes()), cls, progress)


def _bench_stage(cfg: BenchConfig, prep: _Prepared, build_spec: str, searches: list[dict[str, Any]], cls: Any, progress: bool) -> Iterator[dict[str, Any]]:
    """A code first stage by itself: a binary index on the codes, or a RaBitQ stage on the rotated
    floats (its estimates, not rescored)."""
    from annbin.embed.floats import make_float_index

    if cls is not None:
        index: Any = _or_skip(lambda: make_float_index(build_spec, prep.base.shape[1], prep.metric), build_spec, cls)
        if index is None:
            return
        data: Any = prep.encoder.rotate(prep.base)
        queries: Any = prep.encoder.rotate(prep.queries)
        chunks = 1
    else:
        index = make_index(build_spec, d=prep.d)
        # an untrained index (IVF) trains on its first add: it gets all the data at once
        data, queries, chunks = prep.codes, prep.qcodes, 20 if index.is_trained else 1
    build_s = _timed_build(index, data, queries, f"build {build_spec}", progress, chunks)
    for params in searches or [{}]:
        index.set_search_params(**params)
        yield _measure(cfg, prep, index, queries, build_spec, params, build_s, int(index.memory_bytes()), cls, progress)


def _or_skip(build: Callable[[], Any], build_spec: str, cls: Any) -> Any:
    """``build()``, or None with one line on stderr when the library a peer or a float-in first stage
    needs is not usable here (its rows are left out, the run goes on); a baseline's missing library
    is an error."""
    try:
        return build()
    except MissingExtraError as exc:
        if cls is not None and cls.peer is None and not cls.rescorable:
            raise
        why = f"needs {cls.peer} (pip install 'annbin[peers]')" if cls is not None and cls.peer else str(exc)
        print(f"skipping {build_spec}: {why}", file=sys.stderr, flush=True)
        return None


def _bench_embedding(cfg: BenchConfig, prep: _Prepared, build_spec: str, searches: list[dict[str, Any]], cls: Any, progress: bool) -> Iterator[dict[str, Any]]:
    """``BinaryEmbeddingIndex(build_spec, ...)`` built from the floats, as a user would: its first
    stage alone (the codes-only row), then each oversample (and, for code stages with
    ``cfg.rerank_oversample``, a second index with the asymmetric stage) on the float results."""
    from annbin.embed.embedding_index import BinaryEmbeddingIndex

    reranks = [False] + ([True] if cfg.rerank_oversample and cls is None else [])
    for rerank in reranks:
        def build(rerank: bool = rerank) -> BinaryEmbeddingIndex:
            return BinaryEmbeddingIndex(
                build_spec, oversample=max(cfg.oversample), rerank="asymmetric" if rerank else None,
                rerank_oversample=min(cfg.rerank_oversample or [1]), rotation=cfg.rotation,
                thresholds=cfg.thresholds, rerank_bits=cfg.rerank_bits, qb=cfg.qb,
                store_vectors="auto" if cfg.vectors == "mmap" else "ram", store_dtype=cfg.vector_dtype,
                metric=prep.metric, seed=cfg.seed, threads=cfg.threads)
        index = _or_skip(build, build_spec, cls)
        if index is None:
            return
        try:
            build_s = _timed_build(index, prep.base, prep.queries, f"build {build_spec}", progress)
            stage = index.index
            # the first stage alone searches the index's own codes (or rotated floats)
            queries = index.encoder.rotate(prep.queries) if cls is not None else index.encoder.encode_codes(prep.queries)
            stages = [(o, r) for o in cfg.oversample for r in cfg.rerank_oversample if r < o] if rerank else [(o, None) for o in cfg.oversample]
            for params in searches or [{}]:
                if not rerank:
                    stage.set_search_params(**params)
                    yield _measure(cfg, prep, stage, queries, build_spec, params, build_s, int(stage.memory_bytes()), cls, progress)
                for over, kept in stages:
                    call = {**params, "oversample": over, **({"rerank_oversample": kept} if kept else {})}
                    index.set_search_params(**call)
                    yield _measure(cfg, prep, index, prep.queries, build_spec, params, build_s, int(stage.memory_bytes()), cls, progress,
                                   stage=(over, kept))
        finally:
            index.reset()  # drops the owned vectors file now, not at interpreter exit


def _measure(cfg: BenchConfig, prep: _Prepared, searcher: Any, qs: np.ndarray, build_spec: str, params: dict[str, Any],
             build_s: float, index_bytes: int, cls: Any, progress: bool, stage: tuple[int, int | None] | None = None) -> dict[str, Any]:
    """One row: ``searcher`` timed on ``qs`` (batch median of ``cfg.runs``, then single queries)."""
    k, nq = cfg.k, qs.shape[0]
    over, kept = stage if stage is not None else (None, None)
    codes_only = cls is None and stage is None  # Hamming results: measured against the Hamming truth too
    batch_s, (_, I) = time_batch(lambda: searcher.search(qs, k), cfg.runs)
    nlat = min(cfg.latency_queries, nq)
    with _progress(nlat, f"latency query {build_spec}", progress) as bar:
        lat = time_per_query(lambda i: searcher.search(qs[i : i + 1], k), nlat, bar)
    extra: dict[str, Any] = {}
    if stage is not None:
        extra["rescore_vectors"] = f"{cfg.vectors}:{cfg.vector_dtype}"
        extra["disk_bytes_per_vector"] = searcher.disk_bytes() / prep.base.shape[0]
        searcher.search(qs, k)  # the batch's stats (latency runs left one query's)
        extra.update(searcher.last_search_stats)
        if kept:
            extra["qb"], extra["rerank_bits"] = cfg.qb, cfg.rerank_bits
    float_index = cls is not None and not cls.rescorable
    row = make_row(
        dataset=prep.ds.name, spec=build_spec, params=params, k=k, n=int(prep.base.shape[0]), nq=int(nq),
        dim=int(prep.base.shape[1]), metric=prep.metric, library=_library(cls), recall_float=recall_ids(I, prep.gt_ids, k),
        qps=nq / batch_s if batch_s > 0 else float("inf"), threads=cfg.threads, build_s=build_s, index_bytes=index_bytes,
        ram_bytes=int(searcher.memory_bytes()) if stage is not None else None, oversample=over, rerank_oversample=kept,
        rotation=None if float_index else cfg.rotation,  # float indexes search the floats as given
        bits=None if cls is not None else prep.d, latencies=lat, **extra)
    if cls is None:  # codes from the dataset's own floats: their rank agreement with the floats
        row["kendall_tau"] = prep.kendall
    if codes_only:
        found = hamming_distances(prep.codes, prep.qcodes, I)
        row["recall_hamming"] = recall_tie_aware(found, prep.ham_D, k)
        row["recall_hamming_ids"] = recall_ids(I, prep.ham_I, k)
    return row
