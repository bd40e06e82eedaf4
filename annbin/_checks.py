"""Validation of user input: the one place that turns bad arrays and numbers into clear errors.

Every message says what was expected and what was given. Nothing here uses ``assert``: user input
must be checked under ``python -O`` too.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

INT32_MAX = np.iinfo(np.int32).max


class InputTypeError(TypeError):
    """An argument of the wrong type, refused on purpose (a plain ``TypeError`` elsewhere is a bug).

    The CLI reports this one as a one-line usage error; any other ``TypeError`` keeps its traceback.
    """


#: float metrics of the float-in indexes and exact float search: inner product, squared L2
METRICS: tuple[str, ...] = ("ip", "l2")


def check_metric(metric: Any, allowed: tuple[str, ...] = METRICS) -> str:
    """``metric`` if it is one of ``allowed``, else ``ValueError`` naming them."""
    if metric not in allowed:
        raise ValueError(f"metric must be one of {allowed}, got {metric!r}")
    return str(metric)


def check_d(d: Any) -> int:
    """Code length in bits: a positive int, multiple of 8."""
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        raise InputTypeError(f"d must be an int number of bits, got {type(d).__name__}")
    bits = int(d)
    if bits <= 0 or bits % 8:
        raise ValueError(f"d must be a positive multiple of 8 bits, got {bits}")
    return bits


def check_k(k: Any) -> int:
    """Number of neighbours: an int >= 1."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InputTypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An int option (not bool), optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_rows(x: np.ndarray, name: str, width: str) -> np.ndarray:
    """A 1-D array is one row; anything but 1-D or 2-D is a ``ValueError``."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, {width}), got shape {x.shape}")
    return x


def as_codes(x: Any, code_size: int | None = None, *, name: str = "codes") -> NDArray[np.uint8]:
    """Packed binary codes as a C-contiguous ``(n, code_size)`` uint8 array.

    A 1-D array is taken as one code (one row). Float or other integer dtypes are a ``TypeError``:
    codes are never cast silently, since ``np.uint8(-1.0)`` or an int8 packing would give other bits.
    """
    if not isinstance(x, np.ndarray):
        raise InputTypeError(f"{name} must be a numpy uint8 array, got {type(x).__name__}")
    if x.dtype != np.uint8:
        hint = " (int8 'binary' packing? convert with annbin.from_packing(x, 'binary'))" if x.dtype == np.int8 else ""
        raise InputTypeError(f"{name} must have dtype uint8, got {x.dtype}{hint}")
    x = _as_rows(x, name, "code_size")
    if code_size is not None and x.shape[1] != code_size:
        raise ValueError(
            f"{name} width mismatch: expected (n, {code_size}) bytes = {code_size * 8} bits, "
            f"got shape {x.shape} = {x.shape[1] * 8} bits"
        )
    return np.ascontiguousarray(x)


def as_floats(x: Any, dim: int | None = None, *, name: str = "x") -> NDArray[np.floating]:
    """Float vectors as a 2-D float array (float16/32/64 kept); 1-D is one row; finite values only."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise InputTypeError(f"{name} must be a float array, got dtype {x.dtype}")
    x = _as_rows(x, name, "dim")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} dimension mismatch: expected (n, {dim}), got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or inf value(s)")
    return cast("NDArray[np.floating]", x)  # x is Any-typed (user input), checked above


def as_ids(ids: Any, n: int, *, name: str = "ids") -> NDArray[np.int64]:
    """User ids for ``n`` new vectors: 1-D integers, length n, unique, non-negative (-1 means 'missing')."""
    ids = as_id_selection(ids, name=name)
    if ids.shape[0] != n:
        raise ValueError(f"{name} length mismatch: expected {n} (one per code), got {ids.shape[0]}")
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks a missing result), got {int(ids.min())}")
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{name} contains duplicates")
    return np.ascontiguousarray(ids)


def as_id_selection(ids: Any, *, name: str = "ids") -> NDArray[np.int64]:
    """Ids to remove: any 1-D integer array (may name ids that are absent)."""
    if not isinstance(ids, np.ndarray):
        ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InputTypeError(f"{name} must be integers, got dtype {ids.dtype}")
    return cast("NDArray[np.int64]", ids.astype(np.int64, copy=False))  # ids is Any-typed (user input)


def check_radius(radius: Any) -> int:
    """Hamming radius for range search: an int >= 0."""
    return check_int(radius, "radius", minimum=0)


def resolve_threads(n: int) -> int:
    """A thread count for libraries that take one per call: ``n < 1`` means every core."""
    return (os.cpu_count() or 1) if n < 1 else n
