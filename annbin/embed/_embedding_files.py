"""A saved ``BinaryEmbeddingIndex``: a directory, written crash-safely, read back whole.

Layout (no pickle anywhere)::

    my_index/embedding.annbin   the commit record: settings, row -> id map, encoder (rotation,
                                thresholds), per-vector factors, the names of the two files below
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

import re
from pathlib import Path
from typing import Any

import numpy as np

from annbin._io import EMBEDDING_RECORD, fsync_dir, read_index_file, write_index_file
from annbin.embed._contents import Contents
from annbin.embed._row_ids import RowIds
from annbin.embed._vectors import DiskVectors, VectorStore, write_store
from annbin.embed.encoder import Encoded, Encoder
from annbin.embed.float_files import load_float_file
from annbin.embed.floats import is_float_spec
from annbin.index.registry import load_first_stage

KIND = "binary-embedding"
VERSION = 4
_SAVED_NAME = re.compile(r"(index(\.\d+)?\.annbin|vectors(\.\d+)?\.npy)")  # names a save writes
_ENCODED = ("factors", "sqnorms", "planes", "levels")  # the rerank's per-row data (the codes are the first stage's)

__all__ = ["KIND", "VERSION", "read_directory", "write_directory"]


def write_directory(root: Path, settings: dict[str, Any], contents: Contents) -> DiskVectors | None:
    """Save ``contents`` and ``settings`` (``BinaryEmbeddingIndex``'s keyword arguments, JSON-able)
    into directory ``root`` (created if needed; module docstring): the first stage, the float rows
    (a vectors file in ``root`` is committed in place, else a copy is written), then the record (the
    commit), then the files of the previous save are removed. Returns the vectors file the commit
    names (None without rows)."""
    root.mkdir(parents=True, exist_ok=True)
    previous = _committed_files(root)
    index_file = vectors_file = None
    if contents.index is not None:
        index_file = _free_name(root, "index", ".annbin")
        contents.index.save(str(root / index_file))
    store, counts = None, {}
    rows = contents.floats.rows
    if rows is not None:
        store = contents.floats.file
        if store is None or store.path.parent.resolve() != root.resolve():
            store = write_store(root / _free_name(root, "vectors", ".npy"), rows, int(rows.shape[1]))
        vectors_file = store.path.name
        counts = {"vectors_rows": store.rows, "vectors_crc32": store.crc}
    header = {
        "variant": KIND, "version": VERSION, **settings, "dim": contents.dim, "ntotal": contents.ntotal,
        "next_id": contents.rows.next_id, "encoder": contents.encoder.get_params(), "disk": contents.floats.on_disk,
        "vectors": contents.floats.kept, "started": contents.index is not None, "index_file": index_file,
        "vectors_file": vectors_file, **counts,
    }
    arrays = contents.rows.arrays()
    arrays.update({f"encoder.{key}": value for key, value in contents.encoder.state_arrays().items()})
    encoded = contents.encoded
    if encoded is not None:
        arrays.update({f"encoded.{f}": getattr(encoded, f) for f in _ENCODED if getattr(encoded, f) is not None})
    write_index_file(root / EMBEDDING_RECORD, header, arrays)  # the commit
    fsync_dir(root)
    # the previous save's files, and those of a save that was killed before its commit
    stale = previous | {p.name for p in root.iterdir() if _SAVED_NAME.fullmatch(p.name)}
    for name in stale - {index_file, vectors_file}:
        (root / name).unlink(missing_ok=True)
    return store


def read_directory(root: Path, mmap: bool | None) -> tuple[dict[str, Any], Contents]:
    """The settings (``BinaryEmbeddingIndex``'s keyword arguments) and contents that
    ``write_directory`` committed in ``root``. ``mmap``: map the vectors (True; later adds grow
    the file), read them into RAM (False), or as they were stored (None). Only the committed rows
    are read, their CRC-32 checked. ``ValueError`` for a directory that is missing, of another
    kind or version, incomplete or inconsistent."""
    header, arrays = read_index_file(root / EMBEDDING_RECORD)
    if header.get("variant") != KIND or header.get("version") != VERSION:
        raise ValueError(f"{str(root)!r} does not hold a BinaryEmbeddingIndex of version {VERSION}")
    try:
        mapped = bool(header["disk"]) if mmap is None else bool(mmap)
        encoder = Encoder.from_state(header["encoder"], {key[8:]: v for key, v in arrays.items() if key.startswith("encoder.")})
        params = encoder.get_params()
        settings = {
            "spec": header["spec"], "rescore": header["rescore"], "rerank": header["rerank"],
            "oversample": int(header["oversample"]), "rerank_oversample": int(header["rerank_oversample"]),
            "qb": int(header["qb"]), "metric": header["metric"], "dim": header["dim"], "store_dtype": header["store_dtype"],
            "store_vectors": ("auto" if mapped else "ram") if header["vectors"] else None,
            "rotation": encoder.matrix if params["rotation"] == "given" else params["rotation"],
            "thresholds": encoder.thresholds if params["thresholds"] == "given" else params["thresholds"],
            "rerank_bits": params["rerank_bits"], "seed": params["seed"],
        }
        floats = VectorStore(settings["store_vectors"], settings["store_dtype"])
        contents = Contents(header["spec"], header["metric"], -1, bool(header["rerank"]), encoder, floats, header["dim"])
        ids = np.asarray(arrays["ids"], np.int64)
        removed = None if "removed" not in arrays else np.asarray(arrays["removed"], np.uint8).astype(bool)
        contents.rows = RowIds(ids, removed, int(header["next_id"]))
        parts = {key[8:]: v for key, v in arrays.items() if key.startswith("encoded.")}
        if parts:
            contents.encoded = Encoded(np.empty((0, 0), np.uint8), parts["factors"], parts.get("sqnorms"), parts.get("planes"), parts.get("levels"))
        if header["started"]:
            path = root / header["index_file"]
            contents.index = load_float_file(path) if is_float_spec(header["spec"]) else load_first_stage(path)
            if header["vectors"]:
                file = DiskVectors.open(root / header["vectors_file"], ids.size, int(header["dim"]), int(header["vectors_crc32"]))
                floats.open(file, mapped=mapped)
    except (KeyError, TypeError, OSError) as exc:
        raise ValueError(f"{str(root)!r} is incomplete or malformed: {exc}") from None
    if contents.index is not None and contents.index.ntotal != contents.ntotal:
        raise ValueError(f"{str(root)!r} is inconsistent: {contents.ntotal} ids but the index holds {contents.index.ntotal}")
    if contents.encoded is not None and contents.encoded.factors.shape[0] != ids.size:
        raise ValueError(f"{str(root)!r} is inconsistent: {contents.encoded.factors.shape[0]} factors for {ids.size} rows")
    return settings, contents


def _committed_files(root: Path) -> set[str]:
    """The first-stage and vectors files the directory's current record names."""
    try:
        header, _ = read_index_file(root / EMBEDDING_RECORD, mmap=True)
    except ValueError:
        return set()  # nothing committed (or unreadable): nothing of it to clean up
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
