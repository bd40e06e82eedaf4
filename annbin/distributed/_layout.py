"""Where each id lives and the on-disk manifest. No Ray here (the ``sharded:`` spec grammar is in
``annbin.spec``).

Partitioning is by a hash of the id: ``shard = splitmix64(id) % shards``. An id's shard is
computed, never looked up, so ``remove_ids`` goes straight to the owning shard, a duplicate id
always meets its twin on the same shard, and sequential or strided ids alike spread evenly.

A saved sharded index is a directory::

    manifest.json                   written last, atomically; names the shard files
    shard-00000-<token>.annbin      one ordinary annbin index file per shard
    shard-00001-<token>.annbin

Every save writes files under a fresh ``<token>`` and only then replaces the manifest, so a crash
mid-save leaves the previous save whole. The manifest records each file's sha256, checked
before the file is used.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._io import fsync_dir

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "annbin-sharded"
MANIFEST_VERSION = 1
PARTITION = "splitmix64"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def shard_of(ids: NDArray[np.int64], shards: int) -> NDArray[np.int64]:
    """The shard of each id: ``splitmix64(id) % shards`` (int64 ``(n,)``)."""
    z = np.asarray(ids, dtype=np.int64).astype(np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    return (z % np.uint64(shards)).astype(np.int64)


def group_by_shard(owner: NDArray[np.int64], shards: int) -> dict[int, NDArray[np.int64]]:
    """Row positions per shard (only shards that get rows), each in input order."""
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(shards + 1))
    return {s: order[bounds[s] : bounds[s + 1]] for s in range(shards) if bounds[s + 1] > bounds[s]}


def save_target(path: str | os.PathLike[str], what: str) -> tuple[Path, set[str]]:
    """Where a save of ``what`` goes: the absolute directory ``path`` (created), and the shard names
    its current manifest lists (those the new manifest does not list are deleted after it is written)."""
    directory = Path(path).absolute()
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"cannot save a {what} to {str(directory)!r}: it is a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        entries = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["files"]
        previous = {str(e["file"]) for e in entries if Path(str(e["file"])).name == str(e["file"])}
    except (OSError, ValueError, KeyError, TypeError):
        previous = set()  # no readable manifest: nothing of a previous save to clean up
    return directory, previous


def write_manifest(directory: Path, manifest: dict[str, Any], *, fmt: str = MANIFEST_FORMAT, version: int = MANIFEST_VERSION) -> None:
    """Atomically write ``manifest.json`` into ``directory`` (temp file, fsync, rename), headed by
    its ``fmt`` and ``version``."""
    data = json.dumps({"format": fmt, "version": version, **manifest}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def manifest_format(directory: str | os.PathLike[str]) -> str | None:
    """The ``format`` a directory's ``manifest.json`` names; None where there is none to read."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    return fmt if isinstance(fmt, str) else None


def read_json_manifest(directory: str | os.PathLike[str], fmt: str, version: int, what: str) -> dict[str, Any]:
    """``manifest.json`` of ``directory`` as a dict, checked to be of ``fmt`` at ``version``;
    ``ValueError`` naming ``what`` (the kind of index) otherwise."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        hint = " (a single index file? load it with annbin.load_index)" if directory.is_file() else ""
        raise ValueError(f"no {what} at {str(directory)!r}: {MANIFEST} not found{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{str(path)!r} is not an annbin {what} manifest" + (f" (its format is {found!r})" if found else ""))
    if manifest.get("version") != version:
        raise ValueError(f"{str(path)!r} has manifest version {manifest.get('version')}; this annbin reads {version}")
    return manifest


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a ``ShardedIndex``'s ``manifest.json``; ``ValueError`` names what is missing or wrong."""
    path = Path(directory) / MANIFEST
    manifest = read_json_manifest(directory, MANIFEST_FORMAT, MANIFEST_VERSION, "sharded index")
    if manifest.get("partition") != PARTITION:
        raise ValueError(f"{str(path)!r} uses partition {manifest.get('partition')!r}; this annbin knows {PARTITION!r}")
    try:
        int(manifest["d"]), str(manifest["spec"]), int(manifest["next_id"]), dict(manifest["search_params"])
        check_shard_entries(manifest)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is malformed: {exc}") from None
    return manifest


def check_shard_entries(manifest: dict[str, Any]) -> None:
    """``KeyError`` / ``TypeError`` / ``ValueError`` unless ``manifest["files"]`` holds one entry per
    shard, each a plain name (a file or a directory beside the manifest) with its sha256 and ntotal."""
    files = manifest["files"]
    shards = int(manifest["shards"])
    if not isinstance(files, list) or len(files) != shards:
        raise ValueError(f"{shards} shards but {len(files) if isinstance(files, list) else 'no'} file entries")
    for entry in files:
        name = str(entry["file"])
        if Path(name).name != name:
            raise ValueError(f"shard file {name!r} is not a plain file name")
        str(entry["sha256"]), int(entry["ntotal"])
