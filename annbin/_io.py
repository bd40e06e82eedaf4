"""annbin's one index file format: header, raw arrays, checksum. No pickle.

Layout (all integers little-endian)::

    magic        8 bytes   b"ANNBIN\\x00\\x1a"
    version      uint32    FORMAT_VERSION
    header_len   uint32
    header       JSON, utf-8: {"variant", "d", "ntotal", "params", "arrays": [{name, dtype, shape}]}
    payload      the arrays' raw C-order bytes, one after another, in header order
    checksum     32 bytes  sha256 of everything above

Loading checks magic, version, length and checksum before anything is parsed; arrays are
rebuilt with ``np.frombuffer`` over a whitelist of dtypes, so a file cannot run code. With
``mmap=True`` the checksum is computed by streaming the file in chunks (nothing held but the
chunk) and the arrays come back as read-only ``np.memmap`` views of the file, not copies.
Writes go to a temp file in the target directory, are fsynced and then renamed over the target,
so a crash never leaves a half-written index under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"ANNBIN\x00\x1a"
FORMAT_VERSION = 1
_DTYPES = {"uint8", "int8", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64", "uint16", "int16"}
_PREFIX = struct.Struct("<8sII")


#: the file that commits a ``BinaryEmbeddingIndex`` directory (and says what else in it is its own)
EMBEDDING_RECORD = "embedding.annbin"

def fsync_dir(path: Path) -> None:
    """Make the renames and creations in directory ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_index_file(path: str | os.PathLike[str], header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Atomically write ``header`` (JSON-able) and ``arrays`` to ``path``."""
    specs = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in _DTYPES:
            raise TypeError(f"array {name!r} has unsupported dtype {arr.dtype}")
        specs.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape)})
    head = json.dumps({**header, "arrays": specs}, sort_keys=True).encode()
    digest = hashlib.sha256()
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"cannot save index: directory {str(directory)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            def put(chunk: bytes | memoryview) -> None:
                digest.update(chunk)
                f.write(chunk)

            put(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)))
            put(head)
            for arr in arrays.values():
                if arr.size:  # memoryview.cast rejects a zero in the shape; an empty array adds no bytes
                    put(np.ascontiguousarray(arr).data.cast("B"))
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_annbin_file(path: str | os.PathLike[str]) -> bool:
    """True if the file starts with annbin's magic bytes."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def peek_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of an annbin file, read without the checksum (the loader it picks verifies
    the whole file): for telling which loader a file needs. ``{}`` if it has no readable header."""
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            return {}
        magic, _, head_len = _PREFIX.unpack(prefix)
        try:
            header = json.loads(f.read(head_len)) if magic == MAGIC else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
    return header if isinstance(header, dict) else {}


def read_index_file(path: str | os.PathLike[str], *, mmap: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a file written by ``write_index_file``; ``ValueError`` names any problem.

    The checksum is computed first, streaming the file through one chunk. ``mmap=False``: each
    array is then read into its own writable array (peak: the arrays, once). ``mmap=True``: the
    arrays are read-only ``np.memmap`` views of the file (its pages are read on first touch and
    held as page cache, not as the process's own memory); the file must not be changed in place
    while they are in use (``write_index_file`` replaces a file by rename, which leaves a mapped
    one intact).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"index file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head_len = _verify(path, f, size)
        body = size - 32
        try:
            f.seek(_PREFIX.size)
            header = json.loads(f.read(head_len))
            pos = _PREFIX.size + head_len
            mapped = np.memmap(f, dtype=np.uint8, mode="r", shape=(body,)) if mmap else None
            arrays: dict[str, np.ndarray] = {}
            for spec in header.pop("arrays"):
                if spec["dtype"] not in _DTYPES:
                    raise ValueError(f"unsupported dtype {spec['dtype']!r}")
                dtype = np.dtype(spec["dtype"])
                shape = tuple(int(s) for s in spec["shape"])
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if pos + nbytes > body:
                    raise ValueError("array extends past the end of the file")
                if mapped is not None:
                    arrays[spec["name"]] = mapped[pos : pos + nbytes].view(dtype).reshape(shape)
                else:
                    arr = np.empty(shape, dtype)
                    f.seek(pos)
                    if nbytes and f.readinto(arr.data.cast("B")) != nbytes:
                        raise ValueError("file ended while reading an array")
                    arrays[spec["name"]] = arr
                pos += nbytes
            if pos != body:
                raise ValueError(f"{body - pos} unexpected trailing bytes")
        except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{str(path)!r} has a malformed header: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{str(path)!r} is malformed: {exc}") from None
    return header, arrays


_CHUNK = 1 << 24  # bytes hashed at a time


def _verify(path: Path, f: Any, size: int) -> int:
    """Magic, version and checksum of the open file ``f`` (hashed one chunk at a time); returns
    the header's length."""
    if size < _PREFIX.size + 32:
        raise ValueError(f"{str(path)!r} is not an annbin index (file too short: {size} bytes)")
    prefix = f.read(_PREFIX.size)
    magic, version, head_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ValueError(f"{str(path)!r} is not an annbin index (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has format version {version}; this annbin reads version {FORMAT_VERSION}")
    digest = hashlib.sha256(prefix)
    chunk = memoryview(bytearray(min(_CHUNK, size)))
    left = size - 32 - _PREFIX.size
    while left > 0:
        got = f.readinto(chunk[: min(_CHUNK, left)])
        if not got:
            break
        digest.update(chunk[:got])
        left -= got
    if left or digest.digest() != f.read(32):
        raise ValueError(f"{str(path)!r} is corrupted or truncated (checksum mismatch)")
    return int(head_len)
