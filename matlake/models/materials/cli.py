"""``matlake ingest-table`` and the ``matlake materials …`` command group.

``ingest-table FILE --map MAP.toml`` is ``ingest FILE --kind table --option
map=MAP.toml`` (see :mod:`matlake.ingest.tables` for the map).  The group only
asks each module of :data:`SUBMODULES` to add its subcommands
(``register(subparsers, common)``), so ``matlake --help`` imports none of the
science.  Standard library only at the top level (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module has register(subparsers, common) adding its subcommands under ``matlake materials``.
SUBMODULES: tuple[str, ...] = (
    "matlake.models.materials.models_cli",
)


def cmd_ingest_table(args: argparse.Namespace) -> int:
    from matlake.platform.cli import _lake

    lake = _lake(args)
    options = {"map": args.map, "on_bad_cell": args.on_bad_cell}
    report = lake.ingest(list(args.paths), kind="table", options=options, progress=False)
    for o in report.outcomes:
        if o.status in ("failed", "error"):
            print(f"{o.status.upper()} {o.message}", file=sys.stderr)
        for w in o.warnings:
            print(f"WARNING {o.path}: {w}", file=sys.stderr)
    print(report.summary())
    return 1 if report.still_failed and args.strict else 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake ingest-table`` and ``matlake materials`` with the subcommands of SUBMODULES."""
    s = subparsers.add_parser("ingest-table", parents=[common],
                              help="ingest property tables (CSV) through a map file (= ingest --kind table)")
    s.add_argument("paths", nargs="+", help="CSV/delimited text files")
    s.add_argument("--map", required=True, metavar="MAP.toml", help="the map: dataset, columns, units, fidelities")
    s.add_argument("--on-bad-cell", choices=("fail", "skip"), default="fail",
                   help="fail: a file with bad cells is failed (default); skip: ingest the other rows, "
                        "record the bad cells in table_rejects")
    s.add_argument("--strict", action="store_true", help="exit 1 when any file is failed")
    s.set_defaults(func=cmd_ingest_table)
    if SUBMODULES:
        p = subparsers.add_parser("materials", help="materials datasets: descriptors, models, screening")
        sub = p.add_subparsers(dest="materials_command", metavar="SUBCOMMAND")
        sub.required = True
        for name in SUBMODULES:
            importlib.import_module(name).register(sub, common)
