"""``matlake spectra …``: one command group; each concern registers its own subcommands.

The subcommands live next to the science they drive (processing, features,
models, luminescence); this module only builds the ``spectra`` group and asks
each of :data:`SUBCOMMAND_MODULES` to add its subcommands, so the modules stay
independent and ``matlake --help`` imports none of the science.
"""

from __future__ import annotations

import argparse
import importlib

# Each module has register(spectra_subparsers, common) adding its subcommands.
SUBCOMMAND_MODULES = (
    "matlake.models.spectra.processing_cli",
    "matlake.models.spectra.features_cli",
    "matlake.models.spectra.models_cli",
    "matlake.models.spectra.luminescence_cli",
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake spectra`` and the subcommands of every module in SUBCOMMAND_MODULES."""
    p = subparsers.add_parser("spectra", help="XAS/XANES, EELS and luminescence spectra: process, featurize, "
                                              "models, peak fits, similarity")
    sub = p.add_subparsers(dest="spectra_command", metavar="SUBCOMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part of the spectra commands is not built (yet)
                continue
            raise
        mod.register(sub, common)
