"""Data loading shared by the benchmark scripts: a named dataset, optionally cut to its first dims."""

from __future__ import annotations

from typing import Any

import numpy as np

from annbin.bench.datasets import ArrayDataset, get_dataset


def load(name: str, *, dims: int | None, max_queries: int | None, k: int) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """``(dataset, base, queries, exact float top-k ids)``; ``dims`` keeps the first N dimensions,
    renormalized: a smaller model from a Matryoshka or PCA-ordered one."""
    ds = get_dataset(name)
    base = np.ascontiguousarray(ds.get_database(), dtype=np.float32)
    queries = np.ascontiguousarray(ds.get_queries()[:max_queries], dtype=np.float32)
    if dims:
        ds = ArrayDataset(base[:, :dims], queries[:, :dims], metric=ds.metric, normalize=True, name=f"{ds.name}[:{dims}]").load()
        base, queries = ds.get_database(), ds.get_queries()
    _, gt = ds.get_groundtruth(k)
    return ds, base, queries, gt[: len(queries), :k]


def load_prefix(name: str, n: int, k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(base, queries, exact top-k ids)`` of the first ``n`` rows of a set read in prefixes
    (``m2v_mpnet_10m``): rows by plain reads, both unit-normalized, truth by faiss inner product."""
    import faiss

    from annbin.bench.datasets import built_dir
    from annbin.bench.formats import read_npy_rows

    folder = built_dir() / name
    x = read_npy_rows(folder / "base.npy", 0, n)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.load(folder / "queries.npy").astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q, faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
