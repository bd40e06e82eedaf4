"""The scale report (``annbin report`` on ``benchmarks/scale.py`` rows): table, projection, plots, HTML."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from annbin.bench.cli import main
from annbin.bench.scale_report import HEADER, is_scale_rows, projected_hnswlib_bytes, scale_cells, scale_markdown


def _annbin(n: int, build_s: float, qps: float) -> dict:
    result = {"params": {"oversample": 2, "nprobe": 40}, "recall": 0.951, "qps": qps,
              "warm": {"p50_ms": 1.0, "p99_ms": 2.0}, "cold": {"p50_ms": 3.0, "p99_ms": 9.0}}
    return {"kind": "scale", "dataset": "d", "n": n, "method": "annbin", "label": "annbin rq-ivf", "spec": f"rq-ivf:nlist={n // 100}",
            "build_s": build_s, "peak_rss_bytes": 2 ** 30, "memory_bytes": 250 * n, "disk_bytes": 1800 * n,
            "float_bytes": 1536 * n, "default": {**result, "recall": 0.88}, "tuned": result}


def _hnswlib(n: int) -> dict:
    return {"kind": "scale", "dataset": "d", "n": n, "method": "hnswlib", "label": "hnswlib", "spec": "M=16",
            "build_s": n / 500, "peak_rss_bytes": 4 * 2 ** 30, "memory_bytes": 3300 * n,
            "sweep": [{"ef": 64, "recall": 0.9, "qps": 900.0}, {"ef": 128, "recall": 0.952, "qps": 600.0}],
            "tuned": {"ef": 128, "recall": 0.952, "qps": 600.0, "warm": {"p50_ms": 1.5, "p99_ms": 2.5}}}


ROWS = [_annbin(10_000_000, 4000.0, 150.0), _annbin(100_000, 20.0, 1500.0), _hnswlib(100_000), _hnswlib(1_000_000),
        _annbin(1_000_000, 300.0, 600.0)]


def test_table_has_a_line_per_run_sorted_by_n_and_every_cell():
    cells = scale_cells(ROWS)
    assert len(cells) == 5 and all(len(c) == len(HEADER) for c in cells)
    annbin_ns = [c[1] for c in cells if c[0] == "annbin rq-ivf"]
    assert annbin_ns == ["100,000", "1,000,000", "10,000,000"]  # one line per configuration, whatever its nlist
    ten = next(c for c in cells if c[1] == "10,000,000")
    assert ten[HEADER.index("µs/vector")] == "400" and ten[HEADER.index("q/s tuned")] == "150"
    assert ten[HEADER.index("settings tuned")] == "oversample=2,nprobe=40"
    assert next(c for c in cells if c[0] == "hnswlib")[HEADER.index("settings tuned")] == "ef=128"


def test_hnswlib_ram_is_projected_from_its_largest_run_where_it_did_not_run():
    assert projected_hnswlib_bytes(ROWS, 10_000_000) == 3300 * 10_000_000
    assert projected_hnswlib_bytes([r for r in ROWS if r["method"] == "annbin"], 10) is None
    text = scale_markdown(ROWS)
    assert "10,000,000: 30.7 GiB" in text and "100,000:" not in text.split("\n")[-1]


def test_mixed_files_are_refused():
    assert is_scale_rows(ROWS) and not is_scale_rows([{"index": "flat", "qps": 1.0}])
    with pytest.raises(ValueError, match="report them separately"):
        is_scale_rows([*ROWS, {"index": "flat", "qps": 1.0}])


def test_cli_report_writes_the_table_plot_and_html(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "scale.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    result = CliRunner().invoke(main, ["report", str(path), "--plot", str(tmp_path / "s.png"), "--html", str(tmp_path / "s.html")])
    assert result.exit_code == 0, result.output
    assert "| annbin rq-ivf | 10,000,000 |" in result.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "s.html").read_text()
    assert 'id="plot-scale"' in page and "data:image/png;base64," in page and "10,000,000" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched when it opens


def test_against_hnswlib_compares_at_equal_recall_ram_and_build():
    from annbin.bench.scale_report import against_hnswlib

    lines = against_hnswlib(ROWS)
    ten = next(line for line in lines if "at 10,000,000" in line)
    assert "RAM 1/13.2 of hnswlib's (projected)" in ten
    assert "build 0.20x hnswlib's time a vector (its 1,000,000)" in ten
    assert "150 q/s at recall 0.951 = 0.25x hnswlib at 1,000,000 (ef 128: 0.952, 600 q/s)" in ten
    hundred = next(line for line in lines if "at 100,000" in line)
    assert "RAM 1/13.2 of hnswlib's;" in hundred  # measured at the same N: not projected
    assert against_hnswlib([r for r in ROWS if r["method"] == "annbin"]) == []
