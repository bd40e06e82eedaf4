"""The object a shard's Ray actor holds: one ordinary annbin index, kept in memory between calls.

Plain Python with no Ray import; ``annbin.distributed.sharded`` wraps it with ``ray.remote``.
Arrays arriving from Ray's object store are read-only views of shared memory: codes and ids are
copied before they are stored, so the index never pins object-store memory.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin.index.base import BinaryIndex, RangeResult, SearchResult
from annbin.index.registry import load_index, make_index


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ShardServer:
    """One shard: an index built from ``spec`` for ``d``-bit codes, with ``search_params`` set."""

    def __init__(self, spec: str, d: int, search_params: dict[str, Any]) -> None:
        self.index: BinaryIndex = make_index(spec, d=d)
        self.index.set_search_params(**search_params)
        self._last_stats: dict[str, Any] | None = None

    def load(self, path: str, sha256: str, search_params: dict[str, Any]) -> int:
        """Replace the index with the one saved at ``path``, after checking the manifest's sha256."""
        if not os.path.isfile(path):
            raise ValueError(f"shard file {path!r} does not exist on node {os.uname().nodename}")
        actual = file_sha256(path)
        if actual != sha256:
            raise ValueError(f"shard file {path!r} does not match its manifest (sha256 {actual[:12]}..., manifest says {sha256[:12]}...)")
        index = load_index(path)
        index.set_search_params(**search_params)
        self.index = index
        return index.ntotal

    def ping(self) -> int:
        """An empty round trip (returns ntotal); the benchmark times it as the per-call overhead."""
        return self.index.ntotal

    def add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> int:
        self.index.add(np.array(codes), np.array(ids))
        return self.index.ntotal

    def find_present(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The given ids that are already stored here."""
        if self.index.ntotal == 0:
            return np.empty(0, np.int64)
        return np.asarray(ids)[np.isin(ids, self.index.get_ids())]

    def search(self, x: NDArray[np.uint8], k: int, params: dict[str, Any] | None) -> SearchResult:
        result = self.index.search(x, k, params=params)
        # an index keeps its stats per thread: read them on the thread that searched
        self._last_stats = getattr(self.index, "last_search_stats", None)
        return result

    def search_stats(self) -> dict[str, Any] | None:
        """The last search's ``last_search_stats`` (an MIH index's work counters), None where it keeps none."""
        return self._last_stats

    def range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        return self.index.range_search(x, radius)

    def remove_ids(self, ids: NDArray[np.int64]) -> tuple[int, int]:
        removed = self.index.remove_ids(np.array(ids))
        return removed, self.index.ntotal

    def reset(self) -> int:
        self.index.reset()
        return self.index.ntotal

    def get_ids(self) -> NDArray[np.int64]:
        return self.index.get_ids()

    def get_codes(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.uint8], NDArray[np.bool_] | None]:
        """Codes ``(m, d // 8)`` uint8 of 1-D ``ids`` and which were found here (None: all were).

        Calls the index's hook, not ``get_codes``: an id this shard lacks is not an error here,
        the driver names the ids no shard had.
        """
        ids = np.asarray(ids, np.int64)
        if self.index.ntotal == 0 or ids.size == 0:
            return np.zeros((ids.size, self.index.code_size), np.uint8), np.zeros(ids.size, bool)
        return self.index._get_codes(ids)

    def memory_bytes(self) -> int:
        return int(self.index.memory_bytes())

    def set_search_params(self, params: dict[str, Any]) -> None:
        self.index.set_search_params(**params)

    def save(self, path: str) -> dict[str, Any]:
        """Write the shard to ``path`` (atomically, by the index's own ``save``); report its checksum."""
        self.index.save(path)
        return {"sha256": file_sha256(path), "bytes": os.path.getsize(path), "ntotal": self.index.ntotal}
