"""Spec strings to indexes, and loading any saved index.

The grammar is ``annbin.spec``'s: ``"flat"``, ``"hnsw:M=32,ef_search=64"``, ``"mih:m=4"``,
``"ivf:nlist=256,nprobe=16"``; faiss binary factory strings (``"BFlat"``, ``"BHNSW32"``,
``"IDMap2,BIVF1024:nprobe=16"``, built by ``faiss.index_binary_factory``); ``"sharded:shards=2:mih"``
(``annbin.distributed``, needs Ray); ``"hnsw:M=16+rescore:oversample=4,..."``
(``annbin.embed.rescore.RescoredIndex``).

Variants join the registry themselves (``@register`` on the class, ``register_prefix`` and
``register_wrapper`` for the spec forms around an index): the registry imports none of them by
name. It loads the built-in ones by module name (``importlib``) on first use, and the modules
behind ``sharded:`` and ``+rescore`` only when such a spec is used, so Ray stays optional.
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from annbin import spec as grammar
from annbin._checks import InputTypeError, check_d
from annbin._io import EMBEDDING_RECORD, is_annbin_file, read_index_file
from annbin.index.base import BinaryIndex, Described

if TYPE_CHECKING:  # float-in indexes register here too, but this module sits below them
    from annbin.embed.float_base import FloatIndex

#: modules whose import registers the built-in variants (binary and float-in)
BUILTIN_MODULES = (
    "annbin.index.flat",
    "annbin.index.hnsw",
    "annbin.index.mih.index",
    "annbin.index.ivf",
    "annbin.index.faiss_wrap",
    "annbin.embed.floats",
    "annbin.embed.rabitq",
    "annbin.embed.rqlib",
    "annbin.embed.rqivf",
)
#: spec forms around an index, and the module that registers each when imported
PREFIX_MODULES = {grammar.SHARDED: "annbin.distributed"}
WRAPPER_MODULES = {"rescore": "annbin.embed.rescore"}
#: the variant that builds faiss factory strings (``FaissIndex(d, factory=...)``)
FAISS_VARIANT = "faiss"
_FAISS_MODULE = "annbin.index.faiss_wrap"

_I = TypeVar("_I", bound=Described)
_BINARY: dict[str, type[BinaryIndex]] = {}
_FLOAT: dict[str, type[FloatIndex]] = {}
_PREFIXES: dict[str, Callable[..., Any]] = {}
_WRAPPERS: dict[str, Callable[..., Any]] = {}
_loaded = False


def register(cls: type[_I]) -> type[_I]:
    """Class decorator: make a ``BinaryIndex`` (or float-in ``FloatIndex``) subclass buildable
    by its ``variant`` name. Its constructor is ``cls(d, **build_params)`` (float-in:
    ``cls(dim, metric=..., **build_params)``)."""
    if not isinstance(cls, type) or not issubclass(cls, Described) or (not cls.takes_floats and not issubclass(cls, BinaryIndex)):
        raise InputTypeError(f"register expects a BinaryIndex or FloatIndex subclass, got {cls!r}")
    name = cls.variant
    if not name or name != name.lower() or any(c in name for c in ",:=|+ "):
        raise ValueError(f"variant name {name!r} of {cls.__name__} must be lower case without , : = | + or spaces")
    other = _BINARY.get(name) or _FLOAT.get(name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"variant {name!r} is taken by {other.__qualname__}")
    if cls.takes_floats:
        _FLOAT[name] = cast("type[FloatIndex]", cls)
    else:
        _BINARY[name] = cast("type[BinaryIndex]", cls)
    return cls


def register_prefix(name: str, build: Callable[..., BinaryIndex]) -> None:
    """``"NAME:...`` specs are built by ``build(spec, d=d)`` (``"sharded"``: ``ShardedIndex``)."""
    _PREFIXES[name] = build


def register_wrapper(name: str, build: Callable[..., Any]) -> None:
    """``"INNER+NAME:params"`` specs are built by ``build(inner_index, params, **data)``."""
    _WRAPPERS[name] = build


def _load(module: str) -> None:
    importlib.import_module(module)  # by name: the module imports this one to register


def _builtins() -> None:
    global _loaded
    if not _loaded:
        for module in BUILTIN_MODULES:
            _load(module)
        _loaded = True


def variants() -> dict[str, type[BinaryIndex]]:
    """Binary variants by name (a copy)."""
    _builtins()
    return dict(_BINARY)


def float_variants() -> dict[str, type[FloatIndex]]:
    """Float-in variants by name (a copy): the float baselines and RaBitQ (``annbin.make_float_index``)."""
    _builtins()
    return dict(_FLOAT)


def _did_you_mean(name: str, choices: list[str]) -> str:
    """``"did you mean 'x'? "`` for the choice closest to ``name`` (``difflib``), or ``""``."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def unknown_spec_error(name: str, spec: str, *, what: str = "index spec") -> ValueError:
    """The one error for a variant name nobody registered: the closest known name, then every
    variant, binary (codes in) and float-in (vectors in) apart, e.g. ``unknown index spec
    'rabitq_hnsw'; did you mean 'rabitq-hnsw'? known: binary (codes in): ...; float-in (vectors in): ...``."""
    _builtins()
    binary, floats = sorted(_BINARY), sorted(_FLOAT)
    return ValueError(f"unknown {what} {spec!r}; {_did_you_mean(name, binary + floats)}known: "
                      f"binary (codes in): {', '.join(binary)}; float-in (vectors in): {', '.join(floats)}")


def param_names(name: str) -> grammar.ParamNames:
    """(build, search) parameter names of a binary or float-in variant; ``ValueError`` if unknown."""
    _builtins()
    cls: Any = _BINARY.get(name) or _FLOAT.get(name)
    if cls is None:
        raise unknown_spec_error(name, name)
    return tuple(cls.build_params), tuple(cls.search_params)


def expand_spec(spec: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Sweep spec (``|`` lists values) to ``[(build_spec, [search_params, ...]), ...]``
    (``annbin.spec.expand_sweep`` over the registered variants)."""
    return grammar.expand_sweep(spec, param_names)


def check_spec(spec: str) -> None:
    """Check a binary spec without building it (no ``d`` needed): variant and parameter names.

    faiss factory strings pass (faiss checks them when given ``d``); a sharded spec is checked
    down to its inner spec; a wrapped spec checks its inner spec.
    """
    wrapped = grammar.parse_wrapped_spec(spec)
    if wrapped is not None:
        _wrapper(wrapped[1], spec)
        return check_spec(wrapped[0])
    if grammar.is_sharded_spec(spec):
        return check_spec(grammar.parse_sharded_spec(spec)[0])
    if grammar.is_faiss_factory(spec):
        return
    name, params = grammar.parse_spec(spec)
    cls = _binary_class(name, spec)
    grammar.split_params(name, (cls.build_params, cls.search_params), params, spec)


def _binary_class(name: str, spec: str) -> type[BinaryIndex]:
    _builtins()
    cls = _BINARY.get(name)
    if cls is None:
        if name in _FLOAT:
            raise ValueError(f"{spec!r} is a float-in index (float vectors, not codes): build it with make_float_index(spec, dim)")
        raise unknown_spec_error(name, spec)
    return cls


def _wrapper(name: str, spec: str) -> Callable[..., Any]:
    if name not in _WRAPPERS and name in WRAPPER_MODULES:
        _load(WRAPPER_MODULES[name])
    if name not in _WRAPPERS:
        known = sorted({*WRAPPER_MODULES, *_WRAPPERS})
        raise ValueError(f"unknown wrapper {name!r} in index spec {spec!r}; {_did_you_mean(name, known)}known: {', '.join(known)}")
    return _WRAPPERS[name]


def make_index(spec: str, d: int, **data: Any) -> Any:
    """Build an empty index from a spec string for codes of ``d`` bits: ``make_index(spec, d=64)``.

    ``"sharded:shards=N:<spec>"`` builds an ``annbin.distributed.ShardedIndex`` of ``<spec>``
    (needs Ray: ``annbin[distributed]``; grammar in ``annbin.spec.parse_sharded_spec``).
    ``"<spec>+rescore:oversample=..,rerank=..,..."`` builds a ``RescoredIndex`` over
    ``make_index(<spec>, d)``; ``data`` are its data keywords (``vectors=``, ``codes=``,
    ``encoder=``, ``encoded=``, ``thresholds=``), taken by wrapped specs only.
    ``index.spec`` of every index and wrapper built here gives back an equal index.
    """
    d = check_d(d)
    wrapped = grammar.parse_wrapped_spec(spec)
    if wrapped is not None:
        inner, name, params = wrapped
        return _wrapper(name, spec)(make_index(inner, d=d), params, **data)
    if data:
        raise InputTypeError(f"make_index got data keyword(s) {sorted(data)}, taken only by wrapped specs ('<spec>+rescore:...')")
    if grammar.is_sharded_spec(spec):
        grammar.parse_sharded_spec(spec)  # bad specs fail here, before the module (and Ray) loads
        if grammar.SHARDED not in _PREFIXES:
            _load(PREFIX_MODULES[grammar.SHARDED])
        return _PREFIXES[grammar.SHARDED](spec, d=d)
    if grammar.is_faiss_factory(spec):
        factory, search = grammar.split_factory(spec)
        faiss_index: Any = _binary_class(FAISS_VARIANT, spec)
        index = faiss_index(d, factory=factory)
        index.set_search_params(**search)
        return index
    name, params = grammar.parse_spec(spec)
    cls = _binary_class(name, spec)
    build, search = grammar.split_params(name, (cls.build_params, cls.search_params), params, spec)
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
    (needs Ray); any other directory is a ``ValueError`` (one saved by ``BinaryEmbeddingIndex.save``
    is loaded by ``annbin.BinaryEmbeddingIndex.load(dir)``).

    The first-stage file inside a directory saved by ``BinaryEmbeddingIndex.save`` loads as that
    bare index, without the encoder and the rescoring, and a ``UserWarning`` says so.
    """
    index = load_first_stage(path, mmap=mmap)
    _warn_if_stage(path)
    return index


def _warn_if_stage(path: str | os.PathLike[str]) -> None:
    """``UserWarning`` if ``path`` is the first stage that an ``embedding.annbin`` beside it names."""

    file = Path(path)
    record = file.parent / EMBEDDING_RECORD
    if not record.is_file():
        return
    try:
        header, _ = read_index_file(record, mmap=True)
    except ValueError:
        return  # not a readable record: nothing to say about this file
    if header.get("index_file", "index.annbin") == file.name and "spec" in header:  # version 2: fixed name
        warnings.warn(f"{str(path)!r} is one stage of a saved BinaryEmbeddingIndex: loaded as the bare first stage "
                      f"({header['spec']!r}), without its encoder and rescoring; "
                      f"annbin.BinaryEmbeddingIndex.load({str(file.parent)!r}) loads the whole", UserWarning, stacklevel=3)


def load_first_stage(path: str | os.PathLike[str], *, mmap: bool = False) -> BinaryIndex:
    """``load_index`` without the warning for a stage of a saved ``BinaryEmbeddingIndex``: for the
    loader of that whole (``BinaryEmbeddingIndex.load``)."""

    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "manifest.json")):
            distributed: Any = importlib.import_module(PREFIX_MODULES[grammar.SHARDED])
            sharded: BinaryIndex = distributed.ShardedIndex.load(path)
            return sharded
        if os.path.isfile(os.path.join(path, EMBEDDING_RECORD)):
            raise ValueError(f"{str(path)!r} is a directory saved by BinaryEmbeddingIndex.save, not an index file: "
                             f"load it with annbin.BinaryEmbeddingIndex.load({str(path)!r})")
        raise ValueError(f"{str(path)!r} is a directory, not an index file (load_index reads a file written by "
                         "BinaryIndex.save, or a ShardedIndex directory holding a manifest.json)")
    if os.path.isfile(path) and not is_annbin_file(path):
        faiss_wrap: Any = importlib.import_module(_FAISS_MODULE)
        wrapped: BinaryIndex = faiss_wrap.read_faiss_file(path)
        return wrapped
    header, arrays = read_index_file(path, mmap=mmap)
    if header.get("variant") in float_variants():
        raise ValueError(f"{str(path)!r} holds a float-in index ({header['variant']!r}), not a binary one: "
                         f"load it with annbin.load({str(path)!r})")
    try:
        variant, d, ntotal = header["variant"], header["d"], int(header["ntotal"])
        params, search = dict(header["params"]), dict(header.get("search_params", {}))
        next_id = int(header.get("next_id", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} has an incomplete header: {exc}") from None
    cls = variants().get(variant)
    if cls is None:
        raise ValueError(f"{str(path)!r} holds unknown index variant {variant!r}")
    index = cls._from_state(check_d(d), params, arrays)
    if index.ntotal != ntotal:
        raise ValueError(f"{str(path)!r} is inconsistent: header says {ntotal} codes, payload has {index.ntotal}")
    index.set_search_params(**search)
    index._next_id = next_id
    return index
