"""Shared fixtures and data makers for the test suite."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import numpy as np
import pytest

# Keep faiss from spinning two OpenMP threads against pytest on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ANNBIN_HIDE_RABITQLIB=1 runs the suite as where rabitqlib is missing: its import fails (a None
# entry), the default BinaryEmbeddingIndex falls back to faiss, and pytest.importorskip("rabitqlib")
# skips the tests that need it (CI runs the default index's tests this way too, .ci/run).
if os.environ.get("ANNBIN_HIDE_RABITQLIB") == "1":
    sys.modules["rabitqlib"] = None


def clustered_codes(rng: np.random.Generator, n: int, code_size: int, *, n_clusters: int = 8, flip: float = 0.08) -> np.ndarray:
    """Codes near a few random centres: each bit flipped with probability ``flip``."""
    centres = rng.integers(0, 2, size=(n_clusters, code_size * 8), dtype=np.uint8)
    bits = centres[rng.integers(0, n_clusters, size=n)]
    bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
    return np.packbits(bits, axis=1)


def popcount_knn(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Reference: the k smallest Hamming distances per query, by plain numpy popcount."""
    dist = np.bitwise_count(queries[:, None, :] ^ base[None, :, :]).sum(axis=2, dtype=np.int64)
    kk = min(k, base.shape[0])
    out = np.full((queries.shape[0], k), np.iinfo(np.int32).max, dtype=np.int64)
    out[:, :kk] = np.sort(dist, axis=1)[:, :kk]
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def reference_costs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MIH decides (fallbacks, ``method="auto"``) by its reference cost model, not by what this
    process timed: ``ANNBIN_MIH_CALIBRATE=0``, and no calibration cached before or after."""
    from annbin.index.mih._calibrate import CALIBRATE_ENV, calibrated_costs

    monkeypatch.setenv(CALIBRATE_ENV, "0")
    calibrated_costs.cache_clear()
    yield
    calibrated_costs.cache_clear()
