"""A new user's path: build the wheel, install it in a fresh venv, run ``annbin`` away from the repo.

The venv sees the installed wheel and, beside it, exactly the distributions the wheel's core
``Requires-Dist`` pulls in (resolved in this environment, linked into a folder named by a ``.pth``
file): not the repository, not annbin's editable install, not matplotlib or pyyaml. That keeps the
test offline apart from the build backend (pip fetches setuptools for the isolated build, from
whatever index pip is configured with) and proves that the core dependencies are enough for
``annbin bench``. About a minute on two cores, most of it the default run's index builds: marked
slow, and CI (``.ci/run``, the README's test command) runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("base.npy", "queries.npy", "meta.json", "texts.tsv.gz", "LICENSE-WordNet")

pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _core_closure(requires: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that ``requires`` (no extras) pulls in, transitively."""
    env = {"extra": ""}
    todo = [Requirement(r) for r in requires]
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in seen:
            continue
        dist = metadata.distribution(req.name)  # PackageNotFoundError: this environment lacks a dependency
        seen[key] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return list(seen.values())


def _link_dependencies(dists: list[metadata.Distribution], folder: Path) -> None:
    """Symlink each distribution's top-level files (packages, modules, .libs, dist-info) into ``folder``."""
    folder.mkdir()
    for dist in dists:
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        assert tops, f"{dist.metadata['Name']} lists no files"
        for top in tops:
            target = Path(dist.locate_file(top))
            if target.exists() and not (folder / top).exists():
                (folder / top).symlink_to(target)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "ANNBIN_DATA_DIR")}
    env["ANNBIN_CACHE"] = str(tmp_path / "cache")  # ground truth computed here, not read from a warm cache
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """annbin's wheel installed into a fresh venv: ``python``, ``annbin`` (paths), ``env``, ``wheel``,
    ``away`` (a working directory far from the repository), ``requires`` (the wheel's Requires-Dist)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = _clean_env(tmp)
    # Build from a copy of what the wheel is made of, so stale build/ output in the checkout cannot leak in.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "annbin", src / "annbin", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(tmp / "dist"), "-q"], cwd=tmp, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("annbin-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    got = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
               cwd=tmp, env=env)
    assert got.returncode == 0, got.stderr[-3000:]

    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip() for line in zf.read(meta_name).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    _link_dependencies(_core_closure(requires), tmp / "deps")
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp, env=env).stdout.strip()
    (Path(purelib) / "annbin_test_deps.pth").write_text(str(tmp / "deps") + "\n")
    away = tmp / "elsewhere"  # no repository, no datasets/ folder anywhere near
    away.mkdir()
    return SimpleNamespace(python=python, annbin=venv / "bin" / "annbin", venv=venv, env=env, wheel=wheel, away=away,
                           requires=requires)


def test_wheel_ships_the_data_and_a_slim_core(installed):
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
    assert {f"annbin/bench/data/minilm_wordnet/{f}" for f in SHIPPED} <= names
    assert not any(n.startswith(("tests/", "datasets/", "benchmarks/")) for n in names)
    core = {Requirement(r).name.lower() for r in installed.requires if "extra ==" not in r}
    assert {"numpy", "faiss-cpu", "hnswlib", "click"} <= core
    assert not core & {"matplotlib", "pyyaml", "h5py", "ray"}
    assert installed.wheel.stat().st_size < 25e6  # ~16 MB: the shipped set (float16) and the code


def test_installed_wheel_resolves_to_the_venv(installed):
    probe = ("import annbin, annbin.bench.datasets as d, importlib.util as u; print(annbin.__file__); print(d.data_dir()); "
             "print(u.find_spec('matplotlib') is None, u.find_spec('yaml') is None)")
    out = _run([str(installed.python), "-c", probe], cwd=installed.away, env=installed.env)
    assert out.returncode == 0, out.stderr
    module, data, missing = out.stdout.splitlines()
    venv = installed.venv.resolve()
    assert Path(module).resolve().is_relative_to(venv) and Path(data).resolve().is_relative_to(venv), out.stdout
    assert missing == "True True"  # the core install really lacks the extras


def test_installed_wheel_lists_and_benches_the_shipped_set(installed, tmp_path):
    annbin, away, env = str(installed.annbin), installed.away, installed.env
    listing = _run([annbin, "datasets"], cwd=away, env=env)
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"minilm_wordnet\s.*shipped", listing.stdout), listing.stdout

    bench = _run([annbin, "bench", "--max-queries", "50", "--out", str(tmp_path)], cwd=away, env=env)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "minilm_wordnet  n=20000  nq=50" in bench.stdout and "vs float HNSW" in bench.stdout, bench.stdout
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) >= 5 and {r["dataset"] for r in rows} == {"minilm_wordnet"} and {r["nq"] for r in rows} == {50}
    assert {"flat", "float-hnsw"} <= {r["index"] for r in rows}

    # the plot extra is absent here: one line naming it, exit code 2, before any work
    plot = _run([annbin, "bench", "--out", str(tmp_path / "p"), "--plot"], cwd=away, env=env, timeout=60)
    assert plot.returncode == 2 and plot.stdout == "", plot.stdout
    assert plot.stderr.strip() == "annbin: error: plotting needs matplotlib: pip install 'annbin[plot]'"

