"""Parsers, one module per source kind; each module exposes ``PARSERS``.

The registry is loaded lazily so that ``import matlake`` stays cheap
(pymatgen takes a second to import).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from matlake.ingest.base import ParseContext, ParseError, Parser, ParseResult

# Order matters for detection: the first parser whose detect() accepts wins.
MODULES = ("vasp", "mp", "structures", "eis")


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


def detect(head: bytes, filename: str, kind: str = "auto") -> Parser | None:
    """The parser for a file, from its first bytes and name; ``kind`` narrows the choice."""
    candidates = [p for p in all_parsers() if kind in ("auto", p.kind)]
    if kind != "auto" and not candidates:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {kinds()}")
    for p in candidates:
        try:
            if p.detect(head, filename):
                return p
        except Exception:  # a detector must never break a batch
            continue
    return None


__all__ = ["ParseContext", "ParseError", "Parser", "ParseResult", "all_parsers", "detect", "kinds", "parser_named"]
