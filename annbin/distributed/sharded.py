"""``ShardedIndex``: any annbin index split over Ray actors, behind the same ``BinaryIndex`` interface.

Each shard is a Ray actor holding an ordinary annbin index in memory (``_shard.ShardServer``).
Codes go to the shard that owns their id (``splitmix64(id) % shards``, see ``_layout``); a batch
of queries is put into Ray's object store once and each shard searches it in one call; the
driver merges the per-shard top-k by (distance, id). Each exact shard returns its k smallest
(distance, id) pairs, so the merge's k smallest pairs are the whole index's: sharded flat or MIH
returns exactly the unsharded (D, I), ties included.
A shard whose actor dies is restarted from its saved file and the call retried once, or the call
raises ``ShardError`` naming it (see ``_group``); a partial result is never returned.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_d, check_int
from annbin.distributed._group import GroupOwner, ShardError, ShardGroup, import_ray
from annbin.distributed._layout import (
    MANIFEST,
    PARTITION,
    group_by_shard,
    read_manifest,
    shard_of,
    write_manifest,
)
from annbin.index.base import BinaryIndex, CodesResult, RangeResult, SearchResult, UnsupportedOperation, sort_results
from annbin.index.registry import make_index, register_prefix
from annbin.spec import format_sharded_spec, is_sharded_spec, parse_sharded_spec, parse_wrapped_spec


class ShardedIndex(GroupOwner, BinaryIndex):
    """An annbin index over ``d``-bit codes split into ``shards`` Ray actors.

    Parameters
    ----------
    spec : str
        The index each shard holds: any non-sharded annbin spec (``"flat"``, ``"mih:m=4"``, ...);
        its search parameters are the sharded index's.
    d : int
        Code length in bits (multiple of 8); codes are ``(n, d // 8)`` uint8.
    shards : int
        Build parameter: number of shard actors, >= 1 (default 4).
    actor_options : dict or None
        Passed to Ray's ``ActorClass.options`` for each shard, e.g. ``{"num_cpus": 8}`` to reserve
        8 cores per shard (default None; shards are spread over nodes unless it says otherwise).
    timeout_s : float or None
        Seconds each wait for the shards may take, > 0 (default None: as long as it takes).

    ``actor_options`` and ``timeout_s`` are not saved: ``load`` takes them again. If Ray is not
    initialised, the constructor calls ``ray.init()``, which joins ``RAY_ADDRESS`` if set, else
    starts a local Ray. The actors live as long as this object, or until ``close()``.
    """

    variant = "sharded"
    build_params = ("shards",)

    def __init__(
        self,
        spec: str,
        d: int,
        *,
        shards: int = 4,
        actor_options: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        import_ray()
        super().__init__(check_d(d))
        if is_sharded_spec(spec):
            raise ValueError(f"ShardedIndex takes the spec of the index to shard, got the sharded spec {spec!r}")
        if parse_wrapped_spec(spec) is not None:
            raise ValueError(f"ShardedIndex shards a plain index spec, got {spec!r} (wrap the sharded index instead)")
        self._template = make_index(spec, d=self.d)  # checks the spec here, before any actor starts
        self.inner_spec = self._template.spec
        shards = check_int(shards, "shards", minimum=1)
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s!r}")
        # instance values shadow the class defaults: a sharded index searches like its shards
        self.exact = type(self._template).exact  # type: ignore[misc]
        self.search_params = type(self._template).search_params  # type: ignore[misc]
        self._group = ShardGroup(self.inner_spec, self.d, shards, self._template.get_search_params(), dict(actor_options or {}), timeout_s)

    @classmethod
    def from_spec(cls, spec: str, d: int, **kwargs: Any) -> ShardedIndex:
        """Build from ``"sharded:shards=N[,num_cpus=C]:<spec>"`` (grammar: ``parse_sharded_spec``)."""
        inner, options = parse_sharded_spec(spec)
        actor_options = dict(kwargs.pop("actor_options", None) or {})
        if "num_cpus" in options:
            actor_options["num_cpus"] = options["num_cpus"]
        return cls(inner, d=d, shards=options.get("shards", 4), actor_options=actor_options, **kwargs)

    # --- properties (num_shards, ntotal, shard_sizes, restarts: GroupOwner's) ---------------
    @property
    def spec(self) -> str:
        self._template.set_search_params(**self._group.search_params)
        return format_sharded_spec(self._template.spec, {"shards": self.num_shards})

    def get_params(self) -> dict[str, Any]:
        return {"shards": self.num_shards, "spec": self.inner_spec}

    def get_search_params(self) -> dict[str, Any]:
        return dict(self._group.search_params)

    # --- public API ------------------------------------------------------------------------
    def _find_present(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        # Each shard checks the ids it would own, so no shard's id list crosses the network.
        ray = import_ray()
        groups = group_by_shard(shard_of(ids, self.num_shards), self.num_shards)
        present = self._group.call("find_present", {s: (ray.put(ids[rows]),) for s, rows in groups.items()})
        return np.concatenate([np.empty(0, np.int64), *present.values()])

    def _check_search_value(self, name: str, value: Any) -> Any:
        # the inner variant knows its parameters; checked here, once, before any shard is asked
        return self._template._checked_search_params({name: value})[name]

    def get_ids(self) -> NDArray[np.int64]:
        """All ids, int64 ``(ntotal,)``: shard 0's in its storage order, then shard 1's, ..."""
        live = self._live()
        parts = self._group.call("get_ids", {s: () for s in live})
        return np.concatenate([np.asarray(parts[s], np.int64) for s in live]) if live else np.empty(0, np.int64)

    def search_stats(self) -> dict[int, dict[str, Any] | None]:
        """Each live shard's ``last_search_stats`` by shard number (an MIH shard's work counters
        for its last search; None where the variant keeps none): one call to each shard."""
        return self._group.call("search_stats", {s: () for s in self._live()})

    def memory_bytes(self) -> int:
        """Bytes held by all shards together (the driver holds no codes)."""
        return int(sum(self._group.call("memory_bytes").values()))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path``: one annbin file per shard plus ``manifest.json``.

        Each actor writes its own file, so on a multi-node cluster ``path`` must be a directory
        every node sees (a shared file system). The manifest (with each file's sha256) is written
        last and atomically; the files of the save it replaces are then deleted.
        """
        directory = Path(path).absolute()
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"cannot save a sharded index to {str(directory)!r}: it is a file, not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        try:
            previous = {e["file"] for e in read_manifest(directory)["files"]} if (directory / MANIFEST).is_file() else set()
        except ValueError:
            previous = set()
        token = uuid.uuid4().hex[:12]
        names = [f"shard-{s:05d}-{token}.annbin" for s in range(self.num_shards)]
        saved = self._group.call("save", {s: (str(directory / names[s]),) for s in range(self.num_shards)})
        for s in range(self.num_shards):
            if not (directory / names[s]).is_file():
                raise ShardError(s, f"shard {s} wrote {str(directory / names[s])!r}, which this machine cannot see: save needs a directory shared by all nodes")
            if int(saved[s]["ntotal"]) != self._group.counts[s]:
                raise ShardError(s, f"shard {s} saved {saved[s]['ntotal']} codes, expected {self._group.counts[s]}")
        files = [{"file": names[s], "sha256": saved[s]["sha256"], "bytes": int(saved[s]["bytes"]), "ntotal": int(saved[s]["ntotal"])} for s in range(self.num_shards)]
        manifest = {
            "d": self.d,
            "spec": self.inner_spec,
            "shards": self.num_shards,
            "partition": PARTITION,
            "ntotal": self.ntotal,
            "next_id": self._next_id,
            "search_params": self.get_search_params(),
            "files": files,
        }
        write_manifest(directory, manifest)
        for name in previous - set(names):
            (directory / name).unlink(missing_ok=True)
        self._group.sources = [("file", str(directory / names[s]), files[s]["sha256"]) for s in range(self.num_shards)]

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, actor_options: dict[str, Any] | None = None, timeout_s: float | None = None) -> ShardedIndex:
        """Load a directory written by ``save``: one actor per shard, each reading its own file.

        Each file's sha256 is checked against the manifest (and its own checksum by
        ``annbin.load_index``); a missing, swapped or corrupted file raises ``ValueError``.
        """
        directory = Path(path).absolute()
        manifest = read_manifest(directory)
        for entry in manifest["files"]:
            if not (directory / entry["file"]).is_file():
                raise ValueError(f"sharded index at {str(directory)!r} is missing shard file {entry['file']!r}")
        index = cls(manifest["spec"], d=int(manifest["d"]), shards=int(manifest["shards"]), actor_options=actor_options, timeout_s=timeout_s)
        group = index._group
        try:
            index._template.set_search_params(**manifest["search_params"])
            group.search_params = index._template.get_search_params()
            index._load_shards(directory, manifest["files"], "codes")
            index._next_id = int(manifest["next_id"])
        except BaseException:
            index.close()
            raise
        return index

    # --- hooks -----------------------------------------------------------------------------
    def _add(self, codes: NDArray[np.uint8], ids: NDArray[np.int64]) -> None:
        """Each code goes to the shard that owns its id (the base class has checked the ids)."""
        ray = import_ray()
        groups = group_by_shard(shard_of(ids, self.num_shards), self.num_shards)
        refs = {s: (ray.put(codes[rows]), ray.put(ids[rows])) for s, rows in groups.items()}
        sizes = self._group.call("add", refs)
        for s, size in sizes.items():
            self._group.counts[s] = size
            self._group.sources[s] = None

    def _search(self, x: NDArray[np.uint8], k: int) -> SearchResult:
        xref = import_ray().put(x)  # once: every shard reads the same object
        # per-call params (BinaryIndex.search's params=) travel with this call to each shard, never stored
        call = self._effective_params()
        params = call if call != self.get_search_params() else None
        live, counts = self._live(), self._group.counts
        parts = self._group.call("search", {s: (xref, int(min(k, counts[s])), params) for s in live})
        D, I = sort_results(np.concatenate([parts[s][0] for s in live], axis=1), np.concatenate([parts[s][1] for s in live], axis=1))
        return D[:, :k], I[:, :k]  # the tie rule: k smallest (distance, id) pairs of all shards

    def _get_codes(self, ids: NDArray[np.int64]) -> CodesResult:
        """One call per shard holding any of ``ids``, each asked only for the ids it owns."""
        ray = import_ray()
        codes = np.zeros((ids.size, self.code_size), np.uint8)
        found = np.zeros(ids.size, bool)
        stored = np.flatnonzero(ids >= 0)  # -1 and other negatives are never stored: not sent
        groups = group_by_shard(shard_of(ids[stored], self.num_shards), self.num_shards)
        asks = {s: stored[rows] for s, rows in groups.items() if self._group.counts[s]}
        parts = self._group.call("get_codes", {s: (ray.put(ids[at]),) for s, at in asks.items()})
        for s, at in asks.items():
            shard_codes, shard_found = parts[s]
            codes[at] = shard_codes
            found[at] = True if shard_found is None else shard_found
        return codes, found

    def _range_search(self, x: NDArray[np.uint8], radius: int) -> RangeResult:
        xref = import_ray().put(x)
        live, nq = self._live(), x.shape[0]
        parts = self._group.call("range_search", {s: (xref, radius) for s in live})  # one rule, `< radius`, at every level
        qid = np.concatenate([np.repeat(np.arange(nq), np.diff(parts[s][0])) for s in live])
        order = np.argsort(qid, kind="stable")  # the base class then orders each query by (distance, id)
        D = np.concatenate([parts[s][1] for s in live])[order]
        I = np.concatenate([parts[s][2] for s in live])[order]
        lims = np.zeros(nq + 1, np.int64)
        lims[1:] = np.cumsum(np.bincount(qid, minlength=nq))
        return lims, D, I

    def _remove_ids(self, ids: NDArray[np.int64]) -> int:
        ray = import_ray()
        ids = np.unique(ids)
        groups = group_by_shard(shard_of(ids, self.num_shards), self.num_shards)
        return self._record_removals(self._group.call("remove_ids", {s: (ray.put(ids[rows]),) for s, rows in groups.items() if self._group.counts[s]}))

    def _reset(self) -> None:
        self._group.call("reset")
        self._record_reset()

    def _set_search_params(self, params: dict[str, Any]) -> None:
        self._template.set_search_params(**params)  # checks the values once, here
        self._group.call("set_search_params", (params,))
        self._group.search_params = {**self._group.search_params, **params}

    def _state_arrays(self) -> dict[str, np.ndarray]:
        raise UnsupportedOperation("a ShardedIndex is saved as a directory by ShardedIndex.save(dir)")

    @classmethod
    def _from_state(cls, d: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        raise UnsupportedOperation("load a sharded index with ShardedIndex.load(dir)")


register_prefix("sharded", ShardedIndex.from_spec)
