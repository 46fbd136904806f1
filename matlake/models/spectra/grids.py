"""Named standard grids for interpolating spectra.

The built-in grids reproduce the published ones:

- ``xanes-ni-k``: Ni K-edge XANES, 8330-8370 eV, 100 points (``numpy.linspace``),
  the grid of the XANES featurization study (computed spectra shifted, broadened
  with a 3 eV FWHM Gaussian and max-normalised before interpolation).
- ``eels-o-k``, ``eels-ni-l``, ``eels-mn-l``, ``eels-co-l``: the per-edge grids of
  the multimodal EELS/XAS study, 0.2 eV steps from the published start with the
  published point counts (O K 528.9 eV x 167 -> 562.1 eV; Ni L 853.1 eV x 135;
  Mn L 635.1 eV x 200; Co L 775.1 eV x 200: the counts ``numpy.arange(start,
  stop, 0.2)`` gives for the published ranges).

Users add their own grids as ``spectral_grids`` records (``matlake spectra grid add``);
:func:`resolve_grid` looks in the built-ins first, then in rows the caller passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A named grid: points in ``unit`` (eV or nm), strictly increasing."""

    name: str
    points: tuple[float, ...]
    unit: str = "eV"
    element: str | None = None
    edge: str | None = None
    description: str = ""

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=float)

    @property
    def start(self) -> float:
        return self.points[0]

    @property
    def stop(self) -> float:
        return self.points[-1]

    def __len__(self) -> int:
        return len(self.points)


def _stepped(start: float, step: float, n: int) -> tuple[float, ...]:
    # start + i*step rounded to 1e-9 eV, so 528.9 + 5*0.2 is 529.9 and not 529.9000000000001
    return tuple(round(start + i * step, 9) for i in range(n))


BUILTIN_GRIDS: dict[str, Grid] = {
    g.name: g
    for g in (
        Grid("xanes-ni-k", tuple(float(x) for x in np.linspace(8330.0, 8370.0, 100)), "eV", "Ni", "K",
             "Ni K-edge XANES, 8330-8370 eV, 100 points (XANES featurization study)"),
        Grid("eels-o-k", _stepped(528.9, 0.2, 167), "eV", "O", "K",
             "O K edge, 528.9-562.1 eV at 0.2 eV, 167 points (multimodal EELS/XAS study)"),
        Grid("eels-ni-l", _stepped(853.1, 0.2, 135), "eV", "Ni", "L2,3",
             "Ni L2,3 edges, 853.1-879.9 eV at 0.2 eV, 135 points (multimodal EELS/XAS study)"),
        Grid("eels-mn-l", _stepped(635.1, 0.2, 200), "eV", "Mn", "L2,3",
             "Mn L2,3 edges, 635.1-674.9 eV at 0.2 eV, 200 points (multimodal EELS/XAS study)"),
        Grid("eels-co-l", _stepped(775.1, 0.2, 200), "eV", "Co", "L2,3",
             "Co L2,3 edges, 775.1-814.9 eV at 0.2 eV, 200 points (multimodal EELS/XAS study)"),
    )
}


def grid_from_row(row: Mapping[str, Any]) -> Grid:
    """A :class:`Grid` from a ``spectral_grids`` row (checks that the points increase)."""
    points = tuple(float(x) for x in row["axis"])
    if len(points) < 2 or not np.all(np.diff(points) > 0):
        raise ValueError(f"grid {row['name']!r}: expected at least 2 strictly increasing points, "
                         f"found {len(points)} points")
    return Grid(row["name"], points, row.get("unit") or "eV", row.get("element"), row.get("edge"),
                row.get("description") or "")


def resolve_grid(name: str, user_rows: Iterable[Mapping[str, Any]] = ()) -> Grid:
    """The grid called ``name``: a built-in, else one of ``user_rows`` (``spectral_grids`` rows).

    Raises KeyError listing the known names.
    """
    if name in BUILTIN_GRIDS:
        return BUILTIN_GRIDS[name]
    rows = list(user_rows)
    for row in rows:
        if row["name"] == name:
            return grid_from_row(row)
    known = sorted(BUILTIN_GRIDS) + sorted(r["name"] for r in rows)
    raise KeyError(f"unknown grid {name!r}; known grids: {', '.join(known)}")
