"""Optional dependencies: imported where a module needs them, never by ``import matlake``.

torch is one: the core package (ingest, catalog, SQL, scikit-learn models)
runs without it, and model modules built on torch call :func:`require_torch`,
which returns the module or fails with a message naming the extra to install
(``pip install "matlake[ml]"``) or the version found when it is too old.  Any
torch at or above :data:`TORCH_MIN` is accepted, so a user's own build (CUDA,
ROCm, CPU) stays in place; the Makefile installs the 2.13.0 CPU wheel.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType

TORCH_MIN = (2, 2)  # keep equal to the `ml` extra in pyproject.toml


class MissingDependency(ImportError):
    """An optional dependency that a feature needs is absent or too old."""


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, ...) of a version string such as ``2.13.0+cpu`` or ``2.4.0a0``."""
    parts = []
    for piece in version.split("+")[0].split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def require(module: str, extra: str, purpose: str, minimum: tuple[int, ...] | None = None) -> ModuleType:
    """Import ``module`` for ``purpose`` or raise :class:`MissingDependency`
    saying which matlake extra provides it (and, with ``minimum``, which release)."""
    wanted = f"{module} >= {'.'.join(map(str, minimum))}" if minimum else module
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"{purpose} needs {wanted}, which is not installed: "
                                f"pip install \"matlake[{extra}]\" (or install {module} yourself)") from exc
    found = str(getattr(mod, "__version__", ""))
    if minimum and found and _release(found) < minimum:
        raise MissingDependency(f"{purpose} needs {wanted}, found {module} {found}: "
                                f"pip install --upgrade \"matlake[{extra}]\"")
    return mod


def require_torch(purpose: str = "this model module") -> ModuleType:
    """The ``torch`` module (>= :data:`TORCH_MIN`), or :class:`MissingDependency` naming the ``ml`` extra."""
    return require("torch", "ml", purpose, TORCH_MIN)
