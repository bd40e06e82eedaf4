"""Tables, plots and a self-contained HTML report made from result rows (the JSON objects
``annbin.bench.run`` and ``annbin.tune`` write)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annbin._extras import require

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

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
    when rescored with floats; ``annbin tune`` rows end in `` (trial)`` or `` (tuned)``."""
    name: str = row["index"] + ("+asym" if row.get("rerank_oversample") else "") + ("+rescore" if row.get("oversample") else "")
    half = str((row.get("tune") or {}).get("half"))
    return name + {"tune": " (trial)", "holdout": " (tuned)"}.get(half, "")


TARGET_RECALL = 0.95  # the recall the summary line asks of a binary configuration
#: index variants that hold the floats themselves (every other variant stores codes)
FLOAT_BASELINES = ("float-flat", "float-hnsw")


def describe(row: dict[str, Any]) -> str:
    """A row's method and settings in one string, e.g. ``"hnsw+rescore M=16,ef_search=16,oversample=10"``."""
    params = _fmt("params", row.get("params") or {}, row)
    return label(row) + ("" if params == "-" else f" {params}")


def _fmt(key: str, value: Any, row: dict[str, Any]) -> str:
    if value is None:
        return "-"
    if key == "index":
        return label(row)
    if key == "params":
        return ",".join(f"{k}={v}" for k, v in _param_items(value, row).items()) or "-"
    if key.startswith("recall"):
        return f"{value:.3f}"
    if key == "qps":
        return f"{value:,.0f}"
    if key == "bytes_per_vector":
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _param_items(params: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A row's settings: its index parameters, then the rescore's and rerank's oversample and the rotation."""
    items = dict(params)
    if row.get("oversample"):
        items["oversample"] = row["oversample"]
    if row.get("rerank_oversample"):
        items["rerank_oversample"] = row["rerank_oversample"]
    if row.get("rotation"):
        items["rotation"] = row["rotation"]
    return items


#: terminal columns left out, in this order, while a table is wider than the console (after any
#: column with no value in any row)
DROPPABLE = ("build_s", "latency_p99_ms", "vectors_read_per_query", "latency_p50_ms", "recall_hamming")


def results_table(rows: list[dict[str, Any]], title: str | None = None) -> Any:
    """The rows as a terminal table (a ``rich`` renderable, laid out for the console's width).

    Nothing that tells rows apart is cut: parameters equal in every row are said once, in the
    title, and each row shows the rest, wrapped between parameters; every column is at least as
    wide as its longest word. Where that is wider than the console, the ``DROPPABLE`` columns are
    left out (the caption names them) rather than cut.
    """
    return _ResultsTable(rows, title)


class _ResultsTable:
    def __init__(self, rows: list[dict[str, Any]], title: str | None) -> None:
        params = [_param_items(row.get("params") or {}, row) for row in rows]
        shared = {k: v for k, v in params[0].items() if all(k in p and p[k] == v for p in params)} if len(rows) > 1 else {}
        self.cells = {key: [_fmt(key, row.get(key), row) for row in rows] for key, _ in COLUMNS}
        # ", " between parameters: rich wraps a cell at spaces only
        self.cells["params"] = [", ".join(f"{k}={v}" for k, v in p.items() if k not in shared) or ("" if shared else "-") for p in params]
        every = ", ".join(f"{k}={v}" for k, v in shared.items())
        self.title = "; ".join(filter(None, [title, every and f"every row: {every}"])) or None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.cells import cell_len
        from rich.table import Table

        headers = dict(COLUMNS)
        texts = {key: [headers[key], *cells] for key, cells in self.cells.items()}
        least = {key: max(cell_len(w) for t in ts for w in t.split() or [""]) for key, ts in texts.items()}
        most = {key: max(cell_len(t) for t in ts) for key, ts in texts.items()}
        empty = [key for key, cells in self.cells.items() if key not in ("index", "params") and all(c == "-" for c in cells)]
        shown, dropped = list(self.cells), []
        for key in [*empty, *(k for k in DROPPABLE if k not in empty)]:
            if sum(least[k] for k in shown) + 3 * len(shown) + 1 <= options.max_width:  # "│ " + cell + " " per column, one "│"
                break
            shown.remove(key)
            dropped.append(key)
        width = {key: least[key] for key in shown}
        spare = options.max_width - sum(width.values()) - 3 * len(shown) - 1
        for key in ["params", "index", *(k for k in shown if k not in ("params", "index"))]:  # the settings on one line first
            grow = max(0, min(spare, most[key] - width[key]))
            width[key] += grow
            spare -= grow
        caption = f"not shown at this width: {', '.join(headers[k] for k in dropped)}" if dropped else None
        table = Table(title=self.title, caption=caption)
        for key in shown:
            table.add_column(headers[key], justify="left" if key in ("index", "params") else "right", width=width[key], overflow="fold")
        for i in range(len(self.cells["index"])):
            table.add_row(*(self.cells[key][i] for key in shown))
        yield table


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a GitHub-flavoured Markdown table (same columns as ``results_table``)."""
    lines = ["| " + " | ".join(header for _, header in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" if key in ("index", "params") else "---:" for key, _ in COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_fmt(key, row.get(key), row) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _library(row: dict[str, Any]) -> str:
    """The library that ran a row (rows written before the ``library`` field: annbin's, or hnswlib /
    faiss for the float baselines)."""
    default = "annbin" if row["index"] not in FLOAT_BASELINES else "hnswlib" if row["index"] == "float-hnsw" else "faiss"
    return str(row.get("library") or default)


def _is_binary(row: dict[str, Any]) -> bool:
    return _library(row) == "annbin"


def _is_peer(row: dict[str, Any]) -> bool:
    """A peer library's approximate index (not annbin's, not hnswlib, not the exact float scan)."""
    return _library(row) not in ("annbin", "hnswlib") and row["index"] not in FLOAT_BASELINES


def _bytes(row: dict[str, Any]) -> str:
    text = f"{row['bytes_per_vector']:,.0f} bytes/vector"
    if row.get("disk_bytes_per_vector"):
        text += f" in RAM (+{row['disk_bytes_per_vector']:,.0f} memory-mapped)"
    return text


def summary_line(rows: list[dict[str, Any]], target: float = TARGET_RECALL) -> str | None:
    """``"binary X: recall R at Q q/s and B bytes/vector vs float HNSW: R' at Q' q/s and B'
    bytes/vector"`` and which float HNSW row that is; None without binary or hnswlib rows.

    X is the fastest annbin row with ``recall_float >= target`` (if none reaches it: the one with
    the highest recall, and the line says so). The float HNSW row is the fastest hnswlib row with
    recall >= R, or, if none reaches R, the one closest to it. With peer libraries' rows
    (``annbin.bench.peers``), the line goes on with the fastest of them at recall >= R and X's speed
    against it, or says that none reaches R.
    """
    rows = [r for r in rows if r.get("recall_float") is not None and (r.get("tune") or {}).get("half") != "tune"]  # not tune trials
    binary = [r for r in rows if _is_binary(r)]
    hnsw = [r for r in rows if r["index"] == "float-hnsw"]
    if not binary or not hnsw:
        return None
    good = [r for r in binary if r["recall_float"] >= target]
    x = max(good, key=lambda r: r["qps"]) if good else max(binary, key=lambda r: (r["recall_float"], r["qps"]))
    recall = x["recall_float"]
    reach = [r for r in hnsw if r["recall_float"] >= recall]
    f = max(reach, key=lambda r: r["qps"]) if reach else min(hnsw, key=lambda r: (abs(r["recall_float"] - recall), -r["qps"]))
    which = f"the fastest hnswlib row with recall >= {recall:.3f}" if reach else f"no hnswlib row reaches {recall:.3f}: the closest"
    head = "" if good else f"no binary row reaches recall {target:.2f}; the best: "
    line = (f"{head}binary {describe(x)}: recall {recall:.3f} at {x['qps']:,.0f} q/s and {_bytes(x)} vs "
            f"float HNSW ({_fmt('params', f.get('params') or {}, f)}): {f['recall_float']:.3f} at {f['qps']:,.0f} q/s and {_bytes(f)} ({which})")
    if f["qps"] > 0 and x["bytes_per_vector"] > 0:
        ram = f["bytes_per_vector"] / x["bytes_per_vector"]
        line += f"; {x['qps'] / f['qps']:.2f}x its queries/s with " + (f"1/{ram:.1f} of its RAM" if ram >= 1 else f"{1 / ram:.1f}x its RAM")
    return line + _peer_clause(x, [r for r in rows if _is_peer(r)])


def _peer_clause(x: dict[str, Any], peers: list[dict[str, Any]]) -> str:
    """``"; fastest peer at recall >= R: <library> <row>: R' at Q' q/s and B' bytes/vector; binary
    X is N.NNx its queries/s"``, or that no peer row reaches R; empty without peer rows."""
    if not peers:
        return ""
    recall = x["recall_float"]
    reach = [r for r in peers if r["recall_float"] >= recall]
    if not reach:
        best = max(peers, key=lambda r: (r["recall_float"], r["qps"]))
        return f"; no peer row reaches {recall:.3f} (best: {_library(best)} {describe(best)} at {best['recall_float']:.3f})"
    p = max(reach, key=lambda r: r["qps"])
    line = (f"; fastest peer at recall >= {recall:.3f}: {_library(p)} {describe(p)}: {p['recall_float']:.3f} at {p['qps']:,.0f} q/s "
            f"and {_bytes(p)}")
    return line + (f"; binary is {x['qps'] / p['qps']:.2f}x its queries/s" if p["qps"] > 0 else "")


def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten in both recall (x) and queries/s (y), sorted by recall."""
    best: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not best or y > best[-1][1]:
            best.append((x, y))
    return sorted(best)


def pyplot() -> Any:
    """``matplotlib.pyplot`` drawing off-screen (Agg); ``MissingExtraError`` naming ``annbin[plot]``
    when matplotlib is not installed."""
    require("matplotlib", package="matplotlib", extra="plot", purpose="plotting").use("Agg")
    return require("matplotlib.pyplot", package="matplotlib", extra="plot", purpose="plotting")


def check_plotting() -> None:
    """``MissingExtraError`` now if plots cannot be drawn, before a long run that would end in one."""
    pyplot()


def _figure(rows: list[dict[str, Any]], recall_key: str) -> Any:
    """The recall (x) vs queries/s (y, log) figure: a Pareto frontier per method, all points faint."""
    plt = pyplot()

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
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_recall_qps(rows: list[dict[str, Any]], path: str | Path, *, recall_key: str = "recall_float") -> Path:
    """Recall (x) vs queries/s (y, log), Pareto frontier per method, as ann-benchmarks draws it.

    Needs matplotlib (``pip install 'annbin[plot]'``), else ``annbin._extras.MissingExtraError``
    (an ``ImportError``) says so in one line.
    """
    plt = pyplot()
    fig = _figure(rows, recall_key)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- the HTML report: one file, nothing fetched when it opens ------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1400px;color:#222;padding:0 1em}
.scroll{overflow-x:auto}td.params{white-space:normal;overflow-wrap:anywhere;min-width:10em;max-width:18em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;white-space:nowrap}
th{background:#f2f2f2;white-space:normal;vertical-align:bottom}td.text,th.text{text-align:left}
tr.pareto td{background:#eef7ee}
.summary{background:#f6f8fa;border-left:4px solid #4a7;padding:.6em 1em}
.note{color:#666;font-size:.9em}img{max-width:100%;border:1px solid #ddd}
"""
MACHINE_KEYS = ("cores", "cpu", "os", "python", "annbin", "numpy", "faiss", "hnswlib")
DATASET_KEYS = ("dataset", "n", "nq", "dim", "metric", "k", "threads")


def _png_base64(rows: list[dict[str, Any]], recall_key: str) -> str | None:
    try:
        plt = pyplot()
    except ImportError:  # plotting is optional: the report keeps its tables
        return None
    return png_base64(plt, _figure(rows, recall_key))


def png_base64(plt: Any, fig: Any, dpi: int = 110) -> str:
    """``fig`` as a base64 PNG (for an ``<img src="data:...">`` that fetches nothing), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _facts_table(facts: list[dict[str, Any]], keys: tuple[str, ...], table_id: str) -> str:
    head = "".join(f'<th class="text">{html.escape(k)}</th>' for k in keys)
    body = "".join("<tr>" + "".join(f'<td class="text">{html.escape(str(f.get(k, "-")))}</td>' for k in keys) + "</tr>" for f in facts)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True, default=str), item)
    return list(seen.values())


def _results_html(rows: list[dict[str, Any]]) -> str:
    """The table, each number cell carrying the row's exact value in ``data-value``."""
    front = set(pareto_frontier([(r["recall_float"], r["qps"]) for r in rows if r.get("recall_float") is not None]))
    cols = [*COLUMNS, ("compression_vs_float32", "x float32")]
    head = "".join(f'<th class="{"text" if k in ("index", "params") else "num"}">{html.escape(h)}</th>' for k, h in cols)
    out = [f'<div class="scroll"><table id="results"><tr>{head}</tr>']
    for row in rows:
        on_front = row.get("recall_float") is not None and (row["recall_float"], row["qps"]) in front
        cells = []
        for key, _ in cols:
            value = row.get(key)
            text = html.escape(_fmt(key, value, row))
            if key in ("index", "params"):
                cells.append(f'<td class="text {key}" data-key="{key}">{text}</td>')
            else:
                exact = "" if value is None else html.escape(repr(value))
                cells.append(f'<td data-key="{key}" data-value="{exact}">{text}</td>')
        out.append(f'<tr{" class=pareto" if on_front else ""}>{"".join(cells)}</tr>')
    out.append("</table></div>")
    return "".join(out)


def html_report(rows: list[dict[str, Any]], path: str | Path, *, source: str | None = None) -> Path:
    """Write one self-contained HTML file: results table (Pareto-optimal rows shaded), recall vs
    queries/s plot(s) embedded as base64 PNG, bytes per vector, dataset and machine facts.

    Nothing is fetched when it opens (no scripts, fonts or stylesheets from elsewhere). Machine
    facts come from the rows (``annbin bench`` records them); rows without them are said to be
    unrecorded and this machine's facts are shown instead.
    """
    from annbin import __version__
    from annbin.bench.machine import machine_facts

    if not rows:
        raise ValueError("no result rows to report")
    datasets = _unique([{k: r.get(k) for k in DATASET_KEYS} for r in rows])
    machines = _unique([{**r["machine"], "host": r.get("host")} for r in rows if r.get("machine")])
    names = ", ".join(sorted({str(r.get("dataset")) for r in rows}))
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>annbin: {html.escape(names)}</title>",
             f"<style>{_CSS}</style></head><body><h1>annbin results: {html.escape(names)}</h1>"]
    summary = summary_line(rows)
    if summary:
        parts.append(f'<p class="summary" id="summary">{html.escape(summary)}</p>')
    parts.append("<h2>Results</h2>" + _results_html(rows))
    parts.append('<p class="note">Shaded rows are on the Pareto frontier of recall@k (float) and queries/s over all rows. '
                 "bytes/vec: RAM per vector (codes, ids, graph; memory-mapped floats not counted); x float32: "
                 "compression against the float32 vectors.</p>")
    for key, title in (("recall_float", "Recall vs queries/s (exact float ground truth)"),
                       ("recall_hamming", "Recall vs queries/s (exact Hamming ground truth)")):
        if not any(r.get(key) is not None for r in rows):
            continue
        png = _png_base64(rows, key)
        parts.append(f"<h2>{title}</h2>" + (f'<img id="plot-{key}" alt="{title}" src="data:image/png;base64,{png}">' if png
                                            else '<p class="note">matplotlib is not installed: no plot '
                                                 "(pip install 'annbin[plot]' adds it).</p>"))
    parts.append("<h2>Dataset</h2>" + _facts_table(datasets, DATASET_KEYS, "datasets"))
    parts.append("<h2>Machine</h2>")
    if machines:
        parts.append(_facts_table(machines, (*MACHINE_KEYS, "host"), "machines"))
    if len(machines) < 1 or any(not r.get("machine") for r in rows):
        parts.append('<p class="note">Some rows do not record their machine; this report was made on:</p>'
                     + _facts_table([machine_facts()], MACHINE_KEYS, "report-machine"))
    made = f"annbin {__version__}, {len(rows)} rows" + (f" of {html.escape(source)}" if source else "")
    parts.append(f'<p class="note">Made by {made}.</p></body></html>')
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
