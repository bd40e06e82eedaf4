"""Near-duplicate detection: every pair of codes within a Hamming radius (an exact self-join), and
the groups those pairs connect.

``near_duplicates(codes, radius)`` finds every unordered pair ``i < j`` at distance ``< radius``
(faiss's range rule), exact, by one of two paths:

- **mih** (multi-index hashing, where it pays: small radii): the substring tables are built once
  over all codes (``_tables.build_tables``) and every code probes them as a query, by the steps of
  a range search (``_range.range_hits``): a pair within distance ``< radius`` over ``m`` substrings
  matches some substring within ``(radius - 1) // m`` bits. Each pair is read from its smaller row
  only (at substring radius 0 a code reads the rows after its own in its bucket, where rows ascend;
  further out, hits with a smaller row are dropped before anything else is done with them) and kept
  at the first step that finds it (``_range.SelfJoin``), so pairs are counted exactly as they
  arrive, with no sort to drop repeats.
- **scan** (where the radius makes MIH slower): a faiss ``IndexBinaryFlat`` range search of each
  block of codes over the codes from the block's first row on (a pair is read from its smaller row:
  half of a full self-join's scan), keeping ``j > i``.

``method="auto"`` takes the path the cost model (``_cost``; constants measured on this machine,
``_calibrate``) predicts to be cheaper, as ``MIHIndex.range_search`` decides between its tables
and a scan: MIH's expected per-code cost at ``radius`` (``range_cost``, with the number of tables
``m`` that minimises it, ``range_m``) against a scan of half the codes. On the MIH path a code
whose buckets turn out far fuller than that estimate (skewed data) is scanned instead.

Memory stays bounded: codes are joined in blocks of ``_selfjoin.JOIN_BLOCK`` queries (the blocks
and both paths are in ``_selfjoin``), each block's pairs packed into one int64 each (row in the
block, other row, distance), and ``max_pairs`` is checked against the running count after every
step of every block, so a radius that would yield too many pairs fails before filling memory.
``last_join_stats()`` says which path ran and what it did.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError, as_codes, as_ids, check_int
from annbin.index.mih._calibrate import calibrated_costs
from annbin.index.mih._cost import COSTS, range_cost, range_m
from annbin.index.mih._selfjoin import MIHJoin, Packing, Tally, run_blocks, scan_pairs
from annbin.index.mih._tables import check_m, substring_layout

METHODS = ("auto", "mih", "scan")

_STATS = threading.local()


def last_join_stats() -> dict[str, Any] | None:
    """What this thread's last ``near_duplicates`` call did (None before its first): ``method``
    (the path that ran, ``"mih"`` or ``"scan"``; None when there was nothing to join: fewer than
    two codes, or ``radius < 1``), ``m`` (tables; None on the scan path),
    ``codes``, ``radius``, ``pairs``, ``scan_queries`` (codes answered by the scan: all of them on
    the scan path, the skewed ones on the MIH path), ``blocks``, ``threads`` and ``seconds``."""
    stats: dict[str, Any] | None = getattr(_STATS, "value", None)
    return stats


def near_duplicates(codes: NDArray[np.uint8], radius: int, *, ids: NDArray[np.int64] | None = None,
                    num_threads: int | None = None, max_pairs: int = 10_000_000, progress: bool = False,
                    method: str = "auto", m: int | None = None) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Every pair of codes at Hamming distance ``< radius``: an exact all-pairs join.

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, d // 8)
        Packed binary codes (``np.packbits`` order; any order gives the same distances), ``d`` bits
        each. Another dtype is a ``TypeError``, another shape a ``ValueError``.
    radius : int
        Pairs at distance strictly below it (faiss's range rule): 1 finds exact duplicates only
        (distance 0); below 1, nothing.
    ids : ndarray of int64, shape (n,), optional
        A label per code (unique, >= 0): the pairs then hold labels, the smaller first.
    num_threads : int, optional
        Threads (MIH path: query blocks on a thread pool; scan path: faiss's OpenMP threads).
        ``None`` (default): ``faiss.omp_get_max_threads()``, all cores unless OpenMP was told
        otherwise (``OMP_NUM_THREADS``, ``faiss.omp_set_num_threads``), as ``MIHIndex`` does.
        Results do not depend on it.
    max_pairs : int
        More pairs than this is a ``ValueError``, raised as soon as the running count passes it.
    progress : bool
        Show a tqdm progress bar over the query blocks.
    method : {"auto", "mih", "scan"}
        ``"auto"`` (default): the path the cost model predicts cheaper; the others force one.
    m : int, optional
        Tables for the MIH path (default: the cheapest by the cost model at this radius).

    Returns
    -------
    pairs : ndarray of int64, shape (npairs, 2)
        Each unordered pair once, ``pairs[:, 0] < pairs[:, 1]`` (rows, or ``ids`` if given).
    distances : ndarray of int32, shape (npairs,)
        Their Hamming distances. Pairs come sorted by (distance, first, second).
    """
    x = _check_codes(codes)
    radius = check_int(radius, "radius")
    max_pairs = check_int(max_pairs, "max_pairs", minimum=0)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    threads = max(1, faiss.omp_get_max_threads()) if num_threads is None else check_int(num_threads, "num_threads", minimum=1)
    n, d = x.shape[0], 8 * x.shape[1]
    m = None if m is None else check_m(m, d)
    labels = None
    if ids is not None:
        ids = as_ids(ids, n)
        order = np.argsort(ids, kind="stable")
        x, labels = x.take(order, axis=0), ids.take(order)  # rows in id order: (row, row) order is (id, id) order
    started = time.perf_counter()
    stats: dict[str, Any] = {"method": None, "m": None, "codes": n, "radius": radius,
                             "pairs": 0, "scan_queries": 0, "blocks": 0, "threads": threads}
    _STATS.value = stats
    radius = min(radius, d + 1)  # every distance is at most d
    if n < 2 or radius < 1:
        stats["seconds"] = time.perf_counter() - started
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.int32)
    stats["method"], m = join_plan(n, d, radius, method, m)
    packing = Packing(n, d, radius)
    tally = Tally(max_pairs, radius, n)
    blocks = [(a, min(n, a + packing.block)) for a in range(0, n, packing.block)]
    stats["blocks"] = len(blocks)
    if stats["method"] == "scan":
        stats["scan_queries"] = n
        keys = run_blocks(lambda a, b: scan_pairs(x, np.arange(a, b), a, radius, packing, tally, threads), blocks, 1,
                           progress)  # one block at a time: faiss spreads each over the threads
    else:
        stats["m"] = m
        mih = MIHJoin(x, m, radius, packing, tally, calibrated_costs() if method == "auto" else None, stats, threads)
        keys = run_blocks(mih.block, blocks, threads, progress)
    pairs, dist = packing.unpack(blocks, keys)
    stats["pairs"] = int(dist.size)
    stats["seconds"] = time.perf_counter() - started
    return (pairs if labels is None else labels.take(pairs)), dist


def join_plan(n: int, d: int, radius: int, method: str = "auto", m: int | None = None) -> tuple[str, int]:
    """The path (``"mih"`` or ``"scan"``) and the number of tables ``near_duplicates`` uses to join
    ``n`` codes of ``d`` bits at ``radius`` (``1 <= radius <= d + 1``) with ``method`` and ``m``.

    ``m=None``: the ``m`` with the smallest expected cost per code (``range_m``). ``"auto"``: MIH
    unless that cost exceeds a scan of half the codes (a code is read against the codes after it),
    priced by this machine's cost model (``calibrated_costs``), as ``MIHIndex.range_search`` decides.
    """
    costs = calibrated_costs() if method == "auto" else COSTS
    if m is None:
        m, mih_cost = range_m(d, n, radius, n, costs)
    else:
        mih_cost = range_cost(tuple(substring_layout(d, m)[1].tolist()), n, -(-d // 64), radius, n, costs)
    if method == "auto":
        method = "scan" if mih_cost > costs.flat_cost((n + 1) // 2, d) else "mih"
    return method, m


def _check_codes(codes: Any) -> NDArray[np.uint8]:
    """``codes`` as C-contiguous uint8 ``(n, d // 8)``, ``d >= 8``; the join needs no 1-D shorthand."""
    if isinstance(codes, np.ndarray) and codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, d // 8) uint8, got shape {codes.shape}")
    x = as_codes(codes)
    if x.shape[1] == 0:
        raise ValueError(f"codes must hold at least 8 bits each, got shape {x.shape}")
    if x.shape[0] >= 2**31 - 1:
        raise ValueError(f"near_duplicates joins fewer than 2**31 codes, got {x.shape[0]}")
    return x


def duplicate_groups(pairs: NDArray[np.integer], n: int) -> NDArray[np.int64]:
    """Connected components of the graph on ``n`` items whose edges are ``pairs``.

    ``pairs``: integer ``(npairs, 2)``, items ``0 .. n - 1`` (``near_duplicates``' pairs of rows;
    with ``ids``, map them back to rows first). Returns int64 ``(n,)``: each item's group label,
    the smallest item of its group (an item in no pair labels itself).

    Vectorized union-find: each round hooks every root onto the smallest root an edge joins it to,
    then pointer jumping flattens the trees; every group with an edge left to another group merges
    each round, so there are about ``log2`` of the largest group's size rounds.
    """
    n = check_int(n, "n", minimum=0)
    p = pairs if isinstance(pairs, np.ndarray) else np.asarray(pairs)
    if p.size and not np.issubdtype(p.dtype, np.integer):
        raise InputTypeError(f"pairs must be integers, got dtype {p.dtype}")
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pairs must have shape (npairs, 2), got {p.shape}")
    if p.size and (int(p.min()) < 0 or int(p.max()) >= n):
        raise ValueError(f"pairs must hold items 0 .. n - 1 = {n - 1}, got {int(p.min())} .. {int(p.max())}")
    parent = np.arange(n, dtype=np.int64)
    a, b = p[:, 0].astype(np.int64), p[:, 1].astype(np.int64)
    while a.size:
        ra, rb = parent.take(a), parent.take(b)  # roots: parent is flat between rounds
        cross = ra != rb  # an edge inside one tree stays inside it: dropped for good
        a, b, ra, rb = a[cross], b[cross], ra[cross], rb[cross]
        if not a.size:
            break
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))  # parent[x] <= x always: no cycles
        while True:  # pointer jumping until every item points at its root
            up = parent.take(parent)
            if np.array_equal(up, parent):
                break
            parent = up
    return parent
