"""Result rows: one JSON object per measured setting, built in one place for bench and tune runs.

Keys: ``dataset``, ``index`` and ``params`` (the variant and every setting), ``spec``,
``oversample`` / ``rerank_oversample`` (the float rescoring and asymmetric stage, None when off),
``library``, ``rotation``, ``k``, ``n``, ``nq``, ``dim``, ``metric``, ``bits`` (code width, None
for float indexes), ``recall_float`` (against exact float search), ``recall_hamming`` /
``recall_hamming_ids`` / ``kendall_tau`` (codes-only rows), ``qps``, ``latency_p50/p95/p99_ms``,
``threads``, ``build_s``, ``index_bytes`` (the first stage), ``bytes_per_vector`` (RAM of what
answers the query), ``compression_vs_float32``, ``host`` and ``machine``; then what a run adds
(``rescore_vectors``, ``disk_bytes_per_vector``, the search stats, ``qb``, ``tune``).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annbin.bench.machine import machine_facts
from annbin.spec import describe_spec

__all__ = ["append_rows", "make_row", "percentiles", "read_rows"]


def percentiles(seconds: NDArray[np.float64] | None) -> dict[str, float | None]:
    """``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms`` of per-query seconds (None if none)."""
    have = seconds is not None and seconds.size > 0
    return {f"latency_p{p}_ms": float(np.percentile(seconds, p) * 1e3) if have else None for p in (50, 95, 99)}  # type: ignore[arg-type]


def make_row(*, dataset: str, spec: str, params: dict[str, Any], k: int, n: int, nq: int, dim: int, metric: str,
             library: str, recall_float: float, qps: float, threads: int, build_s: float, index_bytes: int,
             ram_bytes: int | None = None, oversample: int | None = None, rerank_oversample: int | None = None,
             rotation: str | None = None, bits: int | None = None, latencies: NDArray[np.float64] | None = None,
             **extra: Any) -> dict[str, Any]:
    """One row. ``params``: the search settings measured (over the spec's own); ``ram_bytes``: RAM
    of what answered (default ``index_bytes``); ``latencies``: per-query seconds; ``extra``: keys
    appended as given."""
    described = describe_spec(spec)
    ram = index_bytes if ram_bytes is None else ram_bytes
    row: dict[str, Any] = {
        "dataset": dataset, "index": described["index"], "params": {**described["params"], **params}, "spec": spec,
        "oversample": oversample, "rerank_oversample": rerank_oversample, "library": library, "rotation": rotation,
        "k": k, "n": n, "nq": nq, "dim": dim, "metric": metric, "bits": bits, "recall_float": recall_float,
        "recall_hamming": None, "recall_hamming_ids": None, "kendall_tau": None, "qps": qps, **percentiles(latencies),
        "threads": threads, "build_s": build_s, "index_bytes": index_bytes, "bytes_per_vector": ram / n,
    }
    row.update(extra)
    row["compression_vs_float32"] = dim * 4 / row["bytes_per_vector"] if ram else None
    row["host"], row["machine"] = platform.node(), dict(machine_facts())
    return row


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSON Lines file (one object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
