"""Float embeddings in, float-quality results out: binarize, index, rescore, in one object.

``BinaryEmbeddingIndex`` is the convenience over ``annbin.embed.rescore.RescoredIndex`` for users who
never want to see bits::

    index = annbin.BinaryEmbeddingIndex("hnsw:M=16,ef_search=64", rescore="float", oversample=10,
                                        rerank="asymmetric", rerank_oversample=3,
                                        thresholds="median", store_vectors="vectors.npy")
    index.add(embeddings)                # float (n, dim); optional ids (n,) int64
    scores, ids = index.search(queries, 10)
    index.save("my_index")               # a directory; BinaryEmbeddingIndex.load("my_index")

Its parts, in ``annbin.embed``: ``_contents`` (what it holds, how adds change it, held rows),
``first_stage`` (default, checks), ``_embedding_files`` (the saved directory), ``_from_faiss``, ``sources``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import as_floats, check_int, check_k, check_metric, check_radius
from annbin.embed import sources
from annbin.embed._contents import Contents
from annbin.embed._embedding_files import read_directory, write_directory
from annbin.embed._from_faiss import faiss_floats
from annbin.embed._vectors import VectorStore
from annbin.embed.asymmetric import check_qb
from annbin.embed.encoder import Encoder, check_rerank_bits, check_rotation, check_thresholds
from annbin.embed.first_stage import (
    DEFAULT_SPEC,
    EMBEDDING_METRICS,
    FALLBACK_ROTATION,
    FALLBACK_SPEC,
    FIT_ROWS,
    check_first_stage,
    check_stages,
    default_first_stage,
    default_oversample,
    inner_metric,
    is_rescorable,
    stage_range_search,
)
from annbin.embed.rescore import RescoredIndex, split_stage_params, stage_params
from annbin.index.base import RangeResult, UnsupportedOperation, sort_ranges

__all__ = [
    "DEFAULT_SPEC", "EMBEDDING_METRICS", "FALLBACK_ROTATION", "FALLBACK_SPEC", "FIT_ROWS", "BinaryEmbeddingIndex",
    "default_first_stage", "is_rescorable",
]


class BinaryEmbeddingIndex:
    """Float embeddings in, cosine (or ip / l2) results out: a compressed first stage in RAM,
    float rescoring from a memory-mapped file.

    With no arguments (``DEFAULT_SPEC``): rabitqlib's HNSW over 2-bit RaBitQ codes, its top
    ``2 * k`` rescored with the exact floats, which live in a ``.npy`` file the index owns (a
    temporary directory until ``save(path)``, then inside ``path``), so RAM holds codes and graph
    only; ``metric="cos"``; ``dim`` from the first add; adds of any size, any number, before and
    after searches (``add_from`` streams files); ``remove_ids``. What is fitted on the data (ITQ,
    median / mean thresholds, rabitqlib's centroids) sees the first ``FIT_ROWS`` (16,384) rows:
    smaller adds are held (stored, counted) until then, or until a search, save, ``build()`` or a
    look at ``index`` / ``encoder`` fits them (``annbin.embed._contents``). Without rabitqlib it
    falls back to faiss's ``rabitq-hnsw`` (``FALLBACK_SPEC``) with one log line. ``set_search_params(ef_search=...,
    oversample=...)`` or ``annbin.tune(index, queries, target_recall=...)`` trade speed for recall.

    Parameters
    ----------
    spec
        None (the default above); a float-in RaBitQ first stage that ranks float queries itself
        (``"rq-hnsw:M=..,nbits=..,ef_search=.."``, ``"rq-symqg"``, faiss's ``"rabitq"``,
        ``"ivf-rabitq"``, ``"rabitq-hnsw"``); or a binary index spec searched by Hamming distance
        over the codes (``"flat"``, ``"hnsw:M=16"``, ``"mih"``, ``"ivf"``, faiss factory strings).
    rescore
        ``"float"``: rescore the candidates with the stored floats; None: no floats (needs
        ``rerank="asymmetric"``, whose estimate is then the final score).
    oversample
        First-stage candidates per result, >= 1 (None: 2 for ``rq-*``, 3 for faiss's RaBitQ, 4 for
        binary specs).
    rerank
        None, or ``"asymmetric"`` (binary specs): score the candidates by the float query against
        their codes and keep ``rerank_oversample`` per result for the float rescore.
    rerank_oversample
        Candidates per result the asymmetric rerank keeps, >= 1.
    thresholds
        What each bit of a code compares against, per rotated dimension: None / ``"zero"`` (sign
        bits), ``"median"`` / ``"mean"`` (fitted as above), a number, or a ``(dim,)``
        array (``annbin.Encoder``).
    rotation
        None, ``"random"``, ``"itq"`` (fitted as above) or a ``(dim, dim)`` orthogonal
        float matrix (``annbin.Encoder``).
    rerank_bits
        1, or 2 to keep a second bit plane for the rerank.
    qb
        Query bits of the rerank, 0..8 (0: a float query).
    store_vectors
        ``"auto"`` (memory-mapped from a file the index owns), ``"ram"``, a path for a new ``.npy``
        file that is memory-mapped, or None (no floats kept).
    store_dtype
        ``"float32"``, or ``"float16"``: half the disk and page cache (scores stay float32).
    metric
        ``"cos"`` (vectors and queries normalized), ``"ip"`` or ``"l2"``.
    dim
        Float dimension (None: from the first ``add``).
    threads
        Build threads of a float-in first stage (-1: all cores).
    seed
        Seed of the random rotation and of ITQ.

    ``search`` returns ``(scores, ids)``: float32 ``(nq, k)`` scores (``"cos"`` / ``"ip"``
    descending, ``"l2"`` ascending, missing ``-inf`` / ``+inf``) and int64 ids (missing ``-1``).
    ``range_search`` is a binary first stage's, by Hamming distance of the codes; plain Hamming kNN
    results belong to the binary indexes (``annbin.make_index``), not this class.
    ``last_search_stats`` (of this thread's last search): ``candidates_per_query`` and
    ``vectors_read_per_query``.
    Costs are in ``add`` and ``search``: nothing is built lazily at a search, except held rows
    and faiss's ``rabitq-hnsw:build=float`` graph (at the first search unless ``build()`` ran).
    """

    def __init__(self, spec: str | None = None, *, rescore: str | None = "float", oversample: int | None = None,
                 rerank: str | None = None, rerank_oversample: int = 3, thresholds: ArrayLike | str | None = None,
                 rotation: ArrayLike | str | None = None, rerank_bits: int = 1, qb: int = 4,
                 store_vectors: str | os.PathLike[str] | None = "auto", store_dtype: str = "float32", metric: str = "cos", dim: int | None = None,
                 threads: int = -1, seed: int = 0) -> None:
        if spec is None:
            spec, default_rotation = default_first_stage()
            rotation = default_rotation if rotation is None else rotation
        check_stages(spec, rescore, rerank, store_vectors is not None)
        check_metric(metric, EMBEDDING_METRICS)
        floats = VectorStore(store_vectors, store_dtype)
        self.store_dtype = floats.dtype
        # what reset() builds a fresh encoder from, checked by the encoder's own checks
        self._settings = (check_rotation(rotation), check_thresholds(thresholds), check_rerank_bits(rerank_bits),
                          check_int(seed, "seed", minimum=0))
        check_first_stage(spec, dim, metric)  # fail on a bad spec now, not at the first add
        self.spec, self.rescore, self.rerank, self.metric = spec, rescore, rerank, metric
        self.oversample = check_int(default_oversample(spec) if oversample is None else oversample, "oversample", minimum=1)
        self.rerank_oversample = check_int(rerank_oversample, "rerank_oversample", minimum=1)
        self.qb = check_qb(qb)
        self.threads = check_int(threads, "threads", minimum=-1)
        self._contents = self._empty(floats, None if dim is None else check_int(dim, "dim", minimum=1))
        self._rescorer: RescoredIndex | None = None
        self._stats, self._fit_lock = threading.local(), threading.Lock()  # last_search_stats per searching thread

    def _empty(self, floats: VectorStore, dim: int | None) -> Contents:
        rotation, thresholds, rerank_bits, seed = self._settings
        encoder = Encoder(dim, rotation=rotation, thresholds=thresholds, rerank_bits=rerank_bits, seed=seed)
        return Contents(self.spec, self.metric, self.threads, self.rerank is not None, encoder, floats, dim)

    # --- what it holds ---------------------------------------------------------------------
    @property
    def index(self) -> Any:
        """The first stage (a ``BinaryIndex`` or a float-in RaBitQ index), None before the first add."""
        return self._fitted().index

    @property
    def encoder(self) -> Encoder:
        """The ``annbin.Encoder`` of the codes (fitted once rows were added)."""
        return self._fitted().encoder

    @property
    def dim(self) -> int | None:
        """Float dimension, None until given or the first add."""
        return self._contents.dim

    @property
    def ntotal(self) -> int:
        """Vectors searchable: added and not removed."""
        return self._contents.ntotal

    def __len__(self) -> int:
        return self.ntotal

    @property
    def thresholds(self) -> NDArray[np.float32] | None:
        """The encoder's fitted thresholds per (rotated) dimension, float32 ``(dim,)``, once known."""
        return self.encoder.thresholds

    @property
    def vectors(self) -> np.ndarray | None:
        """The stored float vectors in row order (RAM or memory-mapped; unit for ``"cos"``; removed stay), or None."""
        return self._contents.floats.rows

    @property
    def last_search_stats(self) -> dict[str, float]:
        """This thread's last search: ``candidates_per_query`` and ``vectors_read_per_query``
        (empty before its first). Per thread, so concurrent searches never read each other's."""
        stats: dict[str, float] = getattr(self._stats, "value", {})
        return stats

    def get_ids(self) -> NDArray[np.int64]:
        """User ids of the stored rows, int64 ``(rows,)``, in storage (row) order (removed ones too)."""
        return self._contents.rows.ids()

    def live_rows(self) -> NDArray[np.int64]:
        """Storage rows not removed, ascending (``vectors[live_rows()]`` are the searchable ones)."""
        return self._contents.rows.live_rows()

    def __repr__(self) -> str:
        return (f"<BinaryEmbeddingIndex {self.spec!r} oversample={self.oversample} rerank={self.rerank} rescore={self.rescore} "
                f"metric={self.metric} dim={self.dim} ntotal={self.ntotal}>")

    def memory_bytes(self) -> int:
        """RAM held: first-stage index (codes, graph), row -> id map, removal mask, per-vector
        factors, encoder, in-RAM vectors (memory-mapped vectors count 0: see ``disk_bytes``)."""
        return self._fitted().memory_bytes()

    def disk_bytes(self) -> int:
        """Bytes of memory-mapped vectors (on disk, paged in on demand)."""
        return self._contents.floats.disk_bytes()

    # --- changing it -----------------------------------------------------------------------
    def add(self, embeddings: ArrayLike, ids: ArrayLike | None = None) -> None:
        """Add float embeddings ``(n, dim)``; ``ids`` int64 ``(n,)`` (unique, new) or sequential.
        Every check (shape, NaN / inf, ids, the first stage's own refusals) runs before the first
        byte is written; an add that fails leaves the index and its vectors file as they were.

        Cost: one append of the floats to the vectors file (fsynced); then, unless the rows are held
        (class docstring), encoding them and the first stage's insert of each (an HNSW insert a vector
        for ``rq-hnsw``, a bar from 100k rows). faiss's ``rabitq-hnsw:build=float`` (the fallback)
        builds its graph at ``build()`` or the first search or save; an add after that rebuilds it."""
        if self._contents.add(embeddings, ids):
            self._rebuild_rescorer()

    def add_from(self, source: str | os.PathLike[str], *, chunk_rows: int = 65_536, ids: ArrayLike | None = None,
                 progress: bool | None = None, column: str = "embedding") -> int:
        """Add the float rows of ``source`` ``chunk_rows`` at a time (RAM: the index and about one chunk);
        returns how many. A ``.npy`` file, a directory of ``.npy`` shards (by name), or a Parquet file or
        directory (list of floats ``column``; ``annbin[parquet]``). ``ids`` int64 ``(rows,)`` or sequential;
        ``progress``: a bar with ETA on stderr (None: if a terminal). Every check runs before the first
        chunk is added but NaN / inf and zero rows, found a chunk at a time (``annbin.embed.sources``)."""
        return sources.add_from(self, source, chunk_rows=chunk_rows, ids=ids, progress=progress, column=column)

    def remove_ids(self, ids: ArrayLike) -> int:
        """Remove the vectors with these user ids from search results; returns how many were
        removed (unknown or already removed ids are ignored). The rows stay in the vectors file
        (and in rabitqlib's graph, as waypoints) until the index is rebuilt.
        ``UnsupportedOperation``, naming the spec, where the first stage cannot remove (faiss's
        RaBitQ stages, ``rq-symqg``, ``hnsw``)."""
        removed = self._fitted().remove(ids)
        if removed:
            self._rebuild_rescorer()
        return removed

    def reset(self) -> None:
        """Drop every vector: the next add starts afresh (the encoder is fitted again). A saved
        directory is left as it is; the next vectors go to a new file."""
        floats = self._contents.floats
        floats.clear()
        self._contents, self._rescorer = self._empty(floats, None), None

    def build(self) -> None:
        """Do any deferred work now, so that no search pays for it: after the last add, before the
        first timed search. Cost: the fit and insert of held rows; faiss's ``rabitq-hnsw:build=float``
        graph (a bar from 100k vectors); the other first stages build as they add: nothing else."""
        if self.index is not None and hasattr(self.index, "_state"):
            self.index._state()

    def _fitted(self) -> Contents:
        """The contents, any held rows fitted and in the first stage first (concurrent searches fit once)."""
        with self._fit_lock:
            if self._contents.fit_held():
                self._rebuild_rescorer()
        return self._contents

    def _rebuild_rescorer(self) -> None:
        held = self._contents
        self._rescorer = None if held.index is None else RescoredIndex(
            held.index, oversample=self.oversample, rerank=self.rerank, rerank_oversample=self.rerank_oversample,
            vectors=held.floats.rows if self.rescore == "float" else None, encoder=held.encoder,
            encoded=held.encoded, metric=inner_metric(self.metric), qb=self.qb,  # type: ignore[arg-type]
        )

    # --- search ----------------------------------------------------------------------------
    def set_search_params(self, **params: Any) -> None:
        """``oversample``, ``rerank_oversample``, ``qb`` (with a rerank) and the first stage's search
        parameters (``ef_search``, ``nprobe``, ...)."""
        checked, rest = split_stage_params(params, self.rerank, self.index.search_params if self.index is not None else ())
        if rest:
            if self.index is None:
                names = ", ".join(stage_params(self.rerank))
                raise ValueError(f"first-stage search parameters can be set after the first add (before it: {names})")
            self.index.set_search_params(**rest)
        for key, value in checked.items():
            setattr(self, key, value)
            if self._rescorer is not None:
                setattr(self._rescorer, key, value)

    def get_search_params(self) -> dict[str, Any]:
        inner = self.index.get_search_params() if self.index is not None else {}
        return {**{k: getattr(self, k) for k in stage_params(self.rerank)}, **inner}

    def _queries(self, queries: ArrayLike) -> NDArray[np.floating]:
        """Float queries ``(nq, dim)`` as the stages see them (unit length for ``"cos"``)."""
        q = as_floats(queries, self.dim, name="queries")
        if self.metric != "cos":
            return q
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        return (q / np.where(norms > 0, norms, 1)).astype(np.float32)  # a zero query scores 0 against all

    def search(self, queries: ArrayLike, k: int, *, params: dict[str, Any] | None = None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` for float queries ``(nq, dim)``: ``(scores float32, ids int64)``, ``(nq, k)``
        (see the class docstring). ``params``: search parameters for this call only (nothing shared
        changes: threads may search one index with different ``params`` at once).

        Cost a query: the first stage's walk (``ef_search`` for the HNSW stages) over codes in RAM,
        then ``oversample * k`` float rows read from the vectors file (paged in on demand) and
        rescored. Nothing is built here, except held rows and faiss's ``rabitq-hnsw:build=float``
        graph when neither ``build()`` nor a save did it yet (then this call pays for them).
        """
        k = check_k(k)
        q = self._queries(queries)
        self._fitted()
        if self._rescorer is None:  # nothing added yet: every result missing
            self._stats.value = {"candidates_per_query": 0.0, "vectors_read_per_query": 0.0}
            return np.full((q.shape[0], k), np.inf if self.metric == "l2" else -np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
        S, rows = self._rescorer.search(q, k, params=params)
        self._stats.value = dict(self._rescorer.last_search_stats)  # this thread's, read in this thread
        return S, self._contents.rows.to_ids(rows)

    def range_search(self, queries: ArrayLike, radius: int) -> RangeResult:
        """Every stored vector whose code lies at Hamming distance ``< radius`` from the query's
        code (faiss's rule): the binary first stage's own ``range_search``, no rescoring.

        ``queries``: floats ``(nq, dim)``, encoded as the documents were (normalized for ``"cos"``,
        rotated, compared with ``thresholds``) into ``code_size * 8``-bit codes. ``radius``: Hamming
        radius in bits, an int >= 0 (0 matches nothing). Returns faiss's ``(lims, D, I)``: lims int64
        ``(nq + 1,)``; query ``i``'s results are ``D[lims[i]:lims[i + 1]]`` and ``I[lims[i]:lims[i + 1]]``,
        sorted by (distance, id); ``D`` int32 Hamming distances of the codes (not float scores), ``I``
        int64 user ids. ``UnsupportedOperation``, naming the spec, where the first stage has no range
        search (a float-in RaBitQ stage ranks by estimates, not code distance; ``hnsw`` has none).
        """
        if self._contents.float_in:
            raise UnsupportedOperation(f"first stage {self.spec!r} has no range_search: it ranks float queries by RaBitQ "
                                       "estimates, not by Hamming distance (use a binary first stage: flat, mih, ivf)")
        radius = check_radius(radius)
        q = self._queries(queries)
        if self.index is None:
            return np.zeros(q.shape[0] + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
        lims, D, rows = stage_range_search(self.index, self.spec, self.encoder.encode_codes(q), radius)
        return sort_ranges(lims, D, self._contents.rows.to_ids(rows))  # (distance, user id) order

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a directory ``path`` (created if needed); its layout and crash safety are in
        ``annbin.embed._embedding_files``. A store the index owned (``"auto"``) lives in ``path``
        from here on."""
        settings = {"spec": self.spec, "rescore": self.rescore, "rerank": self.rerank, "oversample": self.oversample,
                    "rerank_oversample": self.rerank_oversample, "qb": self.qb, "metric": self.metric,
                    "store_dtype": self.store_dtype}
        store = write_directory(Path(path), settings, self._fitted())
        if store is not None and self._contents.floats.saved_as(store):
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
        settings, contents = read_directory(Path(path), mmap)
        obj = cls(**settings)
        obj._contents = contents
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
        ``metric="cos"`` in ``kwargs`` to normalize), ``"l2"`` for ``METRIC_L2``. Deferred work is
        done before it returns (``build()``). ``rq-symqg`` (built once) needs ``chunk >= ntotal`` or
        ``ntotal < FIT_ROWS``. ``TypeError`` for anything but a faiss float index (a
        ``faiss.IndexBinary`` goes to ``annbin.from_faiss``); ``ValueError`` for other faiss index
        types, naming them, or a ``metric`` that does not match faiss's.
        """
        chunk = check_int(chunk, "chunk", minimum=1)
        source = faiss_floats(float_index, kwargs.pop("metric", None))
        kwargs.setdefault("dim", source.dim)
        obj = cls(spec, metric=source.metric, **kwargs)
        for vectors, ids in source.chunks(chunk):
            obj.add(vectors, ids)
        obj.build()
        return obj
