"""Nyquist and Bode plots of a spectrum, its latest circuit fit and its Kramers-Kronig residuals.

:func:`spectrum_figures` is pure (arrays in, matplotlib figures out);
:func:`plot_spectrum` reads one spectrum, its `eis_validity` row and its latest
`eis_predicted` row from a lake and writes two PNGs.  Matplotlib runs on the
Agg backend (no display needed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from matlake.platform.lake import Lake

__all__ = ["spectrum_figures", "plot_spectrum", "resolve_spectrum"]


def _residual_panel(ax, f: np.ndarray, kk: tuple[np.ndarray, np.ndarray] | None, threshold: float | None) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("frequency / Hz")
    ax.set_ylabel("KK residual / %")
    if kk is None:
        ax.text(0.5, 0.5, "no lin-KK result (run `matlake eis analyze`)", ha="center", va="center",
                transform=ax.transAxes)
        return
    ax.plot(f, 100 * kk[0], "o-", ms=3, lw=0.8, label="real")
    ax.plot(f, 100 * kk[1], "s-", ms=3, lw=0.8, label="imag")
    ax.axhline(0, color="0.5", lw=0.6)
    if threshold:
        for sgn in (-1, 1):
            ax.axhline(sgn * 100 * threshold, color="0.6", lw=0.6, ls="--")
    ax.legend(fontsize=7, loc="best")


def spectrum_figures(frequency_hz: np.ndarray, z: np.ndarray, *, fit: tuple[np.ndarray, np.ndarray] | None = None,
                     fit_label: str = "fit", kk: tuple[np.ndarray, np.ndarray] | None = None,
                     kk_threshold: float | None = None, title: str = "") -> tuple["Figure", "Figure"]:
    """(Nyquist figure, Bode figure) of a spectrum.

    ``frequency_hz`` in Hz, ``z`` complex impedance in ohm (capacitive Im Z < 0; the
    Nyquist plot shows -Z'' upwards).  ``fit`` = (frequencies in Hz, complex Z in ohm)
    of a fitted model; ``kk`` = (real, imaginary) relative lin-KK residuals per
    point, drawn in a panel under each plot with +-``kk_threshold``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    f = np.asarray(frequency_hz, float)
    zz = np.asarray(z, complex)
    if f.shape != zz.shape:
        raise ValueError(f"z: expected the shape of frequency_hz {f.shape}, found {zz.shape}")

    nyq = Figure(figsize=(6.4, 7.2), layout="constrained")
    ax, axr = nyq.subplots(2, 1, height_ratios=[3, 1])
    ax.plot(zz.real, -zz.imag, "o", ms=4, mfc="none", label="data")
    if fit is not None:
        ax.plot(np.real(fit[1]), -np.imag(fit[1]), "-", lw=1.5, label=fit_label)
    ax.set_xlabel("Z' / ohm")
    ax.set_ylabel("-Z'' / ohm")
    ax.set_aspect("equal", adjustable="datalim")
    ax.axhline(0, color="0.7", lw=0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Nyquist {title}".strip(), fontsize=10)
    _residual_panel(axr, f, kk, kk_threshold)

    bode = Figure(figsize=(6.4, 7.2), layout="constrained")
    am, ap, ar = bode.subplots(3, 1, sharex=True, height_ratios=[2, 2, 1])
    am.loglog(f, np.abs(zz), "o", ms=4, mfc="none", label="data")
    ap.semilogx(f, -np.degrees(np.angle(zz)), "o", ms=4, mfc="none", label="data")
    if fit is not None:
        am.loglog(fit[0], np.abs(fit[1]), "-", lw=1.5, label=fit_label)
        ap.semilogx(fit[0], -np.degrees(np.angle(fit[1])), "-", lw=1.5, label=fit_label)
    am.set_ylabel("|Z| / ohm")
    ap.set_ylabel("-phase / degree")
    for a in (am, ap):
        a.grid(alpha=0.3)
    am.legend(fontsize=8)
    am.set_title(f"Bode {title}".strip(), fontsize=10)
    _residual_panel(ar, f, kk, kk_threshold)
    return nyq, bode


def resolve_spectrum(lake: "Lake", ident: str, as_of: int | str | None = None) -> str:
    """The record_id of an `impedance` spectrum given its record_id, a unique prefix of it, or its source name."""
    ident = ident.strip()
    rows = lake.sql("select record_id from impedance where record_id = ? or source_name = ? or "
                    "(length(?) >= 6 and starts_with(record_id, ?)) order by record_id", as_of,
                    [ident, ident, ident, ident]).fetchall()
    if not rows:
        raise ValueError(f"spectrum: expected a record_id (or unique prefix, >= 6 characters) or a source name of an "
                         f"impedance record, found no match for {ident!r}")
    if len(rows) > 1:
        raise ValueError(f"spectrum: expected one match for {ident!r}, found {len(rows)}: "
                         + ", ".join(r[0] for r in rows[:5]))
    return rows[0][0]


def plot_spectrum(lake: "Lake", spectrum: str, out_dir: str | Path = ".", as_of: int | str | None = None,
                  dpi: int = 120) -> dict[str, Any]:
    """Write ``<name>_<id8>_nyquist.png`` and ``..._bode.png`` for one spectrum into ``out_dir``.

    Uses the latest `eis_predicted` row of the spectrum (if any) and its `eis_validity`
    residuals (if any).  Returns {"spectrum_id", "nyquist", "bode", "fit_id", "circuit"}.
    """
    sid = resolve_spectrum(lake, spectrum, as_of)
    f, zr, zi, name = lake.sql("select frequency, z_real, z_imag, source_name from impedance where record_id = ?",
                               as_of, [sid]).fetchone()
    f = np.asarray(f, float)
    z = np.asarray(zr, float) + 1j * np.asarray(zi, float)
    kk_row = lake.sql("select residuals_real, residuals_imag, threshold, m, mu from eis_validity "
                      "where subject_id = ?", as_of, [sid]).fetchone()
    fit_row = lake.sql("select frequency, z_real, z_imag, circuit, fit_id from eis_predicted where subject_id = ? "
                       "order by created_at desc, record_id limit 1", as_of, [sid]).fetchone()
    kk = (np.asarray(kk_row[0], float), np.asarray(kk_row[1], float)) if kk_row else None
    fit = None
    label = "fit"
    if fit_row:
        fit = (np.asarray(fit_row[0], float), np.asarray(fit_row[1], float) + 1j * np.asarray(fit_row[2], float))
        label = f"fit {fit_row[3]}"
    title = name or sid
    if kk_row:
        title += f"  (lin-KK M={kk_row[3]}, mu={kk_row[4]:.3f})"
    nyq, bode = spectrum_figures(f, z, fit=fit, fit_label=label, kk=kk, kk_threshold=kk_row[2] if kk_row else None,
                                 title=title)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if name else "spectrum") + f"_{sid[:8]}"
    paths = {"nyquist": out / f"{stem}_nyquist.png", "bode": out / f"{stem}_bode.png"}
    nyq.savefig(paths["nyquist"], dpi=dpi)
    bode.savefig(paths["bode"], dpi=dpi)
    return {"spectrum_id": sid, **paths, "fit_id": fit_row[4] if fit_row else None,
            "circuit": fit_row[3] if fit_row else None}
