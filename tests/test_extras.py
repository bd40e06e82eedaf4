"""Optional extras (annbin[plot], annbin[yaml]): without one, the feature that needs it fails in one
line naming the extra, and nothing else does."""

import json
import sys

import pytest
from click.testing import CliRunner

from annbin._extras import MissingExtraError, require
from annbin.bench.cli import main
from annbin.bench.report import plot_recall_qps

ROW = {"index": "flat", "params": {}, "k": 10, "recall_float": 0.5, "recall_hamming": 1.0, "qps": 100.0,
       "bytes_per_vector": 56.0, "dataset": "d"}


@pytest.fixture
def no_matplotlib(monkeypatch):
    """``import matplotlib`` fails, as where the plot extra is not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def _one_line_error(result, extra: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("annbin: error: "), result.output
    assert f"pip install 'annbin[{extra}]'" in lines[0]
    return lines[0]


def test_plot_without_matplotlib_names_the_extra(tmp_path, no_matplotlib):
    with pytest.raises(MissingExtraError, match=r"plotting needs matplotlib: pip install 'annbin\[plot\]'") as info:
        plot_recall_qps([ROW], tmp_path / "p.png")
    assert isinstance(info.value, ImportError) and not (tmp_path / "p.png").exists()


def test_bench_plot_without_matplotlib_fails_before_running(tmp_path, no_matplotlib, monkeypatch):
    import annbin.bench.default_plan

    def must_not_run(*args, **kwargs):
        raise AssertionError("the bench ran although its plot could not be drawn")

    monkeypatch.setattr(annbin.bench.default_plan, "run_plan", must_not_run)
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", "-d", "synthetic-small", "--index", "flat", "--out", str(out), "--plot"])
    assert "matplotlib" in _one_line_error(result, "plot")
    assert not out.exists()


def test_bench_without_plot_needs_no_matplotlib(tmp_path, no_matplotlib, monkeypatch):
    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["bench", "-d", "synthetic-small", "--index", "flat", "--runs", "1", "--latency-queries", "2",
                                       "--max-queries", "10", "--no-progress", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "o" / "results.jsonl").read_text().splitlines()) == 1
    assert sys.modules["matplotlib"] is None  # still blocked: nothing imported it behind our back


def test_report_plot_without_matplotlib(tmp_path, no_matplotlib):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(ROW) + "\n")
    _one_line_error(CliRunner().invoke(main, ["report", str(results), "--plot", str(tmp_path / "p.png")]), "plot")
    # the HTML report keeps its tables and says how to get the plot
    ok = CliRunner().invoke(main, ["report", str(results), "--html", str(tmp_path / "r.html")])
    assert ok.exit_code == 0, ok.output
    text = (tmp_path / "r.html").read_text()
    assert "annbin[plot]" in text and "<img" not in text


def test_yaml_config_without_pyyaml_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("dataset: synthetic-small\n")
    line = _one_line_error(CliRunner().invoke(main, ["bench", "--config", str(cfg)]), "yaml")
    assert "pyyaml" in line and "sweep.yaml" in line
    toml = tmp_path / "sweep.toml"  # TOML files need no extra
    toml.write_text('dataset = "nope-no-such"\n')
    bad = CliRunner().invoke(main, ["bench", "--config", str(toml), "--index", "flat"])
    assert bad.exit_code == 2 and "unknown dataset 'nope-no-such'" in bad.output, bad.output


def test_require_names_a_broken_install(tmp_path, monkeypatch):
    (tmp_path / "half_installed_pkg.py").write_text("import some_dependency_that_is_gone  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as info:
        require("half_installed_pkg", package="half-installed", extra="plot", purpose="plotting")
    assert str(info.value) == ("plotting needs half-installed (some_dependency_that_is_gone is missing): "
                               "pip install 'annbin[plot]'")
    assert require("json", package="json", extra="x", purpose="y") is json
