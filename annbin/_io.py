"""annbin's one index file format: header, raw arrays, checksum. No pickle.

Layout (all integers little-endian)::

    magic        8 bytes   b"ANNBIN\\x00\\x1a"
    version      uint32    FORMAT_VERSION
    header_len   uint32
    header       JSON, utf-8: {"variant", "d", "ntotal", "params", "arrays": [{name, dtype, shape}]}
    payload      the arrays' raw C-order bytes, one after another, in header order
    checksum     32 bytes  sha256 of everything above

Loading checks magic, version, length and checksum before anything is parsed; arrays are
rebuilt with ``np.frombuffer`` over a whitelist of dtypes, so a file cannot run code.
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


def read_index_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a file written by ``write_index_file``; ``ValueError`` names any problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"index file {str(path)!r} does not exist")
    data = path.read_bytes()
    if len(data) < _PREFIX.size + 32:
        raise ValueError(f"{str(path)!r} is not an annbin index (file too short: {len(data)} bytes)")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{str(path)!r} is not an annbin index (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has format version {version}; this annbin reads version {FORMAT_VERSION}")
    body, checksum = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != checksum:
        raise ValueError(f"{str(path)!r} is corrupted or truncated (checksum mismatch)")
    start = _PREFIX.size
    try:
        header = json.loads(body[start : start + head_len])
        pos = start + head_len
        arrays: dict[str, np.ndarray] = {}
        for spec in header.pop("arrays"):
            if spec["dtype"] not in _DTYPES:
                raise ValueError(f"unsupported dtype {spec['dtype']!r}")
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if pos + nbytes > len(body):
                raise ValueError("array extends past the end of the file")
            arrays[spec["name"]] = np.frombuffer(body, dtype=dtype, count=nbytes // dtype.itemsize, offset=pos).reshape(shape).copy()
            pos += nbytes
        if pos != len(body):
            raise ValueError(f"{len(body) - pos} unexpected trailing bytes")
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} has a malformed header: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} is malformed: {exc}") from None
    return header, arrays
