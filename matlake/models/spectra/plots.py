"""Plots of a spectrum: raw data, its pre-edge normalisation, and a processed version.

:func:`spectrum_figure` is pure (arrays in, a matplotlib figure out);
:func:`plot_record` reads a ``spectra`` or ``spectra_processed`` record from a
lake and writes one PNG.  Matplotlib runs on the Agg backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from matlake.platform.lake import Lake

__all__ = ["spectrum_figure", "plot_record", "resolve_record"]


def _draw_normalization(ax, x: np.ndarray, norm: Mapping[str, Any]) -> None:
    """Pre-edge line, post-edge curve and E0 over raw data (x in the raw axis, eV).

    ``norm['shift']`` is the energy shift (eV) the pipeline applied before normalising:
    the curves were fitted at E = x + shift.
    """
    shift = float(norm.get("shift") or 0.0)
    e = x + shift
    slope, intercept = norm["pre_edge_line"]
    pre = slope * e + intercept
    post = pre + np.polynomial.polynomial.polyval(e - norm["e0"], np.asarray(norm["post_edge_poly"], float))
    ax.plot(x, pre, "--", lw=1.0, color="tab:green", label="pre-edge line")
    ax.plot(x, post, "--", lw=1.0, color="tab:red", label="post-edge curve")
    ax.axvline(norm["e0"] - shift, color="0.4", lw=0.8, ls=":",
               label=f"E0 = {norm['e0']:.2f} eV, step {norm['edge_step']:.4g}")


def spectrum_figure(x: np.ndarray, y: np.ndarray, *, title: str = "", axis_label: str = "energy / eV",
                    intensity_label: str = "intensity", normalization: Mapping[str, Any] | None = None,
                    processed: tuple[np.ndarray, np.ndarray, str] | None = None) -> "Figure":
    """A figure of the raw spectrum (x, y); with ``normalization`` ({e0 (eV), edge_step,
    pre_edge_line [slope per eV, intercept], post_edge_poly (in E - E0, lowest first),
    shift (eV)}) its pre-edge line, post-edge curve and E0; with ``processed`` =
    (axis, intensity, label) a second panel with the processed spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"intensity: expected the length of the axis ({x.size}), found {y.size}")
    fig = Figure(figsize=(6.4, 7.2 if processed is not None else 4.4), layout="constrained")
    axes = fig.subplots(2, 1) if processed is not None else [fig.subplots(1, 1)]
    ax = axes[0]
    ax.plot(x, y, "-", lw=1.2, color="tab:blue", label="raw")
    if normalization is not None:
        _draw_normalization(ax, x, normalization)
    ax.set_xlabel(axis_label)
    ax.set_ylabel(intensity_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    if processed is not None:
        px, py, label = processed
        axes[1].plot(np.asarray(px, float), np.asarray(py, float), "-", lw=1.2, color="tab:orange", label=label)
        axes[1].set_xlabel(axis_label)
        axes[1].set_ylabel("processed")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=7, loc="best")
    return fig


def resolve_record(lake: "Lake", ident: str, as_of: int | str | None = None) -> tuple[str, str]:
    """(table, record_id) of a ``spectra`` record (id, unique prefix of >= 6 characters, or source
    name) or a ``spectra_processed`` record (id or prefix)."""
    ident = ident.strip()
    found: list[tuple[str, str]] = []
    for table, by_name in (("spectra", "or source_name = ?"), ("spectra_processed", "")):
        params = [ident, ident, ident] + ([ident] if by_name else [])
        rows = lake.sql(f"select record_id from {table} where record_id = ? or "
                        f"(length(?) >= 6 and starts_with(record_id, ?)) {by_name} order by record_id",
                        as_of, params).fetchall()
        found += [(table, r[0]) for r in rows]
    if not found:
        raise ValueError(f"spectrum: expected a record_id (or unique prefix, >= 6 characters) or source name of a "
                         f"spectra or spectra_processed record, found no match for {ident!r}")
    exact = [f for f in found if f[1] == ident]
    if len(exact) == 1:
        return exact[0]
    if len(found) > 1:
        raise ValueError(f"spectrum: expected one match for {ident!r}, found {len(found)}: "
                         + ", ".join(f"{t} {r}" for t, r in found[:5]))
    return found[0]


def _normalization_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The normalisation a ``spectra_processed`` row recorded (with the shift applied before it)."""
    if row.get("e0") is None or row.get("pre_edge_line") is None or row.get("post_edge_poly") is None:
        return None
    shift = 0.0
    for step in json.loads(row["steps_json"] or "[]"):
        if step.get("step") == "normalize":
            break
        if step.get("step") == "shift":
            shift += float(step["delta_ev"])
    return {"e0": float(row["e0"]), "edge_step": float(row["edge_step"]),
            "pre_edge_line": [float(v) for v in row["pre_edge_line"]],
            "post_edge_poly": [float(v) for v in row["post_edge_poly"]], "shift": shift}


def plot_record(lake: "Lake", ident: str, png: str | Path, as_of: int | str | None = None,
                dpi: int = 120) -> dict[str, Any]:
    """Write a PNG of a spectrum.  A ``spectra`` record: the raw spectrum with its latest
    pre-edge normalisation (line, post-edge curve, E0) when one is stored.  A
    ``spectra_processed`` record: the raw spectrum it was made from (that version)
    over the processed one.  Returns {table, record_id, spectrum_id, normalization_id, png}."""
    table, rid = resolve_record(lake, ident, as_of)
    cols = ("record_id, version, axis, intensity, axis_unit, axis_quantity, intensity_quantity, source_name, "
            "element, edge")
    processed = None
    if table == "spectra_processed":
        prow = lake.sql("select * from spectra_processed where record_id = ?", as_of, [rid]).df().iloc[0].to_dict()
        raw = lake.sql(f"select {cols} from spectra_all where record_id = ? and version = ?", as_of,
                       [prow["subject_id"], int(prow["subject_version"])]).df()
        norm_row = prow if _normalization_of(prow) else None
        processed = (np.asarray(prow["axis"], float), np.asarray(prow["intensity"], float),
                     f"{prow['pipeline']} ({prow['intensity_quantity']}"
                     + (f", grid {prow['grid_name']})" if prow["grid_name"] else ")"))
    else:
        raw = lake.sql(f"select {cols} from spectra where record_id = ?", as_of, [rid]).df()
        rows = lake.sql("select * from spectra_processed where subject_id = ? and e0 is not null and "
                        "pre_edge_line is not null order by (pipeline = 'normalize') desc, created_at desc, "
                        "record_id limit 1", as_of, [rid]).df()
        norm_row = rows.iloc[0].to_dict() if len(rows) else None
    if raw.empty:
        raise ValueError(f"spectrum {rid}: its spectra row (the version processed) is not in the lake at this snapshot")
    r = raw.iloc[0].to_dict()
    normalization = _normalization_of(norm_row) if norm_row is not None else None
    norm_id = norm_row["record_id"] if norm_row is not None else None
    unit = r["axis_unit"] or ""
    quantity = {"energy_loss": "energy loss", "wavelength": "wavelength"}.get(r["axis_quantity"], "energy")
    label = " ".join(str(v) for v in (r["element"], r["edge"]) if v)
    title = f"{r['source_name'] or r['record_id']} {label} [{r['record_id'][:8]} v{r['version']}]".strip()
    fig = spectrum_figure(np.asarray(r["axis"], float), np.asarray(r["intensity"], float), title=title,
                          axis_label=f"{quantity} / {unit}", intensity_label=r["intensity_quantity"] or "intensity",
                          normalization=normalization, processed=processed)
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return {"table": table, "record_id": rid, "spectrum_id": r["record_id"], "normalization_id": norm_id,
            "png": out}
