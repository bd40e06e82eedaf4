"""``annbin.load``: any saved annbin object, read by what its header (or directory) says it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from annbin._io import EMBEDDING_RECORD, is_annbin_file, peek_header

__all__ = ["load"]


def load(path: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """Load whatever annbin (or faiss) saved at ``path``.

    Parameters
    ----------
    path
        One of: a file written by ``BinaryIndex.save`` (any binary variant), a float-in index's
        file (``rabitq``, ``ivf-rabitq``, ``rabitq-hnsw``, ``rq-hnsw``, ``rq-symqg``), a directory
        written by ``BinaryEmbeddingIndex.save`` (or its ``embedding.annbin`` record), a
        ``ShardedIndex`` or ``ShardedEmbeddingIndex`` directory (``manifest.json``; needs Ray), or a file written by
        ``faiss.write_index_binary`` (returned as a ``FaissIndex``).
    mmap
        Map binary index files and a ``BinaryEmbeddingIndex``'s vectors instead of reading them
        into RAM (see ``annbin.load_index``).

    Returns
    -------
    BinaryIndex, FloatIndex, BinaryEmbeddingIndex or ShardedEmbeddingIndex
        The object, with its search parameters as saved.

    Raises
    ------
    ValueError
        The path is missing, unreadable, corrupted (format version, checksum) or of no known kind.
    """
    from annbin.embed.embedding_index import BinaryEmbeddingIndex
    from annbin.index.registry import float_variants, load_first_stage

    p = Path(path)
    if p.is_dir():
        if (p / EMBEDDING_RECORD).is_file():
            return BinaryEmbeddingIndex.load(p, mmap=mmap or None)
        from annbin.distributed.embedding import ShardedEmbeddingIndex, is_saved_embedding_index

        if is_saved_embedding_index(p):  # its manifest names it (needs Ray); floats mapped as stored
            return ShardedEmbeddingIndex.load(p)
        return load_first_stage(p, mmap=mmap)  # a sharded manifest, or one clear error
    if p.name == EMBEDDING_RECORD and p.is_file():
        return BinaryEmbeddingIndex.load(p.parent, mmap=mmap or None)
    if not p.is_file() or not is_annbin_file(p):
        return load_first_stage(p, mmap=mmap)  # missing (clear error), or a faiss file
    if peek_header(p).get("variant") in float_variants():  # the loader checksums the file, once
        from annbin.embed.float_files import load_float_file

        return load_float_file(p)
    return load_first_stage(p, mmap=mmap)
