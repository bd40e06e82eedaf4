"""Tables and plots of how an index grows with N: the rows ``benchmarks/scale.py`` writes (``kind: "scale"``).

A row is one (method, N): ``method`` (``annbin`` / ``hnswlib``), ``n``, ``build_s``,
``peak_rss_bytes``, ``memory_bytes``; annbin rows add ``disk_bytes``, ``float_bytes`` (the rescoring
floats: the page cache a warm search wants) and ``default`` / ``tuned`` results (``params``,
``recall``, ``qps``, ``warm`` / ``cold`` ``p50_ms`` / ``p99_ms``); hnswlib rows add ``sweep`` and
``tuned`` (the first ``ef`` at the target recall). Where hnswlib did not run at an N, its RAM is
projected from the bytes a vector of its largest run.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HEADER", "against_hnswlib", "is_scale_rows", "projected_hnswlib_bytes", "projection_note", "scale_cells", "scale_html", "scale_markdown", "scale_plot"]

_GIB = 2 ** 30


def is_scale_rows(rows: list[dict[str, Any]]) -> bool:
    """True if every row is a scale row; ``ValueError`` if some are and some are not."""
    kinds = {row.get("kind") == "scale" for row in rows}
    if len(kinds) > 1:
        raise ValueError("the file mixes scale rows (benchmarks/scale.py) with other result rows: report them separately")
    return kinds == {True}


def _by_method(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["n"]):
        out.setdefault(row.get("label") or row["method"], []).append(row)  # one line per configuration
    return out


def projected_hnswlib_bytes(rows: list[dict[str, Any]], n: int) -> int | None:
    """hnswlib's RAM at ``n`` from the bytes a vector of its largest measured run (None: never run)."""
    runs = [r for r in rows if r["method"] == "hnswlib" and r.get("memory_bytes")]
    if not runs:
        return None
    top = max(runs, key=lambda r: r["n"])
    return int(top["memory_bytes"] / top["n"] * n)


def _cell(value: Any, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


HEADER = ("method", "N", "spec", "build s", "µs/vector", "peak RSS GiB", "index RAM GiB", "disk GiB", "floats GiB (page cache)",
          "recall@10 default", "q/s default", "recall@10 tuned", "q/s tuned", "settings tuned", "p50/p99 ms warm",
          "p50/p99 ms cold")


def scale_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The table's cells (``HEADER`` order), a line per (method, N), smallest N first."""
    out = []
    for method, runs in _by_method(rows).items():
        for r in runs:
            tuned, default = r.get("tuned") or {}, r.get("default") or {}
            warm, cold = tuned.get("warm") or {}, tuned.get("cold") or {}
            out.append([
                method, f"{r['n']:,}", str(r.get("spec", "-")), _cell(r.get("build_s"), "{:,.1f}"), _cell(r["build_s"] / r["n"] * 1e6, "{:,.0f}"),
                _cell(r.get("peak_rss_bytes", 0) / _GIB, "{:.2f}"), _cell(r.get("memory_bytes", 0) / _GIB, "{:.3f}"),
                _cell(r["disk_bytes"] / _GIB if r.get("disk_bytes") else None, "{:.2f}"),
                _cell(r["float_bytes"] / _GIB if r.get("float_bytes") else None, "{:.2f}"),
                _cell(default.get("recall"), "{:.3f}"), _cell(default.get("qps")),
                _cell(tuned.get("recall"), "{:.3f}"), _cell(tuned.get("qps")),
                ",".join(f"{k}={v}" for k, v in (tuned.get("params") or {"ef": tuned.get("ef")}).items()),
                f"{_cell(warm.get('p50_ms'), '{:.2f}')} / {_cell(warm.get('p99_ms'), '{:.2f}')}",
                f"{_cell(cold.get('p50_ms'), '{:.2f}')} / {_cell(cold.get('p99_ms'), '{:.2f}')}",
            ])
    return out


def projection_note(rows: list[dict[str, Any]]) -> str | None:
    """hnswlib's projected RAM at the sizes annbin ran and hnswlib did not, as a sentence."""
    hnsw_ns = {r["n"] for r in rows if r["method"] == "hnswlib"}
    projected = [(n, projected_hnswlib_bytes(rows, n)) for n in sorted({r["n"] for r in rows if r["method"] == "annbin"} - hnsw_ns)]
    if not any(b for _, b in projected):
        return None
    return ("hnswlib's RAM where it did not run (its largest run's bytes a vector): "
            + ", ".join(f"{n:,}: {b / _GIB:.1f} GiB" for n, b in projected if b))


def against_hnswlib(rows: list[dict[str, Any]]) -> list[str]:
    """For each annbin row: its RAM against hnswlib's (measured or projected) at the same N, its
    build time a vector against hnswlib's at the largest N both ran, and its tuned queries/s against
    the fastest hnswlib ``ef`` whose recall is at least annbin's, at the same N where hnswlib ran
    there, else at hnswlib's largest N."""
    hnsw = sorted((r for r in rows if r["method"] == "hnswlib"), key=lambda r: r["n"])
    if not hnsw:
        return []
    top = hnsw[-1]
    out = []
    for r in sorted((r for r in rows if r["method"] == "annbin"), key=lambda r: r["n"]):
        tuned = r.get("tuned") or {}
        same = next((h for h in hnsw if h["n"] == r["n"]), None)
        ram = (same or {}).get("memory_bytes") or projected_hnswlib_bytes(rows, r["n"])
        parts = [f"{r.get('label') or 'annbin'} at {r['n']:,}: RAM 1/{ram / r['memory_bytes']:.1f} of hnswlib's"
                 + ("" if same else " (projected)")]
        build = max((h for h in hnsw if h["n"] <= r["n"]), key=lambda h: h["n"], default=None)
        if build is not None:
            parts.append(f"build {r['build_s'] / r['n'] / (build['build_s'] / build['n']):.2f}x hnswlib's time a vector (its {build['n']:,})")
        ref = same or top
        if tuned.get("recall") is not None:
            fast = [s for s in ref.get("sweep", []) if s["recall"] >= tuned["recall"]]
            best = max(fast, key=lambda s: s["qps"], default=None)
            parts.append(f"{tuned['qps']:,.0f} q/s at recall {tuned['recall']:.3f} = "
                         + (f"{tuned['qps'] / best['qps']:.2f}x hnswlib at {ref['n']:,} (ef {best['ef']}: {best['recall']:.3f}, {best['qps']:,.0f} q/s)"
                            if best else f"hnswlib at {ref['n']:,} never reached that recall"))
        out.append("; ".join(parts))
    return out


def scale_markdown(rows: list[dict[str, Any]]) -> str:
    """The table in Markdown, the projection note and the comparison with hnswlib under it."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cells) + " |" for cells in scale_cells(rows)]
    note = projection_note(rows)
    lines = against_hnswlib(rows)
    return "\n".join(out + ([f"\n{note}"] if note else []) + (["", *(f"- {line}" for line in lines)] if lines else []))


def _figure(rows: list[dict[str, Any]]) -> Any:
    from annbin.bench.report import pyplot

    plt = pyplot()
    Get = Callable[[dict[str, Any]], Any]
    panels: list[tuple[str, Get]] = [
        ("build µs a vector", lambda r: r["build_s"] / r["n"] * 1e6),
        ("RAM GiB (index; dashed: hnswlib projected)", lambda r: r.get("memory_bytes", 0) / _GIB),
        ("peak RSS GiB (build)", lambda r: r.get("peak_rss_bytes", 0) / _GIB),
        ("recall@10 (tuned; dotted: default)", lambda r: (r.get("tuned") or {}).get("recall")),
        ("queries/s, 1 thread (tuned; dotted: default)", lambda r: (r.get("tuned") or {}).get("qps")),
        ("p99 ms single query (solid warm, dashed cold)", lambda r: ((r.get("tuned") or {}).get("warm") or {}).get("p99_ms")),
    ]
    extra: dict[int, Get] = {3: lambda r: (r.get("default") or {}).get("recall"), 4: lambda r: (r.get("default") or {}).get("qps"),
             5: lambda r: ((r.get("tuned") or {}).get("cold") or {}).get("p99_ms")}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for i, (ax, (title, get)) in enumerate(zip(axes.ravel(), panels)):
        for method, runs in _by_method(rows).items():
            xs = [r["n"] for r in runs]
            line = ax.plot(xs, [get(r) for r in runs], marker="o", label=method)[0]
            if i in extra and any(extra[i](r) is not None for r in runs):
                ax.plot(xs, [extra[i](r) for r in runs], ls=":" if i < 5 else "--", color=line.get_color())
        if i == 1:
            ns = sorted({r["n"] for r in rows})
            proj = [(n, projected_hnswlib_bytes(rows, n)) for n in ns]
            if any(b for _, b in proj):
                ax.plot([n for n, b in proj if b], [b / _GIB for _, b in proj if b], ls="--", color="grey", label="hnswlib projected")
        ax.set_xscale("log")
        if i != 3:
            ax.set_yscale("log")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("N")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    axes[0, 1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def scale_plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Every figure against N (log), a line per method, as one PNG (needs ``annbin[plot]``)."""
    from annbin.bench.report import pyplot

    plt = pyplot()
    fig = _figure(rows)
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)
    return Path(path)


def scale_html(rows: list[dict[str, Any]], path: str | Path, *, source: str | None = None) -> Path:
    """One self-contained HTML file: the table and the figures against N (an embedded PNG)."""
    try:
        from annbin.bench.report import png_base64, pyplot

        img = f'<img id="plot-scale" alt="figures against N" src="data:image/png;base64,{png_base64(pyplot(), _figure(rows), dpi=100)}">'
    except ImportError:
        img = "<p>matplotlib is not installed: no plot (pip install 'annbin[plot]' adds it).</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in scale_cells(rows))
    note = projection_note(rows)
    table = f"<table><tr>{head}</tr>{body}</table>" + (f"<p>{html.escape(note)}</p>" if note else "")
    table += "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in against_hnswlib(rows)) + "</ul>"
    names = ", ".join(sorted({str(r.get("dataset")) for r in rows}))
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>annbin scale: {html.escape(names)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1500px;padding:0 1em}"
            "table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
            f"img{{max-width:100%}}</style></head><body><h1>annbin: growth with N ({html.escape(names)})</h1>"
            f'<div id="scale-table">{table}</div><h2>Against N</h2>{img}'
            f"<p>{len(rows)} rows{' of ' + html.escape(source) if source else ''}.</p></body></html>")
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)
