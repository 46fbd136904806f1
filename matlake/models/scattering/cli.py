"""``matlake scattering …``: one command group; each concern registers its own subcommands.

This module only builds the group and asks each module of :data:`SUBMODULES`
to add its subcommands (``register(subparsers, common)``), so the parts stay
independent and ``matlake --help`` imports none of the science.
"""

from __future__ import annotations

import argparse
import importlib

# Each module has register(subparsers, common) adding its subcommands.
SUBMODULES: tuple[str, ...] = (
    "matlake.models.scattering.simulate_cli",
    "matlake.models.scattering.dynamics_cli",
    "matlake.models.scattering.ptycho_cli",
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake scattering`` and the subcommands of every module in SUBMODULES."""
    p = subparsers.add_parser("scattering", help="coherent X-ray scattering: simulate speckle, classify, neural-ODE dynamics, ptychography")
    sub = p.add_subparsers(dest="scattering_command", metavar="SUBCOMMAND")
    sub.required = True
    for name in SUBMODULES:
        importlib.import_module(name).register(sub, common)
