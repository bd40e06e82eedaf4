"""Sweep specs: an index spec whose values list alternatives separated by ``|`` (see
``annbin.bench``), expanded into builds and the search settings looped over each build.
"""

from __future__ import annotations

import itertools
from typing import Any

from annbin.index.registry import VARIANTS, parse_spec, parse_value

__all__ = ["describe_spec", "expand_spec"]


def _index_class(name: str) -> Any:
    from annbin.baselines import FLOAT_VARIANTS

    cls = VARIANTS.get(name) or FLOAT_VARIANTS.get(name)
    if cls is None:
        known = sorted(VARIANTS) + sorted(FLOAT_VARIANTS)
        raise ValueError(f"unknown index spec {name!r}; known: {', '.join(known)}")
    return cls


def expand_spec(spec: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Sweep spec to ``[(build_spec, [search_params, ...]), ...]``.

    ``sharded:OPTIONS:INNER`` sweeps INNER and keeps the sharding prefix on every build spec.
    """
    from annbin.distributed import (  # Ray-free helpers
        is_sharded_spec,
        parse_sharded_spec,
    )

    if is_sharded_spec(spec):
        inner, options = parse_sharded_spec(spec)
        opts = ",".join(f"{k}={v}" for k, v in options.items())
        prefix = f"sharded:{opts}:" if opts else "sharded:"
        return [(prefix + build, searches) for build, searches in expand_spec(inner)]
    from annbin.index.faiss_wrap import is_faiss_factory

    name, _, body = spec.strip().partition(":")
    if is_faiss_factory(spec):
        # A faiss factory string is one build; what follows ":" can only be search parameters,
        # which the built index checks against its own type (nprobe, ef_search, nflip).
        values = _sweep(body, spec)
        return [(name.strip(), [dict(zip(values, c)) for c in itertools.product(*values.values())])]
    cls = _index_class(name.strip().lower())
    build: dict[str, list[Any]] = {}
    search: dict[str, list[Any]] = {}
    for key, alternatives in _sweep(body, spec).items():
        if key in cls.search_params:
            search[key] = alternatives
        elif key in cls.build_params:
            build[key] = alternatives
        else:
            allowed = ", ".join(cls.build_params + cls.search_params) or "none"
            raise ValueError(f"unknown parameter {key!r} for {name!r} in {spec!r}; expected: {allowed}")
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for combo in itertools.product(*build.values()):
        body_ = ",".join(f"{k}={v}" for k, v in zip(build, combo))
        build_spec = f"{name}:{body_}" if body_ else name
        searches = [dict(zip(search, c)) for c in itertools.product(*search.values())]
        out.append((build_spec, searches))
    return out


def _sweep(body: str, spec: str) -> dict[str, list[Any]]:
    """``"M=16|32,ef_search=16"`` -> ``{"M": [16, 32], "ef_search": [16]}``."""
    out: dict[str, list[Any]] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, eq, values = item.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise ValueError(f"bad parameter {item!r} in {spec!r}; expected key=value or key=v1|v2")
        out[key.strip()] = [parse_value(v) for v in values.split("|")]
    return out


def describe_spec(build_spec: str) -> dict[str, Any]:
    """Row fields ``index`` and ``params`` for a build spec (sharded specs name their inner variant)."""
    from annbin.distributed import is_sharded_spec, parse_sharded_spec

    if is_sharded_spec(build_spec):
        inner, options = parse_sharded_spec(build_spec)
        name, params = parse_spec(inner)
        return {"index": f"sharded-{name}", "params": {**options, **params}}
    from annbin.index.faiss_wrap import is_faiss_factory

    if is_faiss_factory(build_spec):
        return {"index": build_spec.partition(":")[0].strip(), "params": {}}
    name, params = parse_spec(build_spec)
    return {"index": name, "params": params}
