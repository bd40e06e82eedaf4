"""How indexes that train (IVF k-means, RaBitQ centroids) size and sample their training set."""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

__all__ = ["TRAIN_POINTS_PER_LIST", "TRAIN_SEED", "default_nlist", "training_sample"]

#: k-means sample size per inverted list when an IVF trains itself (faiss warns under 39)
TRAIN_POINTS_PER_LIST = 64
#: seed of the training sample, so a build is reproducible
TRAIN_SEED = 1234

_A = TypeVar("_A", bound=np.ndarray)


def default_nlist(n: int) -> int:
    """``nlist`` chosen when none is given: about ``4 * sqrt(n)`` lists, at least 39 codes each."""
    return int(max(1, min(round(4 * math.sqrt(max(n, 1))), n // 39)))


def training_sample(x: _A, cap: int | None) -> _A:
    """``x`` itself, or ``cap`` of its rows drawn without replacement (kept in order) when longer."""
    if cap is None or x.shape[0] <= cap:
        return x
    rows = np.sort(np.random.default_rng(TRAIN_SEED).choice(x.shape[0], cap, replace=False))
    return x[rows]  # type: ignore[return-value]
