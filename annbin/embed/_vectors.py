"""Where ``BinaryEmbeddingIndex`` keeps its float rows: nowhere, in RAM, or a ``.npy`` file that only grows.

``VectorStore`` is the index's view: ``"auto"`` (a file in a temporary directory it owns, until a
save moves the rows into the saved directory), ``"ram"``, a named ``.npy`` path, or None.

On disk the rows live in a float32 (or float16: ``store_dtype``) ``.npy`` file (``DiskVectors``; ``np.load`` reads it;
memory-mapped for the rescore). An ``add`` writes its rows past the committed ones and fsyncs them
(``stage``); only once the index took them are they counted (``commit``), and the ``.npy``
header's shape is rewritten in place (a 128-byte header written as one block, so other readers see
a valid file). Nothing is ever rewritten: an add costs its own rows, not the store's size.

What a saved directory trusts is not that header but its own commit record: ``embedding.annbin``
(written atomically after the rows were fsynced) holds the row count and a CRC-32 of their bytes.
A reader maps only those rows and checks the CRC, so rows of an add that was killed, or of adds
never saved, are a tail it ignores; the next append overwrites and truncates them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError, as_codes, as_floats
from annbin._io import fsync_dir

__all__ = ["STORE_DTYPES", "DiskVectors", "Pending", "VectorStore", "check_store_dtype", "npy_header", "open_store", "write_store"]

_HEADER = 128  # bytes of the .npy header annbin writes: room for any (rows, dim) shape
_MAGIC = b"\x93NUMPY\x01\x00"
_CHUNK_ROWS_BYTES = 1 << 24  # bytes read at a time when checking or copying rows
#: precisions of the stored rows: float16 halves the file and the page cache a rescore needs
STORE_DTYPES = ("float32", "float16")


def check_store_dtype(dtype: Any) -> str:
    """``"float32"`` or ``"float16"`` (a numpy dtype of those is accepted), else ``ValueError``."""
    try:
        name = str(np.dtype(dtype).name)
    except TypeError:
        name = repr(dtype)
    if name not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {dtype!r}")
    return name


def _npy_header(rows: int, dim: int, size: int, dtype: np.dtype[Any]) -> bytes:
    """A version-1.0 ``.npy`` header for ``(rows, dim)`` of ``dtype``, padded to ``size`` bytes."""
    text = repr({"descr": dtype.str, "fortran_order": False, "shape": (rows, dim)}).encode("latin1")
    pad = size - len(_MAGIC) - 2 - len(text) - 1
    if pad < 0:
        raise ValueError(f"a .npy header of {size} bytes cannot hold shape ({rows}, {dim})")
    body = text + b" " * pad + b"\n"
    return _MAGIC + len(body).to_bytes(2, "little") + body


def npy_header(f: Any, path: Path) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` file ``f`` open at its start (left just past
    the header); ``ValueError`` naming ``path`` if it is not one."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read(f)
    except (ValueError, OSError, SyntaxError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable .npy file: {exc}") from None
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _read_npy_header(f: Any, path: Path) -> tuple[int, int, int, np.dtype[Any]]:
    """``(offset, rows, dim, dtype)`` of a float32/float16 2-D C-order ``.npy`` file open at its start."""
    shape, fortran, dtype = npy_header(f, path)
    if dtype not in (np.dtype("<f4"), np.dtype("<f2")) or fortran or len(shape) != 2:
        raise ValueError(f"{str(path)!r} must hold a float32 or float16 C-order 2-D array, got {dtype} {shape}")
    return f.tell(), int(shape[0]), int(shape[1]), np.dtype(dtype)


class DiskVectors:
    """float32 or float16 rows ``(rows, dim)`` in a ``.npy`` file that grows by appending (module
    docstring). ``rows`` and ``crc`` (CRC-32 of the committed rows' bytes) are what a save records.
    """

    def __init__(self, path: Path, dim: int, offset: int, rows: int, crc: int, dtype: Any = np.float32) -> None:
        self.path, self.dim, self.offset, self.rows, self.crc = path, dim, offset, rows, crc
        self.dtype: np.dtype[Any] = np.dtype(dtype).newbyteorder("<")

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * self.dim

    @classmethod
    def create(cls, path: Path, dim: int, dtype: Any = np.float32) -> DiskVectors:
        """A new empty store at ``path`` (``FileExistsError`` if there is a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        out = cls(path, dim, _HEADER, 0, 0, dtype)
        with open(path, "xb") as f:
            f.write(_npy_header(0, dim, _HEADER, out.dtype))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
        return out

    @classmethod
    def open(cls, path: Path, rows: int, dim: int, crc: int) -> DiskVectors:
        """The store at ``path`` holding at least ``rows`` committed rows of ``dim`` floats.

        Rows past ``rows`` (an add killed before its save) are ignored. ``crc``: the CRC-32 the
        commit recorded, checked here by streaming the rows.
        """
        with open(path, "rb") as f:
            offset, stored, width, dtype = _read_npy_header(f, path)
            size = os.fstat(f.fileno()).st_size
            have = (size - offset) // (dtype.itemsize * width) if width else 0
            if width != dim or have < rows:
                raise ValueError(f"{path.name} has shape ({min(stored, have)}, {width}), expected at least ({rows}, {dim})")
            f.seek(offset)
            got = _crc_of(f, rows * dtype.itemsize * dim)
        if got != crc:
            raise ValueError(f"{path.name} is corrupted: its first {rows} rows fail their CRC-32 check")
        return cls(path, dim, offset, rows, got, dtype)

    def array(self) -> NDArray[np.floating]:
        """The committed rows, memory-mapped read-only (an empty array while there are none)."""
        if self.rows == 0:
            return np.empty((0, self.dim), self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.rows, self.dim))

    def stage(self, x: NDArray[np.floating]) -> tuple[int, int]:
        """Write rows ``x`` past the committed ones, fsynced but not yet counted; returns the
        ``(rows, crc)`` that ``commit`` makes current. A torn tail from before is truncated, and so
        is this write's own part when it fails (a full disk): the file keeps its committed bytes."""
        data = np.ascontiguousarray(x, dtype=self.dtype)
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
            f.write(_npy_header(self.rows, self.dim, self.offset, self.dtype))
            f.flush()
            os.fsync(f.fileno())


#: what ``VectorStore.stage`` hands to ``commit`` / ``abort``: None (no floats kept), the new RAM
#: array, or a file's staged ``(rows, crc)`` and whether this add created the file
Pending = NDArray[np.floating] | tuple[tuple[int, int], bool] | None


class VectorStore:
    """The float rows of a ``BinaryEmbeddingIndex`` (module docstring).

    ``where``: ``"auto"``, ``"ram"``, a path for a new ``.npy`` file (``ValueError`` unless it ends
    in ``.npy``), or None. ``rows`` are the committed rows (RAM or memory-mapped; None before the
    first add); ``file`` the ``DiskVectors`` they are mapped from.
    """

    def __init__(self, where: str | os.PathLike[str] | None, dtype: str = "float32") -> None:
        self.dtype = check_store_dtype(dtype)
        self.kept = where is not None
        self.auto = isinstance(where, str) and where == "auto"
        self.path: Path | None = None  # the named file, or the saved directory's once rows moved there
        if where is None or (isinstance(where, str) and where in ("ram", "auto")):
            pass
        elif isinstance(where, (str, os.PathLike)):
            self.path = Path(where)
            if self.path.suffix != ".npy":
                raise ValueError(f"store_vectors path must end in .npy, got {os.fspath(where)!r}")
        else:
            raise InputTypeError(f"store_vectors must be 'auto', 'ram', a .npy path or None, got {type(where).__name__}")
        self.rows: NDArray[np.floating] | None = None
        self.file: DiskVectors | None = None
        self._tmp: Path | None = None  # the owned directory of "auto", until a save or reset

    @property
    def on_disk(self) -> bool:
        """True when the rows go to a file (a named path, or ``"auto"``)."""
        return self.kept and (self.path is not None or self.auto)

    def stage(self, x: NDArray[np.floating]) -> Pending:
        """Rows ``x`` ``(n, dim)`` written (as ``dtype``) where ``commit`` will count them; a store
        with no file yet creates one (``ValueError`` if a named file exists already)."""
        if not self.kept:
            return None
        if not self.on_disk:
            new = np.array(x, self.dtype)  # a copy: the caller may change its array later
            return new if self.rows is None else np.concatenate([self.rows, new])
        created = self.file is None
        file = self.file = self.file if self.file is not None else self._new_file(x.shape[1])
        try:
            return file.stage(np.asarray(x, self.dtype)), created
        except BaseException:
            if created:
                self._drop_file()
            raise

    def commit(self, pending: Pending) -> None:
        """Count the staged rows (the index took them)."""
        if isinstance(pending, np.ndarray):
            self.rows = pending
        elif pending is not None and self.file is not None:
            self.file.commit(pending[0])
            self.rows = self.file.array()

    def abort(self, pending: Pending) -> None:
        """Forget the staged rows: the file back to its committed rows (or gone, if this add made it)."""
        if isinstance(pending, tuple) and self.file is not None:
            if pending[1]:
                self._drop_file()
            else:
                self.file.discard()

    def open(self, file: DiskVectors, *, mapped: bool) -> None:
        """The committed rows of a loaded directory: memory-mapped from ``file`` (later adds grow
        it), or read into RAM."""
        if mapped:
            self.file, self.rows, self.path = file, file.array(), file.path
        else:
            self.rows = np.array(file.array())

    def saved_as(self, file: DiskVectors) -> bool:
        """After a save wrote the rows to ``file``: an ``"auto"`` store's rows live there from now
        on (its temporary directory goes). True when the rows moved."""
        if self._tmp is None or file is self.file:
            return False
        self.file, self.rows, self.path = file, file.array(), file.path
        self._drop_tmp()
        return True

    def clear(self) -> None:
        """No rows: the next add starts a new file; a saved or named file is left as it is, and
        an owned one from here replaces it."""
        self.rows, self.file = None, None
        self._drop_tmp()
        if self.path is not None and self.path.exists():
            self.path, self.auto = None, True

    def memory_bytes(self) -> int:
        """Bytes of rows held in RAM (memory-mapped rows count 0)."""
        return 0 if self.rows is None or isinstance(self.rows, np.memmap) else int(self.rows.nbytes)

    def disk_bytes(self) -> int:
        """Bytes of memory-mapped rows (on disk, paged in on demand)."""
        return int(self.rows.nbytes) if isinstance(self.rows, np.memmap) else 0

    def _new_file(self, dim: int) -> DiskVectors:
        path = self.path
        if path is None:  # "auto": a directory of our own, removed with this object
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="annbin-vectors-"))
                self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
            path = self._tmp / "vectors.npy"
        try:
            return DiskVectors.create(path, dim, self.dtype)
        except FileExistsError:
            raise ValueError(f"vectors file {str(path)!r} already exists; give a new path, or store_vectors='auto' "
                             "(BinaryEmbeddingIndex.load reopens saved ones)") from None

    def _drop_file(self) -> None:
        if self.file is not None:
            self.file.path.unlink(missing_ok=True)
            self.file = None

    def _drop_tmp(self) -> None:
        if self._tmp is not None:
            self._cleanup()
            self._tmp = None


def open_store(store: Any, *, name: str, kind: Literal["float", "codes"]) -> np.ndarray:
    """A document store: a 2-D array, or a ``.npy`` path opened memory-mapped (read-only).

    ``kind="float"``: float16/32/64 ``(n, dim)``; ``kind="codes"``: uint8 ``(n, code_size)``.
    In-RAM float arrays are checked for NaN/inf; memory-mapped ones are not (that would read the
    whole file).
    """
    if isinstance(store, (str, os.PathLike)):
        try:
            store = np.load(os.fspath(store), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot open {name} file {os.fspath(store)!r} as a .npy array: {exc}") from None
    if not isinstance(store, np.ndarray):
        raise InputTypeError(f"{name} must be a numpy array or a path to a .npy file, got {type(store).__name__}")
    if kind == "codes":
        return as_codes(store, name=name) if not isinstance(store, np.memmap) else _check_mmap(store, np.uint8, name)
    if isinstance(store, np.memmap):
        return _check_mmap(store, np.floating, name)
    return as_floats(store, name=name)


def _check_mmap(arr: np.memmap, dtype: Any, name: str) -> np.memmap:
    if not np.issubdtype(arr.dtype, dtype):
        raise InputTypeError(f"{name} must have dtype {np.dtype(dtype).name if dtype is np.uint8 else 'float'}, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {arr.shape}")
    return arr


def write_store(path: Path, vectors: NDArray[np.floating], dim: int) -> DiskVectors:
    """A new store at ``path`` (must not exist) holding ``vectors`` ``(n, dim)`` in their own
    precision (float32 or float16), written a chunk at a time (a memory-mapped source is never read
    whole)."""
    out = DiskVectors.create(path, dim, vectors.dtype if vectors.dtype == np.float16 else np.float32)
    step = max(1, _CHUNK_ROWS_BYTES // out.row_bytes)
    staged = (0, 0)
    for a in range(0, vectors.shape[0], step):
        staged = out.stage(np.asarray(vectors[a : a + step]))
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
