"""Figure of a neural-ODE extrapolation: error vs horizon against the two baselines.

:func:`horizon_figure` is pure (arrays in, a matplotlib figure out, Agg backend);
:func:`figure_png` returns the PNG bytes the platform stores as an object.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["horizon_figure", "figure_png"]


def horizon_figure(horizon: Sequence[float], node: Sequence[float], constant: Sequence[float],
                   linear: Sequence[float], *, real: tuple[Sequence[float], Sequence[float], Sequence[float]] | None = None,
                   horizon_unit: str = "frames", real_label: str = "real-space error",
                   title: str = "") -> "Figure":
    """Reciprocal-space error vs horizon for the neural ODE and the constant / linear
    baselines; with ``real`` = (node, constant, linear) real-space errors a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    h = np.asarray(horizon, dtype=float)
    fig = Figure(figsize=(9.6 if real is not None else 5.6, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if real is not None else 1)
    axes = list(np.atleast_1d(axes))
    series = [("neural ODE", node, "tab:blue", "-o"), ("constant (last frame held)", constant, "tab:gray", "--s"),
              ("linear (last two frames)", linear, "tab:orange", ":^")]
    for label, values, color, style in series:
        axes[0].plot(h, np.asarray(values, dtype=float), style, color=color, ms=3, lw=1.2, label=label)
    axes[0].set_xlabel(f"horizon beyond training window / {horizon_unit}")
    axes[0].set_ylabel("reciprocal error ||a_pred - a_obs||")
    axes[0].set_title("diffraction frames")
    axes[0].legend(fontsize=8)
    if real is not None:
        for (label, _, color, style), values in zip(series, real):
            axes[1].plot(h, np.asarray(values, dtype=float), style, color=color, ms=3, lw=1.2, label=label)
        axes[1].set_xlabel(f"horizon beyond training window / {horizon_unit}")
        axes[1].set_ylabel(real_label)
        axes[1].set_title("real space (ground truth)")
        axes[1].set_yscale("symlog", linthresh=1e-3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def figure_png(fig: "Figure", dpi: int = 110) -> bytes:
    """PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
