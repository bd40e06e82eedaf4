"""The float vector store of ``BinaryEmbeddingIndex``: in RAM, or a memory-mapped ``.npy``.

An ``add`` stages the grown store where nobody reads it yet (a new RAM array, or a temp ``.npy``
beside the target), and only a complete add commits it (``os.replace``): a failed or killed add
leaves the previous store as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from numpy.typing import NDArray

__all__ = ["commit_vectors", "save_vectors", "stage_vectors"]


def stage_vectors(old: np.ndarray | None, x: NDArray[np.floating], disk: Path | None) -> Path | np.ndarray:
    """The grown store, not yet visible: a new float32 RAM array, or a temp .npy beside ``disk``."""
    if disk is None:
        new = x.astype(np.float32)
        return new if old is None else np.concatenate([old, new])
    disk.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{disk.name}.", suffix=".tmp", dir=disk.parent)
    os.close(fd)
    n_old = 0 if old is None else old.shape[0]
    out = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_old + x.shape[0], x.shape[1]))
    if old is not None:
        out[:n_old] = old
    out[n_old:] = x
    out.flush()
    del out
    return Path(tmp)


def commit_vectors(staged: Path | np.ndarray, disk: Path | None) -> np.ndarray:
    """Make a staged store the live one; returns it (memory-mapped read-only when on disk)."""
    if isinstance(staged, Path) and disk is not None:
        os.replace(staged, disk)
        live: np.ndarray = np.load(disk, mmap_mode="r")  # np.load is typed Any
        return live
    return np.asarray(staged)


def save_vectors(vectors: np.ndarray, target: Path, disk: Path | None) -> None:
    """Write ``vectors`` to ``target`` atomically, unless they already live there."""
    if disk is not None and disk.resolve() == target.resolve():
        return
    fd, tmp = tempfile.mkstemp(prefix=".vectors.", suffix=".npy", dir=target.parent)
    os.close(fd)
    np.save(tmp, np.asarray(vectors))
    os.replace(tmp, target)
