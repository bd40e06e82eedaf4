"""Float embeddings in, float-quality results out: binarize, index, rescore, in one object.

``BinaryEmbeddingIndex`` is the convenience over ``annbin.embed.rescore.RescoredIndex`` for users who
never want to see bits::

    index = annbin.BinaryEmbeddingIndex("hnsw:M=16,ef_search=64", rescore="float", oversample=10,
                                        rerank="asymmetric", rerank_oversample=3,
                                        thresholds="median", store_vectors="vectors.npy")
    index.add(embeddings)                # float (n, dim); optional ids (n,) int64
    scores, ids = index.search(queries, 10)
    index.save("my_index")               # a directory; BinaryEmbeddingIndex.load("my_index")

Layout of a saved index (no pickle anywhere)::

    my_index/embedding.annbin   the commit record: settings, row -> id map, encoder (rotation,
                                offset), per-vector factors, the names of the two files below
                                and the vectors' row count and CRC-32; annbin's format with its
                                checksum, written last and atomically
    my_index/index.annbin       the first-stage index, annbin's format (annbin.load_index reads a
                                binary one alone); a save next to a committed one writes
                                index.1.annbin, and back, so the committed one is never replaced
    my_index/vectors.npy        float32 (n, dim) documents, when vectors are stored (likewise
                                vectors.1.npy); a store memory-mapped from here grows in place

Crash safety: a save writes its new files beside the committed ones, fsyncs them, and commits by
replacing ``embedding.annbin``; only then are the previous save's files removed. Adds to a
memory-mapped store append past the committed rows (``annbin.embed._vectors``), which a load ignores
until a save commits them. A process killed in an add or a save leaves the directory loadable at
its last completed save. A save owns the names ``index*.annbin`` and ``vectors*.npy`` in its
directory: it removes those its commit does not name.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import InputTypeError, as_floats, as_id_selection, as_ids, check_int, check_k, check_metric
from annbin._io import EMBEDDING_RECORD, fsync_dir, read_index_file, write_index_file
from annbin.embed._vectors import DiskVectors, write_store
from annbin.embed.asymmetric import check_qb
from annbin.embed.encoder import Encoded, Encoder
from annbin.embed.float_files import load_float_file
from annbin.embed.floats import is_float_spec, make_float_index
from annbin.embed.rescore import (
    STAGE_PARAMS,
    RescoredIndex,
    check_stage_params,
    stage_params,
)
from annbin.index.base import UnsupportedOperation
from annbin.index.registry import check_spec, float_variants, load_first_stage, make_index
from annbin.quantize import code_size_for
from annbin.spec import parse_wrapped_spec, variant_name

_KIND = "binary-embedding"
_VERSION = 4
_READS = (2, 3, 4)  # versions load reads: 2 had fixed file names and no CRC of the vectors; 4 adds removals
_SAVED_NAME = re.compile(r"(index(\.\d+)?\.annbin|vectors(\.\d+)?\.npy)")  # names save writes
_ENCODED = ("factors", "sqnorms", "planes", "levels")
_log = logging.getLogger("annbin")

#: the no-argument first stage (rabitqlib's HNSW over 2-bit codes, 2 x k rescored): the fastest
#: measured that keeps recall@10 >= 0.95 without tuning up to 500k vectors (docs/defaults.md)
DEFAULT_SPEC = "rq-hnsw:M=16,nbits=2,ef_construction=100,ef_search=192"
#: where rabitqlib is missing: faiss's graph over 1-bit RaBitQ codes, built on the floats (faster
#: at equal recall than build=codes); an add after the graph is built rebuilds it from the floats
FALLBACK_SPEC = "rabitq-hnsw:M=16,ef_construction=100,ef_search=192"
FALLBACK_ROTATION = "random"
#: the metrics of this class: "cos" normalizes on add and on search, then ranks as "ip"
EMBEDDING_METRICS = ("cos", "ip", "l2")

__all__ = ["DEFAULT_SPEC", "EMBEDDING_METRICS", "FALLBACK_SPEC", "BinaryEmbeddingIndex", "default_first_stage", "is_rescorable"]


def is_rescorable(spec: str) -> bool:
    """True if ``spec`` names a float-in first stage that ranks by a RaBitQ estimate
    (``FloatIndex.rescorable``: faiss's ``rabitq*`` and rabitqlib's ``rq-*`` variants)."""
    cls = float_variants().get(variant_name(spec))
    return cls is not None and cls.rescorable


def default_first_stage() -> tuple[str, str | None]:
    """``(spec, rotation)`` of the no-argument index: ``DEFAULT_SPEC`` where rabitqlib imports,
    else ``FALLBACK_SPEC``, said once in the ``annbin`` log."""
    from annbin.embed.rqlib import rabitqlib_available

    if rabitqlib_available():
        return DEFAULT_SPEC, None
    _log.warning("annbin: rabitqlib is not available here (not installed, or a CPU without AVX2/FMA); "
                 "the default index uses faiss's rabitq-hnsw (slower)")
    return FALLBACK_SPEC, FALLBACK_ROTATION


def _inner_metric(metric: str) -> str:
    return "ip" if metric == "cos" else metric


def _check_spec(spec: str, dim: int | None, metric: str) -> None:
    metric = _inner_metric(metric)
    if is_rescorable(spec):
        make_float_index(spec, check_int(dim, "dim", minimum=1) if dim is not None else 64, metric)
        return
    if is_float_spec(spec) or parse_wrapped_spec(spec) is not None:
        rescorable = sorted(n for n, c in float_variants().items() if c.rescorable)
        raise ValueError(f"unknown index spec {spec!r} for a first stage: give a binary index spec or one of {', '.join(rescorable)} "
                         "(float baselines and '+rescore' wrappers are not first stages)")
    if dim is not None:
        make_index(spec, d=code_size_for(check_int(dim, "dim", minimum=1)) * 8)
        return
    check_spec(spec)  # faiss factory strings need d: checked at the first add


class BinaryEmbeddingIndex:
    """Float embeddings in, cosine (or ip / l2) results out: a compressed first stage in RAM,
    float rescoring from a memory-mapped file.

    With no arguments (the measured best, ``DEFAULT_SPEC``): rabitqlib's HNSW over 2-bit RaBitQ
    codes, its top ``2 * k`` rescored with the exact floats, which live in a ``.npy`` file the index
    owns (a temporary directory until ``save(path)``, then inside ``path``), so RAM holds codes and
    graph only; ``metric="cos"``; ``dim`` from the first add; any number of adds, before and after
    searches; ``remove_ids``. Where rabitqlib is missing it falls back to faiss's ``rabitq-hnsw``
    (``FALLBACK_SPEC``) with one log line. ``set_search_params(ef_search=..., oversample=...)`` or
    ``annbin.tune(index, queries, target_recall=...)`` trade speed for recall.

    ``spec``: None (the default above), a float-in RaBitQ first stage (``"rq-hnsw:M=..,nbits=..,
    ef_search=.."``, ``"rq-symqg"``, faiss's ``"rabitq"``, ``"ivf-rabitq"``, ``"rabitq-hnsw"``)
    that ranks asymmetrically itself, or a binary index spec (``"flat"``, ``"hnsw:M=16"``,
    ``"mih"``, ``"ivf"``, faiss factory strings) searched by Hamming distance. ``oversample``:
    first-stage candidates per result (None: 2 for ``rq-*``, 3 for faiss's RaBitQ, 4 for binary
    specs). ``rerank``: None or ``"asymmetric"`` (binary specs): score the candidates by the float
    query against their codes and keep ``rerank_oversample`` per result for the float rescore.
    ``rescore``: ``"float"``, or None (no floats: with ``rerank="asymmetric"`` its estimate is the
    final score); ``"asymmetric"`` is shorthand for ``rescore=None, rerank="asymmetric"``.
    ``thresholds``: the code's offset: None (0.0), ``"median"`` / ``"mean"`` (fitted on the first
    ``add``), or a scalar / ``(dim,)`` array. ``rotation``: None, ``"random"`` or ``"itq"``
    (fitted on the first ``add``; see ``annbin.Encoder``). ``rerank_bits``: 1, or 2 to keep a
    second bit plane for the rerank. ``qb``: query bits of the rerank (0 = float).
    ``store_vectors``: ``"auto"`` (memory-mapped from a file the index owns), ``"ram"``, a path for
    a new ``.npy`` file that is memory-mapped, or None (no floats kept). ``metric``: ``"cos"``
    (vectors and queries normalized), ``"ip"`` or ``"l2"``. ``threads``: build threads of a
    rabitqlib first stage (-1: all cores).

    ``search`` returns ``(scores, ids)``: float32 ``(nq, k)`` scores (``"cos"`` / ``"ip"``
    descending, ``"l2"`` ascending, missing ``-inf`` / ``+inf``) and int64 ids (missing ``-1``).
    Plain Hamming results belong to the binary indexes (``annbin.make_index``), not this class.
    ``last_search_stats``: ``candidates_per_query`` and ``vectors_read_per_query``.

    Costs: ``add`` encodes, appends the floats to the file and inserts into the first stage (an
    HNSW insert per vector; bars for adds of 100k rows or more); ``search`` walks the graph and
    reads ``oversample * k`` float rows a query; nothing is built lazily at a search, except
    faiss's ``rabitq-hnsw:build=float`` graph (built at the first search or ``build()``).
    """

    def __init__(
        self,
        spec: str | None = None,
        *,
        rescore: str | None = "float",
        oversample: int | None = None,
        rerank: str | None = None,
        rerank_oversample: int = 3,
        thresholds: ArrayLike | str | None = None,
        rotation: str | None = None,
        rerank_bits: int = 1,
        qb: int = 4,
        store_vectors: str | os.PathLike[str] | None = "auto",
        metric: str = "cos",
        dim: int | None = None,
        threads: int = -1,
        seed: int = 0,
    ) -> None:
        if spec is None:
            spec, default_rotation = default_first_stage()
            rotation = default_rotation if rotation is None else rotation
        stage = float_variants().get(variant_name(spec))
        default_over = stage.default_oversample if stage is not None and stage.rescorable else 4  # binary: 4 x k Hamming candidates
        if rescore == "asymmetric":
            rescore, rerank = None, "asymmetric"
        if rescore not in ("float", None):
            raise ValueError(f"rescore must be 'float', 'asymmetric' or None, got {rescore!r}")
        if rerank not in (None, "asymmetric"):
            raise ValueError(f"rerank must be None or 'asymmetric', got {rerank!r}")
        check_metric(metric, EMBEDDING_METRICS)
        self._float_in = is_rescorable(spec)
        if self._float_in and rerank is not None:
            raise ValueError(f"{variant_name(spec)!r} ranks its candidates asymmetrically already (RaBitQ): use rerank=None")
        if self._float_in and rescore is None:
            raise ValueError(f"{variant_name(spec)!r} returns estimates only: use rescore='float'")
        if rescore is None and rerank is None:
            raise ValueError("rescore=None needs rerank='asymmetric' (scores from the codes); plain Hamming results come from "
                             "the binary indexes: annbin.make_index(spec, d=bits) on annbin.binarize codes")
        if rescore == "float" and store_vectors is None:
            raise ValueError("rescore='float' needs the float vectors: store_vectors='auto', 'ram' or a .npy path")
        self._tmp: Path | None = None  # the owned directory of store_vectors="auto", until a save
        if isinstance(store_vectors, str) and store_vectors in ("ram", "auto"):
            self._disk: Path | None = None
        elif store_vectors is None:
            self._disk = None
        elif isinstance(store_vectors, (str, os.PathLike)):
            self._disk = Path(store_vectors)
            if self._disk.suffix != ".npy":
                raise ValueError(f"store_vectors path must end in .npy, got {os.fspath(store_vectors)!r}")
        else:
            raise InputTypeError(f"store_vectors must be 'auto', 'ram', a .npy path or None, got {type(store_vectors).__name__}")
        self._auto = isinstance(store_vectors, str) and store_vectors == "auto"
        self._keep_vectors = store_vectors is not None
        if isinstance(thresholds, str) and thresholds not in ("median", "mean"):
            raise ValueError(f"thresholds must be None, 'median', 'mean' or an array, got {thresholds!r}")
        _check_spec(spec, dim, metric)  # fail on a bad spec now, not at the first add
        self.spec, self.rescore, self.rerank, self.metric = spec, rescore, rerank, metric
        self.oversample = check_int(default_over if oversample is None else oversample, "oversample", minimum=1)
        self.rerank_oversample = check_int(rerank_oversample, "rerank_oversample", minimum=1)
        self.qb = check_qb(qb)
        self.threads = check_int(threads, "threads", minimum=-1)
        self.dim: int | None = None if dim is None else check_int(dim, "dim", minimum=1)
        offset: Any = "zero" if thresholds is None else thresholds
        self.encoder = Encoder(self.dim, rotation=rotation, offset=offset, bits=rerank_bits, seed=seed)
        self._settings = (rotation, offset, rerank_bits, seed)  # what reset() builds a fresh encoder from
        self.index: Any = None
        self._ids: NDArray[np.int64] | None = None  # row -> user id; None while ids are the rows 0..n-1
        self._removed: NDArray[np.bool_] | None = None  # rows removed by remove_ids; None while none
        self._n = 0
        self._vectors: np.ndarray | None = None
        self._store: DiskVectors | None = None  # the .npy file the vectors are mapped from
        self._encoded: Encoded | None = None
        self._next_id = 0
        self._rescorer: RescoredIndex | None = None
        self.last_search_stats: dict[str, float] = {}

    # --- properties ------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Vectors searchable: added and not removed."""
        return self._n - (0 if self._removed is None else int(self._removed.sum()))

    def __len__(self) -> int:
        return self.ntotal

    @property
    def thresholds(self) -> NDArray[np.float32] | None:
        """The code offset per (rotated) dimension, once known."""
        return self.encoder.offset

    @property
    def vectors(self) -> np.ndarray | None:
        """The stored float vectors in storage (row) order (RAM or memory-mapped), or None;
        normalized for ``metric="cos"``; removed rows stay."""
        return self._vectors

    def get_ids(self) -> NDArray[np.int64]:
        """User ids of the stored rows, int64 ``(rows,)``, in storage (row) order (removed ones too)."""
        return np.arange(self._n, dtype=np.int64) if self._ids is None else self._ids

    def live_rows(self) -> NDArray[np.int64]:
        """Storage rows not removed, ascending (``vectors[live_rows()]`` are the searchable ones)."""
        return np.arange(self._n) if self._removed is None else np.flatnonzero(~self._removed)

    def __repr__(self) -> str:
        return (f"<BinaryEmbeddingIndex {self.spec!r} oversample={self.oversample} rerank={self.rerank} rescore={self.rescore} "
                f"metric={self.metric} dim={self.dim} ntotal={self.ntotal}>")

    def memory_bytes(self) -> int:
        """RAM held: first-stage index, row -> id map, removal mask, per-vector factors, encoder,
        in-RAM vectors (memory-mapped vectors count 0)."""
        ids = 0 if self._ids is None else self._ids.nbytes
        ids += 0 if self._removed is None else self._removed.nbytes
        total = (self.index.memory_bytes() if self.index is not None else 0) + ids + self.encoder.memory_bytes()
        if self._encoded is not None:
            total += sum(int(getattr(self._encoded, f).nbytes) for f in _ENCODED if getattr(self._encoded, f) is not None)
        if self._vectors is not None and not isinstance(self._vectors, np.memmap):
            total += self._vectors.nbytes
        return int(total)

    def disk_bytes(self) -> int:
        """Bytes of memory-mapped vectors (on disk, paged in on demand)."""
        return int(self._vectors.nbytes) if isinstance(self._vectors, np.memmap) else 0

    # --- adding ----------------------------------------------------------------------------
    def _prepare(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """Vectors as the stages see them: unit length for ``"cos"`` (zero vectors refused)."""
        if self.metric != "cos":
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if x.shape[0] and not np.all(norms > 0):
            raise ValueError(f"metric 'cos' needs nonzero vectors: row {int(np.argmin(norms[:, 0]))} is all zeros")
        unit: NDArray[np.floating] = np.divide(x, norms, dtype=np.float32)  # one new array: peak RSS is a chunk, not two
        return unit

    def add(self, embeddings: ArrayLike, ids: ArrayLike | None = None) -> None:
        """Add float embeddings ``(n, dim)``; ``ids`` int64 ``(n,)`` (unique, new) or sequential.

        Every check (shape, NaN / inf, ids, the first stage's own refusals) runs before the first
        byte is written; an add that fails leaves the index and its vectors file as they were.

        Cost: encoding the rows, one append of their floats to the vectors file (fsynced), and the
        first stage's insert of each (an HNSW insert a vector for the default ``rq-hnsw``, with a
        bar for adds of 100k rows or more). faiss's ``rabitq-hnsw:build=float`` (the fallback) only
        holds the rows here: its graph is built by ``build()`` or else the first search or save,
        and an add after that rebuilds it from every stored vector.
        """
        x = self._prepare(as_floats(embeddings, self.dim, name="embeddings"))
        n = x.shape[0]
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            new_ids = as_ids(ids, n)
            live = self.get_ids() if self._removed is None else self.get_ids()[~self._removed]
            clash = np.isin(new_ids, live)
            if clash.any():
                raise ValueError(f"ids already in the index: {new_ids[clash][:5].tolist()}")
        if n == 0:
            return
        rebuild = self._refused(n)  # a refusal before the vectors file grows
        before = (self.index, self.dim, self.encoder)
        staged: Any = None
        created = False
        try:
            index = self.index if self.index is not None else self._start(x)
            if rebuild:
                index = self._fresh_first_stage()
            rows = np.arange(self._n, self._n + n, dtype=np.int64)
            encoded = None if self._float_in else self.encoder.encode(x)
            if self._keep_vectors and (self._disk is not None or self._auto):
                if self._store is None:
                    self._store, created = DiskVectors.create(self._store_path(), x.shape[1]), True
                staged = self._store.stage(x)  # past the committed rows: not counted yet
            elif self._keep_vectors:
                new = x.astype(np.float32)
                staged = new if self._vectors is None else np.concatenate([self._vectors, new])
            if self._float_in:
                index.add(self.encoder.rotate(x))  # the rotation (ITQ) also sharpens RaBitQ's codes
            else:
                assert encoded is not None  # for mypy: binary first stages always encode
                index.add(encoded.codes, ids=rows)
        except BaseException:
            if created and self._store is not None:
                self._store.path.unlink(missing_ok=True)
                self._store = None
            elif self._store is not None and staged is not None:
                self._store.discard()  # the file back to its committed rows
            if before[0] is None:  # a failed first add leaves the object as it was
                self.index, self.dim, self.encoder = before
            raise
        self.index = index
        if self._store is not None and staged is not None:
            self._store.commit(staged)
            self._vectors = self._store.array()
        elif staged is not None:
            self._vectors = staged
        if self._ids is not None or not np.array_equal(new_ids, np.arange(self._n, self._n + n)):
            self._ids = np.concatenate([self.get_ids(), new_ids])  # user ids: keep the map (8 B a vector)
        if self._removed is not None:
            self._removed = np.concatenate([self._removed, np.zeros(n, bool)])
        self._n += n
        if self.rerank and encoded is not None:
            self._append_encoded(encoded)
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._rebuild_rescorer()

    def _refused(self, n: int) -> bool:
        """Whether this add must rebuild the first stage: faiss's ``rabitq-hnsw:build=float``
        refuses adds once its graph is built, and is rebuilt from the stored floats (``ValueError``
        where there are none, or after ``remove_ids``)."""
        if self.index is None or not hasattr(self.index, "check_add"):
            return False
        try:
            self.index.check_add(n)
        except ValueError:
            if not (self._float_in and self._vectors is not None and self._removed is None and getattr(self.index, "build", None) == "float"):
                raise
            return True
        return False

    def _fresh_first_stage(self) -> Any:
        """A new first stage holding every stored vector again (rotated as at the first add)."""
        assert self._vectors is not None and self.dim is not None  # for mypy: _refused checked both
        index = make_float_index(self.spec, self.dim, _inner_metric(self.metric))
        index.num_threads = self.threads
        step = 1 << 16
        for lo in range(0, self._vectors.shape[0], step):  # chunks: the store is memory-mapped
            index.add(self.encoder.rotate(np.asarray(self._vectors[lo:lo + step], np.float32)))
        return index

    def _store_path(self) -> Path:
        if self._disk is not None:
            return self._disk
        if self._tmp is None:  # store_vectors="auto": a directory of our own, removed with the object
            self._tmp = Path(tempfile.mkdtemp(prefix="annbin-vectors-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        return self._tmp / "vectors.npy"

    def _drop_tmp(self) -> None:
        if self._tmp is not None:
            self._cleanup()
            self._tmp = None

    def remove_ids(self, ids: ArrayLike) -> int:
        """Remove the vectors with these user ids from search results; returns how many were
        removed (unknown or already removed ids are ignored). The rows stay in the vectors file
        (and in rabitqlib's graph, as waypoints) until the index is rebuilt."""
        sel = as_id_selection(ids)
        if self.index is None or sel.size == 0:
            return 0
        rows = np.flatnonzero(np.isin(self.get_ids(), sel))
        if self._removed is not None:
            rows = rows[~self._removed[rows]]
        if rows.size == 0:
            return 0
        remover = getattr(self.index, "remove_ids", None)
        if remover is None:
            raise ValueError(f"first stage {variant_name(self.spec)!r} cannot remove vectors: use the default index (rq-hnsw) or a flat / ivf first stage")
        try:
            remover(rows)
        except UnsupportedOperation as exc:
            raise ValueError(f"first stage {variant_name(self.spec)!r} cannot remove vectors ({exc}): use the default index (rq-hnsw) or a flat / ivf first stage") from None
        if self._removed is None:
            self._removed = np.zeros(self._n, bool)
        self._removed[rows] = True
        self._rebuild_rescorer()
        return int(rows.size)

    def reset(self) -> None:
        """Drop every vector: the next add starts afresh (the encoder is fitted again). A saved
        directory is left as it is; the next vectors go to a new file."""
        rotation, offset, bits, seed = self._settings
        self.encoder = Encoder(None, rotation=rotation, offset=offset, bits=bits, seed=seed)
        self.index, self._ids, self._removed, self._n, self._next_id = None, None, None, 0, 0
        self._vectors, self._store, self._encoded, self._rescorer, self.dim = None, None, None, None, None
        self._drop_tmp()
        if self._disk is not None and self._disk.exists():
            self._disk, self._auto = None, True  # the saved or named file stays; a fresh owned one from here

    def _append_encoded(self, new: Encoded) -> None:
        """Keep what the rerank reads (not the codes: the index holds them; norms only for l2)."""
        new = dataclasses.replace(new, codes=np.empty((0, 0), np.uint8), sqnorms=new.sqnorms if self.metric == "l2" else None)
        old = self._encoded
        if old is not None:
            new = Encoded(new.codes, np.concatenate([old.factors, new.factors]),  # factors always; the others may be None
                          *(None if getattr(new, f) is None else np.concatenate([getattr(old, f), getattr(new, f)]) for f in _ENCODED[1:]))
        self._encoded = new

    def _start(self, x: NDArray[np.floating]) -> Any:
        if self._disk is not None and self._disk.exists():
            raise ValueError(f"vectors file {str(self._disk)!r} already exists; give a new path, or store_vectors='auto' "
                             "(BinaryEmbeddingIndex.load reopens saved ones)")
        encoder = copy.deepcopy(self.encoder)  # a failed first add must leave self.encoder unfitted
        encoder.fit(x)
        self.encoder, self.dim = encoder, x.shape[1]
        if self._float_in:
            self.index = make_float_index(self.spec, x.shape[1], _inner_metric(self.metric))
            self.index.num_threads = self.threads
        else:
            self.index = make_index(self.spec, d=code_size_for(x.shape[1]) * 8)
        return self.index

    def _rebuild_rescorer(self) -> None:
        if self.index is None:
            self._rescorer = None
            return
        self._rescorer = RescoredIndex(
            self.index, oversample=self.oversample, rerank=self.rerank, rerank_oversample=self.rerank_oversample,
            vectors=self._vectors if self.rescore == "float" else None, encoder=self.encoder,
            encoded=self._encoded, metric=_inner_metric(self.metric), qb=self.qb,  # type: ignore[arg-type]
        )

    def build(self) -> None:
        """Do any deferred first-stage work now, so that no search pays for it.

        Cost: for faiss's ``rabitq-hnsw:build=float``, the whole graph (one HNSW construction over
        every vector added so far, a tqdm bar from 100k vectors; after it, adds are refused); the
        other first stages build as they add, and for them this costs nothing. Call it after the
        last add and before the first timed (or latency-bound) search.
        """
        if self.index is not None and hasattr(self.index, "_state"):
            self.index._state()

    # --- search ----------------------------------------------------------------------------
    @property
    def _own_params(self) -> tuple[str, ...]:
        return stage_params(self.rerank)

    def set_search_params(self, **params: Any) -> None:
        """``oversample``, ``rerank_oversample``, ``qb`` (with a rerank) and the first stage's search
        parameters (``ef_search``, ``nprobe``, ...)."""
        own = {k: v for k, v in params.items() if k in self._own_params}
        inner_names = set(self.index.search_params) if self.index is not None else set()
        wrong = sorted(set(params) & set(STAGE_PARAMS) - set(own) - inner_names)
        if wrong:
            raise ValueError(f"{wrong} need{'s' if len(wrong) == 1 else ''} a rerank stage (rerank='asymmetric')")
        checked = check_stage_params(own)
        rest = {k: v for k, v in params.items() if k not in own}
        if rest:
            if self.index is None:
                names = ", ".join(self._own_params)
                raise ValueError(f"first-stage search parameters can be set after the first add (before it: {names})")
            self.index.set_search_params(**rest)
        for key, value in checked.items():
            setattr(self, key, value)
            if self._rescorer is not None:
                setattr(self._rescorer, key, value)

    def get_search_params(self) -> dict[str, Any]:
        inner = self.index.get_search_params() if self.index is not None else {}
        return {**{k: getattr(self, k) for k in self._own_params}, **inner}

    def search(self, queries: ArrayLike, k: int, *, params: dict[str, Any] | None = None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` for float queries ``(nq, dim)``: ``(scores float32, ids int64)``, ``(nq, k)``
        (see the class docstring). ``params``: search parameters for this call only.

        Cost a query: the first stage's walk (``ef_search`` for the HNSW stages) over codes in RAM,
        then ``oversample * k`` float rows read from the vectors file (paged in on demand) and
        rescored. Nothing is built here, except faiss's ``rabitq-hnsw:build=float`` graph when
        neither ``build()`` nor a save has built it yet (then this call pays for the whole graph).
        """
        k = check_k(k)
        q = as_floats(queries, self.dim, name="queries")
        if self.index is None or self.dim is None or self._rescorer is None:
            return self._missing(q.shape[0], k)
        if self.metric == "cos":
            norms = np.linalg.norm(q, axis=1, keepdims=True)
            q = (q / np.where(norms > 0, norms, 1)).astype(np.float32)  # a zero query scores 0 against all
        S, rows = self._rescorer.search(q, k, params=params)
        self.last_search_stats = dict(self._rescorer.last_search_stats)
        return S, rows if self._ids is None else np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)

    def _missing(self, nq: int, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        ids = np.full((nq, k), -1, np.int64)
        return np.full((nq, k), np.inf if self.metric == "l2" else -np.inf, np.float32), ids

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a directory ``path`` (created if needed; see the module docstring)."""

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        previous = _committed_files(root)
        index_file = vectors_file = None
        if self.index is not None:
            index_file = _free_name(root, "index", ".annbin")
            self.index.save(str(root / index_file))
        vectors: dict[str, Any] = {}
        store = None
        if self._vectors is not None:
            store = self._store
            if store is None or store.path.parent.resolve() != root.resolve():
                vectors_file = _free_name(root, "vectors", ".npy")
                store = write_store(root / vectors_file, self._vectors, int(self._vectors.shape[1]))
            vectors_file = store.path.name  # a store mapped from this directory is committed in place
            vectors = {"vectors_rows": store.rows, "vectors_crc32": store.crc}
        header = {
            "variant": _KIND, "version": _VERSION, "spec": self.spec, "rescore": self.rescore,
            "rerank": self.rerank, "oversample": self.oversample, "rerank_oversample": self.rerank_oversample,
            "qb": self.qb, "metric": self.metric, "dim": self.dim, "ntotal": self.ntotal,
            "next_id": self._next_id, "encoder": self.encoder.get_params(), "disk": self._disk is not None or self._auto,
            "vectors": self._keep_vectors, "started": self.index is not None,
            "index_file": index_file, "vectors_file": vectors_file, **vectors,
        }
        arrays: dict[str, np.ndarray] = {"ids": self.get_ids()}
        if self._removed is not None:
            arrays["removed"] = self._removed.view(np.uint8)
        arrays.update({f"encoder.{key}": value for key, value in self.encoder.state_arrays().items()})
        if self._encoded is not None:
            arrays.update({f"encoded.{f}": getattr(self._encoded, f) for f in _ENCODED if getattr(self._encoded, f) is not None})
        write_index_file(root / EMBEDDING_RECORD, header, arrays)  # the commit
        fsync_dir(root)
        # the previous save's files, and those of a save that was killed before its commit
        stale = previous | {p.name for p in root.iterdir() if _SAVED_NAME.fullmatch(p.name)}
        for name in stale - {index_file, vectors_file}:
            (root / name).unlink(missing_ok=True)
        if self._tmp is not None and store is not None and self._store is not store:
            # store_vectors="auto": from now on the floats live in the saved directory
            self._store, self._vectors, self._disk = store, store.array(), store.path
            self._drop_tmp()
            self._rebuild_rescorer()

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool | None = None) -> BinaryEmbeddingIndex:
        """Read a directory written by ``save``.

        ``mmap``: memory-map ``vectors.npy`` (True) or read it into RAM (False); None keeps how
        it was stored. A memory-mapped store is then the directory's file: later adds append to
        it, and the next ``save`` here commits them without copying it. Only the rows the last
        save committed are read (their CRC-32 checked); rows of an add or save that was killed
        are ignored, and overwritten by the next add.
        """

        root = Path(path)
        header, arrays = read_index_file(root / EMBEDDING_RECORD)
        if header.get("variant") != _KIND or header.get("version") not in _READS:
            raise ValueError(f"{str(root)!r} does not hold a BinaryEmbeddingIndex of version {_VERSION}")
        try:
            disk = bool(header["disk"]) if mmap is None else bool(mmap)
            vectors_path = root / (header.get("vectors_file") or "vectors.npy")
            store = vectors_path if (header["vectors"] and disk) else ("ram" if header["vectors"] else None)
            enc = header["encoder"]
            obj = cls(header["spec"], rescore=header["rescore"], rerank=header["rerank"], oversample=int(header["oversample"]),
                      rerank_oversample=int(header["rerank_oversample"]), qb=int(header["qb"]), metric=header["metric"],
                      store_vectors=store, dim=header["dim"], rerank_bits=int(enc.get("bits", 1)))
            obj._next_id = int(header["next_id"])
            obj.encoder = Encoder.from_state(enc, {key[8:]: v for key, v in arrays.items() if key.startswith("encoder.")})
            ids = arrays["ids"]
            obj._n = int(ids.size)
            obj._ids = None if np.array_equal(ids, np.arange(ids.size)) else ids
            removed = arrays.get("removed")
            obj._removed = None if removed is None else np.asarray(removed, np.uint8).astype(bool)
            parts = {key[8:]: v for key, v in arrays.items() if key.startswith("encoded.")}
            if parts:
                obj._encoded = Encoded(np.empty((0, 0), np.uint8), parts["factors"], parts.get("sqnorms"),
                                       parts.get("planes"), parts.get("levels"))
            if header["started"]:
                obj.index = _load_first_stage(root / (header.get("index_file") or "index.annbin"), header["spec"])
            if header["vectors"] and header["started"]:
                crc = header.get("vectors_crc32")
                mapped = DiskVectors.open(vectors_path, obj._n, int(header["dim"]), None if crc is None else int(crc))
                if disk:
                    obj._store, obj._vectors = mapped, mapped.array()
                else:
                    obj._vectors = np.array(mapped.array())
        except (KeyError, TypeError, OSError) as exc:
            raise ValueError(f"{str(root)!r} is incomplete or malformed: {exc}") from None
        expect = (obj._n, obj.dim)
        if obj.index is not None and obj.index.ntotal != obj.ntotal:
            raise ValueError(f"{str(root)!r} is inconsistent: {obj.ntotal} ids but the index holds {obj.index.ntotal}")
        if obj._vectors is not None and obj._vectors.shape != expect:
            raise ValueError(f"{str(root)!r}: vectors.npy has shape {obj._vectors.shape}, expected {expect}")
        if obj._encoded is not None and obj._encoded.factors.shape[0] != obj._n:
            raise ValueError(f"{str(root)!r} is inconsistent: {obj._encoded.factors.shape[0]} factors for {obj._n} rows")
        obj._rebuild_rescorer()
        return obj

    @classmethod
    def from_faiss(cls, float_index: Any, spec: str | None = None, *, chunk: int = 65536, **kwargs: Any) -> BinaryEmbeddingIndex:
        """A new index holding the float vectors of a faiss index, under the same ids.

        ``float_index``: ``faiss.IndexFlatIP``, ``faiss.IndexFlatL2``, ``faiss.IndexHNSWFlat``, or an
        ``IndexIDMap`` / ``IndexIDMap2`` around one of them (its ``id_map`` gives the ids; else they
        are faiss's own, ``0..ntotal-1``). The vectors are read ``chunk`` at a time
        (``reconstruct_n``; float32 ``(chunk, d)``) and added to ``BinaryEmbeddingIndex(spec,
        **kwargs)``, floats memory-mapped as by default (``store_vectors="auto"``); the faiss index
        is left as it was. ``metric`` follows faiss's: ``"ip"`` for ``METRIC_INNER_PRODUCT`` (or
        ``metric="cos"`` in ``kwargs`` to normalize), ``"l2"`` for ``METRIC_L2``. Deferred
        first-stage work is done before it returns (``build()``). A first stage built once from its
        first add (``rq-symqg``) needs ``chunk >= ntotal``.

        ``TypeError`` for anything but a faiss float index (a ``faiss.IndexBinary`` goes to
        ``annbin.from_faiss``); ``ValueError`` for other faiss index types, naming them, or a
        ``metric`` that does not match faiss's.
        """
        import faiss

        chunk = check_int(chunk, "chunk", minimum=1)
        if not isinstance(float_index, faiss.Index):
            hint = " (a binary faiss index: annbin.from_faiss wraps those)" if isinstance(float_index, faiss.IndexBinary) else ""
            raise InputTypeError(f"BinaryEmbeddingIndex.from_faiss expects a faiss float index, got {type(float_index).__name__}{hint}")
        outer = faiss.downcast_index(float_index)
        ids: NDArray[np.int64] | None = None
        inner = outer
        if isinstance(outer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            ids = faiss.vector_to_array(outer.id_map).astype(np.int64, copy=False)
            inner = faiss.downcast_index(outer.index)
        if not isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSWFlat)):
            what = type(inner).__name__ if inner is outer else f"{type(outer).__name__} around {type(inner).__name__}"
            raise ValueError(f"BinaryEmbeddingIndex.from_faiss reads IndexFlatIP, IndexFlatL2, IndexHNSWFlat and IndexIDMap / "
                             f"IndexIDMap2 around them; got {what}")
        allowed = {faiss.METRIC_INNER_PRODUCT: ("ip", "cos"), faiss.METRIC_L2: ("l2",)}.get(int(inner.metric_type))
        if allowed is None:
            raise ValueError(f"BinaryEmbeddingIndex.from_faiss reads inner-product and L2 faiss indexes; {type(inner).__name__} "
                             f"has faiss metric type {int(inner.metric_type)}")
        metric = kwargs.pop("metric", allowed[0])
        if metric not in allowed:
            raise ValueError(f"metric {metric!r} does not match the faiss index's ({'inner product' if allowed[0] == 'ip' else 'L2'}): "
                             f"use {' or '.join(repr(m) for m in allowed)}")
        kwargs.setdefault("dim", int(inner.d))
        obj = cls(spec, metric=metric, **kwargs)
        n = int(inner.ntotal)
        if ids is not None and ids.size != n:
            raise ValueError(f"the faiss IDMap holds {ids.size} ids for {n} vectors")
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            obj.add(inner.reconstruct_n(start, m), None if ids is None else ids[start : start + m])
        obj.build()
        return obj


def _committed_files(root: Path) -> set[str]:
    """The first-stage and vectors files the directory's current ``embedding.annbin`` names."""

    try:
        header, _ = read_index_file(root / EMBEDDING_RECORD, mmap=True)
    except ValueError:
        return set()  # nothing committed (or unreadable): nothing of it to clean up
    if header.get("version") == 2:  # fixed names then
        names = {"index.annbin" if header.get("started") else None, "vectors.npy" if header.get("vectors") else None}
    else:
        names = {header.get("index_file"), header.get("vectors_file")}
    return {n for n in names if isinstance(n, str) and n == Path(n).name}


def _free_name(root: Path, stem: str, suffix: str) -> str:
    """``stem + suffix``, else ``stem.1 + suffix``, ...: the first name no file in ``root`` has
    (so a save never replaces the committed save's files before its own commit)."""
    name, i = stem + suffix, 0
    while (root / name).exists():
        i += 1
        name = f"{stem}.{i}{suffix}"
    return name


def _load_first_stage(path: Path, spec: str) -> Any:
    return load_float_file(path) if is_float_spec(spec) else load_first_stage(path)
