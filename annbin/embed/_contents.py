"""What a ``BinaryEmbeddingIndex`` holds, and the one way it changes.

``Contents`` is the fitted encoder, the first stage, the float rows (``annbin.embed._vectors``),
the rows' user ids (``annbin.embed._row_ids``) and the rerank's per-row data. An ``add`` changes all
of them or none; ``BinaryEmbeddingIndex`` searches them, ``annbin.embed._embedding_files`` saves and
reads them.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import as_floats, as_id_selection
from annbin.embed._row_ids import RowIds
from annbin.embed._vectors import Pending, VectorStore
from annbin.embed.encoder import Encoded, Encoder
from annbin.embed.first_stage import is_rescorable, make_first_stage, must_rebuild, refill_float_stage, remove_rows

__all__ = ["Contents"]


class Contents:
    """The data of one ``BinaryEmbeddingIndex``.

    Parameters
    ----------
    spec, metric, threads
        The first stage's spec, ``"cos"`` / ``"ip"`` / ``"l2"`` (``"cos"``: rows stored at unit
        length) and its build threads.
    rerank
        Keep the asymmetric rerank's per-row data (``encoded``: factors, squared norms for
        ``"l2"``, the second bit plane); the codes themselves are the first stage's.
    encoder
        Fitted at the first ``add`` (a copy: a failed first add leaves it unfitted).
    floats
        Where the float rows go (``VectorStore``).
    dim
        Float dimension, or None until the first ``add``.
    """

    def __init__(self, spec: str, metric: str, threads: int, rerank: bool, encoder: Encoder, floats: VectorStore,
                 dim: int | None) -> None:
        self.spec, self.metric, self.threads, self.rerank = spec, metric, threads, rerank
        self.float_in = is_rescorable(spec)
        self.encoder, self.floats, self.dim = encoder, floats, dim
        self.index: Any = None  # the first stage, from the first add
        self.rows = RowIds()
        self.encoded: Encoded | None = None

    @property
    def ntotal(self) -> int:
        """Vectors searchable: added and not removed."""
        return self.rows.live

    def memory_bytes(self) -> int:
        """RAM: the first stage, the id map and removal marks, the rerank's per-row data, the
        encoder, in-RAM floats (memory-mapped ones count 0)."""
        first = self.index.memory_bytes() if self.index is not None else 0
        encoded = 0 if self.encoded is None else self.encoded.rerank_nbytes()
        return int(first + self.rows.nbytes() + encoded + self.encoder.memory_bytes() + self.floats.memory_bytes())

    def unit(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """Vectors as the stages see them: unit length for ``"cos"`` (zero vectors refused)."""
        if self.metric != "cos":
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if x.shape[0] and not np.all(norms > 0):
            raise ValueError(f"metric 'cos' needs nonzero vectors: row {int(np.argmin(norms[:, 0]))} is all zeros")
        unit: NDArray[np.floating] = np.divide(x, norms, dtype=np.float32)  # one new array: peak RSS is a chunk, not two
        return unit

    def add(self, embeddings: ArrayLike, ids: ArrayLike | None) -> bool:
        """Add float rows ``(n, dim)`` under ``ids`` (or sequential ones); False when there were
        none. Every check runs before the first byte is written; an add that fails leaves
        everything, the vectors file included, as it was."""
        x = self.unit(as_floats(embeddings, self.dim, name="embeddings"))
        n = x.shape[0]
        new_ids = self.rows.new_ids(ids, n)
        if n == 0:
            return False
        # a refusal before the vectors file grows
        rebuild = must_rebuild(self.index, n, rebuildable=self.floats.rows is not None and not self.rows.any_removed)
        before = (self.index, self.dim, self.encoder)
        pending: Pending = None
        try:
            index = self.index if self.index is not None else self._start(x)
            if rebuild:
                assert self.floats.rows is not None  # for mypy: must_rebuild checked it
                index = refill_float_stage(self.spec, self.metric, self.threads, self.floats.rows, self.encoder.rotate)
            encoded = None if self.float_in else self.encoder.encode(x)
            pending = self.floats.stage(x)  # past the committed rows: not counted yet
            if encoded is None:
                index.add(self.encoder.rotate(x))  # the rotation (ITQ) also sharpens RaBitQ's codes
            else:
                index.add(encoded.codes, ids=np.arange(self.rows.rows, self.rows.rows + n, dtype=np.int64))
        except BaseException:
            self.floats.abort(pending)
            if before[0] is None:  # a failed first add leaves the object as it was
                self.index, self.dim, self.encoder = before
            raise
        self.index = index
        self.floats.commit(pending)
        self.rows.append(new_ids)
        if self.rerank and encoded is not None:  # not the codes: the first stage holds them
            new = dataclasses.replace(encoded, codes=np.empty((0, 0), np.uint8), sqnorms=encoded.sqnorms if self.metric == "l2" else None)
            self.encoded = new if self.encoded is None else self.encoded.append(new)
        return True

    def _start(self, x: NDArray[np.floating]) -> Any:
        encoder = copy.deepcopy(self.encoder)
        encoder.fit(x)
        self.encoder, self.dim = encoder, x.shape[1]
        self.index = make_first_stage(self.spec, x.shape[1], self.metric, self.threads)
        return self.index

    def remove(self, ids: ArrayLike) -> int:
        """Remove the live rows holding these user ids from the first stage; how many there were
        (``UnsupportedOperation`` naming the spec where the stage cannot)."""
        sel = as_id_selection(ids)
        rows = self.rows.live_rows_of(sel) if self.index is not None and sel.size else np.empty(0, np.int64)
        if rows.size:
            remove_rows(self.index, self.spec, rows)
            self.rows.remove(rows)
        return int(rows.size)
