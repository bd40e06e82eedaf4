"""The ``annbin`` command line: a thin click layer over ``annbin.bench.run``, ``annbin.bench.tune_run``,
``annbin.bench.report`` and ``annbin.bench.datasets``.

Bad input (unknown dataset or spec, unreadable file, k out of range, an operation the variant cannot
do) and a missing optional extra (``--plot`` without matplotlib) print one line on stderr and exit
with code 2; set ``ANNBIN_DEBUG=1`` to see the traceback instead. Anything else (an internal
``TypeError``, say) is a bug: its traceback shows, exit code 1.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from annbin import __version__
from annbin._checks import InputTypeError
from annbin._extras import MissingExtraError
from annbin.bench.run import DEFAULT_VECTORS, VECTOR_STORES

EXIT_USAGE = 2


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, InputTypeError, NotImplementedError, OSError, MissingExtraError) as exc:
            if os.environ.get("ANNBIN_DEBUG"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"annbin: error: {message}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def _int_list(values: tuple[str, ...], option: str = "--oversample") -> list[int]:
    out = []
    for value in values:
        for part in filter(None, value.split(",")):
            try:
                out.append(int(part))
            except ValueError:
                raise ValueError(f"{option} takes integers (e.g. 1,2,4,10), got {part!r}") from None
    return out


# One --vectors for bench and tune: the same name, values and default (annbin.bench.run.DEFAULT_VECTORS).
# bench leaves it None when not given, so a --config file can set it.
_vectors_option = click.option(
    "--vectors", type=click.Choice(list(VECTOR_STORES)), default=None,
    help=f"Where rescoring reads the float vectors: a memory-mapped .npy (mmap) or RAM (ram). Default: {DEFAULT_VECTORS}.")


@click.group()
@click.version_option(__version__, prog_name="annbin")
def main() -> None:
    """annbin: nearest-neighbour search over binary embeddings."""


@main.command()
@click.option("--dataset", "-d", default=None, help="Dataset name (see `annbin datasets`) or a file path. Default: the shipped real set.")
@click.option("--index", "-i", "indexes", multiple=True, help='Index spec, repeatable; "|" lists sweep values: "hnsw:M=16|32,ef_search=16|64".')
@click.option("--k", "-k", type=int, default=None, help="Neighbours per query (default 10).")
@click.option("--oversample", multiple=True, help="Float rescoring of oversample x k candidates, a list of factors, e.g. 1,2,4,10 (code first stages).")
@click.option("--rerank-oversample", multiple=True, help="Asymmetric stage: float vectors read per result (e.g. 2,3) out of each --oversample factor's candidates.")
@click.option("--rotation", type=click.Choice(["none", "random", "itq"]), default=None, help="Rotate floats before the sign bit (itq learns it; default none).")
@click.option("--rerank-bits", type=click.Choice(["1", "2"]), default=None, help="Bits per dimension the asymmetric rerank reads (2 keeps a second plane).")
@click.option("--qb", type=int, default=None, help="Query bits of the asymmetric rerank (0 = float query; default 4).")
@_vectors_option
@click.option("--vector-dtype", type=click.Choice(["float32", "float16"]), default=None, help="Precision of the rescoring vectors (float16 halves their bytes).")
@click.option("--project-bits", type=int, default=None, help="Project to this many bits (random hyperplanes) before binarizing: short codes for MIH.")
@click.option("--thresholds", type=click.Choice(["zero", "median", "mean"]), default=None, help="Bit = x > 0 (zero), x > per-dimension median, or x > mean (centring).")
@click.option("--threads", type=int, default=None, help="Search threads (faiss OpenMP, hnswlib). Default 1.")
@click.option("--runs", type=int, default=None, help="Batch-search repeats; queries/s uses the median (default 3).")
@click.option("--latency-queries", type=int, default=None, help="Queries timed one at a time for p50/p95/p99 (default 200).")
@click.option("--max-queries", type=int, default=None, help="Use only the first N queries.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML or TOML file with the same option names; command-line options win.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Directory for results.jsonl (appended) and plots.")
@click.option("--plot/--no-plot", default=False, help="Write recall-vs-queries/s PNG(s) into --out.")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr (default: when stderr is a terminal).")
@_one_line_errors
def bench(dataset: str | None, indexes: tuple[str, ...], k: int | None, oversample: tuple[str, ...], rerank_oversample: tuple[str, ...], rotation: str | None,
          rerank_bits: str | None, qb: int | None, vectors: str | None, vector_dtype: str | None, project_bits: int | None,
          thresholds: str | None, threads: int | None, runs: int | None, latency_queries: int | None, max_queries: int | None,
          config_path: str | None, out: str | None, plot: bool, progress: bool | None) -> None:
    """Measure recall (vs exact float and exact Hamming search), queries/s, latency, build time and memory."""
    from rich.console import Console

    from annbin.bench.default_plan import plan_settings, run_plan
    from annbin.bench.report import check_plotting, plot_recall_qps, results_table, summary_line
    from annbin.bench.rows import append_rows
    from annbin.bench.run import BenchConfig, load_config

    settings: dict[str, Any] = load_config(config_path) if config_path else {}
    given = {
        "dataset": dataset, "k": k, "vectors": vectors, "vector_dtype": vector_dtype, "project_bits": project_bits, "thresholds": thresholds, "threads": threads,
        "runs": runs, "latency_queries": latency_queries, "max_queries": max_queries,
        "indexes": list(indexes) or None, "oversample": _int_list(oversample) or None, "rerank_oversample": _int_list(rerank_oversample, "--rerank-oversample") or None,
        "rotation": None if rotation in (None, "none") else rotation, "rerank_bits": None if rerank_bits is None else int(rerank_bits), "qb": qb,
    }
    settings.update({key: value for key, value in given.items() if value is not None})
    out_dir = Path(out) if out else (Path(settings["out"]) if settings.get("out") else None)
    plot = plot or bool(settings.pop("plot", False))
    settings.pop("out", None)
    if plot and out_dir is None:
        raise ValueError("--plot needs --out DIR to write the PNG into")
    if plot:
        check_plotting()  # now, not after a run of minutes
    # No index named: the default plan (binary, three-stage and float rows); --project-bits keeps the binary
    # default set alone, since projected codes cannot be rescored.
    parts = plan_settings(settings) if "indexes" not in settings and settings.get("project_bits") is None else [settings]
    configs = [BenchConfig(**part) for part in parts]
    show = sys.stderr.isatty() if progress is None else progress
    # Piped output gets a wide table rather than rich's 80-column fallback.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    rows = run_plan(configs, progress=show)
    cfg = configs[0]
    console.print(results_table(rows, title=f"{rows[0]['dataset']}  n={rows[0]['n']}  nq={rows[0]['nq']}  k={cfg.k}  {cfg.threads} thread(s)"))
    if rows[0].get("kendall_tau") is not None:
        console.print(f"Kendall tau, float vs Hamming order of each query's top-100: {rows[0]['kendall_tau']:.3f}")
    summary = summary_line(rows)
    if summary:
        console.print(summary, soft_wrap=True, markup=False, highlight=False)
    if out_dir is not None:
        append_rows(out_dir / "results.jsonl", rows)
        console.print(f"{len(rows)} rows appended to {out_dir / 'results.jsonl'}")
        if plot:
            png = plot_recall_qps(rows, out_dir / "recall_vs_qps.png")
            console.print(f"plot written to {png}")
            if any(row.get("recall_hamming") is not None for row in rows):
                png = plot_recall_qps(rows, out_dir / "recall_hamming_vs_qps.png", recall_key="recall_hamming")
                console.print(f"plot written to {png}")


@main.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--markdown", is_flag=True, help="Print a Markdown table instead of a terminal table.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Also write a recall-vs-queries/s PNG here.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write one self-contained HTML file here (table, plot, dataset and machine facts; opens offline).")
@click.option("--recall", type=click.Choice(["float", "hamming"]), default="float", help="Which recall the plot's x axis shows.")
@_one_line_errors
def report(results: str, markdown: bool, plot_path: str | None, html_path: str | None, recall: str) -> None:
    """Tables, plots and an HTML report from a results.jsonl written by `annbin bench --out` / `annbin tune --out`
    (or by benchmarks/scale.py: figures against N)."""
    import json

    from rich.console import Console

    from annbin.bench.report import check_plotting, html_report, markdown_table, plot_recall_qps, results_table
    from annbin.bench.rows import read_rows
    from annbin.bench.scale_report import is_scale_rows, scale_html, scale_markdown, scale_plot

    if plot_path:
        check_plotting()
    try:
        rows = read_rows(Path(results))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{results!r} is not JSON Lines: {exc}") from None
    if not rows:
        raise ValueError(f"{results!r} holds no result rows")
    if all(isinstance(row, dict) for row in rows) and is_scale_rows(rows):  # benchmarks/scale.py: figures against N
        click.echo(scale_markdown(rows))
        if plot_path:
            click.echo(f"plot written to {scale_plot(rows, plot_path)}", err=True)
        if html_path:
            click.echo(f"HTML report written to {scale_html(rows, html_path, source=Path(results).name)}", err=True)
        return
    if not all(isinstance(row, dict) and {"index", "qps"} <= set(row) for row in rows):
        raise ValueError(f"{results!r} holds lines that are not result rows (each needs at least 'index' and 'qps')")
    if markdown:
        click.echo(markdown_table(rows))
    else:
        (Console() if sys.stdout.isatty() else Console(width=160)).print(results_table(rows))
    if plot_path:
        plot_recall_qps(rows, plot_path, recall_key=f"recall_{recall}")
        click.echo(f"plot written to {plot_path}", err=True)
    if html_path:
        html_report(rows, html_path, source=Path(results).name)
        click.echo(f"HTML report written to {html_path}", err=True)


@main.command()
@click.option("--dataset", "-d", default=None, help="Dataset name or path (as for bench). Default: the shipped real set.")
@click.option("--index", "-i", "index", required=True, help='One index spec; its search values are where the tuner starts: "hnsw:M=16,ef_search=16".')
@click.option("--target-recall", type=float, default=0.95, show_default=True, help="recall@k against exact float search to reach.")
@click.option("--k", "-k", type=int, default=10, show_default=True, help="Neighbours per query.")
@click.option("--oversample", type=int, default=None, help="Float rescoring on, starting at this oversample (tuned).")
@click.option("--rerank-oversample", type=int, default=None, help="Asymmetric stage on, starting at this rerank_oversample (tuned); needs --oversample.")
@click.option("--rotation", type=click.Choice(["none", "random", "itq"]), default=None, help="Rotate floats before the sign bit.")
@click.option("--thresholds", type=click.Choice(["zero", "median", "mean"]), default="zero", help="Code offset, as for bench.")
@click.option("--rerank-bits", type=click.Choice(["1", "2"]), default="1", help="Bits per dimension the asymmetric rerank reads.")
@click.option("--qb", type=int, default=4, show_default=True, help="Starting query bits of the asymmetric rerank (0 = float query, not tuned).")
@_vectors_option
@click.option("--params", "tune_params", default=None, help="Comma-separated search parameters to tune (default: all that apply: ef_search, ef, nprobe, oversample, rerank_oversample, qb).")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="Probability of meeting the target on the held-out half: sets the margin a trial must clear (0.5 = none).")
@click.option("--max-trials", type=int, default=40, show_default=True, help="Cap on measured settings.")
@click.option("--threads", type=int, default=1, show_default=True, help="Search threads.")
@click.option("--runs", type=int, default=3, show_default=True, help="Batch timings per trial (median).")
@click.option("--latency-queries", type=int, default=200, show_default=True, help="Held-out queries timed one at a time for the chosen setting.")
@click.option("--max-queries", type=int, default=None, help="Use only the first N queries (half tune, half check).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the query split (and of rotations).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Directory for results.jsonl (appended).")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr (default: when stderr is a terminal).")
@_one_line_errors
def tune(dataset: str | None, index: str, target_recall: float, k: int, oversample: int | None, rerank_oversample: int | None, rotation: str | None,
         thresholds: str, rerank_bits: str, qb: int, vectors: str | None, tune_params: str | None, confidence: float, max_trials: int, threads: int, runs: int,
         latency_queries: int, max_queries: int | None, seed: int, out: str | None, progress: bool | None) -> None:
    """Find the fastest search settings that reach --target-recall on half of the queries; report the other half's recall."""
    from rich.console import Console

    from annbin.bench.report import results_table
    from annbin.bench.rows import append_rows
    from annbin.bench.tune_run import TuneConfig, run_tune

    cfg = TuneConfig(index=index, dataset=dataset or "", target_recall=target_recall, k=k, oversample=oversample, rerank_oversample=rerank_oversample,
                     rotation=None if rotation in (None, "none") else rotation, thresholds=thresholds, rerank_bits=int(rerank_bits),
                     qb=qb, vectors=vectors or DEFAULT_VECTORS, params=[p.strip() for p in tune_params.split(",") if p.strip()] if tune_params else None,
                     confidence=confidence, threads=threads, runs=runs, latency_queries=latency_queries, max_queries=max_queries,
                     max_trials=max_trials, seed=seed)
    show = sys.stderr.isatty() if progress is None else progress
    result, rows = run_tune(cfg, progress=show)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    first = rows[-1]
    console.print(results_table(rows, title=f"tuning {index} on {first['dataset']}  n={first['n']}  k={k}: "
                                            f"{len(rows) - 1} trials on {rows[0]['nq']} queries, chosen one on {first['nq']} held out"))
    settings = ",".join(f"{key}={value}" for key, value in result.params.items())
    verdict = "meets" if result.met else "does NOT reach"
    margin = next(t["margin"] for t in result.curve if t["params"] == result.params)
    console.print(f"tuned {index}: {settings} {verdict} the target {target_recall} on the tuning half (recall {result.recall_tune:.3f}, "
                  f"margin {margin:.3f}); "
                  f"held-out half: recall {result.recall_holdout:.3f} at {result.qps:,.0f} q/s, {first['bytes_per_vector']:,.0f} bytes/vector",
                  soft_wrap=True, markup=False, highlight=False)
    if out is not None:
        append_rows(Path(out) / "results.jsonl", rows)
        console.print(f"{len(rows)} rows appended to {Path(out) / 'results.jsonl'}")
    if not result.met:
        sys.exit(1)


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--radius", "-r", type=int, required=True, help="Report pairs at Hamming distance < RADIUS (strictly less, as faiss range_search); >= 1.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help='Write the pairs: .npy ((m, 3) int64 rows i, j, distance) or .jsonl (one {"i", "j", "distance"} per line); i < j, sorted by distance, i, j.')
@click.option("--groups", type=click.Path(dir_okay=False), default=None, help="Write each row's group label (.npy int64, n rows): the smallest row of its group.")
@click.option("--keep", "keep_path", type=click.Path(dir_okay=False), default=None,
              help="Write the rows to keep (.npy int64, ascending): one per group, chosen by --keep-rule, and every row with no duplicate; the other rows are the duplicates to drop.")
@click.option("--keep-rule", type=click.Choice(["first", "last"]), default="first", show_default=True,
              help="The row --keep keeps of each group: its smallest row number (first) or largest (last).")
@click.option("--bits", type=int, default=None, help="Text: SimHash bits, 64, 128 or 256 (default 64).")
@click.option("--shingle", type=int, default=None, help="Text: words per shingle (default 3).")
@click.option("--project-bits", type=int, default=None,
              help="Float .npy: project to this many bits (random hyperplanes) before binarizing, as `annbin bench` (default: one sign bit per dimension).")
@click.option("--thresholds", type=click.Choice(["zero", "median", "mean"]), default=None, help="Float .npy: bit = x > 0 (zero, the default), x > per-dimension median, or x > mean, as `annbin bench`.")
@click.option("--max-pairs", type=int, default=10_000_000, show_default=True, help="Stop with an error instead of returning more pairs than this.")
@click.option("--threads", type=int, default=None, help="Threads of the join (default: all cores).")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr (default: when stderr is a terminal).")
@_one_line_errors
def dedup(input_path: str, radius: int, out: str | None, groups: str | None, keep_path: str | None, keep_rule: str, bits: int | None,
          shingle: int | None, project_bits: int | None, thresholds: str | None, max_pairs: int, threads: int | None, progress: bool | None) -> None:
    """Find every pair of near-duplicates in INPUT, exactly, and group them.

    INPUT is a .npy of packed uint8 codes (n, bytes), a .npy of float embeddings (n, dim) binarized
    as `annbin bench` does, or any other file as UTF-8 text, one document per line (row i = line
    i + 1), hashed to SimHash codes. Prints items, pairs, groups, items to drop and seconds.

    \b
    Example: annbin dedup docs.txt --radius 4 --out pairs.jsonl --groups groups.npy --keep keep.npy
    """
    from annbin.bench.dedup import run_dedup, summary_line

    show = sys.stderr.isatty() if progress is None else progress
    result = run_dedup(input_path, radius, out=out, groups=groups, keep=keep_path, keep_rule=keep_rule, max_pairs=max_pairs, threads=threads,
                       bits=bits, shingle=shingle, project_bits=project_bits, thresholds=thresholds, progress=show)
    click.echo(summary_line(result))
    for what, path in (("pairs", out), ("groups", groups), ("rows to keep", keep_path)):
        if path:
            click.echo(f"{what} written to {path}")


@main.group(invoke_without_command=True)
@click.pass_context
@_one_line_errors
def datasets(ctx: click.Context) -> None:
    """List the known datasets (size, dimension, metric)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from annbin.bench.datasets import list_datasets

    cols = ("name", "status", "n", "nq", "dim", "metric", "description")
    table = Table(title="annbin datasets")
    for col in cols:
        table.add_column(col, justify="right" if col in ("n", "nq", "dim") else "left")
    for info in list_datasets():
        table.add_row(*(str(info.get(col, "")) for col in cols))
    (Console() if sys.stdout.isatty() else Console(width=160)).print(table)


@datasets.command("build")
@click.argument("name")
@click.option("--python", "python", type=click.Path(dir_okay=False), default=None,
              help="Interpreter (of a venv with the build requirements) to run a dataset's build script with.")
@click.option("--rebuild", is_flag=True, help="Run the build script even if the dataset is already built.")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr (default: when stderr is a terminal).")
@_one_line_errors
def datasets_build(name: str, python: str | None, rebuild: bool, progress: bool | None) -> None:
    """Prepare dataset NAME: build it if it is built from a script (see `annbin datasets`),
    verify its files' sha256 and compute its cached ground truth."""
    from annbin.bench.datasets import build_dataset

    show = sys.stderr.isatty() if progress is None else progress
    result = build_dataset(name, python=python, rebuild=rebuild, progress=show)
    click.echo(f"dataset {name!r} ready" + (f": {result}" if result else ""))


if __name__ == "__main__":  # pragma: no cover
    main()
