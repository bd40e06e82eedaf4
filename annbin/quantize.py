"""Float embeddings to packed binary codes and back, and the packings users meet.

Bit order (the one place it is written down)
--------------------------------------------
Dimension ``j`` of a vector becomes bit ``7 - (j % 8)`` of byte ``j // 8``: the most significant bit
of each byte comes first, exactly numpy's ``np.packbits(bits, axis=1)`` default (``bitorder="big"``)
and the order sentence-transformers, Vespa hex feeds and Qdrant use. Each row is packed on its own:
a dimension that is not a multiple of 8 is padded with zero bits at the end of *that row*, so
``ceil(dim / 8)`` bytes per row and no bit ever crosses into the next row.

Worked example, ``dim = 10``::

    x      = [0.3, -1, 2, 0, 0.1, -0.2, 5, 7,   -3, 0.9]
    bits   = [1,    0, 1, 0, 1,    0,   1, 1,    0, 1]   (x > 0)
    bytes  = [0b10101011, 0b01000000] = [171, 64]        (6 zero bits pad the 2nd byte)
    hex    = "ab40"
    binary = [171 - 128, 64 - 128] = [43, -64]           (int8 packing)

Hamming distance does not depend on the bit order, but unpacking (rescoring, ``unpack``) does.
faiss's own bit helpers read bit ``i`` least-significant-first; annbin never uses them.

Packings (``to_packing`` / ``from_packing``)
--------------------------------------------
``"ubinary"``  uint8, the codes themselves (annbin's native format).
``"binary"``   int8 = ubinary - 128, the sentence-transformers / Jina convention (an offset,
               not a reinterpretation of the bytes).
``"hex"``      one lowercase hex string per vector, two characters per byte, in byte order
               (big-endian, as Vespa feeds take them).
``"pm1"``      float32 +1 / -1 per dimension (bit 1 -> +1), shape ``(n, dim)``.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import InputTypeError, as_codes, as_floats

Packing = Literal["ubinary", "binary", "hex", "pm1"]
PACKINGS: tuple[str, ...] = ("ubinary", "binary", "hex", "pm1")

__all__ = ["binarize", "fit_thresholds", "unpack", "to_packing", "from_packing", "code_size_for", "PACKINGS"]


def code_size_for(dim: int) -> int:
    """Bytes per code for ``dim`` float dimensions: ``ceil(dim / 8)``."""
    return (int(dim) + 7) // 8


def _check_thresholds(thresholds: ArrayLike | None, dim: int) -> NDArray[np.floating] | float:
    if thresholds is None:
        return 0.0
    t = np.asarray(thresholds)
    if not np.issubdtype(t.dtype, np.number) or np.issubdtype(t.dtype, np.complexfloating):
        raise InputTypeError(f"thresholds must be a real number or array, got dtype {t.dtype}")
    if t.ndim == 0:
        value = float(t)
        if not np.isfinite(value):
            raise ValueError(f"thresholds must be finite, got {value}")
        return value
    if t.shape != (dim,):
        raise ValueError(f"thresholds must be a scalar or shape ({dim},), got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("thresholds contain NaN or inf")
    return t


def binarize(x: ArrayLike, thresholds: ArrayLike | None = None) -> NDArray[np.uint8]:
    """Float vectors ``(n, dim)`` to packed codes ``(n, ceil(dim / 8))`` uint8, bit = x > threshold.

    ``thresholds``: None (0.0), a scalar, or a per-dimension array of shape ``(dim,)`` (see
    ``fit_thresholds``). A 1-D ``x`` is one vector and gives a ``(1, code_size)`` result. Raises
    ``TypeError`` for non-float input and ``ValueError`` for NaN/inf or a non-2-D shape.
    """
    x = as_floats(x)
    t = _check_thresholds(thresholds, x.shape[1])
    return np.packbits(x > t, axis=1)


def fit_thresholds(x: ArrayLike, method: str = "median") -> NDArray[np.float32]:
    """Per-dimension thresholds ``(dim,)`` float32 learned from a sample ``(n, dim)`` of vectors.

    ``"median"`` balances every bit (half the sample on each side), which spreads codes over the
    Hamming space: better recall and better-filled multi-index hash buckets. ``"mean"`` is cheaper
    and close for symmetric distributions.
    """
    x = as_floats(x)
    if x.shape[0] == 0:
        raise ValueError("fit_thresholds needs at least one vector, got shape (0, dim)")
    if method == "median":
        return cast("NDArray[np.float32]", np.median(x, axis=0).astype(np.float32))  # numpy types median/mean Any
    if method == "mean":
        return cast("NDArray[np.float32]", x.mean(axis=0, dtype=np.float64).astype(np.float32))
    raise ValueError(f"method must be 'median' or 'mean', got {method!r}")


def _check_dim(dim: int | None, code_size: int) -> int:
    if dim is None:
        return code_size * 8
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise InputTypeError(f"dim must be an int, got {type(dim).__name__}")
    if not (code_size - 1) * 8 < dim <= code_size * 8:
        raise ValueError(f"dim={dim} does not fit codes of {code_size} bytes (needs {code_size * 8 - 7}..{code_size * 8})")
    return int(dim)


def unpack(codes: NDArray[np.uint8], dim: int | None = None) -> NDArray[np.uint8]:
    """Packed codes ``(n, code_size)`` uint8 to bits ``(n, dim)`` uint8 of 0/1 (MSB first).

    ``dim`` drops the padding bits of a dimension that was not a multiple of 8 (default:
    ``code_size * 8``).
    """
    codes = as_codes(codes)
    dim = _check_dim(dim, codes.shape[1])
    return np.unpackbits(codes, axis=1, count=dim)


def to_packing(codes: NDArray[np.uint8], packing: Packing, *, dim: int | None = None) -> Any:
    """Convert annbin codes ``(n, code_size)`` uint8 to another packing (see module docstring).

    Returns an int8 array (``"binary"``), a list of str (``"hex"``), a float32 ``(n, dim)`` array
    (``"pm1"``), or a copy of the codes (``"ubinary"``).
    """
    codes = as_codes(codes)
    if packing == "ubinary":
        return codes.copy()
    if packing == "binary":
        return (codes.astype(np.int16) - 128).astype(np.int8)
    if packing == "hex":
        return [row.tobytes().hex() for row in codes]
    if packing == "pm1":
        bits = unpack(codes, dim)
        return bits.astype(np.float32) * 2.0 - 1.0
    raise ValueError(f"unknown packing {packing!r}; expected one of {PACKINGS}")


def from_packing(data: Any, packing: Packing) -> NDArray[np.uint8]:
    """Convert data in another packing back to annbin codes ``(n, code_size)`` uint8.

    ``"binary"`` takes int8, ``"hex"`` a sequence of equal-length hex strings, ``"pm1"`` a float
    array of +-1 (bit = value > 0, padded per row), ``"ubinary"`` uint8.
    """
    if packing == "ubinary":
        return as_codes(data).copy()
    if packing == "binary":
        if not isinstance(data, np.ndarray) or data.dtype != np.int8:
            got = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
            raise InputTypeError(f"'binary' packing must be an int8 array, got {got}")
        if data.ndim == 1:
            data = data[None, :]
        if data.ndim != 2:
            raise ValueError(f"'binary' packing must be 2-D (n, code_size), got shape {data.shape}")
        return cast("NDArray[np.uint8]", (data.astype(np.int16) + 128).astype(np.uint8))  # data is Any-typed (user input)
    if packing == "hex":
        if isinstance(data, (str, bytes)):
            data = [data]
        rows = list(data)
        if not all(isinstance(s, str) for s in rows):
            raise InputTypeError("'hex' packing must be a sequence of str")
        widths = {len(s) for s in rows}
        if len(widths) > 1:
            raise ValueError(f"hex strings must all have the same length, got lengths {sorted(widths)}")
        try:
            raw = b"".join(bytes.fromhex(s) for s in rows)
        except ValueError as exc:
            raise ValueError(f"invalid hex string: {exc}") from None
        width = widths.pop() // 2 if rows else 0
        if rows and width * 2 != len(rows[0]):
            raise ValueError(f"hex strings must have an even length, got {len(rows[0])}")
        return np.frombuffer(raw, dtype=np.uint8).reshape(len(rows), width).copy()
    if packing == "pm1":
        return binarize(data)
    raise ValueError(f"unknown packing {packing!r}; expected one of {PACKINGS}")
