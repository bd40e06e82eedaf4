"""The plain ``annbin bench``: the comparison a user comes for.

The default run is a plan of bench configs over one dataset (loaded once, ``annbin.bench.run.load_data``):

1. sign codes, flat and binary HNSW: what binarization loses, and float rescoring of 4 / 10 x k
   Hamming candidates winning it back;
2. the default ``BinaryEmbeddingIndex()`` first stage: rabitqlib's HNSW over 2-bit RaBitQ codes
   (``rq-hnsw``), the best 2 x k rescored with floats, with a small ``ef_search`` sweep;
3. the floats a user would otherwise keep: exact ``float-flat`` and hnswlib (``float-hnsw``) with a
   small ``ef`` sweep;
4. peer libraries, where installed (``annbin.bench.peers``: faiss HNSW-SQ8, usearch, ScaNN, rabitqlib's
   HNSW and SymphonyQG), each with a small sweep; a missing one is skipped with one line.

Rescoring reads the floats memory-mapped from a ``.npy``, so ``bytes/vec`` is what stays in RAM:
the point of storing bits. Options a user gives (``--vectors``, ``--oversample``, ``--k``, ...) apply
to every part and win over the plan's.

``annbin.bench.report.summary_line`` then compares the fastest binary row at recall >= 0.95 with hnswlib
and with the fastest peer row at the same recall.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_PLAN", "plan_settings", "run_plan"]

DEFAULT_PLAN: tuple[dict[str, Any], ...] = (
    {"indexes": ["flat", "hnsw:M=16,ef_search=16"], "oversample": [4, 10], "vectors": "mmap"},
    # the no-argument BinaryEmbeddingIndex (embedding_index.DEFAULT_SPEC, oversample 2)
    {"indexes": ["rq-hnsw:M=16,nbits=2,ef_construction=100,ef_search=32|48|192"], "oversample": [2], "vectors": "mmap"},
    {"indexes": ["float-flat", "float-hnsw:M=16,ef=16|24|32|64"]},
    # peer libraries that are installed (annbin[peers]; one line for each that is not): sweeps that
    # straddle recall@10 0.95 on the shipped set, builds of ~5-15 s each on one core (ef_construction
    # below the libraries' defaults keeps them there); usearch's int8 recall levels off near 0.95
    {"indexes": ["faiss-hnsw-sq8:M=16,ef_construction=64,ef=16|24|48", "usearch:M=16,ef_construction=64,ef=32|64|96",
                 "scann:leaves_to_search=10|20|40,reorder=40", "rabitqlib-hnsw:M=16,ef_construction=64,ef_search=16|32|64",
                 "rabitqlib-symqg:max_degree=32,ef_construction=100,ef_search=24|32|48"]},
)


def plan_settings(given: dict[str, Any]) -> list[dict[str, Any]]:
    """BenchConfig fields for each part of ``DEFAULT_PLAN``, the user's ``given`` settings winning."""
    return [{**part, **given} for part in DEFAULT_PLAN]


def run_plan(configs: list[Any], *, progress: bool = False,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run ``annbin.bench.run.BenchConfig``s of one dataset in turn (its floats and float ground truth
    loaded once); returns all rows in order."""
    from annbin.bench.run import load_data, run_bench

    for cfg in configs:
        cfg.validate()  # every part's bad input fails before any part spends time
    data = load_data(configs[0], progress)
    rows: list[dict[str, Any]] = []
    for cfg in configs:
        rows += run_bench(cfg, progress=progress, on_row=on_row, data=data)
    return rows
