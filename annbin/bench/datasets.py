"""Datasets by name or path: the shipped sets, synthetic presets, files, and recipes (``get_dataset``).

What a ``Dataset`` is and how its ground truth is cached: ``annbin.bench.dataset_base``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from annbin.bench import formats as _formats
from annbin.bench.dataset_base import GT_MIN_K, ArrayDataset, Dataset
from annbin.bench.formats import PathLike
from annbin.bench.groundtruth import cache_dir, float_knn, prefix_knn, read_cached, write_cached
from annbin.bench.recipes import RECIPES, Recipe, built_dir, is_built, run_recipe, sha256_file

__all__ = [
    "DEFAULT_DATASET", "RECIPES", "ArrayDataset", "Dataset", "HDF5Dataset", "NpyDataset", "Recipe",
    "ShippedDataset", "SyntheticDataset", "VecsDataset", "build_dataset", "built_dir", "cache_dir",
    "data_dir", "float_knn", "get_dataset", "list_datasets", "prefix_truth",
]

DEFAULT_DATASET = "minilm_wordnet"
SYNTHETIC_PRESETS: dict[str, dict[str, int]] = {
    "synthetic": {"n": 20_000, "nq": 1_000, "dim": 384},
    "synthetic-small": {"n": 2_000, "nq": 100, "dim": 128},
    # a million vectors: the scale where MIH on short codes (``annbin bench --project-bits 64``) beats a scan
    "synthetic-1m": {"n": 1_000_000, "nq": 1_000, "dim": 128},
}
# The shipped sets are package data, so an installed wheel has them; a real folder, not a
# resource to extract, because the .npy files are read (and memory-mapped) in place.
_PACKAGE_DATA = Path(__file__).resolve().parent / "data"


def data_dir(path: PathLike | None = None) -> Path:
    """Where shipped datasets live: ``path``, else ``$ANNBIN_DATA_DIR``, else the package's ``annbin/bench/data/``."""
    if path is not None:
        return Path(path)
    if os.environ.get("ANNBIN_DATA_DIR"):
        return Path(os.environ["ANNBIN_DATA_DIR"]).expanduser()
    return _PACKAGE_DATA


class SyntheticDataset(Dataset):
    """Seeded clustered Gaussian embeddings: ``n`` base and ``nq`` query vectors of ``dim``.

    Points are Gaussian clusters (``n_clusters`` centres, within-cluster std ``spread``) in an
    ``intrinsic_dim``-d latent space, mapped to ``dim`` by a fixed random linear map, plus ambient
    noise of std ``noise / sqrt(dim)`` per coordinate. A low intrinsic dimension, as real text
    embeddings have, gives queries real neighbours: with the defaults sign codes keep about 0.6
    of the float top-10 (the shipped MiniLM set: 0.59). Queries come from the same clusters
    (fresh draws, separate seed stream: changing ``nq`` leaves the base unchanged).
    ``metric="ip"`` normalizes the vectors (cosine).
    """

    def __init__(self, n: int = 20_000, nq: int = 1_000, dim: int = 384, *, n_clusters: int = 100,
                 intrinsic_dim: int = 32, spread: float = 1.0, noise: float = 0.3, seed: int = 0,
                 metric: str = "ip", name: str | None = None) -> None:
        super().__init__()
        for key, value in (("n", n), ("nq", nq), ("dim", dim), ("n_clusters", n_clusters),
                           ("intrinsic_dim", intrinsic_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"synthetic: {key} must be a positive integer, got {value!r}")
        self.params: dict[str, Any] = {"n": int(n), "nq": int(nq), "dim": int(dim), "n_clusters": int(n_clusters),
                       "intrinsic_dim": int(intrinsic_dim), "spread": float(spread),
                       "noise": float(noise), "seed": int(seed)}
        self.metric, self.normalize = metric, metric == "ip"
        self.name = name or "synthetic-" + "-".join(f"{k}{v}" for k, v in self.params.items())
        self.description = f"seeded clustered Gaussian, {n_clusters} clusters, seed {seed}"

    def _load(self) -> tuple[Any, Any]:
        p = self.params
        centre_ss, base_ss, query_ss = np.random.SeedSequence(p["seed"]).spawn(3)
        rng = np.random.default_rng(centre_ss)
        centres = rng.standard_normal((p["n_clusters"], p["intrinsic_dim"]))
        lift = rng.standard_normal((p["intrinsic_dim"], p["dim"])) / np.sqrt(p["intrinsic_dim"])

        def draw(ss: np.random.SeedSequence, m: int) -> NDArray[np.float32]:
            rng = np.random.default_rng(ss)
            z = centres[rng.integers(0, p["n_clusters"], size=m)]
            z = z + p["spread"] * rng.standard_normal(z.shape)
            ambient = rng.standard_normal((m, p["dim"])) * (p["noise"] / np.sqrt(p["dim"]))
            return cast("NDArray[np.float32]", (z @ lift + ambient).astype(np.float32))  # rng arrays are typed Any

        return draw(base_ss, p["n"]), draw(query_ss, p["nq"])


class NpyDataset(Dataset):
    """Two ``.npy`` files, ``(n, dim)`` and ``(nq, dim)``, any numeric dtype.

    With no ``queries_path`` the base file's last rows are the queries (see ``get_dataset``).
    ``groundtruth_path`` (``.ivecs`` or ``.npy``, ``(nq, K)`` ids, nearest first) is used as the
    ground truth for k up to K.
    """

    def __init__(self, base_path: PathLike, queries_path: PathLike | None = None, *, metric: str = "l2",
                 normalize: bool = False, groundtruth_path: PathLike | None = None, name: str | None = None) -> None:
        super().__init__()
        self.paths = (Path(base_path), None if queries_path is None else Path(queries_path))
        self.gt_path = None if groundtruth_path is None else Path(groundtruth_path)
        self.metric, self.normalize = metric, normalize
        self.name = name or str(self.paths[0])
        self.description = f".npy files {', '.join(str(p) for p in self.paths if p)}"

    def _read(self, path: Path) -> NDArray[Any]:
        return _formats.read_npy(path)

    def _load(self) -> tuple[Any, Any]:
        if self.gt_path is not None:
            read = _formats.read_ivecs if self.gt_path.suffix == ".ivecs" else _formats.read_npy
            self._gt_ids = read(self.gt_path)
        base = self._read(self.paths[0])
        if self.paths[1] is None:
            return _formats.split_queries(base, str(self.paths[0]))
        return base, self._read(self.paths[1])


class VecsDataset(NpyDataset):
    """TEXMEX ``.fvecs``/``.bvecs`` files (base and queries); same options as ``NpyDataset``."""

    def _read(self, path: Path) -> NDArray[Any]:
        if path.suffix not in (".fvecs", ".bvecs"):
            raise ValueError(f"{str(path)!r}: expected a .fvecs or .bvecs file")
        return _formats.read_vecs(path, _formats.VECS_DTYPES[path.suffix])


_HDF5_METRICS = {"angular": ("ip", True), "cosine": ("ip", True), "euclidean": ("l2", False),
                 "l2": ("l2", False), "dot": ("ip", False), "ip": ("ip", False),
                 "inner_product": ("ip", False)}


class HDF5Dataset(Dataset):
    """An ann-benchmarks HDF5 file: ``train`` (base), ``test`` (queries), ``neighbors``.

    The ``distance`` attribute sets the metric: angular/cosine -> normalized, ``ip``;
    euclidean -> ``l2``; dot -> ``ip`` unnormalized. Other distances (hamming, jaccard) are
    refused. The file's ``neighbors`` are used as ground truth for k up to their width; D is
    recomputed from the vectors in this module's convention. Needs h5py (``annbin[hdf5]``).
    """

    def __init__(self, path: PathLike, *, distance: str | None = None, name: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self._data = _formats.read_hdf5(self.path)
        dist = (distance or self._data["distance"] or "").lower()
        if dist not in _HDF5_METRICS:
            raise ValueError(f"{str(self.path)!r}: distance {dist or 'attribute missing'!r} is not supported; "
                             f"expected one of {sorted(_HDF5_METRICS)}")
        self.metric, self.normalize = _HDF5_METRICS[dist]
        self.description = f"ann-benchmarks HDF5 ({dist})"
        self.name = name or self.path.name

    def _load(self) -> tuple[Any, Any]:
        self._gt_ids = self._data["neighbors"]
        return self._data["train"], self._data["test"]


class ShippedDataset(Dataset):
    """A dataset shipped in the package, ``annbin/bench/data/<name>/``: float16 ``.npy`` + ``meta.json``.

    ``root`` (else ``$ANNBIN_DATA_DIR``, else ``annbin/bench/data``) holds ``<name>/``. Vectors are
    read as float32 and renormalized when ``meta.json`` says they are normalized.
    """

    def __init__(self, name: str = DEFAULT_DATASET, *, root: PathLike | None = None) -> None:
        super().__init__()
        self.name, self.dir = name, data_dir(root) / name
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise ValueError(f"shipped dataset {name!r} not found: no {str(meta_path)!r} "
                             "(set ANNBIN_DATA_DIR to the folder that holds it)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
            self.metric, self.normalize = self.meta["metric"], bool(self.meta.get("normalized", False))
            self.files = {key: self.dir / self.meta["files"][key] for key in ("base", "queries")}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{str(meta_path)!r} is malformed: {exc}") from None
        self.description = self.meta.get("description", "")

    def _load(self) -> tuple[Any, Any]:
        return _formats.read_npy(self.files["base"]), _formats.read_npy(self.files["queries"])

    def verify(self, *, progress: bool = False) -> None:
        """Check the ``.npy`` files' sha256 against ``meta.json``; ``ValueError`` on a mismatch."""
        for path in self.files.values():
            want = self.meta.get("sha256", {}).get(path.name)
            got = sha256_file(path, progress=progress) if path.is_file() else "missing"
            if want != got:
                raise ValueError(f"{str(path)!r}: sha256 {got} does not match meta.json ({want})")


def _shipped_names(root: PathLike | None = None) -> list[str]:
    d = data_dir(root)
    return sorted(p.parent.name for p in d.glob("*/meta.json")) if d.is_dir() else []


def _from_path(p: Path, opts: dict[str, Any]) -> Dataset:
    if p.is_dir():
        meta = p / "meta.json"
        if meta.is_file():  # a folder like annbin/bench/data/<name>/ says its metric and normalization
            try:
                info = json.loads(meta.read_text())
                opts = {"metric": info.get("metric", "l2"), "normalize": bool(info.get("normalized")), **opts}
            except (ValueError, AttributeError):
                raise ValueError(f"{str(meta)!r} is not a JSON object") from None
        if (p / "base.npy").is_file() and (p / "queries.npy").is_file():
            return NpyDataset(p / "base.npy", p / "queries.npy", name=opts.pop("name", p.name), **opts)
        for ext in (".fvecs", ".bvecs"):
            base = sorted(p.glob(f"base{ext}")) + sorted(p.glob(f"*_base{ext}"))
            query = sorted(p.glob(f"query{ext}")) + sorted(p.glob(f"*_query{ext}"))
            if base and query:
                gt = sorted(p.glob("*groundtruth.ivecs"))
                return VecsDataset(base[0], query[0], groundtruth_path=gt[0] if gt else None,
                                   name=opts.pop("name", p.name), **opts)
        raise ValueError(f"{str(p)!r} holds neither base.npy + queries.npy nor base/query .fvecs/.bvecs")
    if not p.exists():
        raise ValueError(f"file not found: {str(p)!r}")
    ext = p.suffix.lower()
    if ext in (".hdf5", ".h5"):
        return HDF5Dataset(p, **opts)
    if ext == ".npy":
        return NpyDataset(p, **opts)
    if ext in (".fvecs", ".bvecs"):
        return VecsDataset(p, **opts)
    raise ValueError(f"{str(p)!r}: unknown dataset file type {ext or '(none)'!r}; "
                     "expected .hdf5, .h5, .npy, .fvecs, .bvecs or a folder")


def get_dataset(name_or_path: str | PathLike, **opts: Any) -> Dataset:
    """A loaded (and checked) dataset by name or path; ``ValueError`` names any problem.

    Names: the shipped ones (``minilm_wordnet``), ``synthetic``, ``synthetic-small`` (options go to
    ``SyntheticDataset``). Paths, by what they are: ``.hdf5``/``.h5`` (ann-benchmarks); a folder
    with ``base.npy`` + ``queries.npy`` or ``base.fvecs`` + ``query.fvecs`` (``.bvecs``, TEXMEX
    ``*_base``/``*_query``/``*_groundtruth.ivecs`` names too; metric from its ``meta.json``, else
    ``l2``); a single
    ``.npy``/``.fvecs``/``.bvecs`` whose last 1,000 rows (a tenth below 10,000 rows) become the
    queries. ``metric=`` and ``normalize=`` apply to .npy and vecs data.
    """
    key = str(name_or_path)
    if key in SYNTHETIC_PRESETS:
        return SyntheticDataset(**{**SYNTHETIC_PRESETS[key], "name": key, **opts}).load()
    if key in RECIPES:
        root = built_dir(opts.pop("root", None))
        if not is_built(key, root):
            raise ValueError(f"dataset {key!r} is not built (no {str(root / key / 'meta.json')!r}): "
                             f"run `annbin datasets build {key}`")
        recipe = RECIPES[key]
        if recipe.prefixes:
            raise ValueError(f"dataset {key!r} holds {recipe.n:,} x {recipe.dim} vectors ({recipe.n * recipe.dim * 4 / 1e9:.0f} GB "
                             "as float32): too big to load at once; it is read in blocks (prefix_truth, benchmarks/scale.py)")
        return ShippedDataset(key, root=root, **opts).load()
    if key in _shipped_names(opts.get("root")) or key == DEFAULT_DATASET:  # absent: say where we looked
        return ShippedDataset(key, **opts).load()
    p = Path(key).expanduser()
    if p.exists() or p.suffix or os.sep in key or "/" in key:
        return _from_path(p, dict(opts)).load()
    known = sorted(SYNTHETIC_PRESETS) + _shipped_names() + sorted(RECIPES)
    raise ValueError(f"unknown dataset {key!r}; known: {', '.join(known)} (or a file path)")


def list_datasets(root: PathLike | None = None, *, built_root: PathLike | None = None) -> list[dict[str, Any]]:
    """The named datasets: ``[{name, n, nq, dim, metric, description, status}]``, without loading data.

    ``status``: ``"shipped"`` (in ``data_dir(root)``), ``"generated"`` (synthetic, made on use),
    ``"built"`` or ``"not built"`` (a ``RECIPES`` entry, in ``built_dir(built_root)`` or not yet).
    """
    rows = []
    for name in _shipped_names(root):
        meta = ShippedDataset(name, root=root).meta
        rows.append({"name": name, **{key: meta.get(key) for key in ("n", "nq", "dim", "metric")},
                     "description": meta.get("description", ""), "status": "shipped"})
    for name, recipe in RECIPES.items():
        if is_built(name, built_root):
            meta = ShippedDataset(name, root=built_dir(built_root)).meta
            rows.append({"name": name, **{key: meta.get(key) for key in ("n", "nq", "dim", "metric")},
                         "description": meta.get("description", recipe.description), "status": "built"})
        else:
            rows.append({"name": name, "n": recipe.n, "nq": recipe.nq, "dim": recipe.dim, "metric": recipe.metric,
                         "description": recipe.description, "status": "not built"})
    for name, sizes in SYNTHETIC_PRESETS.items():
        rows.append({"name": name, **sizes, "metric": "ip",
                     "description": "seeded clustered Gaussian embeddings (100 clusters, intrinsic dim 32)",
                     "status": "generated"})
    return rows


def build_dataset(name: str, *, k: int = GT_MIN_K, progress: bool = False, python: str | None = None,
                  rebuild: bool = False, **opts: Any) -> dict[str, Any]:
    """Prepare a dataset: build a ``RECIPES`` one if absent (or ``rebuild``), verify a shipped or
    built one's sha256, compute and cache its ground truth.

    ``python``: the interpreter for a recipe's build script (see ``run_recipe``). Returns
    ``info()`` plus ``gt_source``, ``cache`` (the ground-truth file), ``k`` and ``built``
    (whether the build script ran).
    """
    built = False
    if name in RECIPES and (rebuild or not is_built(name, opts.get("root"))):
        run_recipe(name, python=python, root=opts.get("root"))
        built = True
    if name in RECIPES and RECIPES[name].prefixes:  # never loaded at once: verified and read in blocks
        recipe, root = RECIPES[name], built_dir(opts.get("root"))
        shipped = ShippedDataset(name, root=root)
        shipped.verify(progress=progress)
        prefix_truth(name, k=k, progress=progress, root=opts.get("root"))
        return {"name": name, "n": recipe.n, "nq": recipe.nq, "dim": recipe.dim, "metric": recipe.metric,
                "description": shipped.description, "k": k, "gt_source": "prefixes", "built": built,
                "cache": str(_prefix_cache(name, recipe.n, k))}
    ds = get_dataset(name, **opts)
    if isinstance(ds, ShippedDataset):
        ds.verify(progress=progress)
    k = min(k, ds.n)
    ds.get_groundtruth(k, progress=progress)
    return {**ds.info(), "k": k, "gt_source": ds.gt_source, "built": built,
            "cache": None if ds.gt_source == "file" else str(ds.groundtruth_cache_path(k))}


def _prefix_cache(name: str, n: int, k: int) -> Path:
    return cache_dir() / "groundtruth" / f"prefix-{name}-{n}-k{k}.npz"


def prefix_truth(name: str, sizes: list[int] | None = None, *, k: int = GT_MIN_K, progress: bool = False,
                 root: PathLike | None = None) -> dict[int, NDArray[np.int64]]:
    """Exact float top-``k`` ids ``(nq, k)`` of a built prefix recipe's queries in the first ``n``
    base rows, for each ``n`` of ``sizes`` (default: the recipe's ``prefixes``): read from the
    cache, else computed for all missing prefixes in one blockwise pass (``prefix_knn``) and cached."""
    recipe = RECIPES[name]
    folder = built_dir(root) / name
    shipped = ShippedDataset(name, root=built_dir(root))  # reads meta.json only
    fingerprint = f"{shipped.meta['sha256']['base.npy']}:{shipped.meta['sha256']['queries.npy']}"
    queries = _formats.as_vectors(_formats.read_npy(shipped.files["queries"]), f"{name}: queries")
    if shipped.normalize:
        queries = _formats.normalize_rows(queries, f"{name}: queries")
    wanted = sorted(set(sizes or recipe.prefixes))
    out: dict[int, NDArray[np.int64]] = {}
    for n in wanted:
        hit = read_cached(_prefix_cache(name, n, k), fingerprint=f"{fingerprint}:{n}", metric=recipe.metric, n=n, nq=len(queries), k=k)
        if hit is not None:
            out[n] = hit[1]
    missing = [n for n in wanted if n not in out]
    if missing:
        def keep(n: int, D: NDArray[np.float32], I: NDArray[np.int64]) -> None:
            write_cached(_prefix_cache(name, n, k), D, I, fingerprint=f"{fingerprint}:{n}", metric=recipe.metric)
            out[n] = I
        prefix_knn(folder / shipped.meta["files"]["base"], queries, missing, k, recipe.metric,
                   normalize=shipped.normalize, progress=progress, done=keep)
    return out
