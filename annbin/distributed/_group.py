"""The shard actors of one sharded index: starting them, fanning calls out, and surviving deaths.

``ShardGroup.call`` submits a method call to every listed shard before awaiting any, so shards
work in parallel, and returns every shard's answer or raises: never a partial result.

Failure policy: a call that finds a shard's actor dead restarts it and retries once, provided
the shard's contents are known to be reproducible: it has not changed since it was saved or
loaded (restart from its file, whose sha256 the manifest pins), or it never held anything
(restart empty). A ``RuntimeWarning`` reports each restart. Otherwise, or if the restart or the
retry fails, ``ShardError`` names the shard.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from annbin.distributed._shard import ShardServer

_EXTRA_HINT = "annbin.distributed needs Ray, an optional extra: pip install 'annbin[distributed]'"


def import_ray() -> Any:
    """Import Ray, or raise an ``ImportError`` that names the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from exc
    return ray


_REMOTE: dict[type[Any], Any] = {}  # each server class wrapped by ray.remote once


def _remote_class(server: type[Any]) -> Any:
    if server not in _REMOTE:
        _REMOTE[server] = import_ray().remote(server)
    return _REMOTE[server]


class ShardError(RuntimeError):
    """A shard could not answer; ``shard`` is its number. No partial result is returned."""

    def __init__(self, shard: int, message: str) -> None:
        super().__init__(message)
        self.shard = shard


def _summary(exc: BaseException) -> str:
    """One line: Ray's messages say what happened first and why last."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}"
    return f"{type(exc).__name__}: {text}"


def _caller_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first frame outside annbin (the user's call)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame: FrameType | None = sys._getframe(1)  # frame 1 (stacklevel 1) is the function that warns
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


class ShardGroup:
    """``shards`` actors, each ``server(spec, d, search_params)``: by default a ``ShardServer`` for
    ``spec`` over ``d``-bit codes (``annbin.distributed._embedding_shard.EmbeddingShardServer``
    takes a first-stage spec and ``BinaryEmbeddingIndex``'s other keyword arguments instead).
    ``owner`` names the class that holds the group in messages.

    ``counts[s]`` is what the driver knows shard ``s`` holds; ``sources[s]`` what its actor can
    be rebuilt from: ``("empty",)``, ``("file", path, sha256)``, or ``None`` (nothing: it holds
    data no file has). The owner keeps both up to date.
    """

    def __init__(self, spec: str, d: Any, shards: int, search_params: dict[str, Any], actor_options: dict[str, Any], timeout_s: float | None,
                 *, server: type[Any] = ShardServer, owner: str = "ShardedIndex") -> None:
        ray = import_ray()
        if not ray.is_initialized():
            ray.init()  # joins RAY_ADDRESS if set, else starts a local Ray, as Ray's own auto-init does
        self.spec, self.d, self.shards = spec, d, shards
        self.server, self.owner = server, owner
        self.search_params = dict(search_params)
        self.actor_options = {"scheduling_strategy": "SPREAD", **actor_options}
        self.timeout_s = timeout_s
        self.counts = np.zeros(shards, np.int64)
        self.sources: list[tuple[Any, ...] | None] = [("empty",)] * shards
        self.restarts = 0
        self.closed = False
        self.actors = [self._spawn() for _ in range(shards)]

    def _spawn(self) -> Any:
        return _remote_class(self.server).options(**self.actor_options).remote(self.spec, self.d, self.search_params)

    def call(self, method: str, args: dict[int, tuple[Any, ...]] | tuple[Any, ...] = ()) -> dict[int, Any]:
        """``method(*args)`` on shards: ``args`` per shard (those shards only) or one tuple for all."""
        ray = import_ray()
        from ray.exceptions import GetTimeoutError, RayActorError

        if self.closed:
            raise RuntimeError(f"this {self.owner} is closed")
        per_shard = args if isinstance(args, dict) else {s: args for s in range(self.shards)}
        refs = {s: getattr(self.actors[s], method).remote(*a) for s, a in per_shard.items()}
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        out: dict[int, Any] = {}
        dead: list[tuple[int, BaseException]] = []
        for s, ref in refs.items():
            try:
                out[s] = ray.get(ref, timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except RayActorError as exc:
                dead.append((s, exc))
            except GetTimeoutError:
                raise ShardError(s, f"shard {s} of {self.shards} did not answer {method} within {self.timeout_s} s") from None
        for s, err in dead:
            self._restart(s, method, err)
            try:
                out[s] = ray.get(getattr(self.actors[s], method).remote(*per_shard[s]), timeout=self.timeout_s)
            except (RayActorError, GetTimeoutError) as exc2:
                raise ShardError(s, f"shard {s} of {self.shards} failed again during {method} after a restart: {_summary(exc2)}") from exc2
        return out

    def _restart(self, s: int, method: str, cause: BaseException) -> None:
        """Replace shard ``s``'s dead actor by one rebuilt from its source, or raise ``ShardError``."""
        ray = import_ray()
        source = self.sources[s]
        if source is None:
            raise ShardError(
                s,
                f"shard {s} of {self.shards} died during {method} ({_summary(cause)}); it has changed since "
                "it was last saved or loaded, so it cannot be restored: load the last save with "
                f"{self.owner}.load, or rebuild",
            ) from cause
        actor = self._spawn()
        try:
            if source[0] == "file":
                size = ray.get(actor.load.remote(source[1], source[2], self.search_params), timeout=self.timeout_s)
            else:
                size = ray.get(actor.ping.remote(), timeout=self.timeout_s)
            if int(size) != self.counts[s]:
                raise ValueError(f"restored shard holds {size} codes, expected {self.counts[s]}")
        except Exception as exc:  # noqa: BLE001 - any failure to restore is reported as this shard's
            ray.kill(actor)
            raise ShardError(s, f"shard {s} of {self.shards} died during {method} and could not be restarted: {_summary(exc)}") from exc
        self.actors[s] = actor
        self.restarts += 1
        where = f"from {source[1]!r}" if source[0] == "file" else "empty"
        warnings.warn(f"shard {s} of {self.shards} died during {method}; restarted it {where} and retried once", RuntimeWarning, stacklevel=_caller_stacklevel())

    def close(self) -> None:
        """Stop every actor (idempotent)."""
        if self.closed:
            return
        ray = import_ray()
        self.closed = True
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead or Ray shut down: nothing left to stop
                pass


_Owner = TypeVar("_Owner", bound="GroupOwner")


class GroupOwner:
    """What a sharded index knows of its shards without asking one (sizes, restarts), and its
    lifecycle (``ping``, ``close``, ``with``). The class that mixes it in sets ``_group``."""

    _group: ShardGroup

    @property
    def num_shards(self) -> int:
        return self._group.shards

    @property
    def ntotal(self) -> int:
        """Entries over all shards (known to the driver without a call)."""
        return int(self._group.counts.sum())

    def __len__(self) -> int:
        return self.ntotal

    @property
    def shard_sizes(self) -> NDArray[np.int64]:
        """Entries held by each shard, int64 ``(shards,)``."""
        return self._group.counts.copy()

    @property
    def restarts(self) -> int:
        """How many dead shard actors were restarted from their saved files."""
        return self._group.restarts

    def _live(self) -> list[int]:
        return [s for s in range(self.num_shards) if self._group.counts[s]]

    def _call(self, method: str, args: dict[int, tuple[Any, ...]] | tuple[Any, ...] = ()) -> dict[int, Any]:
        """``ShardGroup.call``; a shard's refusal (``ValueError``, ``TypeError``,
        ``UnsupportedOperation``) is raised as itself, without Ray's wrapping and remote traceback."""
        from ray.exceptions import RayTaskError

        try:
            return self._group.call(method, args)
        except RayTaskError as exc:
            if isinstance(exc.cause, (ValueError, TypeError, NotImplementedError)):
                raise exc.cause from None
            raise

    def _load_shards(self, directory: Path, entries: list[dict[str, Any]], unit: str) -> None:
        """Each shard's actor loads its manifest entry from ``directory`` (checking its sha256), with
        the group's search parameters; each size is checked against the manifest's ``ntotal``."""
        sources = [("file", str(directory / e["file"]), str(e["sha256"])) for e in entries]
        sizes = self._call("load", {s: (src[1], src[2], self._group.search_params) for s, src in enumerate(sources)})
        for s, entry in enumerate(entries):
            if int(sizes[s]) != int(entry["ntotal"]):
                raise ValueError(f"shard {entry['file']!r} holds {sizes[s]} {unit}, manifest says {entry['ntotal']}")
            self._group.counts[s] = int(sizes[s])
        self._group.sources = list(sources)

    def _record_removals(self, out: dict[int, tuple[int, int]]) -> int:
        """Keep the shards' ``(removed, size)`` answers to ``remove_ids``: a shard that removed any
        can no longer be restored from its file. Returns how many were removed in all."""
        for s, (removed, size) in out.items():
            self._group.counts[s] = size
            if removed:
                self._group.sources[s] = None
        return int(sum(removed for removed, _ in out.values()))

    def _record_reset(self) -> None:
        """Every shard is empty now (and restartable as such)."""
        self._group.counts[:] = 0
        self._group.sources = [("empty",)] * self.num_shards

    def ping(self) -> list[int]:
        """One empty round trip to every shard (returns their sizes): all alive, or raises."""
        out = self._group.call("ping")
        return [int(out[s]) for s in range(self.num_shards)]

    def close(self) -> None:
        """Stop the shard actors now (they also stop when this object is garbage-collected)."""
        self._group.close()

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
