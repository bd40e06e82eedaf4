"""annbin.bench.report: the summary line and the self-contained HTML report (numbers equal the JSONL's;
rendered by a real headless browser when one is installed)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner
from rich.console import Console

from annbin.bench.cli import main
from annbin.bench.report import FLOAT_BASELINES, html_report, results_table, summary_line

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A bench run with binary, rescored and float rows (synthetic-small, fast), as JSONL."""
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(main, ["bench", "--dataset", "synthetic-small", "--k", "5", "--runs", "1", "--latency-queries", "3",
                                       "--max-queries", "40", "--no-progress", "--index", "flat", "--index", "hnsw:M=8,ef_search=8|32",
                                       "--index", "float-hnsw:M=8,ef=8|32", "--index", "float-flat", "--oversample", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "results.jsonl"


class _Tables(HTMLParser):
    """Every <table id=...>: rows of (data-key, data-value or text) cells; and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[dict[str, str]]]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [a[key] for key in ("src", "href") if key in a]
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = {"key": a.get("data-key", ""), "value": a.get("data-value"), "text": ""}
            self.tables[self._table][-1].append(self._cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _parse(text: str) -> _Tables:
    parser = _Tables()
    parser.feed(text)
    return parser


def test_html_numbers_equal_the_jsonl(results, tmp_path):
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    page = tmp_path / "out.html"
    result = CliRunner().invoke(main, ["report", str(results), "--html", str(page)])
    assert result.exit_code == 0, result.output
    parsed = _parse(page.read_text())
    table = parsed.tables["results"][1:]  # after the header
    assert len(table) == len(rows) == 9
    for row, cells in zip(rows, table):
        by_key = {c["key"]: c for c in cells}
        for key in ("recall_float", "recall_hamming", "qps", "latency_p50_ms", "latency_p99_ms", "build_s", "bytes_per_vector",
                    "compression_vs_float32", "vectors_read_per_query"):
            want, got = row.get(key), by_key[key]["value"]
            assert (got == "") if want is None else (float(got) == want), (key, want, got)
        assert by_key["index"]["text"].startswith(row["index"])
    assert parsed.tables["results"][0][5]["text"] == "queries/s"
    facts = {c["text"] for r in parsed.tables["datasets"][1:] for c in r}
    assert {"synthetic-small", "2000", "40", "128", "ip", "5"} <= facts
    machine = dict(zip((c["text"] for c in parsed.tables["machines"][0]), (c["text"] for c in parsed.tables["machines"][1])))
    assert machine["cores"] == str(rows[0]["machine"]["cores"]) and machine["numpy"] == rows[0]["machine"]["numpy"]
    assert {"annbin", "faiss", "hnswlib", "python", "cpu"} <= set(machine)


def test_html_is_self_contained(results, tmp_path):
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    text = html_report(rows, tmp_path / "r.html").read_text()
    parsed = _parse(text)
    # nothing to fetch: only inline data, no scripts, fonts or stylesheets from elsewhere
    assert parsed.links and all(link.startswith("data:image/png;base64,") for link in parsed.links)
    assert not re.search(r"<script|<link|@import|url\(|https?://", text)
    png = base64.b64decode(parsed.links[0].removeprefix("data:image/png;base64,"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert 'id="plot-recall_float"' in text and 'id="plot-recall_hamming"' in text
    assert 'id="summary"' in text and "vs float HNSW" in text
    assert text.count("<tr class=pareto>") >= 1


def test_html_without_matplotlib_or_machine_facts(results, tmp_path, monkeypatch):
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for row in rows:
        row.pop("machine")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # `import matplotlib.pyplot` now fails
    text = html_report(rows, tmp_path / "r.html").read_text()
    assert "matplotlib is not installed" in text and "<img" not in text
    assert "do not record their machine" in text and 'id="report-machine"' in text
    with pytest.raises(ValueError, match="no result rows"):
        html_report([], tmp_path / "x.html")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser (chromium) on this machine")
def test_html_renders_in_headless_chromium(results, tmp_path):
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    page = html_report(rows, tmp_path / "r.html")
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _parse(dom.stdout)  # what the browser built from the file
    assert len(parsed.tables["results"]) == len(rows) + 1
    shot = tmp_path / "shot.png"
    run = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    import matplotlib.image

    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (2000, 1280) and img[..., :3].std() > 0.05  # not a blank page


def _row(index, recall, qps, nbytes, **extra):
    return {"index": index, "params": extra.pop("params", {}), "recall_float": recall, "qps": qps, "bytes_per_vector": nbytes, **extra}


def test_summary_line_picks_fastest_binary_at_target_and_matching_hnsw():
    rows = [
        _row("flat", 0.99, 1_000, 56.0, oversample=20),
        _row("hnsw", 0.96, 9_000, 200.0, oversample=10, params={"M": 16}, disk_bytes_per_vector=1536.0),
        _row("hnsw", 0.94, 20_000, 200.0, oversample=8, params={"M": 16}),  # faster but below 0.95
        _row("float-hnsw", 0.93, 30_000, 1684.6, params={"ef": 16}),
        _row("float-hnsw", 0.97, 12_000, 1684.6, params={"ef": 32}),
        _row("float-hnsw", 0.99, 6_000, 1684.6, params={"ef": 64}),
        _row("float-flat", 1.0, 4_000, 1536.0),
    ]
    line = summary_line(rows)
    assert line.startswith("binary hnsw+rescore M=16,oversample=10: recall 0.960 at 9,000 q/s and 200 bytes/vector in RAM (+1,536 memory-mapped)")
    assert "vs float HNSW (ef=32): 0.970 at 12,000 q/s and 1,685 bytes/vector (the fastest hnswlib row with recall >= 0.960)" in line
    assert line.endswith("0.75x its queries/s with 1/8.4 of its RAM")
    # no hnswlib row reaches the binary recall: the closest, said so
    line = summary_line([rows[0], rows[3], rows[4]])
    assert "binary flat+rescore oversample=20: recall 0.990" in line and "(ef=32): 0.970" in line
    assert "no hnswlib row reaches 0.990: the closest" in line
    # no binary row reaches the target: the best, said so
    assert summary_line([rows[2], rows[3]]).startswith("no binary row reaches recall 0.95; the best: binary hnsw+rescore")
    assert summary_line([rows[0], rows[6]]) is None and summary_line(rows[3:]) is None
    assert summary_line([{**rows[1], "tune": {"half": "tune"}}, rows[4]]) is None  # tuner trials are not results
    assert summary_line([{**rows[1], "tune": {"half": "holdout"}}, rows[4]]).startswith("binary hnsw+rescore (tuned) M=16")
    assert set(FLOAT_BASELINES) == {"float-flat", "float-hnsw"}


def _settings(row):
    return {**row["params"], **({"oversample": row["oversample"]} if row.get("oversample") else {})}


@pytest.mark.parametrize("width", [80, 200])
def test_terminal_table_keeps_what_tells_rows_apart(width):
    """Bench rows that differ in the 2nd and 3rd setting and tune trials that differ in the last:
    every row's differing settings appear whole in its own lines, the shared ones in the title."""
    timing = {"recall_hamming": 0.8, "vectors_read_per_query": 40.0, "latency_p50_ms": 0.1, "latency_p99_ms": 0.2, "build_s": 1.5}
    bench = [_row("hnsw", 0.9, 1000 + i, 64.0, params={"M": 16, "ef_search": ef}, oversample=over, **timing)
             for i, (ef, over) in enumerate([(16, 4), (16, 10), (64, 4), (64, 10)])]
    bench.append(_row("float-hnsw", 0.97, 2000, 1684.6, params={"M": 16, "ef_construction": 200, "ef": 64}, **timing))
    trials = [_row("rabitq-hnsw", 0.9, 3000 + i, 40.0, params={"M": 16, "ef_construction": 100, "build": "float", "ef_search": ef, "qb": qb},
                   tune={"half": "tune"}) for i, (ef, qb) in enumerate([(16, 0), (16, 4), (32, 4), (32, 8)])]
    for rows, shared in ((bench, {"M": 16}), (trials, {"M": 16, "ef_construction": 100, "build": "float"})):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(results_table(rows, title="a run"))
        lines = console.export_text().splitlines()
        assert all(len(line) <= width for line in lines) and not any("\u2026" in line for line in lines), "\n".join(lines)
        starts = [next(i for i, line in enumerate(lines) if f" {row['qps']:,} " in line) for row in rows]
        ends = [*starts[1:], next(i for i, line in enumerate(lines) if line.startswith("\u2514"))]
        title = " ".join(lines[: starts[0]])
        assert all(f"{k}={v}" in title for k, v in shared.items()), title
        for row, start, end in zip(rows, starts, ends):
            own = " ".join(lines[start:end])
            differing = {k: v for k, v in _settings(row).items() if k not in shared}
            assert differing and all(re.search(rf"(?<![\w=.]){k}={v}(?![\w.])", own) for k, v in differing.items()), (differing, own)
        if width == 200:  # room for every column
            assert "not shown" not in "\n".join(lines) and "recall@k hamming (ties)" in lines[starts[0] - 2]
