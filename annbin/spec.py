"""The one spec grammar: how an index is written as a string. A leaf: it imports nothing of annbin
but ``_checks``, and knows no variant; ``annbin.index.registry`` turns specs into indexes.

Forms (``NAME`` is a variant name, lower-cased when read; values are ints, floats,
``true``/``false`` or bare strings, see ``parse_value``)::

    NAME                             "flat", "mih"
    NAME:key=value,key=value         "hnsw:M=32,ef_search=64"
    FACTORY[:key=value,...]          faiss binary factory strings, case-sensitive: "BFlat",
                                     "BHNSW32", "IDMap2,BIVF1024:nprobe=16" (``is_faiss_factory``)
    sharded:[OPTIONS:]INNER          "sharded:shards=2:mih:m=4" (``parse_sharded_spec``)
    INNER+WRAPPER[:key=value,...]    "flat+rescore:oversample=4" (``parse_wrapped_spec``)

A sweep spec (the bench) lists alternatives with ``|``: ``"hnsw:M=16|32,ef_search=16|64"``
(``parse_sweep``, ``expand_sweep``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from annbin._checks import check_int

#: a spec's parameter names: (build parameters, search parameters)
ParamNames = tuple[tuple[str, ...], tuple[str, ...]]

SHARDED = "sharded"
#: options of the ``sharded:`` prefix (both ints >= 1)
SHARDED_OPTIONS = ("shards", "num_cpus")

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
# faiss's binary factory strings: "BFlat", "BHNSW32", "BIVF1024", "BHash16", "BHash4x16", optionally
# with an "IDMap," / "IDMap2," prefix (or suffix, which faiss also takes)
_FACTORY = re.compile(r"^\s*(IDMap2?\s*,\s*)?B(Flat|HNSW|IVF|Hash)")
# "INNER+name[:body]": the wrapper's body holds no "+" (nor does any variant name)
_WRAPPED = re.compile(r"^(?P<inner>.+)\+(?P<name>[A-Za-z][\w-]*)(?::(?P<body>[^+]*))?$")
_RESERVED = re.compile(r"[,:=|+\s]")

__all__ = [
    "SHARDED_OPTIONS",
    "describe_spec",
    "expand_sweep",
    "format_sharded_spec",
    "format_spec",
    "format_wrapped_spec",
    "is_faiss_factory",
    "is_sharded_spec",
    "parse_params",
    "parse_sharded_spec",
    "parse_spec",
    "parse_sweep",
    "parse_value",
    "parse_wrapped_spec",
    "split_factory",
    "split_params",
    "variant_name",
]


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


def _items(body: str, spec: str, expected: str) -> list[tuple[str, str]]:
    out = []
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not key or not value:
            raise ValueError(f"bad parameter {item!r} in index spec {spec!r}; expected {expected}")
        out.append((key, value))
    return out


def parse_params(body: str, spec: str = "") -> dict[str, Any]:
    """``"M=32,ef_search=64"`` -> ``{"M": 32, "ef_search": 64}``; a key given twice raises."""
    params: dict[str, Any] = {}
    for key, value in _items(body, spec or body, "key=value"):
        if key in params:
            raise ValueError(f"parameter {key!r} given twice in index spec {spec or body!r}")
        params[key] = parse_value(value)
    return params


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"variant:k=v,k=v"`` into the variant name (lower case) and a dict of parsed values."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"index spec must be a non-empty string, got {spec!r}")
    name, _, body = spec.strip().partition(":")
    return name.strip().lower(), parse_params(body, spec)


def variant_name(spec: Any) -> str:
    """The lower-cased head of a spec (``"hnsw"`` for ``"HNSW:M=16"``); ``""`` for a non-string."""
    return spec.strip().partition(":")[0].strip().lower() if isinstance(spec, str) else ""


def format_value(value: Any) -> str:
    """A value as the spec writes it (``parse_value`` reads it back); ``ValueError`` for a string
    holding the grammar's separators."""
    text = str(value)
    if isinstance(value, str) and (not text or _RESERVED.search(text)):
        raise ValueError(f"spec value {value!r} is empty or holds one of , : = | + or a space")
    return text


def format_spec(name: str, params: dict[str, Any]) -> str:
    """``("hnsw", {"M": 32})`` -> ``"hnsw:M=32"``; ``None`` values are left out (the default)."""
    body = ",".join(f"{k}={format_value(v)}" for k, v in params.items() if v is not None)
    return f"{name}:{body}" if body else name


def split_params(name: str, names: ParamNames, params: dict[str, Any], spec: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate build from search parameters; names in neither raise ``ValueError``."""
    build_names, search_names = names
    unknown = sorted(set(params) - set(build_names) - set(search_names))
    if unknown:
        allowed = ", ".join(build_names + search_names) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for index {name!r} in {spec!r}; expected: {allowed}")
    build = {k: v for k, v in params.items() if k in build_names}
    search = {k: v for k, v in params.items() if k in search_names}
    return build, search


# --- faiss's factory form ----------------------------------------------------------------------
def is_faiss_factory(spec: Any) -> bool:
    """True if ``spec`` looks like a faiss binary factory string (``"BHNSW32"``, ``"IDMap2,BFlat"``)."""
    return isinstance(spec, str) and bool(_FACTORY.match(spec))


def split_factory(spec: str) -> tuple[str, dict[str, Any]]:
    """``"IDMap2,BIVF64:nprobe=8"`` -> ``("IDMap2,BIVF64", {"nprobe": 8})``: the factory string
    (case kept) and its search parameters."""
    if not is_faiss_factory(spec):
        raise ValueError(f"not a faiss binary factory string: {spec!r}")
    factory, _, body = spec.partition(":")
    return factory.strip(), parse_params(body, spec)


# --- the sharded prefix ------------------------------------------------------------------------
def is_sharded_spec(spec: Any) -> bool:
    """True for ``"sharded"`` and ``"sharded:..."``."""
    return variant_name(spec) == SHARDED


def parse_sharded_spec(spec: str) -> tuple[str, dict[str, int]]:
    """``"sharded:shards=2:mih:m=4"`` -> ``("mih:m=4", {"shards": 2})``.

    Grammar: ``sharded:[OPTIONS:]INNER`` where OPTIONS is ``key=value,...`` (keys: ``shards``,
    ``num_cpus``, both ints) and INNER is any non-sharded annbin spec. The options segment is
    recognised by its ``=``: a variant name never holds one, so ``"sharded:mih:m=4"`` is the inner
    spec ``"mih:m=4"`` with default options.
    """
    if not is_sharded_spec(spec):
        raise ValueError(f"not a sharded spec: {spec!r}; expected 'sharded:shards=N:<spec>'")
    rest = spec.strip().partition(":")[2].strip()
    head, sep, tail = rest.partition(":")
    options: dict[str, int] = {}
    if "=" in head:
        inner = tail.strip() if sep else ""
        for key, value in _items(head, spec, "key=value"):
            if key not in SHARDED_OPTIONS:
                raise ValueError(f"unknown option {key!r} in sharded spec {spec!r}; expected: {', '.join(SHARDED_OPTIONS)}")
            if key in options:
                raise ValueError(f"option {key!r} given twice in sharded spec {spec!r}")
            try:
                options[key] = check_int(int(value), key, minimum=1)
            except ValueError:
                raise ValueError(f"option {key!r} in sharded spec {spec!r} must be an int >= 1, got {value!r}") from None
    else:
        inner = rest
    if not inner:
        raise ValueError(f"sharded spec {spec!r} names no index to shard; expected e.g. 'sharded:shards=2:mih'")
    if is_sharded_spec(inner):
        raise ValueError(f"sharded spec {spec!r} nests another sharded spec; shard a plain index instead")
    return inner, options


def format_sharded_spec(inner: str, options: dict[str, int]) -> str:
    """``("mih:m=4", {"shards": 2})`` -> ``"sharded:shards=2:mih:m=4"``."""
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return f"{SHARDED}:{opts}:{inner}" if opts else f"{SHARDED}:{inner}"


# --- wrappers: "INNER+name:params" -------------------------------------------------------------
def parse_wrapped_spec(spec: Any) -> tuple[str, str, dict[str, Any]] | None:
    """``"hnsw:M=16+rescore:oversample=4"`` -> ``("hnsw:M=16", "rescore", {"oversample": 4})``;
    None when ``spec`` names no wrapper."""
    match = _WRAPPED.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        return None
    return match["inner"].strip(), match["name"].lower(), parse_params(match["body"] or "", spec)


def format_wrapped_spec(inner: str, name: str, params: dict[str, Any]) -> str:
    """``("flat", "rescore", {"oversample": 4})`` -> ``"flat+rescore:oversample=4"``."""
    return f"{inner}+{format_spec(name, params)}"


# --- sweeps ------------------------------------------------------------------------------------
def parse_sweep(body: str, spec: str = "") -> dict[str, list[Any]]:
    """``"M=16|32,ef_search=16"`` -> ``{"M": [16, 32], "ef_search": [16]}``."""
    out: dict[str, list[Any]] = {}
    for key, values in _items(body, spec or body, "key=value or key=v1|v2"):
        if key in out:
            raise ValueError(f"parameter {key!r} given twice in index spec {spec or body!r}")
        out[key] = [parse_value(v) for v in values.split("|")]
    return out


def _product(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def expand_sweep(spec: str, param_names: Callable[[str], ParamNames]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Sweep spec to ``[(build_spec, [search_params, ...]), ...]``: build parameters multiply
    builds, search parameters the settings looped over each build.

    ``param_names(variant)`` gives a variant's (build, search) parameter names (``ValueError`` for
    an unknown variant). A faiss factory string is one build (its parameters are all search
    parameters); ``sharded:OPTIONS:INNER`` sweeps INNER and keeps the prefix on every build spec.
    """
    if is_sharded_spec(spec):
        inner, options = parse_sharded_spec(spec)
        return [(format_sharded_spec(build, options), searches) for build, searches in expand_sweep(inner, param_names)]
    name, _, body = spec.strip().partition(":")
    if is_faiss_factory(spec):
        # what follows ":" can only be search parameters, which the built index checks against
        # its own type (nprobe, ef_search, nflip)
        return [(name.strip(), _product(parse_sweep(body, spec)))]
    name = name.strip()
    build_names, search_names = param_names(name.lower())
    build: dict[str, list[Any]] = {}
    search: dict[str, list[Any]] = {}
    for key, alternatives in parse_sweep(body, spec).items():
        if key in search_names:
            search[key] = alternatives
        elif key in build_names:
            build[key] = alternatives
        else:
            allowed = ", ".join(build_names + search_names) or "none"
            raise ValueError(f"unknown parameter {key!r} for {name!r} in {spec!r}; expected: {allowed}")
    searches = _product(search)
    return [(format_spec(name, params), searches) for params in _product(build)]


def describe_spec(build_spec: str) -> dict[str, Any]:
    """Result-row fields ``index`` and ``params`` of a build spec (a sharded spec names its inner
    variant as ``sharded-NAME``; a faiss factory string is the index, without parameters)."""
    if is_sharded_spec(build_spec):
        inner, options = parse_sharded_spec(build_spec)
        name, params = parse_spec(inner)
        return {"index": f"{SHARDED}-{name}", "params": {**options, **params}}
    if is_faiss_factory(build_spec):
        return {"index": build_spec.partition(":")[0].strip(), "params": {}}
    name, params = parse_spec(build_spec)
    return {"index": name, "params": params}
