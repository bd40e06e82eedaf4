"""Readers and writers for the vector file formats that datasets come in.

- TEXMEX ``.fvecs`` / ``.bvecs`` / ``.ivecs`` (the SIFT1M / GIST1M / BIGANN format): each row is
  a little-endian int32 dimension ``d`` followed by ``d`` values, float32, uint8 or int32.
- ``.npy``: one 2-D numeric array, read without pickle.
- ann-benchmarks HDF5: datasets ``train``, ``test``, ``neighbors``, ``distances`` and the
  attribute ``distance``; h5py is imported only here, when such a file is opened.

Every problem with a file (missing, truncated, not the format it claims) is a ``ValueError``
whose one-line message names the file and what is wrong, never an error from inside numpy/h5py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError

__all__ = [
    "VECS_DTYPES", "as_vectors", "normalize_rows", "read_bvecs", "read_fvecs", "read_hdf5",
    "read_ivecs", "read_npy", "read_npy_rows", "read_vecs", "split_queries", "write_bvecs", "write_fvecs", "write_ivecs",
]

PathLike = str | os.PathLike[str]

SPLIT_QUERIES = 1_000  # a single base file gives up its last rows as queries

# extension -> element dtype of a TEXMEX file (the dimension header is always int32)
VECS_DTYPES: dict[str, np.dtype[Any]] = {
    ".fvecs": np.dtype("<f4"),
    ".bvecs": np.dtype("u1"),
    ".ivecs": np.dtype("<i4"),
}


def _existing(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"file not found: {str(p)!r}")
    if not p.is_file():
        raise ValueError(f"not a file: {str(p)!r}")
    return p


def read_vecs(path: PathLike, dtype: np.dtype[Any] | str) -> NDArray[Any]:
    """Read a TEXMEX file whose values have ``dtype`` (``<f4``, ``u1`` or ``<i4``) into ``(n, d)``.

    Checks that every row has the same dimension and that the file size is a whole number of rows.
    """
    p = _existing(path)
    dt = np.dtype(dtype)
    try:
        raw = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    if raw.size < 4:
        raise ValueError(f"{str(p)!r} is not a {p.suffix or 'vecs'} file: {raw.size} bytes, too short for a header")
    d = int(raw[:4].view("<i4")[0])
    if d <= 0 or d > 1 << 20:
        raise ValueError(f"{str(p)!r} is not a {p.suffix or 'vecs'} file: first row claims dimension {d}")
    row_bytes = 4 + d * dt.itemsize
    if raw.size % row_bytes:
        raise ValueError(f"{str(p)!r} is truncated or not a {p.suffix or 'vecs'} file: "
                         f"{raw.size} bytes is not a multiple of the row size {row_bytes} (d={d})")
    rows = raw.reshape(-1, row_bytes)
    dims = rows[:, :4].copy().view("<i4").ravel()
    if (dims != d).any():
        bad = int(np.flatnonzero(dims != d)[0])
        raise ValueError(f"{str(p)!r} is malformed: row {bad} has dimension {int(dims[bad])}, row 0 has {d}")
    return rows[:, 4:].copy().view(dt).reshape(-1, d).astype(dt.newbyteorder("="), copy=False)


def read_fvecs(path: PathLike) -> NDArray[np.float32]:
    """Read ``.fvecs`` into ``(n, d)`` float32."""
    return read_vecs(path, VECS_DTYPES[".fvecs"])


def read_bvecs(path: PathLike) -> NDArray[np.uint8]:
    """Read ``.bvecs`` into ``(n, d)`` uint8."""
    return read_vecs(path, VECS_DTYPES[".bvecs"])


def read_ivecs(path: PathLike) -> NDArray[np.int32]:
    """Read ``.ivecs`` (e.g. ground-truth ids) into ``(n, d)`` int32."""
    return read_vecs(path, VECS_DTYPES[".ivecs"])


def _write_vecs(path: PathLike, x: NDArray[Any], dt: np.dtype[Any]) -> None:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"expected a 2-D array with at least one column, got shape {x.shape}")
    if dt.kind in "iu" and x.dtype.kind == "f":
        raise InputTypeError(f"refusing to cast float data to {dt} silently; convert it first")
    if dt.kind in "iu" and x.size:
        info = np.iinfo(dt)
        if x.min() < info.min or x.max() > info.max:
            raise ValueError(f"values outside the range of {dt}: [{x.min()}, {x.max()}]")
    n, d = x.shape
    out = np.empty((n, 4 + d * dt.itemsize), dtype=np.uint8)
    out[:, :4] = np.array([d], dtype="<i4").view(np.uint8)
    out[:, 4:] = np.ascontiguousarray(x, dtype=dt).view(np.uint8).reshape(n, -1)
    out.tofile(Path(path))


def write_fvecs(path: PathLike, x: NDArray[np.floating]) -> None:
    """Write ``(n, d)`` floats as ``.fvecs`` (int32 d, then d float32 per row)."""
    _write_vecs(path, x, VECS_DTYPES[".fvecs"])


def write_bvecs(path: PathLike, x: NDArray[np.uint8]) -> None:
    """Write ``(n, d)`` integers in 0..255 as ``.bvecs`` (int32 d, then d uint8 per row)."""
    _write_vecs(path, x, VECS_DTYPES[".bvecs"])


def write_ivecs(path: PathLike, x: NDArray[np.integer]) -> None:
    """Write ``(n, d)`` integers as ``.ivecs`` (int32 d, then d int32 per row)."""
    _write_vecs(path, x, VECS_DTYPES[".ivecs"])


def read_npy(path: PathLike) -> NDArray[Any]:
    """Read a 2-D numeric ``.npy`` array (no pickle)."""
    p = _existing(path)
    try:
        x = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 -- numpy raises ValueError, OSError, EOFError, UnpicklingError...
        raise ValueError(f"{str(p)!r} is not a readable .npy file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ValueError(f"{str(p)!r} must hold a 2-D array, got shape {getattr(x, 'shape', None)}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{str(p)!r} must hold numbers, got dtype {x.dtype}")
    return x


def read_npy_rows(path: PathLike, lo: int, hi: int) -> NDArray[np.float32]:
    """Rows ``lo:hi`` of a 2-D numeric ``.npy`` file as float32, by plain reads: no memory map, so
    a file bigger than RAM is read a block at a time and never counts in this process's RSS."""
    p = _existing(path)
    with p.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as exc:
            raise ValueError(f"{str(p)!r} is not a readable .npy file: {exc}") from None
        if len(shape) != 2 or fortran or dtype.kind not in "fiu" or not 0 <= lo <= hi <= shape[0]:
            raise ValueError(f"{str(p)!r}: rows {lo}:{hi} of a C-order 2-D numeric array, got {dtype} {shape}")
        f.seek(f.tell() + lo * shape[1] * dtype.itemsize)
        x = np.fromfile(f, dtype=dtype, count=(hi - lo) * shape[1])
    if x.size != (hi - lo) * shape[1]:
        raise ValueError(f"{str(p)!r} is truncated: rows {lo}:{hi} of {shape} are not all there")
    return x.reshape(hi - lo, shape[1]).astype(np.float32, copy=False)


def read_hdf5(path: PathLike) -> dict[str, Any]:
    """Read an ann-benchmarks HDF5 file.

    Returns ``{"train": (n, d), "test": (nq, d), "neighbors": (nq, K) int or None,
    "distances": (nq, K) or None, "distance": str or None}``.
    """
    p = _existing(path)
    try:
        import h5py
    except ImportError:
        raise ValueError(f"reading {str(p)!r} needs h5py: pip install 'annbin[hdf5]'") from None
    try:
        with h5py.File(p, "r") as f:
            missing = [key for key in ("train", "test") if key not in f]
            if missing:
                raise ValueError(f"{str(p)!r} has no {' or '.join(repr(m) for m in missing)} dataset "
                                 f"(found {sorted(f.keys())}); not an ann-benchmarks file")
            out: dict[str, Any] = {key: f[key][()] for key in ("train", "test")}
            for key in ("neighbors", "distances"):
                out[key] = f[key][()] if key in f else None
            dist = f.attrs.get("distance")
            out["distance"] = dist.decode() if isinstance(dist, bytes) else (None if dist is None else str(dist))
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 -- h5py raises OSError, KeyError, TypeError for broken files
        raise ValueError(f"{str(p)!r} is not a readable HDF5 file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    for key in ("train", "test"):
        x = out[key]
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind not in "fiub":
            raise ValueError(f"{str(p)!r}: {key!r} must be a 2-D numeric array, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    return out


def normalize_rows(x: NDArray[np.float32], what: str) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm, float32; an all-zero row is a ``ValueError``."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(norms == 0)[0])} is all zeros and cannot be normalized")
    return cast("NDArray[np.float32]", (x / norms).astype(np.float32))  # np.linalg.norm is typed Any


def as_vectors(x: Any, what: str) -> NDArray[np.float32]:
    """Check ``x`` is a non-empty 2-D finite numeric array; return it as C-contiguous float32."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty 2-D array, got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{what} must be numeric, got dtype {x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out).all():  # checked after the cast: float64 1e300 becomes inf here
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise ValueError(f"{what} has NaN or infinite values (first in row {bad})")
    return out


def split_queries(x: NDArray[Any], what: str) -> tuple[NDArray[Any], NDArray[Any]]:
    """The last 1,000 rows (a tenth below 10,000 rows) as queries, the rest as the base."""
    if x.shape[0] < 2:
        raise ValueError(f"{what} has {x.shape[0]} rows; need at least 2 to split off queries")
    nq = SPLIT_QUERIES if x.shape[0] >= 10 * SPLIT_QUERIES else max(1, x.shape[0] // 10)
    return x[:-nq], x[-nq:]
