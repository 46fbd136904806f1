"""Parsers, one module per source kind; each module exposes ``PARSERS``.

The registry is loaded lazily so that ``import matlake`` stays cheap
(pymatgen takes a second to import).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from matlake.ingest.base import ParseContext, ParseError, Parser, ParseResult

# Order matters for detection: the first parser whose detect() accepts wins.
MODULES = ("vasp", "spectra_dm", "spectra", "imaging", "mp", "structures", "eis", "tables", "scattering")


@lru_cache(maxsize=1)
def all_parsers() -> tuple[Parser, ...]:
    parsers: list[Parser] = []
    for mod in MODULES:
        parsers.extend(importlib.import_module(f"matlake.ingest.{mod}").PARSERS)
    names = [p.name for p in parsers]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate parser names: {names}")
    return tuple(parsers)


def kinds() -> list[str]:
    return sorted({p.kind for p in all_parsers()})


def parser_named(name: str) -> Parser:
    for p in all_parsers():
        if p.name == name:
            return p
    raise KeyError(f"unknown parser {name!r}; known: {[p.name for p in all_parsers()]}")


class UnknownKind(ValueError):
    """A ``--kind`` that no parser belongs to."""


def check_kind(kind: str) -> None:
    """Raise :class:`UnknownKind`, listing the known kinds, unless ``kind`` is one (or ``auto``)."""
    if kind != "auto" and kind not in kinds():
        raise UnknownKind(f"unknown kind {kind!r}; known kinds: auto, {', '.join(kinds())}")


def supported_formats(kind: str = "auto") -> str:
    """The kinds and the formats their parsers read, from the registry: 'vasp (A; B), eis (...)'."""
    by_kind: dict[str, list[str]] = {}
    for p in all_parsers():
        if kind in ("auto", p.kind):
            by_kind.setdefault(p.kind, []).append((p.description or p.name).split(" → ")[0])
    return ", ".join(f"{k} ({'; '.join(formats)})" for k, formats in by_kind.items())


def detect(head: bytes, filename: str, kind: str = "auto") -> Parser | None:
    """The parser for a file, from its first bytes and name; ``kind`` narrows the choice.

    A detector looks at untrusted bytes and must answer True or False: one
    that raises has a bug, and the exception goes to the caller (the platform
    records it as an ``error``, not as bad input).
    """
    check_kind(kind)
    for p in all_parsers():
        if kind == "auto" and getattr(p.detect, "explicit_kind_only", False):
            continue  # a detector that would claim too much (any table of numbers) answers only to --kind
        if kind in ("auto", p.kind) and p.detect(head, filename):
            return p
    return None


__all__ = ["ParseContext", "ParseError", "Parser", "ParseResult", "UnknownKind", "all_parsers", "check_kind", "detect",
           "kinds", "parser_named", "supported_formats"]
