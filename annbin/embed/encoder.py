"""Better 1-bit codes when the floats are known at build time: rotation, thresholds, RaBitQ factors.

An ``Encoder`` maps float vectors ``x`` (``(n, dim)``) to a *plain packed code* — the same
``(n, ceil(dim / 8))`` uint8 codes every annbin index stores, so Hamming search still works — plus
what an asymmetric scorer needs to estimate ``<x, q>`` from the code and a float query::

    v      = x @ R - t              R: (dim, dim) orthogonal rotation (identity when rotation=None)
    code   = packbits(v > 0)        bit order as annbin.quantize (MSB first, rows padded)
    factor = |v|_2^2 / |v|_1        RaBitQ's per-vector correction (one float32 a vector)

With ``s = 2 * bits - 1`` (the +-1 code), RaBitQ's estimator is ``<v, q R> ~ factor * (s . q R)``
and ``<x, q> = <v, q R> + <t, q R>`` (the last term is the same for every document of a query).
``t`` are the ``thresholds``, one per rotated dimension (``annbin.binarize``'s thresholds, in the
rotated space): 0 (sign bits), a fitted median / mean (``"mean"`` is RaBitQ's centring), or given.

``rerank_bits=2`` keeps a second bit plane beside the 1-bit code: ``m = |v| > tau`` (tau = 0.9816
|v|_2 / sqrt(dim), the 4-level Lloyd-Max threshold for Gaussian coordinates, which a random
rotation makes them), with two per-vector levels (the mean |v| of the small and of the large
coordinates). Scores then use ``v ~ s * (lo + (hi - lo) * m)`` rescaled so that the estimate of
``<v, v>`` is exact.

Rotations: ``"random"`` (a seeded Haar-random orthogonal matrix, as RaBitQ) or ``"itq"``
(iterative quantization, Gong & Lazebnik 2011: the orthogonal R that minimises the sign
quantization error of the centred data, learned on a sample). A rotation costs ``dim^2`` floats of
RAM and one ``(nq, dim) @ (dim, dim)`` product per query batch.

Each option has one check here (``check_rotation``, ``check_thresholds``, ``check_rerank_bits``),
which every class taking the option calls.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import InputTypeError, as_floats, check_int
from annbin.quantize import binarize, code_size_for

#: rotations by name; a ``(dim, dim)`` orthogonal matrix is also accepted (then ``rotation == "given"``)
ROTATIONS: tuple[str | None, ...] = (None, "random", "itq")
#: thresholds by rule: ``"zero"`` (sign bits; also spelt None), fitted ``"median"`` or ``"mean"``
THRESHOLD_RULES: tuple[str, ...] = ("zero", "median", "mean")
RERANK_BITS: tuple[int, ...] = (1, 2)
_LLOYD_MAX_T = 0.9816  # 4-level Lloyd-Max threshold for N(0, 1)
# ITQ learns on a sample of at most this many rows, for this many iterations: more of either bought
# no recall on the shipped MiniLM set (benchmarks/RESULTS.md)
_ITQ_SAMPLE = 20_000
_ITQ_ITERATIONS = 20

__all__ = [
    "RERANK_BITS", "ROTATIONS", "THRESHOLD_RULES", "Encoded", "Encoder", "check_rerank_bits", "check_rotation",
    "check_thresholds", "itq_rotation", "random_rotation",
]


def check_rotation(rotation: str | ArrayLike | None) -> str | NDArray[np.float32] | None:
    """``rotation`` checked: None, ``"random"``, ``"itq"`` (returned as given), or a square
    orthogonal float matrix (returned float32). ``ValueError`` otherwise; ``TypeError`` for a
    matrix that is not float."""
    if rotation is None or isinstance(rotation, str):
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be None, 'random', 'itq' or a (dim, dim) matrix, got {rotation!r}")
        return rotation
    m = np.asarray(rotation)
    if not np.issubdtype(m.dtype, np.floating):
        raise InputTypeError(f"rotation must be a float matrix, got dtype {m.dtype}")
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"rotation must be a square (dim, dim) matrix, got shape {m.shape}")
    if not np.isfinite(m).all() or np.abs(m @ m.T - np.eye(m.shape[0])).max() > 1e-3:
        raise ValueError("rotation must be orthogonal (R @ R.T == I) and finite")
    return m.astype(np.float32)


def check_thresholds(thresholds: str | ArrayLike | None) -> str | float | NDArray[np.float32]:
    """``thresholds`` checked: None or ``"zero"`` give ``"zero"``; ``"median"`` / ``"mean"`` as
    given; a finite number as a float (one threshold for every dimension); a finite 1-D array as
    float32 ``(dim,)``. ``ValueError`` otherwise."""
    if thresholds is None:
        return "zero"
    if isinstance(thresholds, str):
        if thresholds not in THRESHOLD_RULES:
            raise ValueError(f"thresholds must be None, 'zero', 'median', 'mean', a number or a (dim,) array, got {thresholds!r}")
        return thresholds
    t = np.asarray(thresholds)
    real = np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)
    if not real or t.ndim > 1 or not np.isfinite(t).all():
        raise ValueError(f"thresholds must be a finite number or a finite 1-D (dim,) array, got shape {t.shape} dtype {t.dtype}")
    return float(t) if t.ndim == 0 else t.astype(np.float32)


def check_rerank_bits(rerank_bits: int) -> int:
    """``rerank_bits`` checked: 1 (the code only) or 2 (a second bit plane for the rerank)."""
    bits = check_int(rerank_bits, "rerank_bits", minimum=1)
    if bits not in RERANK_BITS:
        raise ValueError(f"rerank_bits must be 1 or 2, got {bits}")
    return bits


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
        # one BLAS thread: at (dim, dim) more threads gain nothing and spin against other work on shared cores
        with threadpool_limits(limits=1, user_api="blas"):
            u, _, wt = np.linalg.svd((v.T @ b).astype(np.float64))
        r = (u @ wt).astype(np.float32)
    return r


@dataclass
class Encoded:
    """What ``Encoder.encode`` returns for ``n`` vectors.

    ``codes`` (n, code_size) uint8: the 1-bit code. ``factors`` (n,) float32: RaBitQ's factor.
    ``sqnorms`` (n,) float32: ``|x|^2`` (for L2 estimates; a holder may drop it for ``"ip"``).
    With ``rerank_bits=2``: ``planes`` (n, code_size) uint8, the magnitude bits, and ``levels``
    (n, 2) float32, the scales of the +-1 code and of the signed magnitude plane.
    """

    codes: NDArray[np.uint8]
    factors: NDArray[np.float32]
    sqnorms: NDArray[np.float32] | None = None
    planes: NDArray[np.uint8] | None = None
    levels: NDArray[np.float32] | None = None

    def rerank_nbytes(self) -> int:
        """Bytes of what a rerank reads beside the codes (an index holds those): factors, squared
        norms, planes and levels."""
        return sum(int(a.nbytes) for a in (self.factors, self.sqnorms, self.planes, self.levels) if a is not None)

    def append(self, new: Encoded) -> Encoded:
        """These rows followed by ``new``'s (an array that either lacks is dropped)."""
        def both(name: str) -> Any:
            old, more = getattr(self, name), getattr(new, name)
            return None if old is None or more is None else np.concatenate([old, more])
        return Encoded(*(both(f.name) for f in fields(self)))


class Encoder:
    """Floats to 1-bit (optionally 2-bit) codes with a rotation and thresholds; see the module doc.

    Parameters
    ----------
    dim
        Float dimension; None takes it from the first ``fit`` (or from a given rotation or
        thresholds array).
    rotation
        None (no rotation), ``"random"`` (seeded Haar-random), ``"itq"`` (learned by ``fit``), or a
        ``(dim, dim)`` orthogonal float matrix (checked; then ``rotation == "given"``).
    thresholds
        Per rotated dimension, what a bit compares against: None or ``"zero"`` (sign bits),
        ``"median"`` / ``"mean"`` (fitted by ``fit``; ``"mean"`` is RaBitQ's centring), a number
        (one for every dimension, as ``annbin.binarize``'s scalar), or a ``(dim,)`` array in the
        rotated space. The fitted values are the ``thresholds`` attribute, float32 ``(dim,)``.
    rerank_bits
        1, or 2 to keep a second bit plane (``Encoded.planes`` / ``levels``) for the asymmetric rerank.
    seed
        Seed of the random rotation and of ITQ's start.
    """

    def __init__(self, dim: int | None = None, *, rotation: str | ArrayLike | None = None,
                 thresholds: str | ArrayLike | None = None, rerank_bits: int = 1, seed: int = 0) -> None:
        checked_rotation = check_rotation(rotation)
        setting = check_thresholds(thresholds)
        self.rerank_bits = check_rerank_bits(rerank_bits)
        self.dim = None if dim is None else check_int(dim, "dim", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.matrix: NDArray[np.float32] | None = None
        self.rotation: str | None
        if isinstance(checked_rotation, np.ndarray):
            self.dim = self._same_dim(checked_rotation.shape[0], "rotation")
            self.rotation, self.matrix = "given", checked_rotation
        else:
            self.rotation = checked_rotation
        #: the fitted thresholds, float32 ``(dim,)`` in the rotated space (None until known)
        self.thresholds: NDArray[np.float32] | None = None
        self._thresholds_setting: str | float  # a rule, one number, or "given" (the array above)
        if isinstance(setting, np.ndarray):
            self.dim = self._same_dim(setting.shape[0], "thresholds")
            self._thresholds_setting, self.thresholds = "given", setting
        else:
            self._thresholds_setting = setting
        if self.dim is not None and self.rotation == "random":
            self.matrix = random_rotation(self.dim, self.seed)

    # --- set-up -----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """True once the rotation and thresholds are known (after ``fit``, or given)."""
        return self.dim is not None and self.thresholds is not None and (self.rotation is None or self.matrix is not None)

    @property
    def learns(self) -> bool:
        """True while ``fit`` has something to learn from the data (an ITQ rotation, median / mean
        thresholds): then the rows it sees decide the codes (``BinaryEmbeddingIndex`` holds small
        first adds until it has ``FIT_ROWS`` of them)."""
        return (self.rotation == "itq" and self.matrix is None) or (self.thresholds is None and self._thresholds_setting in ("median", "mean"))

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
        """Learn what is not fixed yet (ITQ rotation, fitted thresholds) from a sample ``(n, dim)``."""
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
        if self.thresholds is None:
            rule = self._thresholds_setting
            if rule == "median":
                self.thresholds = np.median(self.rotate(v), axis=0).astype(np.float32)
            elif rule == "mean":
                self.thresholds = self.rotate(v).mean(axis=0, dtype=np.float64).astype(np.float32)
            else:
                self.thresholds = np.full(self.dim, 0.0 if rule == "zero" else float(rule), np.float32)
        return self

    def _fitted_thresholds(self) -> NDArray[np.float32]:
        if not self.is_fitted or self.thresholds is None:
            raise ValueError("the encoder is not fitted: call fit(x) first (or add data to the index)")
        return self.thresholds

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
        return binarize(self.rotate(x), self._fitted_thresholds())

    def encode(self, x: ArrayLike) -> Encoded:
        """Codes and per-vector factors of float vectors ``(n, dim)``; see ``Encoded``."""
        thresholds = self._fitted_thresholds()
        x = as_floats(x, self.dim, name="vectors")
        v = self.rotate(x) - thresholds
        codes = np.packbits(v > 0, axis=1)
        a = np.abs(v)
        l1 = a.sum(axis=1, dtype=np.float64)
        l2 = np.einsum("ij,ij->i", v, v, dtype=np.float64)
        factors = np.divide(l2, l1, out=np.zeros_like(l2), where=l1 > 0).astype(np.float32)
        sqnorms = np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)
        out = Encoded(codes, factors, sqnorms)
        if self.rerank_bits == 2:
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

    def query_threshold_scores(self, q_rot: NDArray[np.float32]) -> NDArray[np.float32]:
        """``<t, q R>`` per rotated query ``(nq, dim)``: the part of ``<x, q>`` no code holds."""
        return (q_rot @ self._fitted_thresholds()).astype(np.float32)

    # --- size and persistence ---------------------------------------------------------------
    def memory_bytes(self) -> int:
        """RAM of the rotation matrix and thresholds (per-vector data is counted by its holder)."""
        return sum(int(a.nbytes) for a in (self.matrix, self.thresholds) if a is not None)

    def get_params(self) -> dict[str, Any]:
        """Constructor settings, JSON-able (a given rotation or thresholds array is ``"given"``:
        ``state_arrays`` holds it)."""
        return {"dim": self.dim, "rotation": self.rotation, "thresholds": self._thresholds_setting,
                "rerank_bits": self.rerank_bits, "seed": self.seed}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Arrays that, with ``get_params()``, rebuild a fitted encoder (``from_state``)."""
        return {name: a for name, a in (("rotation", self.matrix), ("thresholds", self.thresholds)) if a is not None}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Encoder:
        """Rebuild an encoder from ``get_params()`` and ``state_arrays()``."""
        given = {name: params.get(name) == "given" for name in ("rotation", "thresholds")}
        for name, needed in given.items():
            if needed and name not in arrays:
                raise ValueError(f"saved encoder has given {name} but no {name} array")
        enc = cls(params.get("dim"), rotation=arrays["rotation"] if given["rotation"] else params.get("rotation"),
                  thresholds=arrays["thresholds"] if given["thresholds"] else params.get("thresholds"),
                  rerank_bits=int(params.get("rerank_bits", 1)), seed=int(params.get("seed", 0)))
        if "rotation" in arrays and not given["rotation"]:
            m = np.asarray(arrays["rotation"], np.float32)
            if enc.dim is not None and m.shape != (enc.dim, enc.dim):
                raise ValueError(f"rotation has shape {m.shape}, expected ({enc.dim}, {enc.dim})")
            enc.matrix = m
        if "thresholds" in arrays:
            enc.thresholds = np.asarray(arrays["thresholds"], np.float32)
        return enc
