"""The first stage of ``BinaryEmbeddingIndex``: the no-argument choice, and what a spec may be.

A first stage is either *float-in* (``is_rescorable``: a RaBitQ variant that takes the rotated float
vectors and ranks float queries by its own estimate) or a *binary* index over the encoder's codes,
searched by Hamming distance (``annbin.make_index`` specs and faiss factory strings).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_int
from annbin.embed.float_base import FloatIndex
from annbin.embed.floats import is_float_spec, make_float_index
from annbin.embed.rescore import RERANKS
from annbin.index.base import BinaryIndex, RangeResult, UnsupportedOperation
from annbin.index.registry import check_spec, float_variants, make_index
from annbin.quantize import code_size_for
from annbin.spec import parse_wrapped_spec, variant_name

#: the no-argument first stage (rabitqlib's HNSW over 2-bit codes, 2 x k rescored): the fastest
#: that keeps recall@10 >= 0.95 without tuning up to 500k vectors (docs/defaults.md)
DEFAULT_SPEC = "rq-hnsw:M=16,nbits=2,ef_construction=100,ef_search=192"
#: where rabitqlib is missing: faiss's graph over 1-bit RaBitQ codes, built on the floats (faster
#: at equal recall than build=codes); an add after the graph is built rebuilds it from the floats
FALLBACK_SPEC = "rabitq-hnsw:M=16,ef_construction=100,ef_search=192"
FALLBACK_ROTATION = "random"
#: the metrics of ``BinaryEmbeddingIndex``: "cos" normalizes on add and on search, then ranks as "ip"
EMBEDDING_METRICS = ("cos", "ip", "l2")
#: Hamming candidates per result of a binary first stage when none is given
BINARY_OVERSAMPLE = 4
#: rows what is fitted on the data (ITQ rotation, median / mean thresholds, rabitqlib's k-means
#: centroids and first graph build, faiss's RaBitQ training) sees when the adds are smaller: they
#: are held (their floats written to the vectors file) until this many rows have arrived or a
#: search, save or build forces the fit (``fits_first_add``). rq-hnsw's k-means sample is as large
FIT_ROWS = 16_384
_HELD_STAGES = ("rq-hnsw", "rq-ivf", "rq-symqg")  # fitted by their first add, which refuses nothing not checked before

_log = logging.getLogger("annbin")

__all__ = [
    "BINARY_OVERSAMPLE", "DEFAULT_SPEC", "EMBEDDING_METRICS", "FALLBACK_ROTATION", "FALLBACK_SPEC", "FIT_ROWS", "check_first_stage",
    "check_stages", "default_first_stage", "default_oversample", "fits_first_add", "inner_metric", "is_rescorable", "make_first_stage",
    "must_rebuild", "refill_float_stage", "remove_rows", "stage_range_search",
]


def is_rescorable(spec: str) -> bool:
    """True if ``spec`` names a float-in first stage that ranks by a RaBitQ estimate
    (``FloatIndex.rescorable``: faiss's ``rabitq*`` and rabitqlib's ``rq-*`` variants)."""
    cls = float_variants().get(variant_name(spec))
    return cls is not None and cls.rescorable


def default_first_stage() -> tuple[str, str | None]:
    """``(spec, rotation)`` of the no-argument index: ``DEFAULT_SPEC`` where rabitqlib imports,
    else ``FALLBACK_SPEC``, said once in the ``annbin`` log."""
    from annbin.embed.rqlib import rabitqlib_available

    if rabitqlib_available():
        return DEFAULT_SPEC, None
    _log.warning("annbin: rabitqlib is not available here (not installed, or a CPU without AVX2/FMA); "
                 "the default index uses faiss's rabitq-hnsw (slower)")
    return FALLBACK_SPEC, FALLBACK_ROTATION


def default_oversample(spec: str) -> int:
    """First-stage candidates per result when none is given: the float-in class's own
    ``default_oversample``, else ``BINARY_OVERSAMPLE``."""
    cls = float_variants().get(variant_name(spec))
    return cls.default_oversample if cls is not None and cls.rescorable else BINARY_OVERSAMPLE


def inner_metric(metric: str) -> str:
    """The metric the stages rank by: ``"cos"`` is ``"ip"`` on unit vectors."""
    return "ip" if metric == "cos" else metric


def check_first_stage(spec: str, dim: int | None, metric: str) -> None:
    """``ValueError`` unless ``spec`` builds a first stage (for ``dim`` floats, when known)."""
    metric = inner_metric(metric)
    if is_rescorable(spec):
        make_float_index(spec, check_int(dim, "dim", minimum=1) if dim is not None else 64, metric)
        return
    if is_float_spec(spec) or parse_wrapped_spec(spec) is not None:
        rescorable = sorted(n for n, c in float_variants().items() if c.rescorable)
        raise ValueError(f"unknown index spec {spec!r} for a first stage: give a binary index spec or one of {', '.join(rescorable)} "
                         "(float baselines and '+rescore' wrappers are not first stages)")
    if dim is not None:
        make_index(spec, d=code_size_for(check_int(dim, "dim", minimum=1)) * 8)
        return
    check_spec(spec)  # faiss factory strings need d: checked at the first add


def check_stages(spec: str, rescore: str | None, rerank: str | None, keeps_vectors: bool) -> None:
    """``ValueError`` unless the stages after ``spec`` fit it: ``rescore`` ``"float"`` (needs the
    floats kept) or None, ``rerank`` None or ``"asymmetric"`` (binary first stages), and one of
    them gives the final scores."""
    if rescore not in ("float", None):
        raise ValueError(f"rescore must be 'float' or None, got {rescore!r}")
    if rerank not in RERANKS:
        raise ValueError(f"rerank must be None or 'asymmetric', got {rerank!r}")
    if is_rescorable(spec) and rerank is not None:
        raise ValueError(f"{spec!r} ranks its candidates asymmetrically already (RaBitQ): use rerank=None")
    if is_rescorable(spec) and rescore is None:
        raise ValueError(f"{spec!r} returns estimates only: use rescore='float'")
    if rescore is None and rerank is None:
        raise ValueError("rescore=None needs rerank='asymmetric' (scores from the codes); plain Hamming results come from "
                         "the binary indexes: annbin.make_index(spec, d=bits) on annbin.binarize codes")
    if rescore == "float" and not keeps_vectors:
        raise ValueError("rescore='float' needs the float vectors: store_vectors='auto', 'ram' or a .npy path")


def make_first_stage(spec: str, dim: int, metric: str, threads: int) -> Any:
    """An empty first stage for ``dim`` floats: float-in (``threads`` build threads), or binary
    over ``code_size_for(dim) * 8``-bit codes."""
    if is_rescorable(spec):
        index = make_float_index(spec, dim, inner_metric(metric))
        index.num_threads = threads
        return index
    return make_index(spec, d=code_size_for(dim) * 8)


def fits_first_add(stage: Any, learns: bool) -> bool:
    """Whether small first adds to the empty ``stage`` are held until ``FIT_ROWS`` rows, because
    the first add fits what later adds only use: rabitqlib's stages (``rq-hnsw``'s k-means
    centroids, ``rq-symqg``'s whole graph), or an encoder that ``learns`` (ITQ, median / mean
    thresholds) over a stage that needs no training of its own. Never held: stages trained by their
    first add that refuse some first adds, as documented and tested (binary ``ivf`` and faiss IVF
    strings: fewer than ``nlist`` rows; faiss's ``rabitq`` / ``ivf-rabitq`` /
    ``rabitq-hnsw:build=codes``: ``nlist``, non-unit rows for ``"ip"``). faiss's
    ``rabitq-hnsw:build=float`` trains and builds from every row at ``build()`` whatever the adds."""
    if getattr(stage, "variant", None) in _HELD_STAGES:
        return True
    trains = not stage.is_trained and getattr(stage, "build", None) != "float"
    return learns and not trains


def refill_float_stage(spec: str, metric: str, threads: int, vectors: NDArray[np.float32],
                       rotate: Any, *, step: int = 1 << 16) -> FloatIndex:
    """A new float-in first stage holding every row of ``vectors`` ``(n, dim)`` (memory-mapped:
    read ``step`` rows at a time), each passed through ``rotate`` as at its first add."""
    index: FloatIndex = make_first_stage(spec, int(vectors.shape[1]), metric, threads)
    for lo in range(0, vectors.shape[0], step):
        index.add(rotate(np.asarray(vectors[lo:lo + step], np.float32)))
    return index


def must_rebuild(stage: Any, n: int, *, rebuildable: bool) -> bool:
    """Whether an add of ``n`` vectors must rebuild ``stage``: faiss's ``rabitq-hnsw:build=float``
    refuses adds once its graph is built, and is rebuilt (``refill_float_stage``) where that is
    ``rebuildable`` (the floats are kept and nothing was removed); else its ``ValueError`` stands."""
    if stage is None or not hasattr(stage, "check_add"):
        return False
    try:
        stage.check_add(n)
    except ValueError:
        if not (rebuildable and getattr(stage, "build", None) == "float"):
            raise
        return True
    return False


def remove_rows(stage: Any, spec: str, rows: NDArray[np.int64]) -> None:
    """Remove ``rows`` (the stage's ids) from ``stage``; ``UnsupportedOperation`` naming ``spec``
    where it cannot."""
    try:
        remover = getattr(stage, "remove_ids", None)
        if remover is None:
            raise UnsupportedOperation("it has no remove_ids")
        remover(rows)
    except UnsupportedOperation as exc:
        raise UnsupportedOperation(f"first stage {spec!r} cannot remove vectors ({exc}): use the default index (rq-hnsw) "
                                   "or a flat / ivf / mih first stage") from None


def stage_range_search(stage: BinaryIndex, spec: str, codes: NDArray[np.uint8], radius: int) -> RangeResult:
    """``stage.range_search(codes, radius)``: faiss's ``(lims, D, I)``, Hamming distance ``< radius``;
    ``UnsupportedOperation`` naming ``spec`` where the stage has none."""
    try:
        return stage.range_search(codes, radius)
    except UnsupportedOperation as exc:
        raise UnsupportedOperation(f"first stage {spec!r} has no range_search ({exc}): use flat, mih or ivf") from None
