"""Three-stage search: Hamming candidates, an asymmetric rerank, a float rescore.

``RescoredIndex(inner, oversample=10, rerank="asymmetric", rerank_oversample=3, vectors=...)``:

1. asks ``inner`` (any ``BinaryIndex``) for ``k * oversample`` candidates by Hamming distance;
2. with ``rerank="asymmetric"``, scores them by the *float* query against their 1-bit codes, read
   from the index (``inner.get_codes``), and keeps the best ``k * rerank_oversample``: RaBitQ's
   estimator when per-vector factors are given (``encoded=``, from ``annbin.Encoder``), else the
   plain ``q . (2 b - 1)``; ``annbin.embed.asymmetric`` computes it with popcounts on a ``qb``-bit query;
3. rescores what is left with the float vectors (``vectors=``: RAM, or a ``.npy`` path that is
   memory-mapped, so only the codes need RAM) and returns the best ``k``.

``rerank=None`` keeps two stages (Hamming, then floats). Without ``vectors`` the asymmetric
estimate is the final score ("codes only": what users of ``ubinary`` embedding APIs have).

**Rows are ids**: the document with id ``i`` in ``inner`` is row ``i`` of ``vectors`` / ``codes``
/ ``encoded`` (add to ``inner`` with the default sequential ids, or with ids that are row numbers).
``BinaryEmbeddingIndex`` keeps a row -> user id map on top of this, for arbitrary ids.

Results follow faiss's float conventions: ``(scores, ids)``, float32 ``(nq, k)`` and int64
``(nq, k)``; for ``"ip"`` scores descending, for ``"l2"`` distances ascending; ties by smaller id;
missing results ``id = -1`` with score ``-inf`` (``"ip"``) or ``+inf`` (``"l2"``). Queries are
float ``(nq, dim)``, encoded inside with the documents' ``encoder`` (or ``thresholds``).
``last_search_stats`` holds ``candidates_per_query`` (stage 1) and ``vectors_read_per_query``
(mean float vectors read in stage 3) of the calling thread's last search.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import InputTypeError, as_floats, check_int, check_k, check_metric
from annbin.embed._scoring import ScoreResult, float_scores, top_k
from annbin.embed._vectors import open_store
from annbin.embed.asymmetric import check_qb, dot_bits, prepare_queries
from annbin.embed.encoder import Encoded, Encoder
from annbin.embed.float_base import FloatIndex
from annbin.index.base import BinaryIndex, UnsupportedOperation
from annbin.index.registry import register_wrapper
from annbin.quantize import binarize, code_size_for
from annbin.spec import format_wrapped_spec

Metric = Literal["ip", "l2"]

RERANKS: tuple[str | None, ...] = (None, "asymmetric")

#: what a ``"<spec>+rescore:..."`` spec sets (``RescoredIndex.spec``, ``annbin.make_index``)
SPEC_PARAMS: tuple[str, ...] = ("oversample", "rerank", "rerank_oversample", "qb", "metric")
#: the three-stage search's own search parameters (with a rerank; ``oversample`` alone without)
STAGE_PARAMS: tuple[str, ...] = ("oversample", "rerank_oversample", "qb")

__all__ = ["RERANKS", "SPEC_PARAMS", "STAGE_PARAMS", "RescoredIndex", "check_stage_params", "open_store", "split_stage_params", "stage_params", "top_k"]


def stage_params(rerank: str | None) -> tuple[str, ...]:
    """The names of ``STAGE_PARAMS`` that apply with or without an asymmetric rerank."""
    return STAGE_PARAMS if rerank else STAGE_PARAMS[:1]


def check_stage_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validated values of stage parameters: ``qb`` in 0..8, the oversample factors >= 1."""
    return {k: (check_qb(v) if k == "qb" else check_int(v, k, minimum=1)) for k, v in params.items()}


def split_stage_params(params: dict[str, Any], rerank: str | None, inner_names: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params`` split into the three-stage search's own (checked) and the rest, the first stage's
    (``inner_names``: its search parameters). ``ValueError`` for a stage parameter that needs the
    asymmetric rerank this search has not got."""
    own_names = stage_params(rerank)
    own = {k: v for k, v in params.items() if k in own_names}
    rest = {k: v for k, v in params.items() if k not in own_names}
    wrong = sorted(set(rest) & set(STAGE_PARAMS) - set(inner_names))
    if wrong:
        raise ValueError(f"{wrong} need{'s' if len(wrong) == 1 else ''} a rerank stage (rerank='asymmetric')")
    return check_stage_params(own), rest


class RescoredIndex:
    """Hamming candidates from ``inner``, an optional asymmetric rerank, float rescoring (see the
    module docstring).

    Parameters
    ----------
    inner
        Any ``BinaryIndex`` whose ids are row numbers of the stores; or a float-in index
        (``annbin.embed.rabitq``, ``rqlib``: it ranks by RaBitQ's estimate itself), which gets the
        rotated float query (``encoder.rotate``) instead of codes and takes no ``rerank``.
    oversample
        First-stage candidates per result (``k * oversample``), >= 1.
    vectors
        Float documents ``(n, dim)`` (an array, or a ``.npy`` path that is memory-mapped), or None
        for codes-only scoring (then ``rerank="asymmetric"``).
    rerank
        None or ``"asymmetric"``: score the candidates by the float query against their codes.
    rerank_oversample
        Candidates per result the rerank keeps for the float rescore, >= 1.
    codes
        The documents' codes ``(n, d // 8)`` uint8 (array or ``.npy`` path) when ``inner`` cannot
        hand them back (default: ``inner.get_codes``).
    encoder
        The fitted ``annbin.Encoder`` the codes were made with (rotation and thresholds).
    encoded
        Per-row ``annbin.Encoded`` (RaBitQ factors; squared norms for ``"l2"``; the 2-bit plane).
    thresholds
        Without ``encoder``: the codes' thresholds as for ``annbin.binarize`` (None = 0.0, a number
        or ``(dim,)``).
    metric
        ``"ip"`` (scores descending) or ``"l2"`` (squared distances ascending).
    qb
        Query bits of the asymmetric stage, 0..8 (0: float query, exact).
    dim
        Float dimension when neither ``vectors``, ``encoder`` nor ``thresholds`` give it (default
        ``inner.d``).
    """

    def __init__(
        self,
        inner: BinaryIndex | FloatIndex,
        *,
        oversample: int = 4,
        vectors: ArrayLike | str | os.PathLike[str] | None = None,
        rerank: str | None = None,
        rerank_oversample: int = 3,
        codes: NDArray[np.uint8] | str | os.PathLike[str] | None = None,
        encoder: Encoder | None = None,
        encoded: Encoded | None = None,
        thresholds: ArrayLike | None = None,
        metric: Metric = "ip",
        qb: int = 4,
        dim: int | None = None,
    ) -> None:
        if not isinstance(inner, (BinaryIndex, FloatIndex)):
            raise InputTypeError(f"inner must be an annbin BinaryIndex (use annbin.from_faiss for faiss ones) or a float-in "
                            f"index (annbin.embed.rabitq), got {type(inner).__name__}")
        self._float_in = isinstance(inner, FloatIndex)
        if self._float_in and rerank is not None:
            raise ValueError(f"{inner.variant!r} takes float queries and ranks them itself: rerank must be None")
        if rerank not in RERANKS:
            raise ValueError(f"rerank must be None or 'asymmetric', got {rerank!r}")
        check_metric(metric)
        if vectors is None and rerank is None:
            raise ValueError("without vectors= (float rescoring) the scores must come from rerank='asymmetric'")
        if rerank and metric == "l2" and (encoded is None or encoded.sqnorms is None):
            raise ValueError("rerank='asymmetric' with metric 'l2' needs encoded= (squared norms per row); use metric 'ip'")
        self.inner, self.rerank, self.metric = inner, rerank, metric
        self.oversample = check_int(oversample, "oversample", minimum=1)
        self.rerank_oversample = check_int(rerank_oversample, "rerank_oversample", minimum=1)
        self.qb = check_qb(qb)
        self._vectors = None if vectors is None else open_store(vectors, name="vectors", kind="float")
        if self._float_in and codes is not None:
            raise ValueError(f"{inner.variant!r} takes float queries: codes= (for an asymmetric rerank) does not apply")
        self._codes = None if codes is None else open_store(codes, name="codes", kind="codes")
        if self._codes is not None and isinstance(inner, BinaryIndex) and self._codes.shape[1] != inner.code_size:
            raise ValueError(f"codes width mismatch: expected (n, {inner.code_size}), got shape {self._codes.shape}")
        if encoder is None:  # float-in: no rotation, float queries go to the index as they are
            encoder = (Encoder(inner.dim).fit(np.zeros((1, inner.dim), np.float32)) if isinstance(inner, FloatIndex)
                       else _threshold_encoder(thresholds, self._vectors, dim, inner.d))
        self.encoder = encoder
        if not self.encoder.is_fitted:
            raise ValueError("encoder is not fitted: fit it on the documents first")
        self.dim = int(self.encoder.dim)  # type: ignore[arg-type]
        if self._vectors is not None and self._vectors.shape[1] != self.dim:
            raise ValueError(f"dim mismatch: the encoder has dim {self.dim} but vectors have shape {self._vectors.shape}")
        if dim is not None and int(dim) != self.dim:
            raise ValueError(f"dim mismatch: dim={dim} but the vectors / encoder have {self.dim}")
        if isinstance(inner, BinaryIndex) and code_size_for(self.dim) != inner.code_size:
            raise ValueError(
                f"float dimension {self.dim} gives {code_size_for(self.dim) * 8}-bit codes, but the index has d={inner.d} bits"
            )
        self.encoded = encoded
        self._stats = threading.local()  # last_search_stats, one per searching thread
        if inner.ntotal:
            self._check_rows(np.array([inner.ntotal - 1]) if isinstance(inner, FloatIndex) else inner.get_ids())

    # --- properties ------------------------------------------------------------------------
    @property
    def d(self) -> int:
        """Code length in bits."""
        return code_size_for(self.dim) * 8 if isinstance(self.inner, FloatIndex) else self.inner.d

    @property
    def ntotal(self) -> int:
        return self.inner.ntotal

    @property
    def last_search_stats(self) -> dict[str, float]:
        """This thread's last search: ``candidates_per_query`` and ``vectors_read_per_query``
        (empty before its first). Per thread, so concurrent searches never read each other's."""
        stats: dict[str, float] = getattr(self._stats, "value", {})
        return stats

    @property
    def vectors(self) -> np.ndarray | None:
        """The float documents the rescore reads (rows = ids; RAM or memory-mapped), or None."""
        return self._vectors

    def __len__(self) -> int:
        return self.ntotal

    @property
    def search_params(self) -> tuple[str, ...]:
        return stage_params(self.rerank) + tuple(self.inner.search_params)

    @property
    def spec(self) -> str:
        """``"<inner spec>+rescore:oversample=..,[rerank=..,rerank_oversample=..,qb=..,]metric=.."``:
        ``annbin.make_index(spec, d=index.d, vectors=...)`` builds an empty one like it (without
        its data: stores, encoder, factors are the ``make_index`` keywords)."""
        params: dict[str, Any] = {"oversample": self.oversample}
        if self.rerank:
            params.update(rerank=self.rerank, rerank_oversample=self.rerank_oversample, qb=self.qb)
        params["metric"] = self.metric
        return format_wrapped_spec(self.inner.spec, "rescore", params)

    @classmethod
    def from_spec(cls, inner: BinaryIndex, params: dict[str, Any], **data: Any) -> RescoredIndex:
        """The ``"+rescore"`` wrapper of ``annbin.make_index``: ``params`` from the spec
        (``SPEC_PARAMS``), ``data`` the stores and encoder (``vectors=``, ``codes=``, ...)."""
        unknown = sorted(set(params) - set(SPEC_PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for '+rescore'; expected: {', '.join(SPEC_PARAMS)}")
        taken = sorted(set(params) & set(data))
        if taken:
            raise InputTypeError(f"{taken} given both in the spec and as keywords")
        return cls(inner, **params, **data)

    def __repr__(self) -> str:
        return f"<RescoredIndex {self.spec} dim={self.dim} ntotal={self.ntotal}>"

    def memory_bytes(self) -> int:
        """RAM held: the inner index, in-RAM vectors / codes (memory-mapped ones count 0), the
        per-row factors and the encoder's rotation / thresholds."""
        extra = 0 if self.encoded is None else self.encoded.rerank_nbytes()
        stores = sum(int(a.nbytes) for a in (self._vectors, self._codes) if a is not None and not isinstance(a, np.memmap))
        return int(self.inner.memory_bytes()) + stores + extra + self.encoder.memory_bytes()

    def disk_bytes(self) -> int:
        """Bytes of memory-mapped stores (on disk, paged in on demand)."""
        return sum(int(a.nbytes) for a in (self._vectors, self._codes) if isinstance(a, np.memmap))

    # --- parameters ------------------------------------------------------------------------
    def _split_params(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        own, rest = split_stage_params(params, self.rerank, self.inner.search_params)
        unknown = sorted(set(rest) - set(self.inner.search_params))
        if unknown:
            raise ValueError(f"unknown search parameter(s) {unknown}; expected: {', '.join(self.search_params)}")
        return own, rest

    def set_search_params(self, **params: Any) -> None:
        """``oversample``, ``rerank_oversample``, ``qb`` and the inner index's search parameters."""
        own, rest = self._split_params(params)
        self.inner.set_search_params(**rest)
        for key, value in own.items():
            setattr(self, key, value)

    def get_search_params(self) -> dict[str, Any]:
        own = {k: getattr(self, k) for k in stage_params(self.rerank)}
        return {**own, **self.inner.get_search_params()}

    # --- search ----------------------------------------------------------------------------
    def search(self, x: ArrayLike, k: int, *, params: dict[str, Any] | None = None) -> ScoreResult:
        """Top ``k`` for float queries ``(nq, dim)``: ``(scores float32, ids int64)``, ``(nq, k)``.

        ``params`` sets search parameters (``oversample``, ``rerank_oversample``, ``qb``, the inner
        index's) for this call only; nothing shared is changed for them.
        """
        q = as_floats(x, self.dim, name="queries")
        k = check_k(k)
        own, rest = self._split_params(params or {})
        oversample = own.get("oversample", self.oversample)
        # a float-in index holds rotated vectors (the rotation preserves inner products and L2)
        q_rot = self.encoder.rotate(q)  # once per search: the codes and the rerank both use it
        if isinstance(self.inner, FloatIndex):
            _, cand = self.inner.search(q_rot, k * oversample, params=rest or None)
        else:
            _, cand = self.inner.search(binarize(q_rot, self.encoder.thresholds), k * oversample, params=rest or None)
        return self._stages(q, cand, k, own, q_rot)

    def rerank_candidates(self, x: ArrayLike, candidates: ArrayLike, k: int) -> ScoreResult:
        """Stages 2 and 3 for candidate ids ``(nq, c)`` int (``-1`` = none) fetched elsewhere."""
        q = as_floats(x, self.dim, name="queries")
        cand = np.asarray(candidates)
        if not np.issubdtype(cand.dtype, np.integer):
            raise InputTypeError(f"candidates must be integer ids, got dtype {cand.dtype}")
        if cand.ndim != 2 or cand.shape[0] != q.shape[0]:
            raise ValueError(f"candidates must have shape ({q.shape[0]}, c), got {cand.shape}")
        return self._stages(q, cand.astype(np.int64, copy=False), check_k(k), {})

    def _stages(self, q: NDArray[np.floating], cand: NDArray[np.int64], k: int, own: dict[str, Any],
                q_rot: NDArray[np.float32] | None = None) -> ScoreResult:
        valid = cand >= 0
        if valid.any():
            self._check_rows(cand[valid])
        stats = {"candidates_per_query": float(valid.sum(axis=1).mean()) if cand.size else 0.0}
        q32 = np.ascontiguousarray(q, dtype=np.float32)
        if self.rerank:
            scores = self.asymmetric_scores(q32, cand, qb=own.get("qb", self.qb), q_rot=q_rot)
            if self._vectors is None:
                stats["vectors_read_per_query"] = 0.0
                self._stats.value = stats
                return top_k(scores, cand, k, self.metric)
            keep = k * own.get("rerank_oversample", self.rerank_oversample)
            if keep < cand.shape[1]:
                _, cand = top_k(scores, cand, keep, self.metric)
        rows = np.where(cand >= 0, cand, 0)
        assert self._vectors is not None  # for mypy: without vectors the rerank returned above
        scores = float_scores(self._vectors, q32, rows, self.metric)
        stats["vectors_read_per_query"] = float((cand >= 0).sum(axis=1).mean()) if cand.size else 0.0
        self._stats.value = stats
        return top_k(scores, cand, k, self.metric)

    def asymmetric_scores(self, q: NDArray[np.float32], cand: NDArray[np.int64], *, qb: int | None = None,
                          q_rot: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """Estimated ``<x, q>`` (``"ip"``) or ``|x - q|^2`` (``"l2"``) of candidate rows ``(nq, c)``
        from their codes, for float queries ``(nq, dim)``; ``-1`` rows get an arbitrary value."""
        if not isinstance(self.inner, BinaryIndex):
            raise UnsupportedOperation(f"{self.inner.variant!r} takes float queries and scores them itself: it has no codes to score")
        rows = np.where(cand >= 0, cand, 0)
        q_rot = self.encoder.rotate(q) if q_rot is None else q_rot
        prep = prepare_queries(q_rot, self.inner.code_size, self.qb if qb is None else qb)
        codes = self._codes[rows] if self._codes is not None else self.inner.get_codes(cand)
        signed = 2.0 * dot_bits(prep, np.asarray(codes)) - prep.sums[:, None]  # q . (2b - 1)
        enc = self.encoded
        if enc is None:
            return signed  # no factors: the plain +-1 score ranks, it does not estimate
        if enc.levels is not None and enc.planes is not None:
            planes = enc.planes[rows]
            both = dot_bits(prep, np.asarray(codes) & planes)
            mag = dot_bits(prep, planes)
            levels = enc.levels[rows]
            est = levels[..., 0] * signed + levels[..., 1] * (2.0 * both - mag)
        else:
            est = enc.factors[rows] * signed
        est = est + self.encoder.query_threshold_scores(q_rot)[:, None]
        if self.metric == "ip":
            return est.astype(np.float32, copy=False)
        if enc.sqnorms is None:
            raise ValueError("metric 'l2' needs encoded= with squared norms per row (Encoded.sqnorms); use metric 'ip'")
        qn = np.einsum("ij,ij->i", q, q)[:, None]
        return cast("NDArray[np.float32]", (enc.sqnorms[rows] + qn - 2.0 * est).astype(np.float32))

    def _check_rows(self, ids: NDArray[np.int64]) -> None:
        top = int(ids.max()) if ids.size else -1
        for name, store in (("vectors", self._vectors), ("codes", self._codes)):
            if store is not None and top >= store.shape[0]:
                raise ValueError(
                    f"id {top} has no row in {name} ({store.shape[0]} rows): ids of the inner index must be row numbers of {name}"
                )
        if self.encoded is not None and top >= self.encoded.factors.shape[0]:
            raise ValueError(f"id {top} has no row in encoded ({self.encoded.factors.shape[0]} rows)")


def _threshold_encoder(thresholds: ArrayLike | None, vectors: np.ndarray | None, dim: int | None, d: int) -> Encoder:
    """The encoder of plain ``binarize(x, thresholds)`` codes: no rotation, these thresholds."""
    t = None if thresholds is None else np.asarray(thresholds)
    if vectors is not None:
        n = vectors.shape[1]
    elif t is not None and t.ndim == 1:
        n = t.shape[0]
    else:
        n = check_int(dim, "dim", minimum=1) if dim is not None else d
    binarize(np.zeros((1, n), np.float32), t)  # validates thresholds as binarize does: shape, dtype, finite
    return Encoder(n, thresholds=t).fit(np.zeros((1, n), np.float32))


register_wrapper("rescore", RescoredIndex.from_spec)
