"""The float vector store of ``BinaryEmbeddingIndex``: in RAM, or a ``.npy`` file that only grows.

On disk the rows live in a float32 ``.npy`` file (``np.load`` reads it; memory-mapped for the
rescore). An ``add`` writes its rows past the committed ones and fsyncs them (``stage``); only once
the index took them are they counted (``commit``), and the ``.npy`` header's shape is rewritten in
place (a 128-byte header written as one block, so other readers see a valid file). Nothing is
ever rewritten: an add costs its own rows, not the store's size.

What a saved directory trusts is not that header but its own commit record: ``embedding.annbin``
(written atomically after the rows were fsynced) holds the row count and a CRC-32 of their bytes.
A reader maps only those rows and checks the CRC, so rows of an add that was killed, or of adds
never saved, are a tail it ignores; the next append overwrites and truncates them. Files written
by ``np.save`` (annbin <= 0.x directories) are read the same way, without a CRC to check.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._io import fsync_dir

__all__ = ["DiskVectors", "write_store"]

_HEADER = 128  # bytes of the .npy header annbin writes: room for any (rows, dim) shape
_MAGIC = b"\x93NUMPY\x01\x00"
_CHUNK_ROWS_BYTES = 1 << 24  # bytes read at a time when checking or copying rows


def _npy_header(rows: int, dim: int, size: int) -> bytes:
    """A version-1.0 ``.npy`` header for float32 ``(rows, dim)``, padded to ``size`` bytes."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}).encode("latin1")
    pad = size - len(_MAGIC) - 2 - len(text) - 1
    if pad < 0:
        raise ValueError(f"a .npy header of {size} bytes cannot hold shape ({rows}, {dim})")
    body = text + b" " * pad + b"\n"
    return _MAGIC + len(body).to_bytes(2, "little") + body


def _read_npy_header(f: Any, path: Path) -> tuple[int, int, int]:
    """``(offset, rows, dim)`` of a float32 2-D C-order ``.npy`` file open at its start."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read(f)
    except (ValueError, OSError, SyntaxError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable .npy file: {exc}") from None
    if dtype != np.dtype("<f4") or fortran or len(shape) != 2:
        raise ValueError(f"{str(path)!r} must hold a float32 C-order 2-D array, got {dtype} {shape}")
    return f.tell(), int(shape[0]), int(shape[1])


class DiskVectors:
    """float32 rows ``(rows, dim)`` in a ``.npy`` file that grows by appending (module docstring).

    ``rows`` and ``crc`` (CRC-32 of the committed rows' bytes) are what a save records.
    """

    def __init__(self, path: Path, dim: int, offset: int, rows: int, crc: int) -> None:
        self.path, self.dim, self.offset, self.rows, self.crc = path, dim, offset, rows, crc

    @property
    def row_bytes(self) -> int:
        return 4 * self.dim

    @classmethod
    def create(cls, path: Path, dim: int) -> DiskVectors:
        """A new empty store at ``path`` (``FileExistsError`` if there is a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as f:
            f.write(_npy_header(0, dim, _HEADER))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
        return cls(path, dim, _HEADER, 0, 0)

    @classmethod
    def open(cls, path: Path, rows: int, dim: int, crc: int | None) -> DiskVectors:
        """The store at ``path`` holding at least ``rows`` committed rows of ``dim`` floats.

        Rows past ``rows`` (an add killed before its save) are ignored. ``crc``: the CRC-32 the
        commit recorded, checked here by streaming the rows; None (files of older versions): computed.
        """
        with open(path, "rb") as f:
            offset, stored, width = _read_npy_header(f, path)
            size = os.fstat(f.fileno()).st_size
            have = (size - offset) // (4 * width) if width else 0
            if width != dim or have < rows:
                raise ValueError(f"{path.name} has shape ({min(stored, have)}, {width}), expected at least ({rows}, {dim})")
            f.seek(offset)
            got = _crc_of(f, rows * 4 * dim)
        if crc is not None and got != crc:
            raise ValueError(f"{path.name} is corrupted: its first {rows} rows fail their CRC-32 check")
        return cls(path, dim, offset, rows, got)

    def array(self) -> NDArray[np.float32]:
        """The committed rows, memory-mapped read-only (an empty array while there are none)."""
        if self.rows == 0:
            return np.empty((0, self.dim), np.float32)
        return np.memmap(self.path, dtype=np.float32, mode="r", offset=self.offset, shape=(self.rows, self.dim))

    def stage(self, x: NDArray[np.float32]) -> tuple[int, int]:
        """Write rows ``x`` past the committed ones, fsynced but not yet counted; returns the
        ``(rows, crc)`` that ``commit`` makes current. A torn tail from before is truncated, and so
        is this write's own part when it fails (a full disk): the file keeps its committed bytes."""
        data = np.ascontiguousarray(x, dtype=np.float32)
        end = self.offset + self.rows * self.row_bytes
        try:
            with open(self.path, "r+b") as f:
                f.seek(end)
                _write_rows(f, data.data.cast("B"))
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            _cut_quietly(self.path, end)  # after the close: no buffered bytes left to land past `end`
            raise
        return self.rows + data.shape[0], zlib.crc32(data.data.cast("B"), self.crc)

    def discard(self) -> None:
        """Cut the file back to the committed rows (an add that failed after ``stage``)."""
        with open(self.path, "r+b") as f:
            f.truncate(self.offset + self.rows * self.row_bytes)
            f.flush()
            os.fsync(f.fileno())

    def commit(self, staged: tuple[int, int]) -> None:
        """Count the staged rows, and show them in the ``.npy`` header."""
        self.rows, self.crc = staged
        with open(self.path, "r+b") as f:
            f.write(_npy_header(self.rows, self.dim, self.offset))
            f.flush()
            os.fsync(f.fileno())

    def copy_to(self, path: Path) -> DiskVectors:
        """A new store at ``path`` (must not exist) holding this one's committed rows."""
        return write_store(path, self.array(), self.dim)


def write_store(path: Path, vectors: NDArray[np.floating], dim: int) -> DiskVectors:
    """A new store at ``path`` (must not exist) holding ``vectors`` ``(n, dim)`` (as float32), written
    a chunk at a time (a memory-mapped source is never read whole)."""
    out = DiskVectors.create(path, dim)
    step = max(1, _CHUNK_ROWS_BYTES // out.row_bytes)
    staged = (0, 0)
    for a in range(0, vectors.shape[0], step):
        staged = out.stage(np.asarray(vectors[a : a + step], dtype=np.float32))
        out.rows, out.crc = staged
    out.commit(staged)
    return out


def _write_rows(f: Any, data: memoryview) -> None:
    """Write the staged rows' bytes (a seam the crash tests cut in two)."""
    f.write(data)


def _crc_of(f: Any, nbytes: int) -> int:
    crc, left = 0, nbytes
    buf = memoryview(bytearray(min(_CHUNK_ROWS_BYTES, max(nbytes, 1))))
    while left > 0:
        got = f.readinto(buf[: min(len(buf), left)])
        if not got:
            break
        crc = zlib.crc32(buf[:got], crc)
        left -= got
    return crc


def _cut_quietly(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes after a failed write, keeping the write's own error: an
    error here (the disk still failing) leaves a tail that readers ignore and the next add cuts."""
    try:
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())
    except OSError:
        pass
