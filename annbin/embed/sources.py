"""Float rows from files, a chunk at a time: what ``BinaryEmbeddingIndex.add_from`` reads.

Sources (a file's kind is told by its first bytes, not its name):

- a ``.npy`` file: float16/32/64, 2-D ``(rows, dim)``; read ``chunk_rows`` at a time by plain
  reads at an offset, so RAM holds one chunk and no page of the file stays mapped (a Fortran-order
  file is read through a memory map, still a chunk at a time);
- a directory of ``.npy`` shards: its ``*.npy`` files sorted by name (zero-pad numbers:
  ``part_10.npy`` sorts before ``part_2.npy``), read as one array of their rows in that order;
- a Parquet file, or a directory of them (every ``*.parquet`` / ``*.pq`` below it, sorted by path;
  names starting ``.`` or ``_`` skipped, as Spark's ``_SUCCESS``): the column ``column``, one
  ``list<float>``, ``large_list<float>`` or ``fixed_size_list<float>`` (float16/32/64) a row, read a
  batch at a time by pyarrow (``pip install 'annbin[parquet]'``; pyarrow decodes a row group at a
  time: write row groups of about a chunk to keep its RAM to a chunk too).

Checks, all before the first chunk is added (a refused source adds nothing): the path exists and
is one of the above; every shard's or file's shape, dtype and dim, alike and equal to the index's;
the column is there with a list-of-floats type; ``ids`` (length, unique, >= 0, none live already).
A non-float dtype is a ``TypeError``, the rest ``ValueError``. Only what needs every value read is
checked a chunk at a time: NaN / inf and (``metric="cos"``) all-zero rows, by ``add`` itself, and a
``list<float>`` column's null rows or rows of another length; that ``ValueError`` names the rows,
and the chunks before it stay added.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import InputTypeError, as_ids, check_int
from annbin._extras import require
from annbin.embed._vectors import npy_header

__all__ = ["Source", "add_from", "open_source"]

_NPY_MAGIC = b"\x93NUMPY"
_PARQUET_MAGIC = b"PAR1"
_PARQUET_SUFFIXES = (".parquet", ".pq")


class _Adds(Protocol):
    """What ``add_from`` needs of an index (``BinaryEmbeddingIndex``)."""

    @property
    def dim(self) -> int | None: ...

    def add(self, embeddings: ArrayLike, ids: ArrayLike | None = None) -> None: ...

    def get_ids(self) -> NDArray[np.int64]: ...

    def live_rows(self) -> NDArray[np.int64]: ...


@dataclass
class Source:
    """``rows`` float rows of ``dim`` (None only when there are no rows) from ``name``;
    ``parts(chunk_rows)`` yields them in pieces of at most ``chunk_rows``."""

    name: str
    rows: int
    dim: int | None
    parts: Callable[[int], Iterator[NDArray[np.floating]]]

    def chunks(self, chunk_rows: int) -> Iterator[NDArray[np.floating]]:
        """The rows in arrays of exactly ``chunk_rows`` (the last one fewer), across file boundaries."""
        held: list[NDArray[np.floating]] = []
        have = 0
        for part in self.parts(chunk_rows):
            while part.shape[0]:
                take = min(chunk_rows - have, part.shape[0])
                held.append(part[:take])
                have, part = have + take, part[take:]
                if have == chunk_rows:
                    yield held[0] if len(held) == 1 else np.concatenate(held)
                    held, have = [], 0
        if have:
            yield held[0] if len(held) == 1 else np.concatenate(held)


def add_from(index: _Adds, source: str | os.PathLike[str], *, chunk_rows: int = 65_536, ids: ArrayLike | None = None,
             progress: bool | None = None, column: str = "embedding") -> int:
    """``index.add`` every row of ``source`` (module docstring), ``chunk_rows`` at a time, under
    ``ids`` (int64 ``(rows,)``) or sequential ones; returns the rows added. ``progress``: a tqdm bar
    on stderr with rows and ETA (None: when stderr is a terminal)."""
    chunk_rows = check_int(chunk_rows, "chunk_rows", minimum=1)
    if not isinstance(column, str):
        raise InputTypeError(f"column must be a column name (str), got {type(column).__name__}")
    src = open_source(source, column=column)
    if src.rows and index.dim is not None and src.dim != index.dim:
        raise ValueError(f"{src.name} holds rows of dim {src.dim}, but the index's dim is {index.dim}")
    new_ids = None
    if ids is not None:
        new_ids = as_ids(ids, src.rows)
        clash = np.isin(new_ids, index.get_ids()[index.live_rows()])
        if clash.any():
            raise ValueError(f"ids already in the index: {new_ids[clash][:5].tolist()}")
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    done, at = 0, ""
    with tqdm(total=src.rows, desc=f"add_from {Path(src.name).name}", unit=" rows", unit_scale=True, disable=not show,
              file=sys.stderr) as bar:
        try:
            for chunk in src.chunks(chunk_rows):
                n = chunk.shape[0]
                at = f", rows {done:,} to {done + n - 1:,}"
                index.add(chunk, None if new_ids is None else new_ids[done:done + n])
                done, at = done + n, ""
                bar.update(n)
        except ValueError as exc:  # a per-chunk check: say where, and what stays added
            raise ValueError(f"{src.name}{at}: {exc} (the {done:,} rows before were added, none after)") from None
    return done


def open_source(source: str | os.PathLike[str], *, column: str = "embedding") -> Source:
    """The rows of a ``.npy`` file, a directory of ``.npy`` shards, or Parquet (module docstring),
    every check that needs no values read done (``ValueError`` / ``TypeError``)."""
    if not isinstance(source, (str, os.PathLike)):
        raise InputTypeError(f"source must be a path (str or os.PathLike), got {type(source).__name__}; add arrays with add()")
    path = Path(source)
    if not path.exists():
        raise ValueError(f"no such file or directory: {str(path)!r}")
    if path.is_dir():
        shards = sorted((p for p in path.iterdir() if p.suffix == ".npy" and p.is_file() and not _hidden(p.name)), key=lambda p: p.name)
        tables = sorted((p for p in path.rglob("*") if p.suffix in _PARQUET_SUFFIXES and p.is_file()
                         and not any(_hidden(part) for part in p.relative_to(path).parts)), key=lambda p: p.relative_to(path).parts)
        if shards and tables:
            raise ValueError(f"{str(path)!r} holds both .npy and Parquet files: give one kind a directory")
        if shards:
            return _npy_source(shards, str(path))
        if tables:
            return _parquet_source(tables, column, str(path))
        raise ValueError(f"{str(path)!r} holds no .npy or Parquet (.parquet, .pq) files")
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic.startswith(_NPY_MAGIC):
        return _npy_source([path], str(path))
    if magic.startswith(_PARQUET_MAGIC):
        return _parquet_source([path], column, str(path))
    raise ValueError(f"{str(path)!r} is neither a .npy nor a Parquet file (by its first bytes)")


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


# --- .npy ----------------------------------------------------------------------------------------
@dataclass
class _Npy:
    path: Path
    rows: int
    dim: int
    dtype: np.dtype[Any]
    offset: int
    fortran: bool


def _open_npy(path: Path) -> _Npy:
    """The header of a 2-D float ``.npy`` file, checked (its size too); nothing else is read."""
    with open(path, "rb") as f:
        shape, fortran, dtype = npy_header(f, path)
        offset, size = f.tell(), os.fstat(f.fileno()).st_size
    if not np.issubdtype(dtype, np.floating):
        raise InputTypeError(f"{str(path)!r} holds dtype {dtype}: embeddings must be float16, float32 or float64")
    if len(shape) != 2 or shape[1] == 0:
        raise ValueError(f"{str(path)!r} holds shape {tuple(shape)}: embeddings must be 2-D (rows, dim) with dim >= 1")
    npy = _Npy(path, int(shape[0]), int(shape[1]), np.dtype(dtype), offset, bool(fortran))
    if size < offset + npy.rows * npy.dim * npy.dtype.itemsize:
        raise ValueError(f"{str(path)!r} is truncated: its header says shape {tuple(shape)}, its size holds fewer rows")
    return npy


def _read_npy(npy: _Npy, chunk_rows: int) -> Iterator[NDArray[np.floating]]:
    if npy.rows == 0:
        return
    if npy.fortran:  # columns are contiguous: a row range is strided, read through a map
        mapped = np.memmap(npy.path, dtype=npy.dtype, mode="r", offset=npy.offset, shape=(npy.rows, npy.dim), order="F")
        for lo in range(0, npy.rows, chunk_rows):
            yield np.ascontiguousarray(mapped[lo:lo + chunk_rows])
        return
    row_bytes = npy.dim * npy.dtype.itemsize
    with open(npy.path, "rb") as f:
        for lo in range(0, npy.rows, chunk_rows):
            n = min(chunk_rows, npy.rows - lo)
            f.seek(npy.offset + lo * row_bytes)
            yield np.fromfile(f, dtype=npy.dtype, count=n * npy.dim).reshape(n, npy.dim)


def _npy_source(paths: list[Path], name: str) -> Source:
    shards = [_open_npy(p) for p in paths]
    first = shards[0]
    for shard in shards[1:]:
        if shard.dim != first.dim:
            raise ValueError(f"shard {shard.path.name} holds rows of dim {shard.dim}, but {first.path.name}'s are of dim {first.dim}")

    def parts(chunk_rows: int) -> Iterator[NDArray[np.floating]]:
        for shard in shards:
            yield from _read_npy(shard, chunk_rows)

    return Source(name, sum(s.rows for s in shards), first.dim, parts)


# --- Parquet -------------------------------------------------------------------------------------
def _parquet_source(paths: list[Path], column: str, name: str) -> Source:
    pa = require("pyarrow", package="pyarrow", extra="parquet", purpose="reading Parquet (add_from)")
    pq = require("pyarrow.parquet", package="pyarrow", extra="parquet", purpose="reading Parquet (add_from)")
    require("pyarrow.compute", package="pyarrow", extra="parquet", purpose="reading Parquet (add_from)")  # pa.compute
    rows, widths, variable = 0, set(), []
    for path in paths:
        try:
            with pq.ParquetFile(path) as table:
                schema, count = table.schema_arrow, int(table.metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{str(path)!r} is not a readable Parquet file: {exc}") from None
        if column not in schema.names:
            raise ValueError(f"{str(path)!r} has no column {column!r} (it has {', '.join(schema.names)}): pass column=")
        kind = schema.field(column).type
        lists = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
        if not lists or not pa.types.is_floating(kind.value_type):
            raise InputTypeError(f"column {column!r} of {str(path)!r} is {kind}: embeddings must be a list of floats a row")
        if pa.types.is_fixed_size_list(kind):
            widths.add(int(kind.list_size))
        elif count:
            variable.append(path)
        rows += count
    if len(widths) > 1:
        raise ValueError(f"{name}: column {column!r} has fixed sizes {sorted(widths)} in different files: one dim only")
    dim = widths.pop() if widths else (_first_width(pq, variable[0], column) if variable else None)

    def parts(chunk_rows: int) -> Iterator[NDArray[np.floating]]:
        done = 0
        for path in paths:
            with pq.ParquetFile(path) as table:
                for batch in table.iter_batches(batch_size=chunk_rows, columns=[column]):
                    assert dim is not None  # for mypy: rows were counted, so dim is known
                    yield _list_rows(pa, batch.column(0), dim, done, column)
                    done += batch.num_rows

    return Source(name, rows, dim, parts)


def _first_width(pq: Any, path: Path, column: str) -> int:
    """The length of the first row of a ``list<float>`` column (its dim: every row is checked)."""
    with pq.ParquetFile(path) as table:
        first = next(table.iter_batches(batch_size=1, columns=[column])).column(0)[0]
    if not first.is_valid or len(first) == 0:
        raise ValueError(f"{str(path)!r}: the first row of column {column!r} is null or empty")
    return len(first)


def _list_rows(pa: Any, values: Any, dim: int, first: int, column: str) -> NDArray[np.floating]:
    """A pyarrow list-of-floats array ``(n,)`` (rows ``first ..`` of the source) as floats ``(n, dim)``;
    ``ValueError`` for null rows, rows of another length, null values."""
    n = len(values)
    if values.null_count:
        bad = first + int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"row {bad:,} of column {column!r} is null")
    if not pa.types.is_fixed_size_list(values.type):
        lengths = pa.compute.list_value_length(values).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(lengths != dim)
        if wrong.size:
            raise ValueError(f"row {first + int(wrong[0]):,} of column {column!r} has {int(lengths[wrong[0]])} values, expected {dim}")
    flat = values.flatten()  # the rows' values only, whatever the array's offset
    if flat.null_count:
        raise ValueError(f"rows {first:,} to {first + n - 1:,} of column {column!r} hold {flat.null_count} null value(s)")
    return np.asarray(flat.to_numpy(zero_copy_only=False)).reshape(n, dim)
