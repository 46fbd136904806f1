"""Optional re-ranking of placements with a pretrained interatomic potential (CHGNet).

The Ewald energy is a cheap surrogate; when CHGNet is installed (``pip install
chgnet``: its pretrained weights ship inside the package, so no download is
needed) :func:`chgnet_ranker` gives a callable that returns the static
(unrelaxed) energy of structures in eV per cell, and
:func:`~matlake.models.insertion.simultaneous.insert_simultaneously` re-ranks the
best Ewald placements with it.  Nothing here relaxes structures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["RANKERS", "get_ranker", "chgnet_ranker"]

RANKERS = ("ewald", "chgnet")
Ranker = Callable[[Sequence["Structure"]], np.ndarray]


@lru_cache(maxsize=1)
def _chgnet():
    try:
        from chgnet.model import CHGNet
    except ImportError:
        raise ValueError("ranker 'chgnet': expected the chgnet package (pip install chgnet), found it missing") \
            from None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CHGNet.load(verbose=False)


def chgnet_ranker() -> tuple[Ranker, str]:
    """(energies of structures in eV per cell, description) from CHGNet's pretrained model."""
    model = _chgnet()
    version = getattr(model, "version", None) or "pretrained"

    def energies(structures: Sequence["Structure"]) -> np.ndarray:
        preds = model.predict_structure(list(structures), task="e", batch_size=16)
        preds = preds if isinstance(preds, list) else [preds]
        return np.array([float(p["e"]) * len(s) for p, s in zip(preds, structures)])

    return energies, f"CHGNet {version} static energy (unrelaxed), eV per cell"


def get_ranker(name: str) -> tuple[Ranker, str] | None:
    """None for 'ewald' (no re-ranking); the CHGNet ranker for 'chgnet'; ValueError otherwise."""
    if name == "ewald":
        return None
    if name == "chgnet":
        return chgnet_ranker()
    raise ValueError(f"ranker: expected one of {RANKERS}, found {name!r}")
