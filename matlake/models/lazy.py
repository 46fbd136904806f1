"""Lazy package exports (PEP 562) for the domain packages under ``matlake.models``.

A domain package names its public objects and the submodule each lives in; they are
imported on first use, so that registering a domain's commands (done by every
``matlake`` invocation) does not import its science stack (scipy, pymatgen, torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to the
    submodule (relative to ``package``) that defines it; ``namespace`` is the
    package's ``globals()``, where a name is cached once imported."""

    def __getattr__(name: str) -> Any:
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
