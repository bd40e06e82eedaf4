"""Spec strings to indexes, and loading any saved index.

Spec grammar: ``variant`` or ``variant:key=value,key=value``. Keys are the variant's build
parameters (constructor keywords) and search parameters; values are ints, floats, ``true``/``false``
or bare strings. Examples: ``"flat"``, ``"hnsw:M=32,ef_search=64"``, ``"mih"``, ``"mih:m=4"``,
``"ivf:nlist=256,nprobe=16"``.

faiss binary factory strings are specs too (case-sensitive, built by
``faiss.index_binary_factory``): ``"BFlat"``, ``"BHNSW32"``, ``"BIVF1024"``, ``"BHash16"``,
``"BHash4x16"``, ``"IDMap2,BHash4x16"``, optionally followed by search parameters:
``"IDMap2,BIVF1024:nprobe=16"`` (see ``annbin.index.faiss_wrap``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from annbin._checks import check_d
from annbin.index.base import BinaryIndex
from annbin.index.faiss_wrap import FaissIndex, is_faiss_factory, make_faiss_index
from annbin.index.flat import FlatIndex
from annbin.index.hnsw import HNSWIndex
from annbin.index.ivf import IVFIndex
from annbin.index.mih import MIHIndex

VARIANTS: dict[str, type[BinaryIndex]] = {
    cls.variant: cls for cls in (FlatIndex, HNSWIndex, MIHIndex, IVFIndex, FaissIndex)
}

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def parse_value(text: str) -> Any:
    """``"32"`` -> 32, ``"0.5"`` -> 0.5, ``"true"`` -> True, anything else stays a string."""
    text = text.strip()
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"variant:k=v,k=v"`` into the variant name and a dict of parsed values."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"index spec must be a non-empty string, got {spec!r}")
    name, _, body = spec.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"bad parameter {item!r} in index spec {spec!r}; expected key=value")
        if key.strip() in params:
            raise ValueError(f"parameter {key.strip()!r} given twice in index spec {spec!r}")
        params[key.strip()] = parse_value(value)
    return name.strip().lower(), params


def split_params(cls: type[BinaryIndex], params: dict[str, Any], spec: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate build from search parameters; unknown names raise ``ValueError``."""
    unknown = sorted(set(params) - set(cls.build_params) - set(cls.search_params))
    if unknown:
        allowed = ", ".join(cls.build_params + cls.search_params) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for index {cls.variant!r} in {spec!r}; expected: {allowed}")
    build = {k: v for k, v in params.items() if k in cls.build_params}
    search = {k: v for k, v in params.items() if k in cls.search_params}
    return build, search


def make_index(spec: str, d: int) -> BinaryIndex:
    """Build an empty index from a spec string for codes of ``d`` bits.

    ``"sharded:shards=N:<spec>"`` builds an ``annbin.distributed.ShardedIndex`` of ``<spec>``
    (needs Ray: ``annbin[distributed]``; grammar in ``annbin.distributed.parse_sharded_spec``).
    """
    d = check_d(d)
    if isinstance(spec, str) and spec.strip().partition(":")[0].strip().lower() == "sharded":
        from annbin.distributed import ShardedIndex  # lazy: Ray stays optional

        return ShardedIndex.from_spec(spec, d)
    if is_faiss_factory(spec):
        return make_faiss_index(spec, d)
    name, params = parse_spec(spec)
    cls = VARIANTS.get(name)
    if cls is None:
        raise ValueError(f"unknown index spec {spec!r}; known variants: {', '.join(sorted(VARIANTS))}")
    build, search = split_params(cls, params, spec)
    index = cls(d, **build)
    index.set_search_params(**search)
    return index


def load_index(path: str | os.PathLike[str], *, mmap: bool = False) -> BinaryIndex:
    """Load an index saved by ``BinaryIndex.save``; checks format version and checksum.

    ``mmap=True`` maps the file instead of reading it: the checksum is streamed in chunks, and
    faiss-backed indexes (``flat``, ``hnsw``, ``ivf``, faiss factory strings) read their faiss
    data in place: flat codes (and HNSW's links) stay views of the mapped file, paged in by
    searches and held as page cache, not copied (a 208 MiB flat index: peak 26 MiB over the
    start vs 419 MiB read; ``benchmarks/mmap_load.py``). Ids are still read into RAM; MIH copies
    its codes into its tables either way. A mapped index is searched in place; its first
    ``add``, ``remove_ids`` or ``reset`` copies it into RAM (copy on write: the file is never
    written).

    A file without annbin's magic bytes is read with ``faiss.read_index_binary`` (a file written
    by ``faiss.write_index_binary``) and returned as a ``FaissIndex``; if faiss cannot read it
    either, ``ValueError``. A directory holding a ``manifest.json`` is a saved ``ShardedIndex``
    (needs Ray).
    """
    from annbin._io import is_annbin_file, read_index_file

    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "manifest.json")):
        from annbin.distributed import ShardedIndex

        return ShardedIndex.load(path)
    if os.path.isfile(path) and not is_annbin_file(path):
        from annbin.index.faiss_wrap import read_faiss_file

        return read_faiss_file(path)
    header, arrays = read_index_file(path, mmap=mmap)
    try:
        variant, d, ntotal = header["variant"], header["d"], int(header["ntotal"])
        params, search = dict(header["params"]), dict(header.get("search_params", {}))
        next_id = int(header.get("next_id", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} has an incomplete header: {exc}") from None
    cls = VARIANTS.get(variant)
    if cls is None:
        raise ValueError(f"{str(path)!r} holds unknown index variant {variant!r}")
    index = cls._from_state(check_d(d), params, arrays)
    if index.ntotal != ntotal:
        raise ValueError(f"{str(path)!r} is inconsistent: header says {ntotal} codes, payload has {index.ntotal}")
    index.set_search_params(**search)
    index._next_id = next_id
    return index
