"""``ShardedEmbeddingIndex``: ``BinaryEmbeddingIndex`` split over Ray actors, float scores merged exactly.

Each shard is a Ray actor holding an ordinary ``BinaryEmbeddingIndex`` (``_embedding_shard``) with
its own directory: codes and graph in the actor's RAM, floats memory-mapped on its node. Rows go to
shards in turn (``route="round-robin"``) or by their id (``route="id"``: ``splitmix64(id) % shards``,
see ``_layout``). A batch of queries is put into Ray's object store once and every shard runs the
whole pipeline on it (first stage, rescoring) for the same ``k``; the driver keeps the best ``k`` of
the shards' final float scores by the one rule ``BinaryEmbeddingIndex`` ranks by (``"cos"`` /
``"ip"`` descending, ``"l2"`` ascending, ties by smaller id), so the result is exactly the merge of
the shards' own results. Dead actors are restarted from their saved directory, or the call raises
``ShardError`` naming the shard (``_group``); a partial result is never returned.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import as_floats, as_id_selection, as_ids, check_int, check_k
from annbin.distributed._embedding_shard import EmbeddingShardServer
from annbin.distributed._group import GroupOwner, ShardError, ShardGroup, import_ray
from annbin.distributed._layout import (
    PARTITION,
    check_shard_entries,
    group_by_shard,
    manifest_format,
    read_json_manifest,
    save_target,
    shard_of,
    write_manifest,
)
from annbin.embed._scoring import top_k
from annbin.embed.embedding_index import BinaryEmbeddingIndex
from annbin.embed.first_stage import default_first_stage, inner_metric, make_first_stage
from annbin.embed.rescore import split_stage_params

FORMAT = "annbin-sharded-embedding"
VERSION = 1
ROUTES = ("round-robin", "id")

__all__ = ["FORMAT", "ROUTES", "ShardedEmbeddingIndex"]


class ShardedEmbeddingIndex(GroupOwner):
    """``BinaryEmbeddingIndex`` over float embeddings, split into ``shards`` Ray actors.

    Parameters
    ----------
    spec : str or None
        The first stage of every shard, as for ``BinaryEmbeddingIndex`` (None: its default,
        chosen here once for all shards).
    shards : int
        Number of shard actors, >= 1 (default 2).
    route : {"round-robin", "id"}
        Which shard a row goes to: in turn over each add's rows (continuing across adds), or
        ``splitmix64(id) % shards`` (an id's shard is computed: ``remove_ids`` asks only the owners).
    actor_options : dict or None
        Passed to Ray's ``ActorClass.options`` for each shard, e.g. ``{"num_cpus": 8}``.
    timeout_s : float or None
        Seconds each wait for the shards may take, > 0 (default None: as long as it takes).
    **embedding_kwargs
        ``BinaryEmbeddingIndex``'s other keyword arguments (``metric``, ``oversample``,
        ``rerank``, ``thresholds``, ``store_dtype``, ``dim``, ``threads``, ...), the same for
        every shard. ``store_vectors`` is ``"auto"`` (each shard's own file), ``"ram"`` or None.

    Each shard fits its encoder (a fitted rotation or thresholds) on the first rows it gets: make
    the first add large. ``search`` returns ``(scores float32, ids int64)`` ``(nq, k)`` as
    ``BinaryEmbeddingIndex`` does (missing: id -1, score -inf, or +inf for ``"l2"``).
    ``actor_options`` and ``timeout_s`` are not saved: ``load`` takes them again. If Ray is not
    initialised, the constructor calls ``ray.init()``.
    """

    def __init__(self, spec: str | None = None, *, shards: int = 2, route: str = "round-robin",
                 actor_options: dict[str, Any] | None = None, timeout_s: float | None = None, **embedding_kwargs: Any) -> None:
        import_ray()
        shards = check_int(shards, "shards", minimum=1)
        if route not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(map(repr, ROUTES))}, got {route!r}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s!r}")
        store = embedding_kwargs.get("store_vectors", "auto")
        if not (store is None or (isinstance(store, str) and store in ("auto", "ram"))):
            raise ValueError(f"store_vectors must be 'auto' (each shard's own file), 'ram' or None for a ShardedEmbeddingIndex, got {store!r}")
        if spec is None:
            spec, rotation = default_first_stage()
            if embedding_kwargs.get("rotation") is None and rotation is not None:
                embedding_kwargs["rotation"] = rotation
        # every setting checked here, before any actor starts; the driver holds no rows
        self._template = BinaryEmbeddingIndex(spec, **embedding_kwargs)
        self.spec, self.metric, self.route = spec, self._template.metric, route
        self._settings = dict(embedding_kwargs)
        self._dim = self._template.dim
        self._stage: Any = None  # an empty first stage: checks first-stage search parameters
        self._next_id = self._cursor = 0
        self._group = ShardGroup(spec, self._settings, shards, {}, dict(actor_options or {}), timeout_s,
                                 server=EmbeddingShardServer, owner="ShardedEmbeddingIndex")

    # --- what it holds (num_shards, ntotal, shard_sizes, restarts: GroupOwner's) ---------------
    @property
    def dim(self) -> int | None:
        """Float dimension, None until given or the first add."""
        return self._dim

    def __repr__(self) -> str:
        return (f"<ShardedEmbeddingIndex {self.spec!r} shards={self.num_shards} route={self.route} metric={self.metric} "
                f"dim={self.dim} ntotal={self.ntotal}>")

    def memory_bytes(self) -> int:
        """RAM held by all shards together (``BinaryEmbeddingIndex.memory_bytes`` summed)."""
        return int(sum(self._call("memory_bytes").values()))

    def disk_bytes(self) -> int:
        """Memory-mapped float bytes of all shards together (``BinaryEmbeddingIndex.disk_bytes`` summed)."""
        return int(sum(self._call("disk_bytes").values()))

    # --- changing it ---------------------------------------------------------------------------
    def add(self, embeddings: ArrayLike, ids: ArrayLike | None = None) -> None:
        """Add float embeddings ``(n, dim)``; ``ids`` int64 ``(n,)`` (unique, none stored on any
        shard), or sequential after the largest id seen. Rows go to shards by ``route``; the
        checks run before any shard changes."""
        ray = import_ray()
        x = as_floats(embeddings, self._dim, name="embeddings")
        n = x.shape[0]
        if self.metric == "cos" and n and not np.all(np.linalg.norm(x, axis=1) > 0):
            raise ValueError(f"metric 'cos' needs nonzero vectors: row {int(np.argmin(np.linalg.norm(x, axis=1)))} is all zeros")
        new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64) if ids is None else as_ids(ids, n)
        if n == 0:
            return
        if ids is not None:
            present = self._find_present(new_ids)
            if present.size:
                raise ValueError(f"ids already in the index: {np.sort(present)[:5].tolist()}")
        if self.route == "id":
            owner = shard_of(new_ids, self.num_shards)
        else:
            owner = (self._cursor + np.arange(n, dtype=np.int64)) % self.num_shards
        groups = group_by_shard(owner, self.num_shards)
        parts = {s: (ray.put(x[rows]), ray.put(new_ids[rows])) for s, rows in groups.items()}
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._cursor = int((self._cursor + n) % self.num_shards)
        try:
            sizes = self._call("add", parts)
        except Exception:
            self._resync(int(x.shape[1]))  # a shard refused after others took their rows: count what they hold
            raise
        for s, size in sizes.items():
            self._group.counts[s] = size
            self._group.sources[s] = None
        self._dim = int(x.shape[1])

    def _resync(self, dim: int) -> None:
        for s, size in self._call("ping").items():
            if size != self._group.counts[s]:
                self._group.counts[s], self._group.sources[s] = size, None
        if self.ntotal:
            self._dim = dim

    def _asks(self, ids: NDArray[np.int64]) -> dict[int, tuple[Any, ...]]:
        """Per shard holding vectors, the ids it may hold: those it owns (``route="id"``), else all."""
        ray = import_ray()
        if self.route == "id":
            groups = group_by_shard(shard_of(ids, self.num_shards), self.num_shards)
            return {s: (ray.put(ids[rows]),) for s, rows in groups.items() if self._group.counts[s]}
        ref = ray.put(ids)  # once: every shard reads the same object
        return {s: (ref,) for s in self._live()}

    def _find_present(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        present = self._call("find_present", self._asks(ids))
        return np.concatenate([np.empty(0, np.int64), *present.values()])

    def remove_ids(self, ids: ArrayLike) -> int:
        """Remove the vectors with these ids from search results; returns how many were removed
        (unknown ids are ignored). ``UnsupportedOperation`` where the first stage cannot remove."""
        return self._record_removals(self._call("remove_ids", self._asks(np.unique(as_id_selection(ids)))))

    def reset(self) -> None:
        """Drop every vector on every shard (a saved directory is left as it is)."""
        self._call("reset")
        self._record_reset()
        self._next_id = self._cursor = 0
        self._dim, self._stage = self._template.dim, None

    # --- search --------------------------------------------------------------------------------
    def _first_stage(self) -> Any:
        if self._stage is None and self._dim is not None:
            self._stage = make_first_stage(self.spec, self._dim, self.metric, 1)
        return self._stage

    def _checked(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` checked here, once, as a shard would check them; the checked values."""
        stage = self._first_stage()
        own, rest = split_stage_params(params, self._template.rerank, stage.search_params if stage is not None else ())
        if rest and stage is None:
            raise ValueError(f"first-stage search parameters {sorted(rest)} can be set once the dimension is known "
                             "(dim=, or after the first add)")
        return {**own, **(stage._checked_search_params(rest) if rest else {})}

    def set_search_params(self, **params: Any) -> None:
        """``oversample`` (and with a rerank ``rerank_oversample``, ``qb``) and the first stage's
        search parameters (``ef_search``, ``nprobe``, ...), set on every shard."""
        checked = self._checked(params)
        if checked:
            self._call("set_search_params", (checked,))
            self._group.search_params = {**self._group.search_params, **checked}

    def get_search_params(self) -> dict[str, Any]:
        stage = self._first_stage()
        return {**self._template.get_search_params(), **(stage.get_search_params() if stage is not None else {}), **self._group.search_params}

    def search(self, queries: ArrayLike, k: int, *, params: dict[str, Any] | None = None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` for float queries ``(nq, dim)``: ``(scores float32, ids int64)``, ``(nq, k)``.

        The batch goes to every shard holding vectors in one call each (one ``ray.put``); each
        returns its own top ``k`` (``params``: for this call only), and the best ``k`` of their
        union by score, ties by smaller id, are returned: exactly the shards' results merged.
        """
        k = check_k(k)
        q = as_floats(queries, self._dim, name="queries")
        live = self._live()
        if params:
            self._checked(params)
        if not live:
            worst = np.inf if self.metric == "l2" else -np.inf
            return np.full((q.shape[0], k), worst, np.float32), np.full((q.shape[0], k), -1, np.int64)
        qref = import_ray().put(q)  # once: every shard reads the same object
        parts = self._call("search", {s: (qref, k, params or None) for s in live})
        scores = np.concatenate([parts[s][0] for s in live], axis=1)
        ids = np.concatenate([parts[s][1] for s in live], axis=1)
        return merge_top_k(scores, ids, k, inner_metric(self.metric))

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path``: ``manifest.json`` and one ``BinaryEmbeddingIndex``
        directory per shard (``shard-00000``, ...), each written by its actor (on a multi-node
        cluster ``path`` must be shared by every node).

        Each shard saves as ``BinaryEmbeddingIndex.save`` does, crash-safely and in place: its
        floats are memory-mapped from its directory after the first save there, and later saves
        commit the rows added since without copying the rest. The manifest (each directory's
        sha256) is written last and atomically; a save killed before it leaves shards whose
        sha256 no longer matches, which ``load`` refuses, naming them.
        """
        directory, previous = save_target(path, "ShardedEmbeddingIndex")
        names = [f"shard-{s:05d}" for s in range(self.num_shards)]
        saved = self._call("save", {s: (str(directory / names[s]),) for s in range(self.num_shards)})
        for s in range(self.num_shards):
            if not (directory / names[s]).is_dir():
                raise ShardError(s, f"shard {s} wrote {str(directory / names[s])!r}, which this machine cannot see: save needs a directory shared by all nodes")
            if int(saved[s]["ntotal"]) != self._group.counts[s]:
                raise ShardError(s, f"shard {s} saved {saved[s]['ntotal']} vectors, expected {self._group.counts[s]}")
        files = [{"file": names[s], "sha256": saved[s]["sha256"], "bytes": int(saved[s]["bytes"]), "ntotal": int(saved[s]["ntotal"])}
                 for s in range(self.num_shards)]
        manifest = {
            "spec": self.spec, "shards": self.num_shards, "route": self.route, "partition": PARTITION if self.route == "id" else "round-robin",
            "cursor": self._cursor, "dim": self._dim, "metric": self.metric, "ntotal": self.ntotal, "next_id": self._next_id,
            "settings": _to_json(self._settings), "search_params": dict(self._group.search_params), "files": files,
        }
        write_manifest(directory, manifest, fmt=FORMAT, version=VERSION)
        for name in previous - set(names):  # shards of another index saved here before
            if (directory / name).is_dir():
                shutil.rmtree(directory / name, ignore_errors=True)
            else:
                (directory / name).unlink(missing_ok=True)
        self._group.sources = [("file", str(directory / names[s]), files[s]["sha256"]) for s in range(self.num_shards)]

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, actor_options: dict[str, Any] | None = None,
             timeout_s: float | None = None) -> ShardedEmbeddingIndex:
        """Load a directory written by ``save``: one actor per shard, each reading its own
        directory (floats memory-mapped as they were stored) after checking its sha256 against the
        manifest; a missing, swapped or corrupted shard raises ``ValueError``."""
        directory = Path(path).absolute()
        manifest = read_manifest(directory)
        for entry in manifest["files"]:
            if not (directory / entry["file"]).is_dir():
                raise ValueError(f"sharded embedding index at {str(directory)!r} is missing shard directory {entry['file']!r}")
        index = cls(manifest["spec"], shards=int(manifest["shards"]), route=manifest["route"], actor_options=actor_options,
                    timeout_s=timeout_s, **_from_json(manifest["settings"]))
        group = index._group
        try:
            index._dim = None if manifest["dim"] is None else int(manifest["dim"])
            group.search_params = index._checked(dict(manifest["search_params"]))
            index._load_shards(directory, manifest["files"], "vectors")
            index._next_id, index._cursor = int(manifest["next_id"]), int(manifest["cursor"])
        except BaseException:
            index.close()
            raise
        return index


def merge_top_k(scores: NDArray[np.float32], ids: NDArray[np.int64], k: int, metric: str) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``top_k`` of the shards' results side by side (``(nq, shards * k)``): the best ``k`` per row,
    ties by smaller id, missing (id -1) last. With many shards each row's entries up to its k-th
    score (ties included) are picked out first: 12x faster for 500 shards (0.79 -> 0.063 s per
    1,000 queries), 5.7x for 64, the same result."""
    if scores.shape[1] > 4 * k:
        key = np.where(ids >= 0, -scores if metric == "ip" else scores, np.inf)
        keep = key <= np.partition(key, k - 1, axis=1)[:, k - 1 : k]
        cols = np.argsort(~keep, axis=1, kind="stable")[:, : int(keep.sum(axis=1).max())]  # a radix sort of bools
        scores, ids = np.take_along_axis(scores, cols, axis=1), np.take_along_axis(ids, cols, axis=1)
    return top_k(scores, ids, k, metric)


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a ``ShardedEmbeddingIndex``'s ``manifest.json``; ``ValueError`` names what is wrong."""
    manifest = read_json_manifest(directory, FORMAT, VERSION, "sharded embedding index")
    try:
        str(manifest["spec"]), int(manifest["next_id"]), int(manifest["cursor"]), dict(manifest["search_params"]), dict(manifest["settings"])
        if manifest["route"] not in ROUTES:
            raise ValueError(f"unknown route {manifest['route']!r}")
        check_shard_entries(manifest)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(Path(directory) / 'manifest.json')!r} is malformed: {exc}") from None
    return manifest


def is_saved_embedding_index(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a directory whose manifest says ``ShardedEmbeddingIndex`` saved it."""
    return Path(path).is_dir() and manifest_format(path) == FORMAT


def _to_json(settings: dict[str, Any]) -> dict[str, Any]:
    """The constructor's keyword arguments as JSON values: arrays (a given rotation or thresholds)
    as ``{"array": nested lists, "dtype": ...}`` (float32 round-trips exactly through JSON)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, np.ndarray):
            out[key] = {"array": value.tolist(), "dtype": str(value.dtype)}
        else:
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _from_json(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: np.asarray(v["array"], v["dtype"]) if isinstance(v, dict) and "array" in v else v for key, v in settings.items()}
