"""``MIHIndex``'s parameters checked: the build-time ``tail_fraction`` and the search parameters."""

from __future__ import annotations

import math
import numbers
from typing import Any

from annbin._checks import InputTypeError, check_int

FALLBACK_MODES = ("auto", "never", "always")
#: Default ``tail_fraction``: the tables are rebuilt once the codes added since the last build plus
#: the tombstones exceed this fraction of the codes they cover: the best measured trade between
#: rebuilds and tail scans (benchmarks/mih_updates.py; figures in benchmarks/RESULTS.md).
TAIL_FRACTION = 0.02


def check_fraction(value: object) -> float:
    """``tail_fraction``: a number >= 0 (0 rebuilds the tables at every search after a change)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"tail_fraction must be a number, got {type(value).__name__}")
    fraction = float(value)
    if not fraction >= 0 or not math.isfinite(fraction):
        raise ValueError(f"tail_fraction must be a finite number >= 0, got {value}")
    return fraction


def check_search_value(name: str, value: Any) -> Any:
    """One search parameter (``fallback``, ``fallback_ratio`` or ``num_threads``), checked and
    normalized: ``TypeError`` for a wrong type, ``ValueError`` for a wrong value."""
    if name == "fallback":
        if value not in FALLBACK_MODES:
            raise ValueError(f"fallback must be one of {FALLBACK_MODES}, got {value!r}")
        return value
    if name == "fallback_ratio":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputTypeError(f"fallback_ratio must be a number, got {type(value).__name__}")
        if not float(value) > 0:  # float(): numbers.Real has no typed comparisons
            raise ValueError(f"fallback_ratio must be > 0, got {value}")
        return float(value)
    return None if value is None else check_int(value, "num_threads", minimum=1)
