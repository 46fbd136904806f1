"""Pure processing steps on one spectrum (numpy arrays; energies in eV).

Every function takes the axis ``x`` and intensity ``y`` and returns new arrays;
nothing here touches the lake.
"""

from __future__ import annotations

import numpy as np

from matlake.models.spectra.grids import Grid


class GridCoverageError(ValueError):
    """The spectrum does not cover the grid's range; the message says by how much."""


def interpolate_to_grid(x: np.ndarray, y: np.ndarray, grid: Grid, tolerance: float = 1e-6) -> np.ndarray:
    """Linear interpolation of (x, y) onto ``grid`` (same unit as ``x``).

    Raises :class:`GridCoverageError` when the grid reaches beyond the data by
    more than ``tolerance`` (in the axis unit), naming the grid, the data range
    and the shortfall at each end: extrapolating would invent intensity.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    g = grid.array
    short_low = x[0] - g[0]
    short_high = g[-1] - x[-1]
    if short_low > tolerance or short_high > tolerance:
        parts = []
        if short_low > tolerance:
            parts.append(f"starts {short_low:.4g} {grid.unit} above the grid start {g[0]:.6g}")
        if short_high > tolerance:
            parts.append(f"ends {short_high:.4g} {grid.unit} below the grid end {g[-1]:.6g}")
        raise GridCoverageError(
            f"grid {grid.name}: expected data covering {g[0]:.6g}-{g[-1]:.6g} {grid.unit}, "
            f"found {x[0]:.6g}-{x[-1]:.6g} ({'; '.join(parts)})")
    return np.interp(np.clip(g, x[0], x[-1]), x, y)
