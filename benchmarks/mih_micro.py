"""What each of MIH's remaining micro-optimisations buys: whole searches with and without it.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_micro.py --rounds 7

Each trick is undone by editing the source of the one function that holds it (a text replacement,
executed into its module, ``annbin.index.mih._probe`` or ``._search``, for the run) and the two versions answer the same fresh
batch in turn, alternating order, single thread, thread CPU time; results must be identical. The
figure is the median of per-round ratios, time without the trick / time with it (> 1: it pays).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mih_vs_flat import DEFAULT_FLIP, make_data, parse_configs  # noqa: E402

import annbin.index.mih._probe as P  # noqa: E402
import annbin.index.mih._range as R  # noqa: E402
import annbin.index.mih._search as S  # noqa: E402
from annbin import MIHIndex  # noqa: E402

#: modules that may hold (or have imported) a function a trick replaces
MODULES = (P, S, R)

#: (name, function, text with the trick, text without it, configs it matters for). Tricks measured
#: and removed (2026-11-30, 7 rounds): finding a hit's query by binary search when hits are few,
#: 0.99x / 1.00x at 64 / 128 bits. take(mode="clip") in verify_candidates measured 0.97-0.99x at 64
#: bits and 0.93-1.06x at 128 (no gain) but stays: the cost calibration relies on it.
TRICKS = [
    ("take(mode='clip') in the probe", "probe_buckets", ', mode="clip")', ")", ("64:1M", "128:1M")),
    ("uint8/uint16 distances (multi-word)", "verify_candidates", "dtype = np.uint8 if nwords * 64 < 255 else np.uint16", "dtype = np.int64", ("128:1M",)),
    ("cached arange views (arange)", "arange", "return _ARANGE[start:stop] if stop <= _ARANGE.size else ", "return ", ("64:1M", "128:1M")),
    ("in-place shift of the merge keys", "add", "dist <<= 32", "dist = dist << 32", ("64:1M", "128:1M")),
]


def home(name: str) -> Any:
    """The module that defines function ``name`` or a class with a method ``name``."""
    for mod in MODULES:
        obj = getattr(mod, name, None)
        if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
            return mod
        if any(inspect.isclass(c) and name in vars(c) and c.__module__ == mod.__name__ for c in vars(mod).values()):
            return mod
    raise SystemExit(f"{name}: not found in {[m.__name__ for m in MODULES]}: update TRICKS")


def variant(name: str, old: str, new: str) -> Callable[..., Any]:
    """``<name>`` compiled from its source with ``old`` replaced by ``new`` (in its module's globals)."""
    mod = home(name)
    target = original(name)
    src = inspect.getsource(target)
    if old not in src:
        raise SystemExit(f"{name}: {old!r} not found: the trick moved, update TRICKS")
    src = src.replace(old, new)
    indent = len(src) - len(src.lstrip())
    src = "\n".join(line[indent:] for line in src.splitlines())
    scope: dict[str, Any] = {}
    exec(compile(src, f"<{name} without trick>", "exec"), vars(mod), scope)
    return scope[target.__name__]


def install(name: str, fn: Callable[..., Any], current: Callable[..., Any]) -> None:
    """Put ``fn`` where ``current`` is now: the method of its class, or the function in every module
    that holds it (its own, and those that imported it by name)."""
    mod = home(name)
    if not inspect.isfunction(getattr(mod, name, None)):
        owner = next(c for c in vars(mod).values() if inspect.isclass(c) and name in vars(c))
        setattr(owner, name, fn)
        return
    for m in MODULES:
        if getattr(m, name, None) is current:
            setattr(m, name, fn)


def original(name: str) -> Callable[..., Any]:
    mod = home(name)
    obj = getattr(mod, name, None)
    if inspect.isfunction(obj):
        return obj
    owner = next(c for c in vars(mod).values() if inspect.isclass(c) and name in vars(c))
    return vars(owner)[name]  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--only", default="", help="run only the tricks whose title contains this text")
    args = parser.parse_args()
    indexes = {}
    for label in ("64:1M", "128:1M"):
        cfg = parse_configs(label)[0]
        base, xq = make_data(cfg, args.nq * (args.rounds + 1), DEFAULT_FLIP[cfg.d], 1000, 0)
        index = MIHIndex(d=cfg.d, m="formula", num_threads=1, fallback="never")
        index.add(base)
        index.build()
        indexes[label] = (index, [xq[r * args.nq : (r + 1) * args.nq] for r in range(args.rounds + 1)])
        print(f"built {label} (m={index.effective_m})", file=sys.stderr)
    print("| trick | codes | time without / with (median of rounds) |")
    print("|---|---|---:|")
    for title, name, old, new, labels in TRICKS:
        if args.only not in title:
            continue
        with_it, without = original(name), variant(name, old, new)
        installed = with_it
        for label in labels:
            index, batches = indexes[label]
            for fn in (with_it, without):  # warm-up
                install(name, fn, installed)
                installed = fn
                index.search(batches[-1], 10)
            ratios = []
            for r in range(args.rounds):
                secs, answers = {}, {}
                for key, fn in (("with", with_it), ("without", without)) if r % 2 == 0 else (("without", without), ("with", with_it)):
                    install(name, fn, installed)
                    installed = fn
                    t0 = time.thread_time()
                    answers[key] = index.search(batches[r], 10)
                    secs[key] = time.thread_time() - t0
                assert all(np.array_equal(a, b) for a, b in zip(answers["with"], answers["without"])), title
                ratios.append(secs["without"] / secs["with"])
            install(name, with_it, installed)
            installed = with_it
            print(f"| {title} | {label} | {statistics.median(ratios):.3f} |", flush=True)


if __name__ == "__main__":
    main()
