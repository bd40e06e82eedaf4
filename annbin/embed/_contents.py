"""What a ``BinaryEmbeddingIndex`` holds, and the one way it changes.

``Contents`` is the fitted encoder, the first stage, the float rows (``annbin.embed._vectors``),
the rows' user ids (``annbin.embed._row_ids``) and the rerank's per-row data. An ``add`` changes all
of them or none; ``BinaryEmbeddingIndex`` searches them, ``annbin.embed._embedding_files`` saves and
reads them.

Held rows: while the first stage would fit something on its first add (``fits_first_add``: an ITQ
rotation, median / mean thresholds, rabitqlib's centroids and graph, faiss's RaBitQ training), adds
of fewer than ``fit_rows`` (``FIT_ROWS``) rows in all are held: checked, their floats and ids
committed (``ntotal`` counts them) but no first stage yet. The add that brings ``fit_rows`` or
more, or ``fit_held`` (a search, save, build, ... forces it), fits on every row so far and puts
them in the first stage in one add, exactly as one add of those rows would. The held floats are
read back from the vectors file (mapped, not copied) or the RAM store; a float16 store or an index
keeping no floats holds float32 copies in RAM (at most ``fit_rows`` rows plus one add).
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
from annbin.embed.first_stage import FIT_ROWS, fits_first_add, is_rescorable, make_first_stage, must_rebuild, refill_float_stage, remove_rows

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
        Fitted on the first ``fit_rows`` rows, or at the first ``add`` where nothing is held (a
        copy: a failed fit leaves it unfitted).
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
        self.index: Any = None  # the first stage, from the fit
        self.rows = RowIds()
        self.encoded: Encoded | None = None
        self.fit_rows = FIT_ROWS
        # RAM copies of the held rows where the store cannot give them back as float32 (float16 or none)
        self._copies: list[NDArray[np.float32]] | None = None if floats.kept and floats.dtype == "float32" else []

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
        everything, the vectors file included, as it was. Rows are held (module docstring) while
        the first stage would fit on them and fewer than ``fit_rows`` have arrived."""
        x = np.asarray(self.unit(as_floats(embeddings, self.dim, name="embeddings")), np.float32)
        n = x.shape[0]
        new_ids = self.rows.new_ids(ids, n)
        if n == 0:
            return False
        # a refusal before the vectors file grows
        rebuild = must_rebuild(self.index, n, rebuildable=self.floats.rows is not None and not self.rows.any_removed)
        if self.index is None and self.rows.rows + n < self.fit_rows and self._holds(x.shape[1]):
            pending = self.floats.stage(x)
            self.floats.commit(pending)
            if self._copies is not None:
                self._copies.append(np.array(x))  # a copy: the caller may change its array later
            self.dim = x.shape[1]
            self.rows.append(new_ids)
            return True
        before = (self.index, self.dim, self.encoder)
        pending = None
        try:
            pending = self.floats.stage(x)  # past the committed rows: not counted yet
            first = 0 if self.index is None else self.rows.rows  # the held rows go in with this add
            rows = x if first == self.rows.rows else self._held_rows(pending, x)
            index = self.index if self.index is not None else self._start(rows)
            if rebuild:
                assert self.floats.rows is not None  # for mypy: must_rebuild checked it
                index = refill_float_stage(self.spec, self.metric, self.threads, self.floats.rows, self.encoder.rotate)
            encoded = self._insert(index, rows, first)
        except BaseException:
            self.floats.abort(pending)
            if before[0] is None:  # a failed first add leaves the object as it was
                self.index, self.dim, self.encoder = before
            raise
        self.index = index
        self.floats.commit(pending)
        self.rows.append(new_ids)
        self._keep(encoded)
        return True

    def fit_held(self) -> bool:
        """Fit on the held rows and put them in the first stage now (a search, save or build needs
        them there); True when there were any. A fit that fails leaves them held."""
        if self.index is not None or self.rows.rows == 0:
            return False
        before = (self.dim, self.encoder)
        try:
            rows = self._held_rows()
            index = self._start(rows)
            encoded = self._insert(index, rows, 0)
        except BaseException:
            self.index, (self.dim, self.encoder) = None, before
            raise
        self._keep(encoded)
        return True

    def _holds(self, dim: int) -> bool:
        """Whether a first add of ``dim`` floats is held (``fits_first_add``); a spec that cannot
        be built for ``dim`` is refused here, before anything is written."""
        return fits_first_add(make_first_stage(self.spec, dim, self.metric, self.threads), self.encoder.learns)

    def _held_rows(self, pending: Pending = None, x: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """Every row so far, float32 ``(rows, dim)``: the held ones, then ``x`` when an add staged
        it as ``pending``. Mapped from a float32 vectors file (not read into RAM), the RAM store's
        array, or the RAM copies of a float16 store or of an index that keeps no floats."""
        if self._copies is not None:
            return np.concatenate(self._copies + ([] if x is None else [x]))
        if isinstance(pending, np.ndarray):  # "ram": the staged array holds every row
            return pending
        file = self.floats.file
        if pending is None or file is None:
            assert self.floats.rows is not None  # for mypy: rows are held, so the store has them
            return self.floats.rows
        staged = pending[0][0]  # rows in the file once this add commits
        return np.memmap(file.path, dtype=np.float32, mode="r", offset=file.offset, shape=(staged, file.dim))

    def _insert(self, index: Any, rows: NDArray[np.float32], first: int) -> Encoded | None:
        """Put ``rows`` (storage rows ``first ..``) in the first stage ``index``: rotated floats for a
        float-in one, codes for a binary one (then their ``Encoded``, else None)."""
        if self.float_in:
            index.add(self.encoder.rotate(rows))  # the rotation (ITQ) also sharpens RaBitQ's codes
            return None
        encoded = self.encoder.encode(rows)
        index.add(encoded.codes, ids=np.arange(first, first + rows.shape[0], dtype=np.int64))
        return encoded

    def _keep(self, encoded: Encoded | None) -> None:
        """The rerank's per-row data of rows just put in the first stage (not the codes: the first
        stage holds them); the held rows' RAM copies are no longer needed."""
        self._copies = None if self._copies is None else []
        if self.rerank and encoded is not None:
            new = dataclasses.replace(encoded, codes=np.empty((0, 0), np.uint8), sqnorms=encoded.sqnorms if self.metric == "l2" else None)
            self.encoded = new if self.encoded is None else self.encoded.append(new)

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
