"""The CLI through click's CliRunner, and once as a real subprocess."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from annbin.bench.cli import main

FAST = ["--dataset", "synthetic-small", "--k", "5", "--runs", "1", "--latency-queries", "5", "--max-queries", "40", "--no-progress"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "cache"))


def test_bench_writes_rows_and_plot(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["bench", *FAST, "--index", "flat", "--index", "hnsw:M=8,ef_search=4|64",
                                       "--index", "mih", "--oversample", "2", "--vectors", "ram", "--out", str(out), "--plot"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # flat, 2 hnsw settings, mih; each with and without rescoring
    assert len(rows) == 8
    need = {"dataset", "index", "params", "k", "recall_float", "recall_hamming", "qps", "latency_p50_ms",
            "latency_p99_ms", "build_s", "bytes_per_vector"}
    for row in rows:
        assert need <= set(row), need - set(row)
        assert row["dataset"] == "synthetic-small" and row["k"] == 5 and row["nq"] == 40
        assert 0.0 <= row["recall_float"] <= 1.0 and row["qps"] > 0
    plain = {(r["index"], r["params"].get("ef_search")): r for r in rows if r["oversample"] is None}
    # exact indexes find every Hamming neighbour (tie-aware); a tiny beam finds fewer than a wide one
    assert plain[("flat", None)]["recall_hamming"] == 1.0
    assert plain[("mih", None)]["recall_hamming"] == 1.0
    assert plain[("hnsw", 4)]["recall_hamming"] <= plain[("hnsw", 64)]["recall_hamming"]
    assert plain[("hnsw", 64)]["params"] == {"M": 8, "ef_search": 64}
    # binary codes of 128-d floats: 16 bytes + 8-byte id per vector in flat
    assert plain[("flat", None)]["bytes_per_vector"] == pytest.approx(24.0)
    rescored = {r["index"]: r for r in rows if r["oversample"] == 2}
    assert rescored["flat"]["rescore_vectors"] == "ram:float32"
    # codes + ids + floats in RAM, and the encoder's per-dimension offset (128 float32 for 2,000 rows)
    assert rescored["flat"]["bytes_per_vector"] == pytest.approx(24.0 + 128 * 4 + 128 * 4 / 2000)
    assert rescored["flat"]["recall_hamming"] is None
    assert rescored["flat"]["recall_float"] >= plain[("flat", None)]["recall_float"]
    for name in ("recall_vs_qps.png", "recall_hamming_vs_qps.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # appending: a second run adds rows rather than replacing
    CliRunner().invoke(main, ["bench", *FAST, "--index", "flat", "--out", str(out)])
    assert len((out / "results.jsonl").read_text().splitlines()) == 9


def test_float_baselines_in_the_same_table(tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", *FAST, "--index", "float-flat", "--index", "float-hnsw:M=8,ef=50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["index"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert rows["float-flat"]["recall_float"] == 1.0
    assert rows["float-flat"]["recall_hamming"] is None
    assert rows["float-flat"]["bytes_per_vector"] >= 128 * 4


def test_config_file_and_short_codes(tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("dataset: synthetic-small\nindexes: ['mih', 'flat']\nk: 3\nproject_bits: 64\nruns: 1\nlatency_queries: 3\nmax_queries: 20\n")
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", "--config", str(cfg), "--k", "4", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == ["mih", "flat"]
    assert all(r["bits"] == 64 and r["k"] == 4 for r in rows)  # command line beats the file
    assert all(r["recall_hamming"] == 1.0 for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "unknown dataset"),
    (["--dataset", "/no/such/file.fvecs"], "file.fvecs"),
    (["--index", "lsh"], "unknown index spec"),
    (["--index", "hnsw:Q=1"], "unknown parameter"),
    (["--k", "0"], "k must be >= 1"),
    (["--k", "100000"], "larger than the dataset"),
    (["--oversample", "x"], "--oversample takes integers"),
    (["--config", "/no/such.yaml"], "cannot read config"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    base = ["bench", "--dataset", "synthetic-small", "--no-progress"]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_internal_type_error_keeps_its_traceback(monkeypatch):
    """Only input errors become one line with exit 2; a bug (a plain TypeError) shows its traceback, exit 1."""
    import annbin.bench.default_plan

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(annbin.bench.default_plan, "run_plan", broken)
    result = CliRunner().invoke(main, ["bench", "--dataset", "synthetic-small", "--no-progress"])
    assert result.exit_code == 1 and isinstance(result.exception, TypeError)
    assert "annbin: error" not in result.output


def test_refused_type_and_unsupported_operation_are_input_errors(monkeypatch):
    import annbin.bench.default_plan
    from annbin._checks import InputTypeError

    for exc in (InputTypeError("k must be an int, got str"), annbin.UnsupportedOperation("'hnsw' index does not support range_search")):
        def refuse(*args, exc=exc, **kwargs):
            raise exc

        monkeypatch.setattr(annbin.bench.default_plan, "run_plan", refuse)
        result = CliRunner().invoke(main, ["bench", "--dataset", "synthetic-small", "--no-progress"])
        assert result.exit_code == 2 and result.output.strip() == f"annbin: error: {exc}", result.output


def test_datasets_listing():
    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0
    assert "minilm_wordnet" in result.output and "synthetic" in result.output
    bad = CliRunner().invoke(main, ["datasets", "build", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_real_subprocess(tmp_path):
    out = tmp_path / "o"
    env = {**os.environ, "ANNBIN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "annbin.bench.cli", "bench", *FAST, "--index", "flat", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((out / "results.jsonl").read_text())
    assert row["index"] == "flat" and row["recall_hamming"] == 1.0
    assert "flat" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "annbin.bench.cli", "bench", "--k", "0", "--dataset", "synthetic-small"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("annbin: error:")


def test_default_dataset_is_the_shipped_set(tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", "--index", "flat", "--oversample", "4,10", "--max-queries", "20", "--runs", "1",
                                       "--latency-queries", "2", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["dataset"] for r in rows} == {"minilm_wordnet"}
    flat = {r["oversample"]: r["recall_float"] for r in rows}
    assert flat[None] < flat[4] <= flat[10]  # rescoring wins back what binarization lost
    assert "Kendall tau" in result.output


def test_default_plan_binary_three_stage_and_float_rows(tmp_path):
    """No --index: the default plan (DEFAULT_PLAN) and the summary line, here on a small set to stay fast."""
    from annbin.bench.default_plan import DEFAULT_PLAN

    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", "--dataset", "synthetic-small", "--max-queries", "30", "--runs", "1",
                                       "--latency-queries", "2", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows[:17]] == ["flat"] * 3 + ["hnsw"] * 3 + ["rq-hnsw"] * 6 + ["float-flat"] + ["float-hnsw"] * 4
    assert {r["library"] for r in rows[:12]} == {"annbin"} and {r["library"] for r in rows[13:17]} == {"hnswlib"}
    assert {r["library"] for r in rows[17:]} <= {"faiss", "usearch", "scann", "rabitqlib"} and rows[17]["index"] == "faiss-hnsw-sq8"
    assert [r["oversample"] for r in rows[:12]] == [None, 4, 10, None, 4, 10] + [None, 2] * 3
    assert [r["params"]["ef_search"] for r in rows[6:12]] == [32, 32, 48, 48, 192, 192]
    assert [r["params"]["ef"] for r in rows[13:17]] == [16, 24, 32, 64]
    assert all(r["rescore_vectors"] == "mmap:float32" for r in rows if r["oversample"])  # floats on disk: RAM is codes
    assert rows[1]["bytes_per_vector"] < 100 < rows[13]["bytes_per_vector"]
    assert rows[12]["recall_float"] == 1.0 and all(r["metric"] == "ip" and r["machine"]["cores"] for r in rows)
    assert len(DEFAULT_PLAN) == 4  # the last part: peer libraries (annbin.bench.peers), those installed
    summary = [line for line in result.output.splitlines() if "vs float HNSW" in line]
    assert len(summary) == 1 and "q/s" in summary[0] and "bytes/vector" in summary[0]
    # an option the user gives applies to every part of the plan and wins over the plan's own
    again = CliRunner().invoke(main, ["bench", "--dataset", "synthetic-small", "--max-queries", "10", "--runs", "1", "--latency-queries", "0",
                                      "--oversample", "2", "--vectors", "ram", "--no-progress", "--out", str(tmp_path / "o2")])
    assert again.exit_code == 0, again.output
    rows2 = [json.loads(line) for line in (tmp_path / "o2" / "results.jsonl").read_text().splitlines()]
    assert {r["oversample"] for r in rows2} == {None, 2}
    assert {r["rescore_vectors"] for r in rows2 if r["oversample"]} == {"ram:float32"}


def test_faiss_factory_and_ivf_specs_sweep(tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", *FAST, "--index", "BIVF16:nprobe=1|16", "--index", "ivf:nlist=16,nprobe=1|16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["index"], r["params"]["nprobe"]) for r in rows] == [("BIVF16", 1), ("BIVF16", 16), ("ivf", 1), ("ivf", 16)]
    # probing every list is exhaustive: exact Hamming results; one list of 16 is not
    assert rows[1]["recall_hamming"] == rows[3]["recall_hamming"] == 1.0
    assert rows[0]["recall_hamming"] < 1.0


def test_mmap_float16_rescoring_keeps_vectors_out_of_ram(tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", *FAST, "--index", "flat", "--oversample", "4", "--vectors", "mmap",
                                       "--vector-dtype", "float16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()][1]
    assert row["oversample"] == 4 and row["rescore_vectors"] == "mmap:float16"
    assert row["bytes_per_vector"] == pytest.approx(24.0 + 128 * 4 / 2000)  # only codes, ids and the offset in RAM
    assert row["disk_bytes_per_vector"] == pytest.approx(128 * 2, rel=0.01)


def test_report_rebuilds_tables_and_plots_from_rows(tmp_path):
    out = tmp_path / "o"
    CliRunner().invoke(main, ["bench", *FAST, "--index", "flat", "--index", "hnsw:M=8,ef_search=8|32", "--out", str(out)])
    result = CliRunner().invoke(main, ["report", str(out / "results.jsonl"), "--markdown", "--plot", str(tmp_path / "p.png"), "--recall", "hamming"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3  # header, rule, one line per row
    assert lines[2].startswith("| flat | - | ") and "| 1.000 |" in lines[2]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    bad = CliRunner().invoke(main, ["report", str(tmp_path / "bad.jsonl")])
    assert bad.exit_code == 2 and "not JSON Lines" in bad.output


def test_toml_config_and_config_errors(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('dataset = "synthetic-small"\nindexes = ["hnsw:M=8,ef_search=8|16"]\nk = 3\nruns = 1\n'
                   'latency_queries = 2\nmax_queries = 10\nout = "%s"\n' % (tmp_path / "o"))
    result = CliRunner().invoke(main, ["bench", "--config", str(cfg), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert [r["params"]["ef_search"] for r in rows] == [8, 16] and all(r["k"] == 3 for r in rows)
    (tmp_path / "bad.toml").write_text("indexes = [\n")
    (tmp_path / "typo.yaml").write_text("indexs: [flat]\n")
    for name, message in (("bad.toml", "cannot parse config"), ("typo.yaml", "unknown key(s) ['indexs']")):
        bad = CliRunner().invoke(main, ["bench", "--config", str(tmp_path / name)])
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_bench_rerank_rows_read_fewer_floats(tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["bench", *FAST, "--index", "flat", "--oversample", "8", "--rerank-oversample", "2,9",
                                       "--rotation", "itq", "--thresholds", "mean", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # plain, float rescoring of 8x, and 8x -> 2x asymmetric -> floats (a rerank of 9 >= 8 is skipped)
    assert [(r["oversample"], r["rerank_oversample"]) for r in rows] == [(None, None), (8, None), (8, 2)]
    two, three = rows[1], rows[2]
    assert two["vectors_read_per_query"] == 8 * 5 and three["vectors_read_per_query"] == 2 * 5
    assert three["candidates_per_query"] == 8 * 5 and three["rotation"] == "itq" and three["qb"] == 4
    assert three["recall_float"] > rows[0]["recall_float"]
    assert "read/q" in result.output and "flat+asym+rescore" in result.output
    bad = CliRunner().invoke(main, ["bench", *FAST, "--index", "flat", "--rerank-oversample", "2"])
    assert bad.exit_code == 2 and "give --oversample factors too" in bad.output


def test_tune_rows_go_to_results_jsonl_like_bench_rows(tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["tune", "--dataset", "synthetic-small", "--index", "hnsw:M=8,ef_search=4", "--oversample", "1",
                                       "--target-recall", "0.8", "--k", "5", "--runs", "1", "--latency-queries", "3",
                                       "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    bench = CliRunner().invoke(main, ["bench", *FAST, "--index", "hnsw:M=8,ef_search=4", "--oversample", "2", "--out", str(tmp_path / "b")])
    assert bench.exit_code == 0, bench.output
    bench_keys = set(json.loads((tmp_path / "b" / "results.jsonl").read_text().splitlines()[1]))
    for row in rows:
        # "library" (which library ran a bench row: annbin, hnswlib, a peer) is not written by tune yet
        assert bench_keys - {"recall_hamming_ids", "library"} <= set(row), bench_keys - set(row)
        assert row["index"] == "hnsw" and row["params"]["M"] == 8 and row["oversample"] >= 1
    final = rows[-1]
    assert final["tune"] == {**final["tune"], "half": "holdout", "chosen": True, "target_recall": 0.8}
    assert final["recall_float"] >= 0.8 and final["nq"] == 50 and final["latency_p99_ms"] > 0
    assert f"ef_search={final['params']['ef_search']},oversample={final['oversample']}" in result.output
    # the report reads tune rows like bench rows
    rep = CliRunner().invoke(main, ["report", str(out / "results.jsonl"), "--markdown"])
    assert rep.exit_code == 0 and rep.output.count("| hnsw+rescore (trial) |") == len(rows) - 1
    assert rep.output.count("| hnsw+rescore (tuned) |") == 1


def test_tune_unreachable_target_exits_1(tmp_path):
    result = CliRunner().invoke(main, ["tune", "--dataset", "synthetic-small", "--index", "hnsw:M=8,ef_search=4", "--oversample", "1", "--target-recall", "0.999",
                                       "--k", "5", "--runs", "1", "--latency-queries", "0", "--max-trials", "4", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "does NOT reach the target 0.999" in result.output


@pytest.mark.parametrize("args, message", [
    (["--index", "hnsw:M=8|16"], "not a sweep"),
    (["--index", "lsh"], "unknown index spec"),
    (["--index", "flat", "--target-recall", "1.5"], "--target-recall must be in (0, 1]"),
    (["--index", "flat", "--oversample", "2", "--rerank-oversample", "0"], "--rerank-oversample must be >= 1"),
    (["--index", "flat", "--rerank-oversample", "2"], "give --oversample too"),
    (["--index", "flat", "--oversample", "2", "--params", "ef"], "cannot tune ['ef']"),
    (["--index", "flat", "--params", "speed"], "--params: unknown ['speed']"),
    (["--index", "float-hnsw", "--rotation", "itq"], "need a code first stage"),
    (["--index", "flat", "--oversample", "2", "--confidence", "1"], "--confidence must be in"),
    (["--index", "flat", "--oversample", "2", "--dataset", "nope"], "unknown dataset"),
])
def test_tune_bad_input_is_one_line_exit_2(args, message):
    result = CliRunner().invoke(main, ["tune", "--dataset", "synthetic-small", "--no-progress", "--runs", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_tune_and_report_html_as_real_subprocesses(tmp_path):
    out = tmp_path / "o"
    env = {**os.environ, "ANNBIN_CACHE": str(tmp_path / "cache")}
    run = [sys.executable, "-m", "annbin.bench.cli"]
    proc = subprocess.run([*run, "tune", "-d", "synthetic-small", "-i", "float-hnsw:M=8,ef=5", "--target-recall", "0.9", "-k", "5",
                           "--runs", "1", "--latency-queries", "2", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    final = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert final["index"] == "float-hnsw" and final["recall_float"] >= 0.9 and final["tune"]["chosen"]
    page = tmp_path / "r.html"
    proc = subprocess.run([*run, "report", str(out / "results.jsonl"), "--html", str(page)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert page.read_text().startswith("<!DOCTYPE html>") and "HTML report written" in proc.stderr
    bad = subprocess.run([*run, "tune", "-d", "synthetic-small", "-i", "flat", "--target-recall", "2"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("annbin: error:") and len(bad.stderr.strip().splitlines()) == 1


def test_report_bad_input_is_one_line_exit_2(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    for args, message in ((["rows.jsonl"], "not result rows"), (["empty.jsonl"], "holds no result rows"), (["missing.jsonl"], "missing.jsonl")):
        result = CliRunner().invoke(main, ["report", *(str(tmp_path / a) for a in args), "--html", str(tmp_path / "x.html")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_progress_bars_on_ground_truth_and_dataset_build(tmp_path, monkeypatch):
    """Progress (with ETA) where the time goes: exact float ground truth in `datasets build` and in the bench."""
    built = CliRunner().invoke(main, ["datasets", "build", "synthetic-small", "--progress"])
    assert built.exit_code == 0, built.output
    assert "ground truth (2,000 x 100, exact ip)" in built.stderr and "100/100" in built.stderr
    monkeypatch.setenv("ANNBIN_CACHE", str(tmp_path / "fresh"))  # not cached yet: the bench computes it
    result = CliRunner().invoke(main, ["bench", *FAST[:-1], "--index", "flat", "--progress"])
    assert result.exit_code == 0, result.output
    assert "ground truth (2,000 x 100, exact ip)" in result.stderr
