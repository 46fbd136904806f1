"""Registry of every science table and domain view.

Each domain module defines ``TABLES`` (a list of :class:`TableSchema`) and
``VIEWS`` (name -> DuckDB SQL over table and other view names).  Adding a
domain means adding its module name to ``DOMAINS``.
"""

from __future__ import annotations

import importlib

from matlake.schemas.base import PROVENANCE_COLUMNS, Column, TableSchema

DOMAINS = ("dft", "models", "eis", "eis_analysis", "insertion", "spectra", "luminescence", "spectra_models",
           "imaging", "scattering", "imaging_evaluation", "materials", "scattering_models",
           "scattering_dynamics", "materials_models", "campaigns", "imaging_models", "scattering_ptycho")


def _load() -> tuple[dict[str, TableSchema], dict[str, str]]:
    tables: dict[str, TableSchema] = {}
    views: dict[str, str] = {}
    for domain in DOMAINS:
        mod = importlib.import_module(f"matlake.schemas.{domain}")
        for t in mod.TABLES:
            if t.name in tables:
                raise ValueError(f"table {t.name} defined twice (second in matlake.schemas.{domain})")
            tables[t.name] = t
        for name, sql in getattr(mod, "VIEWS", {}).items():
            if name in views or name in tables:
                raise ValueError(f"view {name} defined twice (second in matlake.schemas.{domain})")
            views[name] = sql
    return tables, views


TABLES, VIEWS = _load()


def get(name: str) -> TableSchema:
    """The schema of science table ``name``; KeyError lists the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {sorted(TABLES)}") from None


__all__ = ["TABLES", "VIEWS", "Column", "TableSchema", "PROVENANCE_COLUMNS", "get"]
