"""``matlake images …``: one command group; each concern registers its own subcommands.

This module only builds the group and asks each module of :data:`SUBMODULES`
to add its subcommands (``register(subparsers, common)``), so the parts stay
independent and ``matlake --help`` imports none of the science.
"""

from __future__ import annotations

import argparse
import importlib

# Each module has register(subparsers, common) adding its subcommands.
SUBMODULES: tuple[str, ...] = (
    "matlake.models.imaging.segment_cli",
    "matlake.models.imaging.evaluate_cli",
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake images`` and the subcommands of every module in SUBMODULES."""
    p = subparsers.add_parser("images", help="micrographs: ingest checks, U-net ensembles, uncertainty, evaluation, plots")
    sub = p.add_subparsers(dest="images_command", metavar="SUBCOMMAND")
    sub.required = True
    for name in SUBMODULES:
        importlib.import_module(name).register(sub, common)
