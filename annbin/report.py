"""Tables and plots made from result rows (the JSON objects ``annbin.bench`` writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = [
    ("index", "index"),
    ("params", "params"),
    ("recall_float", "recall@k float"),
    ("recall_hamming", "recall@k hamming (ties)"),
    ("vectors_read_per_query", "floats read/q"),
    ("qps", "queries/s"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
    ("build_s", "build s"),
    ("bytes_per_vector", "bytes/vec"),
]


def label(row: dict[str, Any]) -> str:
    """Display name of a row's method: the variant, ``+asym`` with an asymmetric rerank, ``+rescore``
    when rescored with floats."""
    return row["index"] + ("+asym" if row.get("rerank") else "") + ("+rescore" if row.get("rescore") else "")


def _fmt(key: str, value: Any, row: dict[str, Any]) -> str:
    if value is None:
        return "-"
    if key == "index":
        return label(row)
    if key == "params":
        items = dict(value)
        if row.get("rescore"):
            items["oversample"] = row["rescore"]
        if row.get("rerank"):
            items["rerank"] = row["rerank"]
        if row.get("rotation"):
            items["rotation"] = row["rotation"]
        return ",".join(f"{k}={v}" for k, v in items.items()) or "-"
    if key.startswith("recall"):
        return f"{value:.3f}"
    if key == "qps":
        return f"{value:,.0f}"
    if key == "bytes_per_vector":
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def results_table(rows: list[dict[str, Any]], title: str | None = None) -> Any:
    """A ``rich.table.Table`` of the rows."""
    from rich.table import Table

    table = Table(title=title)
    for _, header in COLUMNS:
        table.add_column(header, justify="left" if header in ("index", "params") else "right")
    for row in rows:
        table.add_row(*(_fmt(key, row.get(key), row) for key, _ in COLUMNS))
    return table


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a GitHub-flavoured Markdown table (same columns as ``results_table``)."""
    lines = ["| " + " | ".join(header for _, header in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" if key in ("index", "params") else "---:" for key, _ in COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_fmt(key, row.get(key), row) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten in both recall (x) and queries/s (y), sorted by recall."""
    best: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not best or y > best[-1][1]:
            best.append((x, y))
    return sorted(best)


def plot_recall_qps(rows: list[dict[str, Any]], path: str | Path, *, recall_key: str = "recall_float") -> Path:
    """Recall (x) vs queries/s (y, log), Pareto frontier per method, as ann-benchmarks draws it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get(recall_key) is not None:
            groups.setdefault(label(row), []).append((row[recall_key], row["qps"]))
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, points in sorted(groups.items()):
        front = pareto_frontier(points)
        line = ax.plot([p[0] for p in front], [p[1] for p in front], marker="o", label=name)[0]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=line.get_color(), alpha=0.3, s=12)
    first = rows[0] if rows else {}
    ax.set_xlabel(f"recall@{first.get('k', 'k')} vs exact {'float' if recall_key == 'recall_float' else 'Hamming'} search")
    ax.set_ylabel("queries/s (log)")
    ax.set_yscale("log")
    ax.set_title(f"{first.get('dataset', '')}: recall vs speed ({first.get('threads', 1)} thread(s))")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
