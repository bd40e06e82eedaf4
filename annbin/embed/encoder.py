"""Better 1-bit codes when the floats are known at build time: rotation, offset, RaBitQ factors.

An ``Encoder`` maps float vectors ``x`` (``(n, dim)``) to a *plain packed code* — the same
``(n, ceil(dim / 8))`` uint8 codes every annbin index stores, so Hamming search still works — plus
what an asymmetric scorer needs to estimate ``<x, q>`` from the code and a float query::

    v      = x @ R - offset         R: (dim, dim) orthogonal rotation (identity when rotation=None)
    code   = packbits(v > 0)        bit order as annbin.quantize (MSB first, rows padded)
    factor = |v|_2^2 / |v|_1        RaBitQ's per-vector correction (one float32 a vector)

With ``s = 2 * bits - 1`` (the +-1 code), RaBitQ's estimator is ``<v, q R> ~ factor * (s . q R)``
and ``<x, q> = <v, q R> + <offset, q R>`` (the last term is the same for every document of a
query). ``offset`` is what ``thresholds`` were before (a per-dimension threshold in the rotated
space): 0, a fitted median / mean, or the data's mean (``center=True``, RaBitQ's centring).

``bits=2`` keeps a second bit plane beside the 1-bit code: ``m = |v| > tau`` (tau = 0.9816 |v|_2 /
sqrt(dim), the 4-level Lloyd-Max threshold for Gaussian coordinates, which a random rotation makes
them), with two per-vector levels (the mean |v| of the small and of the large coordinates). Scores
then use ``v ~ s * (lo + (hi - lo) * m)`` rescaled so that the estimate of ``<v, v>`` is exact.

Rotations: ``"random"`` (a seeded Haar-random orthogonal matrix, as RaBitQ) or ``"itq"``
(iterative quantization, Gong & Lazebnik 2011: the orthogonal R that minimises the sign
quantization error of the centred data, learned on a sample). A rotation costs ``dim^2`` floats of
RAM and one ``(nq, dim) @ (dim, dim)`` product per query batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import InputTypeError, as_floats, check_int
from annbin.quantize import binarize, code_size_for

ROTATIONS: tuple[str | None, ...] = (None, "random", "itq", "given")
OFFSETS: tuple[str, ...] = ("zero", "median", "mean")
_LLOYD_MAX_T = 0.9816  # 4-level Lloyd-Max threshold for N(0, 1)
# ITQ learns on at most this many rows, for this many iterations: on the shipped MiniLM set (20k x
# 384) 20 iterations on 20k rows gave asymmetric recall@10 0.971 at 3x vs 0.969 with 50 (and 2.2x
# less time); 5k rows gave 0.966.
_ITQ_SAMPLE = 20_000
_ITQ_ITERATIONS = 20

__all__ = ["ROTATIONS", "Encoded", "Encoder", "itq_rotation", "random_rotation"]


def random_rotation(dim: int, seed: int = 0) -> NDArray[np.float32]:
    """A Haar-random ``(dim, dim)`` orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def itq_rotation(x: NDArray[np.floating], *, iterations: int = _ITQ_ITERATIONS, seed: int = 0) -> NDArray[np.float32]:
    """ITQ: the orthogonal R minimising ``|sign(x R) - x R|_F`` for centred ``x`` (n, dim).

    Alternates B = sign(x R) and the orthogonal Procrustes solution R = U W^T of x^T B = U S W^T,
    starting from a random rotation. float32 products, float64 SVD.
    """
    from threadpoolctl import threadpool_limits

    v = np.asarray(x, dtype=np.float32)
    r = random_rotation(v.shape[1], seed)
    for _ in range(iterations):
        b = np.where(v @ r > 0, 1.0, -1.0).astype(np.float32)
        # One BLAS thread for the small (dim, dim) SVD: OpenBLAS's threads gain nothing at this size and
        # spin against other work on shared cores (384 x 384: 0.13 s on 1 thread, 4.2 s on 2 with the
        # machine busy; ITQ on 2,000 x 384 went from 23 s to ~3 s there).
        with threadpool_limits(limits=1, user_api="blas"):
            u, _, wt = np.linalg.svd((v.T @ b).astype(np.float64))
        r = (u @ wt).astype(np.float32)
    return r


@dataclass
class Encoded:
    """What ``Encoder.encode`` returns for ``n`` vectors.

    ``codes`` (n, code_size) uint8: the 1-bit code. ``factors`` (n,) float32: RaBitQ's factor.
    ``sqnorms`` (n,) float32: ``|x|^2`` (for L2 estimates; a holder may drop it for ``"ip"``). With ``bits=2``: ``planes`` (n,
    code_size) uint8, the magnitude bits, and ``levels`` (n, 2) float32, the scales of the +-1 code
    and of the signed magnitude plane.
    """

    codes: NDArray[np.uint8]
    factors: NDArray[np.float32]
    sqnorms: NDArray[np.float32] | None = None
    planes: NDArray[np.uint8] | None = None
    levels: NDArray[np.float32] | None = None


class Encoder:
    """Floats to 1-bit (optionally 2-bit) codes with a rotation and an offset; see the module doc.

    ``dim``: float dimension (None: taken from the first ``fit``). ``rotation``: None, ``"random"``,
    ``"itq"``, or a ``(dim, dim)`` orthogonal float matrix (checked). ``offset``: ``"zero"`` (sign bits), ``"median"`` / ``"mean"`` (fitted per
    rotated dimension; ``"mean"`` is RaBitQ's centring), or a ``(dim,)`` array in the rotated space.
    A number is one offset for every dimension (``annbin.binarize``'s scalar threshold). ``bits``: 1 or 2. ``seed``: for the random rotation and ITQ's start.
    """

    def __init__(self, dim: int | None = None, *, rotation: str | ArrayLike | None = None,
                 offset: str | ArrayLike = "zero", bits: int = 1, seed: int = 0) -> None:
        given = rotation is not None and not isinstance(rotation, str)
        if not given and rotation not in ROTATIONS[:3]:
            raise ValueError(f"rotation must be None, 'random', 'itq' or a (dim, dim) matrix, got {rotation!r}")
        if check_int(bits, "bits", minimum=1) not in (1, 2):
            raise ValueError(f"bits must be 1 or 2, got {bits}")
        self.dim = None if dim is None else check_int(dim, "dim", minimum=1)
        self.bits, self.seed = int(bits), check_int(seed, "seed", minimum=0)
        self.rotation: str | None = "given" if given else rotation  # type: ignore[assignment]
        self.matrix: NDArray[np.float32] | None = None
        if given:
            self._set_matrix(rotation)
        self.offset: NDArray[np.float32] | None = None
        self._offset_rule: str | None = None
        self._offset_value = 0.0
        if isinstance(offset, str):
            if offset not in OFFSETS:
                raise ValueError(f"offset must be one of {OFFSETS}, a number or a (dim,) array, got {offset!r}")
            self._offset_rule = offset
        elif np.ndim(offset) == 0:
            value = np.asarray(offset)
            if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value):
                raise ValueError(f"offset must be a finite number, got {offset!r}")
            self._offset_rule, self._offset_value = "zero", float(value)
        else:
            t = np.asarray(offset)
            if not np.issubdtype(t.dtype, np.number) or t.ndim != 1 or not np.isfinite(t).all():
                raise ValueError(f"offset must be a finite 1-D (dim,) array, got shape {t.shape} dtype {t.dtype}")
            self.dim = self._same_dim(t.shape[0], "offset")
            self.offset = t.astype(np.float32)
        if self.dim is not None and self.rotation == "random":
            self.matrix = random_rotation(self.dim, self.seed)

    # --- set-up -----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """True once the rotation and offset are known (after ``fit``, or given)."""
        return self.dim is not None and self.offset is not None and (self.rotation is None or self.matrix is not None)

    @property
    def code_size(self) -> int:
        """Bytes per code, ``ceil(dim / 8)``."""
        if self.dim is None:
            raise ValueError("the encoder has no dimension yet: fit it first")
        return code_size_for(self.dim)

    def _same_dim(self, dim: int, what: str) -> int:
        if self.dim is not None and dim != self.dim:
            raise ValueError(f"{what} has dimension {dim}, but the encoder's is {self.dim}")
        return dim

    def fit(self, x: ArrayLike) -> Encoder:
        """Learn what is not fixed yet (ITQ rotation, fitted offset) from a sample ``(n, dim)``."""
        v = as_floats(x, self.dim, name="vectors")
        if v.shape[0] == 0:
            raise ValueError("fit needs at least one vector, got shape (0, dim)")
        self.dim = self._same_dim(v.shape[1], "vectors")
        if self.rotation == "random" and self.matrix is None:
            self.matrix = random_rotation(self.dim, self.seed)
        if self.rotation == "itq" and self.matrix is None:
            sample = v[np.random.default_rng(self.seed).permutation(v.shape[0])[:_ITQ_SAMPLE]] if v.shape[0] > _ITQ_SAMPLE else v
            sample = np.asarray(sample, np.float32)
            self.matrix = itq_rotation(sample - sample.mean(axis=0), seed=self.seed)
        if self.offset is None:
            rot = self.rotate(v)
            rule = self._offset_rule
            if rule == "median":
                self.offset = np.median(rot, axis=0).astype(np.float32)
            elif rule == "mean":
                self.offset = rot.mean(axis=0, dtype=np.float64).astype(np.float32)
            else:
                self.offset = np.full(self.dim, self._offset_value, np.float32)
        return self

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("the encoder is not fitted: call fit(x) first (or add data to the index)")

    # --- transforms -------------------------------------------------------------------------
    def rotate(self, x: ArrayLike) -> NDArray[np.float32]:
        """``x @ R`` as float32 ``(n, dim)`` (``x`` itself when there is no rotation)."""
        v = np.asarray(as_floats(x, self.dim), dtype=np.float32)
        return v if self.matrix is None else v @ self.matrix

    def unrotate(self, y: ArrayLike) -> NDArray[np.float32]:
        """The inverse of ``rotate``: ``y @ R.T``."""
        v = np.asarray(as_floats(y, self.dim), dtype=np.float32)
        return v if self.matrix is None else v @ self.matrix.T

    def encode_codes(self, x: ArrayLike) -> NDArray[np.uint8]:
        """Only the 1-bit codes ``(n, code_size)`` uint8 of float vectors ``(n, dim)`` (or queries)."""
        self._require_fitted()
        return binarize(self.rotate(x), self.offset)

    def encode(self, x: ArrayLike) -> Encoded:
        """Codes and per-vector factors of float vectors ``(n, dim)``; see ``Encoded``."""
        self._require_fitted()
        x = as_floats(x, self.dim, name="vectors")
        assert self.offset is not None  # for mypy: _require_fitted checked it
        v = self.rotate(x) - self.offset
        codes = np.packbits(v > 0, axis=1)
        a = np.abs(v)
        l1 = a.sum(axis=1, dtype=np.float64)
        l2 = np.einsum("ij,ij->i", v, v, dtype=np.float64)
        factors = np.divide(l2, l1, out=np.zeros_like(l2), where=l1 > 0).astype(np.float32)
        sqnorms = np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)
        out = Encoded(codes, factors, sqnorms)
        if self.bits == 2:
            tau = _LLOYD_MAX_T * np.sqrt(l2 / v.shape[1])[:, None]
            big = a > tau
            nbig = big.sum(axis=1)
            hi = np.divide(np.where(big, a, 0).sum(axis=1), nbig, out=np.zeros(len(a)), where=nbig > 0)
            lo = np.divide(np.where(big, 0, a).sum(axis=1), v.shape[1] - nbig, out=np.zeros(len(a)), where=nbig < v.shape[1])
            # <v~, v> with v~ = s (lo + (hi - lo) m); scaling by |v|^2 / <v~, v> makes <v~, v> exact
            dot = lo * l1 + (hi - lo) * np.where(big, a, 0).sum(axis=1)
            scale = np.divide(l2, dot, out=np.zeros_like(l2), where=dot > 0)
            out.planes = np.packbits(big, axis=1)
            out.levels = np.stack([lo * scale, (hi - lo) * scale], axis=1).astype(np.float32)
        return out

    def query_offset_scores(self, q_rot: NDArray[np.float32]) -> NDArray[np.float32]:
        """``<offset, q R>`` per rotated query ``(nq, dim)``: the part of ``<x, q>`` no code holds."""
        self._require_fitted()
        assert self.offset is not None  # for mypy: _require_fitted checked it
        return (q_rot @ self.offset).astype(np.float32)

    # --- size and persistence ---------------------------------------------------------------
    def memory_bytes(self) -> int:
        """RAM of the rotation matrix and offset (per-vector data is counted by its holder)."""
        return sum(int(a.nbytes) for a in (self.matrix, self.offset) if a is not None)

    def get_params(self) -> dict[str, Any]:
        """Constructor settings (what ``state`` does not hold as arrays)."""
        return {"dim": self.dim, "rotation": self.rotation, "bits": self.bits, "seed": self.seed,
                "offset_rule": self._offset_rule, "offset_value": self._offset_value}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Arrays that, with ``get_params()``, rebuild a fitted encoder (``from_state``)."""
        out: dict[str, np.ndarray] = {}
        if self.matrix is not None:
            out["rotation"] = self.matrix
        if self.offset is not None:
            out["offset"] = self.offset
        return out

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Encoder:
        """Rebuild an encoder from ``get_params()`` and ``state_arrays()``."""
        rotation = params.get("rotation")
        if rotation == "given":
            if "rotation" not in arrays:
                raise ValueError("saved encoder has a given rotation but no rotation array")
            rotation = arrays["rotation"]
        enc = cls(params.get("dim"), rotation=rotation, bits=int(params.get("bits", 1)),
                  seed=int(params.get("seed", 0)), offset=params.get("offset_rule") or "zero")
        enc._offset_value = float(params.get("offset_value", 0.0))
        if "rotation" in arrays and enc.rotation != "given":
            m = np.asarray(arrays["rotation"], np.float32)
            if enc.dim is not None and m.shape != (enc.dim, enc.dim):
                raise ValueError(f"rotation has shape {m.shape}, expected ({enc.dim}, {enc.dim})")
            enc.matrix = m
        if "offset" in arrays:
            enc.offset = np.asarray(arrays["offset"], np.float32)
        return enc

    def _set_matrix(self, matrix: Any) -> None:
        m = np.asarray(matrix)
        if not np.issubdtype(m.dtype, np.floating):
            raise InputTypeError(f"rotation must be a float matrix, got dtype {m.dtype}")
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"rotation must be a square (dim, dim) matrix, got shape {m.shape}")
        self.dim = self._same_dim(m.shape[0], "rotation")
        if not np.isfinite(m).all() or np.abs(m @ m.T - np.eye(m.shape[0])).max() > 1e-3:
            raise ValueError("rotation must be orthogonal (R @ R.T == I) and finite")
        self.matrix = m.astype(np.float32)
