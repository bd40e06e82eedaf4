"""The rows of a ``BinaryEmbeddingIndex`` and the user ids they hold.

Row ``r`` (storage order: the first stage's id, the row of the vectors file and of the rerank's
factors) holds user id ``ids[r]``. While the ids are the rows ``0..n-1`` no map is kept; a removed
row stays, marked, so rows never move.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import as_ids

__all__ = ["RowIds"]


class RowIds:
    """Rows, their user ids and removal marks. ``rows``: rows stored (removed ones too);
    ``next_id``: the id an add without ids gives its first row."""

    def __init__(self, ids: NDArray[np.int64] | None = None, removed: NDArray[np.bool_] | None = None, next_id: int = 0) -> None:
        self.rows = 0 if ids is None else int(ids.size)
        self._ids = None if ids is None or np.array_equal(ids, np.arange(ids.size)) else ids  # None: ids are the rows
        self._removed = removed  # None while nothing is removed
        self.next_id = next_id

    @property
    def live(self) -> int:
        """Rows not removed."""
        return self.rows - (0 if self._removed is None else int(self._removed.sum()))

    @property
    def any_removed(self) -> bool:
        return self._removed is not None

    def ids(self) -> NDArray[np.int64]:
        """User ids of all rows, int64 ``(rows,)``, in row order (removed ones too)."""
        return np.arange(self.rows, dtype=np.int64) if self._ids is None else self._ids

    def live_rows(self) -> NDArray[np.int64]:
        """Rows not removed, ascending."""
        return np.arange(self.rows) if self._removed is None else np.flatnonzero(~self._removed)

    def new_ids(self, ids: ArrayLike | None, n: int) -> NDArray[np.int64]:
        """The ids of ``n`` rows to add: ``ids`` checked (int64, unique, none live already), or
        sequential from ``next_id``. Nothing changes until ``append``."""
        if ids is None:
            return np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        new_ids = as_ids(ids, n)
        live = self.ids() if self._removed is None else self.ids()[~self._removed]
        clash = np.isin(new_ids, live)
        if clash.any():
            raise ValueError(f"ids already in the index: {new_ids[clash][:5].tolist()}")
        return new_ids

    def append(self, new_ids: NDArray[np.int64]) -> None:
        """Rows ``rows .. rows + n - 1`` now hold ``new_ids`` (from ``new_ids``, non-empty)."""
        n = new_ids.size
        if self._ids is not None or not np.array_equal(new_ids, np.arange(self.rows, self.rows + n)):
            self._ids = np.concatenate([self.ids(), new_ids])  # user ids: keep the map (8 B a vector)
        if self._removed is not None:
            self._removed = np.concatenate([self._removed, np.zeros(n, bool)])
        self.rows += n
        self.next_id = max(self.next_id, int(new_ids.max()) + 1)

    def live_rows_of(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The rows not removed that hold any of ``ids``, ascending."""
        rows = np.flatnonzero(np.isin(self.ids(), ids))
        return rows if self._removed is None else rows[~self._removed[rows]]

    def remove(self, rows: NDArray[np.int64]) -> None:
        """Mark ``rows`` removed."""
        if self._removed is None:
            self._removed = np.zeros(self.rows, bool)
        self._removed[rows] = True

    def to_ids(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        """User ids of ``rows`` (any shape; ``-1`` stays ``-1``)."""
        return rows if self._ids is None else np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)

    def nbytes(self) -> int:
        """RAM of the id map and the removal marks (0 while neither is kept)."""
        return (0 if self._ids is None else int(self._ids.nbytes)) + (0 if self._removed is None else int(self._removed.nbytes))

    def arrays(self) -> dict[str, np.ndarray]:
        """What a save keeps: ``ids`` always, ``removed`` (as uint8) once any row is."""
        out: dict[str, np.ndarray] = {"ids": self.ids()}
        if self._removed is not None:
            out["removed"] = self._removed.view(np.uint8)
        return out
