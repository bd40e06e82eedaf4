"""Exact float kNN (faiss, blocked) and its on-disk cache, for ``annbin.bench.datasets``.

A cache file is an ``.npz`` holding ``D`` float32 ``(nq, K)``, ``I`` int64 ``(nq, K)``, the
dataset's fingerprint and metric, and a sha256 of ``D`` and ``I``. A file that does not load,
or fails any check (key, shape, dtype, id range, checksum), is treated as absent, never trusted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin._measure import float_knn

__all__ = ["cache_dir", "float_knn", "prefix_knn", "read_cached", "scores_for_ids", "write_cached"]



def cache_dir() -> Path:
    """``$ANNBIN_CACHE``, else ``$XDG_CACHE_HOME/annbin``, else ``~/.cache/annbin``."""
    if os.environ.get("ANNBIN_CACHE"):
        return Path(os.environ["ANNBIN_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "annbin"


def scores_for_ids(base: NDArray[np.float32], queries: NDArray[np.float32], ids: NDArray[np.integer],
                   metric: str) -> NDArray[np.float32]:
    """D of given neighbours ``ids`` ``(nq, k)``: inner products or squared L2, float32 ``(nq, k)``."""
    out = np.empty(ids.shape, dtype=np.float32)
    for s in range(0, ids.shape[0], 256):  # blocks keep the (256, k, dim) gather small
        rows, q = base[ids[s:s + 256]], queries[s:s + 256, None, :]
        if metric == "ip":
            out[s:s + 256] = np.einsum("qkd,qkd->qk", rows, q)
        else:
            out[s:s + 256] = ((rows - q) ** 2).sum(axis=2)
    return out


def _checksum(D: NDArray[Any], I: NDArray[Any]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(D).tobytes())
    h.update(np.ascontiguousarray(I).tobytes())
    return h.hexdigest()


def read_cached(path: Path, *, fingerprint: str, metric: str, n: int, nq: int, k: int
                ) -> tuple[NDArray[np.float32], NDArray[np.int64]] | None:
    """The cached ``(nq, k)`` ``(D, I)`` if ``path`` exists and passes every check, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            D, I = z["D"], z["I"]
            ok = (str(z["fingerprint"]) == fingerprint and str(z["metric"]) == metric
                  and D.dtype == np.float32 and I.dtype == np.int64
                  and D.shape == I.shape == (nq, k)
                  and str(z["checksum"]) == _checksum(D, I)
                  and bool(((I >= 0) & (I < n)).all()))
    except Exception:  # noqa: BLE001 -- truncated zip, missing key, not an npz at all: recompute
        return None
    return (D, I) if ok else None


def write_cached(path: Path, D: NDArray[np.float32], I: NDArray[np.int64], *, fingerprint: str,
                 metric: str) -> None:
    """Write the cache file atomically (temp file + rename); failure to write only warns."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, D=D, I=I, fingerprint=fingerprint, metric=metric, checksum=_checksum(D, I))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(f"could not write ground-truth cache {str(path)!r}: {exc}", stacklevel=3)


def prefix_knn(base: Path, queries: NDArray[np.float32], sizes: list[int], k: int, metric: str, *,
               normalize: bool = False, block: int = 100_000, progress: bool = False, done: Any = None) -> dict[int, tuple[NDArray[np.float32], NDArray[np.int64]]]:
    """Exact kNN of ``queries`` in the first ``n`` rows of the ``.npy`` file ``base``, for every
    ``n`` in ``sizes``, in one blockwise pass (``block`` rows read at a time: a file bigger than
    RAM is fine; ``normalize``: each row L2-normalized first, as a ``"cos"`` index sees it).
    ``done(n, D, I)`` is called as each prefix completes (e.g. to cache it)."""
    import faiss

    from annbin.bench.formats import read_npy_rows

    ip = metric == "ip"
    D = np.full((queries.shape[0], k), -np.inf if ip else np.inf, np.float32)
    I = np.full((queries.shape[0], k), -1, np.int64)
    out, top = {}, max(sizes)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=top, desc=f"ground truth ({top:,} x {queries.shape[0]:,}, exact {metric})", unit=" rows", unit_scale=True)
    try:
        lo = 0
        while lo < top:
            hi = min(lo + block, *(n for n in sizes if n > lo))  # a block never crosses a prefix's end
            rows = read_npy_rows(base, lo, hi)
            if normalize:
                rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
            d, i = faiss.knn(queries, rows, min(k, hi - lo),
                             metric=faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
            d, i = np.hstack([D, d]), np.hstack([I, np.where(i >= 0, i + lo, -1)])
            best = np.argsort(-d if ip else d, axis=1, kind="stable")[:, :k]
            D, I = np.take_along_axis(d, best, 1), np.take_along_axis(i, best, 1)
            if bar is not None:
                bar.update(hi - lo)
            if hi in sizes:
                out[hi] = (D.copy(), I.copy())
                if done is not None:
                    done(hi, out[hi][0], out[hi][1])
            lo = hi
    finally:
        if bar is not None:
            bar.close()
    return out
