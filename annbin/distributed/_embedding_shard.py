"""The object a ``ShardedEmbeddingIndex`` shard's Ray actor holds: one ``BinaryEmbeddingIndex``.

Plain Python with no Ray import; ``annbin.distributed._group`` wraps it with ``ray.remote``. The
index keeps its own directory on the actor's node (its floats memory-mapped from a temporary
directory until the first save, then from the shard's directory). Arrays arriving from Ray's
object store are read-only views of shared memory: they are copied before the index takes them,
so it never pins object-store memory.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin.distributed._shard import ShardServer, file_sha256
from annbin.embed.embedding_index import BinaryEmbeddingIndex
from annbin.embed.rescore import stage_params

__all__ = ["EmbeddingShardServer", "directory_sha256"]


def directory_sha256(path: str) -> str:
    """Hex sha256 of a saved ``BinaryEmbeddingIndex`` directory: of each file's name and sha256,
    except the ``.npy`` float rows (RAM-sized files only: the commit record pins the rows by their
    count and CRC-32, which its load checks, and later adds may append past them)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if not name.endswith(".npy") and os.path.isfile(os.path.join(path, name)):
            digest.update(f"{name}\0{file_sha256(os.path.join(path, name))}\n".encode())
    return digest.hexdigest()


def _disk_usage(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path) if os.path.isfile(os.path.join(path, name)))


class EmbeddingShardServer(ShardServer):
    """One shard: ``BinaryEmbeddingIndex(spec, **settings)`` with ``search_params`` set.
    ``ping``, ``add``, ``remove_ids`` and ``memory_bytes`` are ``ShardServer``'s.

    It is called as the user would call one index (no extra calls between adds: what the index
    fits on its first rows sees the same rows). The first stage's search parameters
    (``ef_search``, ...) need rows; a shard that has none holds them until its next search or save,
    and holds them again after a ``reset`` (which drops the first stage).
    """

    index: BinaryEmbeddingIndex  # type: ignore[assignment]  # the same calls as a BinaryIndex's, floats in

    def __init__(self, spec: str, settings: dict[str, Any], search_params: dict[str, Any]) -> None:
        self.index = BinaryEmbeddingIndex(spec, **settings)
        self._params: dict[str, Any] = {}  # every parameter set
        self._held: dict[str, Any] = {}  # those not set on the index yet
        self.set_search_params(search_params)

    def set_search_params(self, params: dict[str, Any]) -> None:
        self._params.update(params)
        own = stage_params(self.index.rerank)
        now = dict(params) if self.index.ntotal else {k: v for k, v in params.items() if k in own}
        self._held = {**{k: v for k, v in self._held.items() if k not in now}, **{k: v for k, v in params.items() if k not in now}}
        if now:
            self.index.set_search_params(**now)

    def _release(self) -> None:
        """Set the held first-stage parameters once there are rows (before a search or save)."""
        if self._held and self.index.ntotal:
            held, self._held = self._held, {}
            self.index.set_search_params(**held)

    def reset(self) -> int:
        self.index.reset()
        self._held = {k: v for k, v in self._params.items() if k not in stage_params(self.index.rerank)}
        return self.index.ntotal

    def load(self, path: str, sha256: str, search_params: dict[str, Any]) -> int:
        """Replace the index with the one saved in directory ``path``, after checking the
        manifest's ``sha256`` (``directory_sha256``)."""
        if not os.path.isdir(path):
            raise ValueError(f"shard directory {path!r} does not exist on node {os.uname().nodename}")
        actual = directory_sha256(path)
        if actual != sha256:
            raise ValueError(f"shard directory {path!r} does not match its manifest (sha256 {actual[:12]}..., manifest says "
                             f"{sha256[:12]}...): damaged, or saved again by a save that did not finish")
        self.index, self._params, self._held = BinaryEmbeddingIndex.load(path), {}, {}
        self.set_search_params(search_params)
        return self.index.ntotal

    def find_present(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The given ids that are stored here and not removed."""
        stored = self.index.get_ids()[self.index.live_rows()]
        return np.asarray(ids)[np.isin(ids, stored)]

    def search(self, queries: NDArray[np.floating], k: int, params: dict[str, Any] | None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:  # type: ignore[override]
        self._release()
        return self.index.search(queries, k, params=params)

    def disk_bytes(self) -> int:
        return int(self.index.disk_bytes())

    def save(self, path: str) -> dict[str, Any]:
        """Write the shard into directory ``path`` (``BinaryEmbeddingIndex.save``: crash-safe, and
        the floats are memory-mapped from there on); report its checksum and size."""
        self._release()
        self.index.save(path)
        return {"sha256": directory_sha256(path), "bytes": _disk_usage(path), "ntotal": self.index.ntotal}
