"""Float embeddings in, float-quality results out: binarize, index, rescore, in one object.

``BinaryEmbeddingIndex`` is the convenience over ``annbin.rescore.RescoredIndex`` for users who
never want to see bits::

    index = annbin.BinaryEmbeddingIndex("hnsw:M=16,ef_search=64", rescore="float", oversample=4,
                                        thresholds="median", store_vectors="vectors.npy")
    index.add(embeddings)                # float (n, dim); optional ids (n,) int64
    scores, ids = index.search(queries, 10)
    index.save("my_index")               # a directory; BinaryEmbeddingIndex.load("my_index")

Layout of a saved index (no pickle anywhere)::

    my_index/index.annbin       the binary index, annbin's format (annbin.load_index reads it alone)
    my_index/embedding.annbin   settings, row -> id map, thresholds (and codes in asymmetric mode),
                                annbin's format with its checksum
    my_index/vectors.npy        float32 (n, dim) documents, when vectors are stored
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from numpy.typing import ArrayLike, NDArray

from annbin._checks import INT32_MAX, as_floats, as_ids, check_int, check_k
from annbin.index.base import BinaryIndex
from annbin.quantize import binarize, code_size_for, fit_thresholds
from annbin.rescore import METRICS, RescoredIndex

_KIND = "binary-embedding"
_VERSION = 1

__all__ = ["BinaryEmbeddingIndex"]


def _check_spec(spec: str, dim: int | None) -> None:
    from annbin.index.registry import VARIANTS, make_index, parse_spec, split_params

    if dim is not None:
        make_index(spec, code_size_for(check_int(dim, "dim", minimum=1)) * 8)
        return
    from annbin.index.faiss_wrap import is_faiss_factory

    if is_faiss_factory(spec):
        return  # faiss's factory needs d: checked at the first add
    name, params = parse_spec(spec)
    if name not in VARIANTS:
        raise ValueError(f"unknown index spec {spec!r}; known variants: {', '.join(sorted(VARIANTS))}")
    split_params(VARIANTS[name], params, spec)


class BinaryEmbeddingIndex:
    """Binary index over float embeddings with optional float or asymmetric rescoring.

    ``spec``: any index spec (``"flat"``, ``"hnsw:M=16"``, ``"mih"``, ``"ivf"``, faiss factory
    strings). ``rescore``: ``"float"`` (float documents), ``"asymmetric"`` (float query . ±1
    bits; keeps a copy of the codes, no floats) or ``None`` (plain Hamming results).
    ``oversample``: Hamming candidates per result. ``thresholds``: None (0.0), ``"median"`` or
    ``"mean"`` (fitted on the first ``add``), or a scalar / ``(dim,)`` array. ``store_vectors``:
    ``"ram"``, a path for a new ``.npy`` file that is memory-mapped (only codes stay in RAM;
    every ``add`` rewrites it, so add in large batches), or ``None``. ``metric``: ``"ip"``
    (cosine on normalized vectors) or ``"l2"`` (float rescoring only).

    ``search`` returns ``(scores, ids)``: with rescoring float32 scores (``"ip"`` descending,
    ``"l2"`` ascending) and missing ``-inf`` / ``+inf``; with ``rescore=None`` int32 Hamming
    distances ascending and missing ``INT32_MAX`` (faiss's binary convention). Ids are int64,
    missing ``-1``.
    """

    def __init__(
        self,
        spec: str = "flat",
        *,
        rescore: str | None = "float",
        oversample: int = 4,
        thresholds: ArrayLike | str | None = None,
        store_vectors: str | os.PathLike[str] | None = "ram",
        metric: str = "ip",
        dim: int | None = None,
    ) -> None:
        if rescore not in ("float", "asymmetric", None):
            raise ValueError(f"rescore must be 'float', 'asymmetric' or None, got {rescore!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if metric != "ip" and rescore != "float":
            raise ValueError(f"metric {metric!r} needs rescore='float', got rescore={rescore!r}")
        if rescore == "float" and store_vectors is None:
            raise ValueError("rescore='float' needs the float vectors: store_vectors='ram' or a .npy path")
        if isinstance(store_vectors, str) and store_vectors == "ram":
            self._disk: Path | None = None
        elif store_vectors is None:
            self._disk = None
        elif isinstance(store_vectors, (str, os.PathLike)):
            self._disk = Path(store_vectors)
            if self._disk.suffix != ".npy":
                raise ValueError(f"store_vectors path must end in .npy, got {os.fspath(store_vectors)!r}")
        else:
            raise TypeError(f"store_vectors must be 'ram', a .npy path or None, got {type(store_vectors).__name__}")
        self._keep_vectors = store_vectors is not None
        if isinstance(thresholds, str) and thresholds not in ("median", "mean"):
            raise ValueError(f"thresholds must be None, 'median', 'mean' or an array, got {thresholds!r}")
        _check_spec(spec, dim)  # fail on a bad spec now, not at the first add
        self.spec, self.rescore, self.metric = spec, rescore, metric
        self.oversample = check_int(oversample, "oversample", minimum=1)
        self._fit = thresholds if isinstance(thresholds, str) else None
        self.thresholds: NDArray[np.float32] | None = None
        if thresholds is not None and not isinstance(thresholds, str):
            self.thresholds = np.asarray(thresholds, dtype=np.float32)
        self.dim: int | None = None if dim is None else check_int(dim, "dim", minimum=1)
        if self.dim is not None and self.thresholds is not None:
            binarize(np.zeros((1, self.dim), np.float32), self.thresholds)
        self.index: BinaryIndex | None = None
        self._ids = np.empty(0, np.int64)
        self._vectors: np.ndarray | None = None
        self._codes = np.empty((0, 0), np.uint8)
        self._next_id = 0
        self._rescorer: RescoredIndex | None = None

    # --- properties ------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._ids.size)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"<BinaryEmbeddingIndex {self.spec!r} rescore={self.rescore} dim={self.dim} ntotal={self.ntotal}>"

    def memory_bytes(self) -> int:
        """RAM held: binary index, row -> id map, in-RAM vectors or codes (memory-mapped count 0)."""
        total = (self.index.memory_bytes() if self.index is not None else 0) + self._ids.nbytes + self._codes.nbytes
        if self._vectors is not None and not isinstance(self._vectors, np.memmap):
            total += self._vectors.nbytes
        return int(total + (0 if self.thresholds is None else self.thresholds.nbytes))

    def disk_bytes(self) -> int:
        """Bytes of memory-mapped vectors (on disk, paged in on demand)."""
        return int(self._vectors.nbytes) if isinstance(self._vectors, np.memmap) else 0

    # --- adding ----------------------------------------------------------------------------
    def add(self, embeddings: ArrayLike, ids: ArrayLike | None = None) -> None:
        """Add float embeddings ``(n, dim)``; ``ids`` int64 ``(n,)`` (unique, new) or sequential."""
        x = as_floats(embeddings, self.dim, name="embeddings")
        n = x.shape[0]
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            new_ids = as_ids(ids, n)
            clash = np.isin(new_ids, self._ids)
            if clash.any():
                raise ValueError(f"ids already in the index: {new_ids[clash][:5].tolist()}")
        if n == 0:
            return
        before = (self.index, self.dim, self.thresholds, self._codes)
        staged = None
        try:
            index = self.index if self.index is not None else self._start(x)
            codes = binarize(x, self.thresholds)
            rows = np.arange(self.ntotal, self.ntotal + n, dtype=np.int64)
            staged = self._stage_vectors(x) if self._keep_vectors else None
            index.add(codes, ids=rows)
        except BaseException:
            if isinstance(staged, Path):
                staged.unlink(missing_ok=True)
            if before[0] is None:  # a failed first add leaves the object as it was
                self.index, self.dim, self.thresholds, self._codes = before
            raise
        self._commit_vectors(staged)
        self._ids = np.concatenate([self._ids, new_ids])
        if self.rescore == "asymmetric":
            self._codes = np.concatenate([self._codes, codes]) if self._codes.size else codes
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._rebuild_rescorer()

    def _start(self, x: NDArray[np.floating]) -> BinaryIndex:
        from annbin.index.registry import make_index

        if self._disk is not None and self._disk.exists():
            raise ValueError(f"vectors file {str(self._disk)!r} already exists; give a new path (BinaryEmbeddingIndex.load reopens saved ones)")
        if self.thresholds is not None:
            binarize(x[:1], self.thresholds)  # shape check against the real dim
        self.dim = x.shape[1]
        if self._fit is not None:
            self.thresholds = fit_thresholds(x, self._fit)
        self._codes = np.empty((0, code_size_for(self.dim)), np.uint8)
        self.index = make_index(self.spec, code_size_for(self.dim) * 8)
        return self.index

    def _stage_vectors(self, x: NDArray[np.floating]) -> Path | np.ndarray:
        """The grown store, not yet visible: a temp .npy beside the target, or a new RAM array."""
        old = self._vectors
        if self._disk is None:
            new = x.astype(np.float32)
            return new if old is None else np.concatenate([old, new])
        self._disk.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self._disk.name}.", suffix=".tmp", dir=self._disk.parent)
        os.close(fd)
        n_old = 0 if old is None else old.shape[0]
        out = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_old + x.shape[0], x.shape[1]))
        if old is not None:
            out[:n_old] = old
        out[n_old:] = x
        out.flush()
        del out
        return Path(tmp)

    def _commit_vectors(self, staged: Path | np.ndarray | None) -> None:
        if staged is None:
            return
        if isinstance(staged, Path) and self._disk is not None:
            self._vectors = None  # drop the old map before replacing its file
            os.replace(staged, self._disk)
            self._vectors = np.load(self._disk, mmap_mode="r")
        else:
            self._vectors = staged

    def _rebuild_rescorer(self) -> None:
        if self.rescore is None or self.index is None:
            self._rescorer = None
            return
        self._rescorer = RescoredIndex(
            self.index, oversample=self.oversample, mode=self.rescore,  # type: ignore[arg-type]
            vectors=self._vectors if self.rescore == "float" else None,
            codes=self._codes if self.rescore == "asymmetric" else None,
            thresholds=self.thresholds, metric=self.metric, dim=self.dim,  # type: ignore[arg-type]
        )

    # --- search ----------------------------------------------------------------------------
    def set_search_params(self, **params: Any) -> None:
        """``oversample`` (with rescoring) and the binary index's parameters (``ef_search``, ...)."""
        if "oversample" in params:
            if self.rescore is None:
                raise ValueError("oversample needs rescoring (rescore='float' or 'asymmetric')")
            self.oversample = check_int(params["oversample"], "oversample", minimum=1)
        rest = {k: v for k, v in params.items() if k != "oversample"}
        if rest:
            if self.index is None:
                raise ValueError("search parameters other than oversample can be set after the first add")
            self.index.set_search_params(**rest)
        if self._rescorer is not None:
            self._rescorer.oversample = self.oversample

    def get_search_params(self) -> dict[str, Any]:
        inner = self.index.get_search_params() if self.index is not None else {}
        return {"oversample": self.oversample, **inner} if self.rescore else inner

    def search(self, queries: ArrayLike, k: int, *, params: dict[str, Any] | None = None) -> tuple[np.ndarray, NDArray[np.int64]]:
        """Top ``k`` for float queries ``(nq, dim)``; see the class docstring for the return."""
        k = check_k(k)
        if self.index is None or self.dim is None:
            q = as_floats(queries, self.dim, name="queries")
            return self._missing(q.shape[0], k)
        q = as_floats(queries, self.dim, name="queries")
        if self._rescorer is not None:
            S, rows = self._rescorer.search(q, k, params=params)
        else:
            S, rows = self.index.search(binarize(q, self.thresholds), k, params=params)
        return S, np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)

    def _missing(self, nq: int, k: int) -> tuple[np.ndarray, NDArray[np.int64]]:
        ids = np.full((nq, k), -1, np.int64)
        if self.rescore is None:
            return np.full((nq, k), INT32_MAX, np.int32), ids
        return np.full((nq, k), -np.inf if self.metric == "ip" else np.inf, np.float32), ids

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a directory ``path`` (created if needed; see the module docstring)."""
        from annbin._io import write_index_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        header = {
            "variant": _KIND, "version": _VERSION, "spec": self.spec, "rescore": self.rescore,
            "oversample": self.oversample, "metric": self.metric, "dim": self.dim, "ntotal": self.ntotal,
            "next_id": self._next_id, "fit": self._fit, "disk": self._disk is not None,
            "vectors": self._keep_vectors, "started": self.index is not None,
        }
        arrays: dict[str, np.ndarray] = {"ids": self._ids}
        if self.thresholds is not None:
            arrays["thresholds"] = self.thresholds
        if self.rescore == "asymmetric":
            arrays["codes"] = self._codes
        if self.index is not None:
            self.index.save(str(root / "index.annbin"))
        if self._vectors is not None:
            target = root / "vectors.npy"
            if self._disk is None or self._disk.resolve() != target.resolve():
                fd, tmp = tempfile.mkstemp(prefix=".vectors.", suffix=".npy", dir=root)
                os.close(fd)
                np.save(tmp, np.asarray(self._vectors))
                os.replace(tmp, target)
        write_index_file(root / "embedding.annbin", header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool | None = None) -> BinaryEmbeddingIndex:
        """Read a directory written by ``save``.

        ``mmap``: memory-map ``vectors.npy`` (True) or read it into RAM (False); None keeps how
        it was stored. A memory-mapped store is then ``path/vectors.npy`` (later adds rewrite it).
        """
        from annbin._io import read_index_file
        from annbin.index.registry import load_index

        root = Path(path)
        header, arrays = read_index_file(root / "embedding.annbin")
        if header.get("variant") != _KIND or header.get("version") != _VERSION:
            raise ValueError(f"{str(root)!r} does not hold a BinaryEmbeddingIndex of version {_VERSION}")
        try:
            disk = bool(header["disk"]) if mmap is None else bool(mmap)
            store = (root / "vectors.npy") if (header["vectors"] and disk) else ("ram" if header["vectors"] else None)
            obj = cls(header["spec"], rescore=header["rescore"], oversample=int(header["oversample"]),
                      metric=header["metric"], store_vectors=store, dim=header["dim"])
            obj._fit, obj._next_id = header["fit"], int(header["next_id"])
            obj.thresholds = arrays.get("thresholds")
            obj._ids = arrays["ids"]
            if header["started"]:
                obj.index = load_index(root / "index.annbin")
                obj._codes = arrays.get("codes", np.empty((0, obj.index.code_size), np.uint8))
            if header["vectors"] and header["started"]:
                obj._vectors = np.load(root / "vectors.npy", mmap_mode="r" if disk else None, allow_pickle=False)
        except (KeyError, TypeError, OSError) as exc:
            raise ValueError(f"{str(root)!r} is incomplete or malformed: {exc}") from None
        expect = (obj.ntotal, obj.dim)
        if obj.index is not None and obj.index.ntotal != obj.ntotal:
            raise ValueError(f"{str(root)!r} is inconsistent: {obj.ntotal} ids but the index holds {obj.index.ntotal}")
        if obj._vectors is not None and obj._vectors.shape != expect:
            raise ValueError(f"{str(root)!r}: vectors.npy has shape {obj._vectors.shape}, expected {expect}")
        obj._rebuild_rescorer()
        return obj
