"""Figures of segmentation ensembles: reliability diagram, risk-coverage, phase fraction vs time, panels.

Pure: arrays and metric dicts in, a matplotlib ``Figure`` out (Agg backend, no
pyplot state); :func:`png_bytes` renders one to PNG bytes (for the object
store) and :func:`save` writes it to a file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["reliability_figure", "risk_coverage_figure", "phase_fraction_figure", "panel_figure", "png_bytes",
           "save"]


def _figure(figsize: tuple[float, float]) -> "Figure":
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _rel_dict(rel: Any) -> dict[str, Any]:
    if hasattr(rel, "as_dict"):
        return rel.as_dict()
    return dict(rel)


def reliability_figure(reliabilities: Mapping[str, Any], title: str = "reliability diagram") -> "Figure":
    """Accuracy against mean confidence per bin for each named model (``name ->``
    :class:`~matlake.models.imaging.calibration.Reliability` or its ``as_dict()``),
    the diagonal of perfect calibration, ECE in the legend, and below it the
    fraction of pixels per bin (log scale)."""
    fig = _figure((5.6, 6.4))
    ax, axc = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    for i, (name, rel) in enumerate(reliabilities.items()):
        d = _rel_dict(rel)
        edges = np.asarray(d["edges"], float)
        conf = np.array([np.nan if v is None else v for v in d["mean_confidence"]], float)
        acc = np.array([np.nan if v is None else v for v in d["accuracy"]], float)
        count = np.asarray(d["count"], float)
        ok = np.isfinite(acc)
        color = f"C{i}"
        ax.plot(conf[ok], acc[ok], "o-", color=color, ms=4, label=f"{name} (ECE {d['ece']:.4f})")
        width = (edges[1] - edges[0]) / max(1, len(reliabilities))
        axc.bar(edges[:-1] + i * width, count / max(count.sum(), 1), width=width, align="edge", color=color,
                alpha=0.7)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    axc.set_yscale("log")
    axc.set_xlabel("confidence (max mean probability)")
    axc.set_ylabel("fraction of pixels")
    return fig


def risk_coverage_figure(curves: Mapping[str, Any], title: str = "risk-coverage",
                         item: str = "frames") -> "Figure":
    """Risk (mean error of what is kept) against coverage (fraction kept, most confident
    first) for each named curve (a :class:`~matlake.models.imaging.calibration.RiskCoverage`
    or a (coverage, risk) pair); AURC in the legend."""
    fig = _figure((5.6, 4.2))
    ax = fig.subplots(1, 1)
    for i, (name, c) in enumerate(curves.items()):
        if hasattr(c, "coverage"):
            cov, risk, label = c.coverage, c.risk, f"{name} (AURC {c.aurc:.4f})"
        else:
            cov, risk = c
            label = f"{name} (AURC {float(np.mean(risk)):.4f})"
        ax.plot(cov, risk, "-", color=f"C{i}", lw=1.5, label=label, drawstyle="steps-pre")
    ax.set_xlabel(f"coverage (fraction of {item} kept)")
    ax.set_ylabel("risk (error rate of kept)")
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def phase_fraction_figure(times: Sequence[float], series: Mapping[str, tuple[Any, Any]],
                          truth: Sequence[float] | None = None, phase: str = "ice",
                          title: str = "phase fraction") -> "Figure":
    """Fraction of ``phase`` against time (s, drawn in ms) for each named model: the
    ensemble mean with a band of ± one standard deviation over members, and the
    ground truth when known."""
    fig = _figure((6.4, 4.0))
    ax = fig.subplots(1, 1)
    t_ms = 1e3 * np.asarray(times, float)
    if truth is not None:
        ax.plot(t_ms, np.asarray(truth, float), color="k", lw=2, label="ground truth")
    for i, (name, (mean, std)) in enumerate(series.items()):
        mean = np.asarray(mean, float)
        std = np.asarray(std, float)
        ax.plot(t_ms, mean, color=f"C{i}", lw=1.2, label=f"{name} (mean ± member std)")
        ax.fill_between(t_ms, mean - std, mean + std, color=f"C{i}", alpha=0.25, lw=0)
    ax.set_xlabel("time / ms")
    ax.set_ylabel(f"{phase} area fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def panel_figure(image: np.ndarray, truth: np.ndarray | None, prediction: np.ndarray, entropy: np.ndarray,
                 mutual_information: np.ndarray, title: str = "") -> "Figure":
    """image | ground truth | prediction | predictive entropy | mutual information (nats)."""
    panels = [("image", image, "gray", None), ("ground truth", truth, "viridis", (0, 1)),
              ("prediction", prediction, "viridis", (0, 1)),
              ("entropy / nats", entropy, "magma", None), ("mutual information / nats", mutual_information,
                                                          "magma", None)]
    panels = [p for p in panels if p[1] is not None]
    fig = _figure((3.0 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels))
    for ax, (name, arr, cmap, lim) in zip(np.atleast_1d(axes), panels):
        arr = np.asarray(arr)
        kw = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        im = ax.imshow(arr, cmap=cmap, interpolation="nearest", **kw)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if name.endswith("nats"):
            fig.colorbar(im, ax=ax, shrink=0.7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def png_bytes(fig: "Figure", dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata, so the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def save(fig: "Figure", path: str | Path, dpi: int = 110) -> Path:
    """Write the figure as a PNG file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig, dpi))
    return path
