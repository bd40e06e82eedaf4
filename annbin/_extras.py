"""Optional dependencies: import one where it is used, or say in one line which extra provides it.

The core install (``pip install annbin``) holds what the index API and ``annbin bench`` need;
plotting (``matplotlib``) and YAML sweep files (``pyyaml``) are extras, ``annbin[plot]`` and
``annbin[yaml]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it.

    An ``ImportError``, so ``except ImportError`` still catches it; the CLI prints it as one line
    and exits with code 2, as for other bad input.
    """


def require(module: str, *, package: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``), or raise ``MissingExtraError``:
    ``"<purpose> needs <package>: pip install 'annbin[<extra>]'"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Installed but broken (one of its own imports missing): say which, the fix is the same.
        top = module.split(".")[0]
        detail = f" ({exc.name} is missing)" if exc.name and exc.name.split(".")[0] != top else ""
        raise MissingExtraError(f"{purpose} needs {package}{detail}: pip install 'annbin[{extra}]'") from None
