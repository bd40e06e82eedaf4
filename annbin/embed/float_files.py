"""Reading a float-in index's file (RaBitQ on faiss, rabitqlib) by the variant its header names."""

from __future__ import annotations

import os
from pathlib import Path

from annbin._io import read_index_file
from annbin.embed.float_base import FloatIndex
from annbin.index.registry import float_variants

__all__ = ["load_float_file"]


def load_float_file(path: str | os.PathLike[str]) -> FloatIndex:
    """A float-in index from a file its ``save`` wrote (RaBitQ on faiss, rabitqlib): the header
    names the variant and builds it, the array its class names (``payload``: the library's own
    bytes) goes to its ``_adopt_payload``. ``ValueError`` for a file that is missing, corrupted
    (checksum), of another kind, or inconsistent."""
    header, arrays = read_index_file(path)
    try:
        cls = float_variants()[header["variant"]]
        if not cls.payload:
            raise KeyError(f"variant {cls.variant!r} is not saved to files")
        index = cls(int(header["dim"]), metric=header["metric"], **header["params"])
        ntotal, blob, search = int(header["ntotal"]), arrays[cls.payload], dict(header["search_params"])
    except KeyError as exc:
        raise ValueError(f"{str(path)!r} is not a saved float-in index (missing or unknown {exc})") from None
    except TypeError as exc:
        raise ValueError(f"{str(path)!r} has a malformed header: {exc}") from None
    # arrays named "<payload>.<suffix>": files the library writes beside its own (rabitqlib's sidecars)
    sidecars = {name[len(cls.payload):]: arr for name, arr in arrays.items() if name.startswith(cls.payload + ".")}
    if blob.size:
        try:
            extra = {"sidecars": sidecars} if sidecars else {}
            index._adopt_payload(blob, Path(path), **extra)  # type: ignore[attr-defined]  # each variant family defines it
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: {exc}") from None
    if index.ntotal != ntotal:
        raise ValueError(f"{str(path)!r} is inconsistent: header says {ntotal} vectors, payload has {index.ntotal}")
    index.set_search_params(**search)
    return index
