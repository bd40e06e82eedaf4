"""The ``annbin`` command line: a thin click layer over ``annbin.bench`` and ``annbin.datasets``.

Bad input (unknown dataset or spec, unreadable file, k out of range) prints one line on stderr and
exits with code 2; set ``ANNBIN_DEBUG=1`` to see the traceback instead.
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

EXIT_USAGE = 2


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, OSError) as exc:
            if os.environ.get("ANNBIN_DEBUG"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"annbin: error: {message}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def _int_list(values: tuple[str, ...], option: str = "--rescore") -> list[int]:
    out = []
    for value in values:
        for part in filter(None, value.split(",")):
            try:
                out.append(int(part))
            except ValueError:
                raise ValueError(f"{option} takes integers (e.g. 1,2,4,10), got {part!r}") from None
    return out


@click.group()
@click.version_option(__version__, prog_name="annbin")
def main() -> None:
    """annbin: nearest-neighbour search over binary embeddings."""


@main.command()
@click.option("--dataset", "-d", default=None, help="Dataset name (see `annbin datasets`) or a file path. Default: the shipped real set.")
@click.option("--index", "-i", "indexes", multiple=True, help='Index spec, repeatable; "|" lists sweep values: "hnsw:M=16|32,ef_search=16|64".')
@click.option("--k", "-k", type=int, default=None, help="Neighbours per query (default 10).")
@click.option("--rescore", multiple=True, help="Oversample factors for float rescoring, e.g. 1,2,4,10 (binary indexes only).")
@click.option("--rerank", multiple=True, help="Asymmetric rerank: float vectors kept per result (e.g. 2,3) out of each --rescore factor's candidates.")
@click.option("--rotation", type=click.Choice(["none", "random", "itq"]), default=None, help="Rotate floats before the sign bit (itq learns it; default none).")
@click.option("--rerank-bits", type=click.Choice(["1", "2"]), default=None, help="Bits per dimension the asymmetric rerank reads (2 keeps a second plane).")
@click.option("--qb", type=int, default=None, help="Query bits of the asymmetric rerank (0 = float query; default 4).")
@click.option("--vectors", type=click.Choice(["ram", "mmap"]), default=None, help="Rescoring reads float vectors from RAM or a memory-mapped .npy.")
@click.option("--vector-dtype", type=click.Choice(["float32", "float16"]), default=None, help="Precision of the rescoring vectors (float16 halves their bytes).")
@click.option("--bits", type=int, default=None, help="Project to this many bits (random hyperplanes) before binarizing: short codes for MIH.")
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
def bench(dataset: str | None, indexes: tuple[str, ...], k: int | None, rescore: tuple[str, ...], rerank: tuple[str, ...], rotation: str | None,
          rerank_bits: str | None, qb: int | None, vectors: str | None, vector_dtype: str | None, bits: int | None,
          thresholds: str | None, threads: int | None, runs: int | None, latency_queries: int | None, max_queries: int | None,
          config_path: str | None, out: str | None, plot: bool, progress: bool | None) -> None:
    """Measure recall (vs exact float and exact Hamming search), queries/s, latency, build time and memory."""
    from rich.console import Console

    from annbin.bench import DEFAULT_RESCORE, BenchConfig, append_rows, load_config, run_bench
    from annbin.report import plot_recall_qps, results_table

    settings: dict[str, Any] = load_config(config_path) if config_path else {}
    given = {
        "dataset": dataset, "k": k, "vectors": vectors, "vector_dtype": vector_dtype, "bits": bits, "thresholds": thresholds, "threads": threads,
        "runs": runs, "latency_queries": latency_queries, "max_queries": max_queries,
        "indexes": list(indexes) or None, "rescore": _int_list(rescore) or None, "rerank": _int_list(rerank, "--rerank") or None,
        "rotation": None if rotation in (None, "none") else rotation, "rerank_bits": None if rerank_bits is None else int(rerank_bits), "qb": qb,
    }
    settings.update({key: value for key, value in given.items() if value is not None})
    if "indexes" not in settings and "rescore" not in settings and settings.get("bits") is None:
        settings["rescore"] = list(DEFAULT_RESCORE)
    out_dir = Path(out) if out else (Path(settings["out"]) if settings.get("out") else None)
    plot = plot or bool(settings.pop("plot", False))
    settings.pop("out", None)
    if plot and out_dir is None:
        raise ValueError("--plot needs --out DIR to write the PNG into")
    cfg = BenchConfig(**settings)
    show = sys.stderr.isatty() if progress is None else progress
    # Piped output gets a wide table rather than rich's 80-column fallback.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    rows = run_bench(cfg, progress=show)
    console.print(results_table(rows, title=f"{rows[0]['dataset']}  n={rows[0]['n']}  nq={rows[0]['nq']}  k={cfg.k}  {cfg.threads} thread(s)"))
    if rows[0].get("kendall_tau") is not None:
        console.print(f"Kendall tau, float vs Hamming order of each query's top-100: {rows[0]['kendall_tau']:.3f}")
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
@click.option("--recall", type=click.Choice(["float", "hamming"]), default="float", help="Which recall the plot's x axis shows.")
@_one_line_errors
def report(results: str, markdown: bool, plot_path: str | None, recall: str) -> None:
    """Tables and plots from a results.jsonl written by `annbin bench --out`."""
    import json

    from rich.console import Console

    from annbin.bench import read_rows
    from annbin.report import markdown_table, plot_recall_qps, results_table

    try:
        rows = read_rows(Path(results))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{results!r} is not JSON Lines: {exc}") from None
    if not rows:
        raise ValueError(f"{results!r} holds no result rows")
    if markdown:
        click.echo(markdown_table(rows))
    else:
        (Console() if sys.stdout.isatty() else Console(width=160)).print(results_table(rows))
    if plot_path:
        plot_recall_qps(rows, plot_path, recall_key=f"recall_{recall}")
        click.echo(f"plot written to {plot_path}", err=True)


@main.group(invoke_without_command=True)
@click.pass_context
@_one_line_errors
def datasets(ctx: click.Context) -> None:
    """List the known datasets (size, dimension, metric)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from annbin.datasets import list_datasets

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
    from annbin.datasets import build_dataset

    show = sys.stderr.isatty() if progress is None else progress
    result = build_dataset(name, python=python, rebuild=rebuild, progress=show)
    click.echo(f"dataset {name!r} ready" + (f": {result}" if result else ""))


if __name__ == "__main__":  # pragma: no cover
    main()
