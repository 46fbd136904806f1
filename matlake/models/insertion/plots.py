"""A slice of the field through the best insertion site, with the sites and host atoms near it.

:func:`slice_figure` is pure (a :class:`~matlake.models.insertion.sites.Field`
and site positions in, a matplotlib figure out); :func:`plot_sites` reads the
grid and the latest stored `insertion_sites` of a lake and writes a PNG.
Matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.insertion.sites import Field

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from matlake.platform.lake import Lake

__all__ = ["slice_figure", "plot_sites"]

_MARKERS = {"density": ("o", "white", "density minima"), "potential": ("^", "red", "potential maxima")}


def slice_figure(fld: Field, sites: Mapping[str, np.ndarray], frac_c: float | None = None,
                 ranks: Mapping[str, np.ndarray] | None = None, window: float = 0.5, title: str = "") -> "Figure":
    """The plane of constant fractional coordinate ``frac_c`` (default: the first density site, else the
    first site) drawn in Cartesian coordinates (Angstrom) over one a-b cell.

    ``sites``: field kind -> fractional coordinates (k, 3); those within ``window``
    (Angstrom) of the plane are drawn, labelled by group rank when ``ranks`` gives
    them; host atoms within the same window are drawn as labelled dots.  A density
    is drawn on a log scale (e/Angstrom^3), a potential linearly (eV).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    lat = np.asarray(fld.structure.lattice.matrix, float)
    na, nb, nc = fld.data.shape
    if frac_c is None:
        first = next((np.atleast_2d(v)[0] for k in ("density", "potential") if len(v := sites.get(k, [])) > 0), None)
        frac_c = float(first[2]) if first is not None else 0.0
    k = int(round(frac_c * nc)) % nc
    plane_c = k / nc
    # orthonormal in-plane basis: e1 along a, e2 in the a-b plane
    e1 = lat[0] / np.linalg.norm(lat[0])
    normal = np.cross(lat[0], lat[1])
    normal /= np.linalg.norm(normal)
    e2 = np.cross(normal, e1)

    def to2d(frac: np.ndarray) -> np.ndarray:
        cart = np.atleast_2d(frac) @ lat
        return np.stack([cart @ e1, cart @ e2], -1)

    ii, jj = np.meshgrid(np.arange(na + 1) / na, np.arange(nb + 1) / nb, indexing="ij")
    corners = to2d(np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, plane_c)], -1)).reshape(na + 1, nb + 1, 2)
    values = fld.data[:, :, k].astype(float)
    if fld.kind == "density":
        values = values / fld.structure.volume
        pos = values[values > 0]
        # all-electron densities peak at the cores: clip the colour scale to the bulk of the slice
        norm = LogNorm(vmin=float(np.percentile(pos, 1)), vmax=float(np.percentile(pos, 99))) if pos.size else None
        values = np.where(values > 0, values, np.nan)
    else:
        norm = None
    fig = Figure(figsize=(6.4, 5.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    mesh = ax.pcolormesh(corners[..., 0], corners[..., 1], values, norm=norm, cmap="viridis", shading="flat")
    mesh.cmap.set_over("white")
    fig.colorbar(mesh, ax=ax, label=f"{fld.label} / {fld.unit}")

    def near_plane(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frac = np.atleast_2d(np.asarray(frac, float)) % 1.0
        dc = frac[:, 2] - plane_c
        dc -= np.round(dc)
        dist = np.abs((dc[:, None] * lat[2]) @ normal)
        shifted = frac.copy()
        shifted[:, 2] = plane_c
        return dist <= window, shifted

    keep, shifted = near_plane(fld.structure.frac_coords)
    for f, sp in zip(shifted[keep], [s.specie.symbol for s, k_ in zip(fld.structure, keep) if k_]):
        xy = to2d(f)[0]
        ax.plot(*xy, "o", color="0.2", ms=9, mec="white", mew=0.8)
        ax.annotate(sp, xy, color="white", fontsize=6, ha="center", va="center")
    for kind, frac in sites.items():
        frac = np.atleast_2d(np.asarray(frac, float))
        if not len(frac):
            continue
        marker, color, label = _MARKERS.get(kind, ("s", "orange", kind))
        keep, shifted = near_plane(frac)
        xy = to2d(shifted[keep]) if keep.any() else np.zeros((0, 2))
        ax.plot(xy[:, 0], xy[:, 1], marker, ls="none", mfc="none", mec=color, mew=1.6, ms=11,
                label=f"{label} ({int(keep.sum())} of {len(frac)} in this slice)")
        if ranks is not None and kind in ranks:
            for (x, y), r in zip(xy, np.asarray(ranks[kind])[keep]):
                ax.annotate(str(int(r)), (x, y), xytext=(6, 6), textcoords="offset points", color=color,
                            fontsize=7)
    ax.set_aspect("equal")
    ax.set_xlabel("along a / Angstrom")
    ax.set_ylabel("in the a-b plane / Angstrom")
    ax.set_title(title or f"{fld.structure.composition.reduced_formula}: {fld.label}, slice c = {plane_c:.3f}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.7)
    fig.tight_layout()
    return fig


def plot_sites(lake: "Lake", ident: str, out: str | Path, ion: str | None = None, as_of: int | str | None = None,
               dpi: int = 120) -> dict[str, Any]:
    """Write a PNG of the field of grid ``ident`` (volumetric id, prefix or source name) with the sites of
    its latest `insertion_sites` run; ``out`` is a file or a folder.  Returns what was drawn."""
    from matlake.models.insertion.analysis import GridInput, _resolve, select_fields
    from matlake.platform.lake import LakeError

    sid = lake.resolve_snapshot(as_of)
    rec = _resolve(lake, ident, sid)
    cond = "list_contains(volumetric_ids, ?)" + (" and ion = ?" if ion else "")
    rows = lake.sql(f"select * from insertion_sites where {cond} order by created_at desc", as_of=sid,
                    params=[rec["record_id"]] + ([ion] if ion else [])).df()
    if rows.empty:
        raise LakeError(f"no insertion sites stored for grid {rec['record_id']} "
                        "(run `matlake insertion find` first)")
    latest = rows[rows["activity_id"] == rows["activity_id"].iloc[0]].sort_values(["field_kind", "site_index"])
    grid_ids = list(latest["volumetric_ids"].iloc[0])
    grids = []
    for gid in grid_ids:
        g = lake.volumetric(gid, sid)
        grids.append(GridInput(gid, g.kind, g.data, g.structure))
    fields, _ids = select_fields(grids)
    fld = fields.get("density") or fields["potential"]
    sites = {k: grp[["frac_a", "frac_b", "frac_c"]].to_numpy() for k, grp in latest.groupby("field_kind")}
    ranks = {k: grp["group_rank"].to_numpy() for k, grp in latest.groupby("field_kind")}
    fig = slice_figure(fld, sites, ranks=ranks)
    out = Path(out)
    if out.is_dir() or not out.suffix:
        out.mkdir(parents=True, exist_ok=True)
        out = out / f"insertion_{fld.structure.composition.reduced_formula}_{rec['record_id'][:8]}.png"
    fig.savefig(out, dpi=dpi)
    return {"png": str(out), "field": fld.label, "n_sites": {k: len(v) for k, v in sites.items()},
            "activity_id": latest["activity_id"].iloc[0]}
