"""What a result row records of the machine that measured it: cores, CPU and library versions.

A leaf module (standard library only) so that the bench can stamp rows and the report can show
the facts, and the report can still say where an old row without them came from.
"""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from typing import Any

#: distributions whose versions change the numbers (annbin itself, the array and index libraries)
LIBRARIES = ("annbin", "numpy", "faiss-cpu", "hnswlib")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:  # not Linux: platform's answer is the best there is
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def machine_facts() -> dict[str, Any]:
    """``{cores, cpu, os, python, annbin, numpy, faiss, hnswlib}`` of this process's machine
    (cached: they do not change while it runs; a missing library reads None)."""
    facts: dict[str, Any] = {"cores": os.cpu_count(), "cpu": _cpu_model(), "os": f"{platform.system()} {platform.release()}",
                             "python": platform.python_version()}
    for dist in LIBRARIES:
        facts[dist.removesuffix("-cpu")] = _version(dist)
    return facts
