"""Reading the float vectors (and ids) out of a faiss float index, for ``BinaryEmbeddingIndex.from_faiss``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError

__all__ = ["FaissFloats", "faiss_floats"]


class FaissFloats:
    """The vectors of a faiss flat or HNSW float index: ``dim``, ``ntotal``, ``metric`` (annbin's
    name of the faiss metric, as the caller chose among those that match), ``ids`` (the
    ``IndexIDMap``'s, or None for faiss's own ``0..ntotal-1``)."""

    def __init__(self, inner: Any, ids: NDArray[np.int64] | None, metric: str) -> None:
        self._inner, self.ids, self.metric = inner, ids, metric
        self.dim, self.ntotal = int(inner.d), int(inner.ntotal)
        if ids is not None and ids.size != self.ntotal:
            raise ValueError(f"the faiss IDMap holds {ids.size} ids for {self.ntotal} vectors")

    def chunks(self, chunk: int) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64] | None]]:
        """``(vectors float32 (m, dim), ids (m,) or None)``, ``chunk`` rows at a time (``reconstruct_n``)."""
        for start in range(0, self.ntotal, chunk):
            m = min(chunk, self.ntotal - start)
            yield self._inner.reconstruct_n(start, m), None if self.ids is None else self.ids[start : start + m]


def faiss_floats(float_index: Any, metric: str | None) -> FaissFloats:
    """Check ``float_index`` (``IndexFlatIP``, ``IndexFlatL2``, ``IndexHNSWFlat``, or an
    ``IndexIDMap`` / ``IndexIDMap2`` around one) and ``metric`` (None: faiss's own, ``"ip"`` or
    ``"l2"``; ``"cos"`` allowed for inner product). ``TypeError`` for anything but a faiss float
    index, ``ValueError`` for other faiss types (named) or a metric that does not match."""
    import faiss

    if not isinstance(float_index, faiss.Index):
        hint = " (a binary faiss index: annbin.from_faiss wraps those)" if isinstance(float_index, faiss.IndexBinary) else ""
        raise InputTypeError(f"BinaryEmbeddingIndex.from_faiss expects a faiss float index, got {type(float_index).__name__}{hint}")
    outer = faiss.downcast_index(float_index)
    ids: NDArray[np.int64] | None = None
    inner = outer
    if isinstance(outer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        ids = faiss.vector_to_array(outer.id_map).astype(np.int64, copy=False)
        inner = faiss.downcast_index(outer.index)
    if not isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSWFlat)):
        what = type(inner).__name__ if inner is outer else f"{type(outer).__name__} around {type(inner).__name__}"
        raise ValueError(f"BinaryEmbeddingIndex.from_faiss reads IndexFlatIP, IndexFlatL2, IndexHNSWFlat and IndexIDMap / "
                         f"IndexIDMap2 around them; got {what}")
    allowed = {faiss.METRIC_INNER_PRODUCT: ("ip", "cos"), faiss.METRIC_L2: ("l2",)}.get(int(inner.metric_type))
    if allowed is None:
        raise ValueError(f"BinaryEmbeddingIndex.from_faiss reads inner-product and L2 faiss indexes; {type(inner).__name__} "
                         f"has faiss metric type {int(inner.metric_type)}")
    metric = allowed[0] if metric is None else metric
    if metric not in allowed:
        raise ValueError(f"metric {metric!r} does not match the faiss index's ({'inner product' if allowed[0] == 'ip' else 'L2'}): "
                         f"use {' or '.join(repr(m) for m in allowed)}")
    return FaissFloats(inner, ids, metric)
