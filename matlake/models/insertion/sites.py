"""Candidate insertion sites from a volumetric field (pure numpy/pymatgen; no lake access).

The method (Shen et al., npj Comput. Mater. 6, 1 (2020), as implemented in
pymatgen-analysis-defects' charge-insertion analysis), re-built here to work on
the periodic grid directly:

1. local extrema of the grid: a point is an extremum when it equals the
   maximum (minimum) of its 3x3x3 neighbourhood, with periodic wrap-around
   (no tiled copy of the grid); points equal to the global opposite extreme
   are not extrema (a flat grid has none);
2. points closer than ``min_dist`` (Angstrom) to a host atom are dropped;
3. the rest are clustered with periodic single linkage at ``cluster_tol``
   (Angstrom; two points closer than that end up in one cluster) and each
   cluster is replaced by its mean position;
4. sites are grouped by the host's space-group operations: two sites are in one
   group when an operation maps one within ``group_tol`` (Angstrom) of the other
   (site by site: a stray site without a partner does not stop an operation from
   grouping the rest);
5. each site gets the mean of the field in a sphere of ``avg_radius``
   (Angstrom) around it, and groups are ranked by it.

Fields: charge densities are stored by VASP as rho*V_cell (e); their local
averages are reported in e/Angstrom^3.  A LOCPOT holds the potential energy
of an electron (eV): a cation sits where it is *highest* (and where the
density is lowest), so cation sites are density minima and potential maxima.

Every distance uses the minimum image in an LLL-reduced copy of the lattice,
so skewed cells are handled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["Field", "SiteSet", "combine_grids", "local_extrema", "find_sites", "pbc_distances",
           "symmetry_permutations", "DENSITY_KINDS", "POTENTIAL_KINDS"]

DENSITY_KINDS = ("AECCAR0", "AECCAR2", "CHGCAR", "CHG", "PARCHG", "CHGCAR-like")
POTENTIAL_KINDS = ("LOCPOT",)
_LATTICE_TOL = 1e-3  # Angstrom: lattices/positions of grids that are combined must agree to this
_IMAGES = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float)


@dataclass(frozen=True)
class Field:
    """A scalar field on the periodic grid of ``structure``.

    ``kind`` is ``"density"`` (values rho*V_cell in e, VASP's convention) or
    ``"potential"`` (electron potential energy in eV); ``label`` names the
    files it came from, e.g. ``"AECCAR0+AECCAR2"``.
    """

    kind: str
    label: str
    data: np.ndarray
    structure: "Structure"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def grid_spacing(self) -> float:
        """Largest distance between neighbouring grid points along a lattice vector (Angstrom)."""
        return float(max(l / n for l, n in zip(self.structure.lattice.abc, self.data.shape)))

    @property
    def unit(self) -> str:
        """Unit of :attr:`SiteSet.local_average` for this field."""
        return "e/Angstrom^3" if self.kind == "density" else "eV"


def _same_cell(a: "Structure", b: "Structure") -> str | None:
    """None when ``a`` and ``b`` are the same cell (lattice, species, positions); else what differs."""
    da = np.abs(a.lattice.matrix - b.lattice.matrix).max()
    if da > _LATTICE_TOL:
        return f"lattices differ by up to {da:.4g} Angstrom"
    if [s.species_string for s in a] != [s.species_string for s in b]:
        return f"species differ: {a.composition.formula} vs {b.composition.formula}"
    d = a.frac_coords - b.frac_coords
    d -= np.round(d)
    dc = np.abs(d @ a.lattice.matrix).max() if len(a) else 0.0
    if dc > _LATTICE_TOL:
        return f"atom positions differ by up to {dc:.4g} Angstrom"
    return None


def combine_grids(kind: str, grids: Sequence[tuple[str, np.ndarray, "Structure | None"]]) -> Field:
    """One :class:`Field` from one or more grids ``(label, data, structure)`` of the same cell, summed.

    AECCAR0 + AECCAR2 (core + valence) give the all-electron density.  Raises
    ``ValueError`` naming the grids when a structure is missing, shapes differ or
    the cells differ (lattice, species or positions beyond 1e-3 Angstrom).
    """
    if kind not in ("density", "potential"):
        raise ValueError(f"field kind: expected 'density' or 'potential', found {kind!r}")
    if not grids:
        raise ValueError(f"{kind} field: expected at least one grid, found none")
    label0, data0, s0 = grids[0]
    for label, data, s in grids:
        if s is None:
            raise ValueError(f"{label}: expected a grid with its structure (the host cell), found none")
        if np.asarray(data).ndim != 3:
            raise ValueError(f"{label}: expected a 3-D grid, found shape {np.shape(data)}")
    total = np.array(data0, dtype=np.float64, copy=True)
    for label, data, s in grids[1:]:
        if data.shape != total.shape:
            raise ValueError(f"{label0} + {label}: grids must have the same shape to be combined; "
                             f"found {tuple(total.shape)} and {tuple(data.shape)}")
        why = _same_cell(s0, s)
        if why:
            raise ValueError(f"{label0} + {label}: grids must be on the same cell to be combined; {why}")
        total += data
    if not np.isfinite(total).all():
        raise ValueError(f"{'+'.join(g[0] for g in grids)}: expected finite grid values, found NaN or inf")
    return Field(kind=kind, label="+".join(g[0] for g in grids), data=total, structure=s0)


def local_extrema(data: np.ndarray, find: str = "min") -> np.ndarray:
    """Integer grid indices (k, 3) of the periodic local minima (``find='min'``) or maxima.

    A point is an extremum when it equals the extreme of its 3x3x3 neighbourhood
    (periodic); points at the global opposite extreme are excluded, so a flat grid
    has none.  Memory: one filtered copy of the grid plus a boolean mask.
    """
    from scipy import ndimage

    if find not in ("min", "max"):
        raise ValueError(f"find: expected 'min' or 'max', found {find!r}")
    if find == "min":
        filt = ndimage.minimum_filter(data, size=3, mode="wrap")
        mask = data == filt
        del filt
        mask &= data < data.max()
    else:
        filt = ndimage.maximum_filter(data, size=3, mode="wrap")
        mask = data == filt
        del filt
        mask &= data > data.min()
    return np.argwhere(mask)


# ------------------------------------------------------------------ periodic geometry


class _Cell:
    """Minimum-image geometry of a lattice through its LLL-reduced basis."""

    def __init__(self, lattice: Any) -> None:
        self.matrix = np.asarray(lattice.matrix, float)
        self.lll = np.asarray(lattice.lll_matrix, float)
        self.lll_inv = np.linalg.inv(self.lll)
        self.image_shifts = _IMAGES @ self.lll  # (27, 3) Cartesian

    def reduced_cart(self, frac: np.ndarray) -> np.ndarray:
        """Cartesian positions wrapped into the LLL cell."""
        cart = np.atleast_2d(frac) @ self.matrix
        f = cart @ self.lll_inv
        return (f - np.floor(f)) @ self.lll

    def min_image(self, dcart: np.ndarray) -> np.ndarray:
        """The shortest periodic image of Cartesian difference vectors (..., 3)."""
        f = dcart @ self.lll_inv
        base = (f - np.round(f)) @ self.lll
        cand = base[..., None, :] + self.image_shifts  # (..., 27, 3)
        d2 = (cand**2).sum(-1)
        idx = d2.argmin(-1)
        return np.take_along_axis(cand, idx[..., None, None], axis=-2)[..., 0, :]


def pbc_distances(lattice: Any, frac_a: np.ndarray, frac_b: np.ndarray) -> np.ndarray:
    """Minimum-image distances (Angstrom) between fractional positions, shape (len(a), len(b))."""
    cell = _Cell(lattice)
    a = np.atleast_2d(np.asarray(frac_a, float)) @ cell.matrix
    b = np.atleast_2d(np.asarray(frac_b, float)) @ cell.matrix
    out = np.empty((len(a), len(b)))
    step = max(1, 20_000 // max(len(b), 1))  # pairs per chunk: the 27 images of each stay ~13 MB
    for i in range(0, len(a), step):
        d = cell.min_image(a[i:i + step, None, :] - b[None, :, :])
        out[i:i + step] = np.sqrt((d**2).sum(-1))
    return out


def _cluster(frac: np.ndarray, cell: _Cell, tol: float) -> list[np.ndarray]:
    """Periodic single-linkage clusters (index arrays) of points closer than ``tol``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(frac)
    if n == 0:
        return []
    pts = cell.reduced_cart(frac)
    images = (pts[None, :, :] + cell.image_shifts[:, None, :]).reshape(-1, 3)
    tree = cKDTree(images)
    pairs = tree.query_ball_point(pts, r=tol)
    rows = np.repeat(np.arange(n), [len(p) for p in pairs])
    cols = np.concatenate([np.asarray(p, int) for p in pairs]) % n if len(rows) else np.zeros(0, int)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return np.split(order, bounds)


def _cluster_means(frac: np.ndarray, clusters: list[np.ndarray], cell: _Cell) -> np.ndarray:
    """Mean fractional position of each cluster, members unwrapped around the first one."""
    inv = np.linalg.inv(cell.matrix)
    out = []
    for members in clusters:
        first = frac[members[0]] @ cell.matrix
        d = cell.min_image(frac[members] @ cell.matrix - first)
        f = (first + d.mean(0)) @ inv
        f = f - np.floor(f)
        f[np.abs(f - 1.0) < 1e-12] = 0.0
        out.append(f)
    return np.array(out).reshape(-1, 3)


def _sphere_offsets(lattice: Any, shape: Sequence[int], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer grid offsets (k, 3) that cover a sphere of ``radius`` around any point, and the grid steps."""
    m = np.asarray(lattice.matrix, float)
    step = m / np.asarray(shape, float)[:, None]  # rows: grid step vectors
    # bound on |index| along each axis: radius / (plane spacing of the grid)
    recip = np.linalg.inv(step).T
    reach = [int(math.ceil(radius * np.linalg.norm(recip[i]))) + 1 for i in range(3)]
    ax = [np.arange(-r, r + 1) for r in reach]
    grid = np.stack(np.meshgrid(*ax, indexing="ij"), -1).reshape(-1, 3)
    return grid, step


def local_average(field_data: np.ndarray, lattice: Any, frac: np.ndarray, radius: float) -> np.ndarray:
    """Mean of the grid values within ``radius`` (Angstrom) of each fractional position (periodic).

    Same definition as pymatgen-analysis-defects' ``get_avg_chg`` (grid points whose
    minimum-image distance to the position is below ``radius``), but only the points
    near each position are visited.
    """
    shape = np.asarray(field_data.shape)
    offsets, step = _sphere_offsets(lattice, shape, radius)
    out = np.empty(len(frac))
    for i, f in enumerate(np.atleast_2d(frac)):
        base = np.floor(f * shape).astype(int)
        idx = base + offsets
        frac_pts = idx / shape
        d = (frac_pts - f) @ np.asarray(lattice.matrix, float)
        keep = (d**2).sum(-1) < radius**2
        if not keep.any():  # a radius below the grid spacing: the nearest point
            keep = (d**2).sum(-1) == (d**2).sum(-1).min()
        w = idx[keep] % shape
        out[i] = float(field_data[w[:, 0], w[:, 1], w[:, 2]].mean())
    return out


def _symmetry_images(structure: "Structure", frac: np.ndarray, symprec: float) -> tuple[np.ndarray, np.ndarray]:
    """(nearest site index, its distance in Angstrom) of the image of every site under every
    space-group operation of ``structure``: arrays (n_ops, n)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    frac = np.atleast_2d(np.asarray(frac, float))
    cell = _Cell(structure.lattice)
    ops = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_operations(cartesian=False)
    cart = frac @ cell.matrix
    nearest, dist = [], []
    for op in ops:
        img = op.operate_multi(frac) @ cell.matrix
        d = cell.min_image(img[:, None, :] - cart[None, :, :])
        dd = np.sqrt((d**2).sum(-1))
        j = dd.argmin(1)
        nearest.append(j)
        dist.append(dd[np.arange(len(frac)), j])
    return np.array(nearest).reshape(-1, len(frac)), np.array(dist).reshape(-1, len(frac))


def symmetry_permutations(structure: "Structure", frac: np.ndarray, tol: float,
                          symprec: float = 0.1) -> np.ndarray:
    """For each space-group operation of ``structure`` that maps the point set ``frac``
    onto itself within ``tol`` (Angstrom), the permutation it induces: array (n_ops, n)."""
    n = len(np.atleast_2d(frac))
    nearest, dist = _symmetry_images(structure, frac, symprec)
    perms = [np.arange(n)]
    for j, d in zip(nearest, dist):
        if np.all(d <= tol) and len(set(j.tolist())) == n:
            perms.append(j)
    return np.unique(np.array(perms), axis=0)


def _groups(nearest: np.ndarray, dist: np.ndarray, tol: float) -> np.ndarray:
    """Orbit label of each point (union-find over every site mapped within ``tol`` onto another;
    one site without a partner does not stop an operation from grouping the others)."""
    n = nearest.shape[1]
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p, d in zip(nearest, dist):
        for i in np.flatnonzero(d <= tol):
            ri, rj = root(int(i)), root(int(p[i]))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)])


@dataclass
class SiteSet:
    """Candidate sites found in one field, ordered by group rank then local average.

    Arrays have one entry per site.  ``group`` is the 0-based rank of the site's
    symmetry group (0 = best: lowest density or, for a cation, highest potential);
    ``multiplicity`` is the size of that group in the cell.
    """

    field_kind: str
    field_label: str
    extremum: str  # "min" or "max"
    frac_coords: np.ndarray  # (n, 3)
    cart_coords: np.ndarray  # (n, 3) Angstrom
    grid_value: np.ndarray  # value at the nearest grid point (density: e/Angstrom^3; potential: eV)
    local_average: np.ndarray  # mean in the sphere (same unit)
    group: np.ndarray
    multiplicity: np.ndarray
    group_average: np.ndarray  # mean of local_average over the group's sites
    host_distance: np.ndarray  # nearest host atom (Angstrom)
    host_species: list[str]
    n_extrema: int  # raw grid extrema before filtering
    n_after_collisions: int
    unit: str
    params: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frac_coords)

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0

    def representatives(self) -> list[int]:
        """Index of the first (best) site of each group, in group order."""
        return [int(np.flatnonzero(self.group == g)[0]) for g in range(self.n_groups)]


def find_sites(fld: Field, extremum: str | None = None, *, min_dist: float = 0.9, cluster_tol: float = 0.5,
               avg_radius: float = 0.4, group_tol: float = 0.5, symprec: float = 0.1) -> SiteSet:
    """Candidate sites of ``fld`` (see the module docstring for the steps).

    ``extremum``: ``"min"`` or ``"max"``; default: minima of a density, maxima of
    a potential (cation sites).  Distances in Angstrom.
    """
    for name, v in (("min_dist", min_dist), ("cluster_tol", cluster_tol), ("avg_radius", avg_radius),
                    ("group_tol", group_tol)):
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{name}: expected a non-negative distance in Angstrom, found {v}")
    if extremum is None:
        extremum = "min" if fld.kind == "density" else "max"
    host = fld.structure
    lattice = host.lattice
    shape = np.asarray(fld.data.shape)
    idx = local_extrema(fld.data, extremum)
    frac = idx / shape
    n_extrema = len(frac)
    if len(host) and len(frac):
        dmin = pbc_distances(lattice, frac, host.frac_coords).min(1)
        frac = frac[dmin >= min_dist]
    n_after = len(frac)
    cell = _Cell(lattice)
    if cluster_tol > 0 and len(frac):
        frac = _cluster_means(frac, _cluster(frac, cell, cluster_tol), cell)
    scale = 1.0 / host.volume if fld.kind == "density" else 1.0
    avg = local_average(fld.data, lattice, frac, avg_radius) * scale
    nearest = np.round(frac * shape).astype(int) % shape
    gval = fld.data[nearest[:, 0], nearest[:, 1], nearest[:, 2]] * scale if len(frac) else np.zeros(0)
    if len(frac):
        orbit = _groups(*_symmetry_images(host, frac, symprec), group_tol)
    else:
        orbit = np.zeros(0, int)
    # rank groups by their mean local average: best first
    sign = 1.0 if extremum == "min" else -1.0
    labels = np.unique(orbit)
    gmean = {int(g): float(avg[orbit == g].mean()) for g in labels}
    order = sorted(labels.tolist(), key=lambda g: (sign * gmean[g], tuple(np.round(frac[orbit == g][0], 6))))
    rank_of = {g: r for r, g in enumerate(order)}
    group = np.array([rank_of[int(g)] for g in orbit], int)
    site_order = np.lexsort((frac[:, 2], frac[:, 1], frac[:, 0], sign * avg, group)) if len(frac) else np.zeros(0, int)
    frac, avg, gval, group = frac[site_order], avg[site_order], gval[site_order], group[site_order]
    mult = np.bincount(group)[group] if len(group) else np.zeros(0, int)
    gavg = np.array([gmean[order[g]] for g in group]) if len(group) else np.zeros(0)
    if len(host) and len(frac):
        dist = pbc_distances(lattice, frac, host.frac_coords)
        hd, hs = dist.min(1), [host[int(j)].species_string for j in dist.argmin(1)]
    else:
        hd, hs = np.full(len(frac), np.inf), [""] * len(frac)
    return SiteSet(
        field_kind=fld.kind, field_label=fld.label, extremum=extremum, frac_coords=frac,
        cart_coords=frac @ lattice.matrix, grid_value=gval, local_average=avg, group=group, multiplicity=mult,
        group_average=gavg, host_distance=hd, host_species=hs, n_extrema=n_extrema, n_after_collisions=n_after,
        unit=fld.unit,
        params={"min_dist": min_dist, "cluster_tol": cluster_tol, "avg_radius": avg_radius, "group_tol": group_tol,
                "symprec": symprec},
    )
