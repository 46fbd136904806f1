"""Module-level names whose import waits until first use.

Every ``matlake`` call builds the whole command line, which imports each
command module to call its ``register``.  Modules such as
:mod:`matlake.platform.operations` use pyarrow and SQLAlchemy throughout their
functions; binding those names with :func:`lazy_module` / :func:`lazy_function`
instead of ``import`` keeps the bodies unchanged while ``matlake --help`` (or
``matlake sql``) no longer pays for libraries that the command never touches.

The real import happens through :func:`importlib.import_module`, so it is
thread-safe (the import system's per-module locks) and a module imported once
is shared with every ordinary ``import`` of it.  Exception classes named in
``except`` clauses cannot be deferred this way: import those inside the
function that catches them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module ``name``; the first attribute read imports it."""

    __slots__ = ("_lazy_name", "_lazy_module")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_lazy_name", name)
        object.__setattr__(self, "_lazy_module", None)

    def _load(self) -> ModuleType:
        module = self._lazy_module
        if module is None:
            module = importlib.import_module(self._lazy_name)
            object.__setattr__(self, "_lazy_module", module)
        return module

    def __getattr__(self, attr: str) -> Any:
        # Only called for names this object does not have itself: every module attribute.
        return getattr(self._load(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._load(), attr, value)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "imported" if self._lazy_module is not None else "not imported yet"
        return f"<lazy module {self._lazy_name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """``pa = lazy_module("pyarrow")`` behaves as ``import pyarrow as pa`` once used."""
    return LazyModule(name)


def lazy_function(module: str, name: str) -> Callable[..., Any]:
    """``select = lazy_function("sqlalchemy", "select")`` behaves as ``from sqlalchemy import select``
    for calls: ``module`` is imported at the first call."""

    resolved: list[Callable[..., Any]] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if not resolved:
            resolved.append(getattr(importlib.import_module(module), name))
        return resolved[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported at the first call."
    return call

