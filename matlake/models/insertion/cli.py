"""``matlake insertion ...``: ion insertion sites from stored charge densities and potentials.

- ``matlake insertion find ID [ID ...] --ion Li [--n 4] [--png PATH]`` finds the sites in the
  grids ``ID`` (and, by default, the other density/potential grids of the same cell),
  places N ions at once, prints both and commits them;
- ``matlake insertion plot ID [--out PATH]`` draws a slice of the field with the stored sites.

Heavy imports (scipy, pymatgen, matplotlib) happen inside the commands: every ``matlake``
invocation imports this module to register the commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _fmt(v, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def cmd_find(args: argparse.Namespace) -> int:
    import pandas as pd

    from matlake.models.insertion.analysis import find
    from matlake.platform.cli import _lake, print_frame

    lake = _lake(args)
    options = {k: getattr(args, k) for k in ("charge", "min_dist", "cluster_tol", "avg_radius", "group_tol",
                                             "agreement_tol", "min_ion_distance", "max_candidates", "top",
                                             "ranker")}
    options = {k: v for k, v in options.items() if v is not None}
    ns = sorted({k for spec in (args.n or []) for k in _ns(spec)})
    report = find(lake, args.ids, ion=args.ion, n=ns, siblings=not args.no_siblings, as_of=args.as_of,
                  force=args.force, **options)
    res = report.result
    for kind, s in res.sites.items():
        fld = res.fields[kind]
        print(f"{fld.label} ({kind}, {s.extremum}ima): {s.n_extrema} grid extrema, {s.n_after_collisions} at least "
              f"{s.params['min_dist']} A from the host, {len(s)} sites in {s.n_groups} symmetry groups")
        rows = []
        reps = s.representatives()
        od = res.other_distance[kind]
        pe = res.potential_energy[kind]
        for g in range(s.n_groups):
            i = reps[g]
            rows.append({"group": g + 1, "mult": int(s.multiplicity[i]),
                         "frac": " ".join(f"{v:.4f}" for v in s.frac_coords[i]),
                         f"avg [{s.unit}]": _fmt(float(s.group_average[i])),
                         "host dist [A]": f"{s.host_distance[i]:.3f} ({s.host_species[i]})",
                         "E_pot [eV]": _fmt(float(pe[i]) if pe is not None else None),
                         "E_ewald [eV]": _fmt(float(res.ewald[kind][i])),
                         "other field [A]": _fmt(float(od[i]) if od is not None else None, ".3f")})
        print_frame(pd.DataFrame(rows))
    for n, confs in res.configurations.items():
        summ = res.summaries[n]
        print(f"{report.finder.params['ion']} x{n} at once on "
              f"{summ['n_candidates']} candidate sites: {summ['n_allowed']} placements allowed, "
              f"{summ['n_distinct']} distinct by symmetry; best {len(confs)}:")
        print_frame(pd.DataFrame([{"rank": c.rank, f"E_{summ['ranker']} [eV]": f"{c.energy:.4f}",
                                   "per ion": f"{c.energy / n:.4f}", "E_ewald [eV]": f"{c.ewald_energy:.4f}",
                                   "mult": c.multiplicity, "sites": ",".join(str(i) for i in c.sites),
                                   "closest ion-ion [A]": _fmt(c.min_ion_distance, ".3f")} for c in confs]))
    if args.png:
        from matlake.models.insertion.plots import slice_figure

        fld = res.fields.get("density") or res.fields["potential"]
        sites = {k: s.frac_coords for k, s in res.sites.items()}
        ranks = {k: s.group + 1 for k, s in res.sites.items()}
        out = Path(args.png)
        out.parent.mkdir(parents=True, exist_ok=True)
        slice_figure(fld, sites, ranks=ranks).savefig(out, dpi=args.dpi)
        print(f"wrote {out}")
    counts = ", ".join(f"{t} {k}" for t, k in sorted(report.n_rows.items()))
    if report.skipped:
        print(f"nothing new: the same run is already in the lake (activity {report.activity_id}); --force re-runs it")
    else:
        print(f"snapshot {report.snapshot} (activity {report.activity_id}): {counts}; grids "
              f"{', '.join(i[:12] for i in report.volumetric_ids)}; host calculation {report.calculation_id or 'none'}")
    return 0


def _ns(spec: str) -> list[int]:
    """--n values: '4', '2-4' or '2,3'."""
    out = []
    for part in str(spec).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            values = list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
        except ValueError:
            values = []
        if not values:  # not a number, or a range running backwards such as 4-2
            raise ValueError(f"--n: expected a number, a range like 2-4 or a list like 2,3; found {spec!r}")
        out += values
    return out


def cmd_plot(args: argparse.Namespace) -> int:
    from matlake.models.insertion.plots import plot_sites
    from matlake.platform.cli import _lake

    out = plot_sites(_lake(args), args.id, args.out, ion=args.ion, as_of=args.as_of, dpi=args.dpi)
    print(f"{out['field']}: " + ", ".join(f"{n} {k} sites" for k, n in out["n_sites"].items()))
    print(f"wrote {out['png']}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake insertion`` and its subcommands."""
    p = subparsers.add_parser("insertion", help="ion insertion sites from charge densities and potentials")
    sub = p.add_subparsers(dest="insertion_command", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("find", parents=[common], help="find insertion sites (and N ions at once) and store them")
    s.add_argument("ids", nargs="+", metavar="ID",
                   help="volumetric record id (or unique prefix) or source file name of a CHGCAR/AECCAR/LOCPOT")
    s.add_argument("--ion", default="Li", help="inserted element (default Li)")
    s.add_argument("--n", action="append", metavar="N",
                   help="also insert N ions at once: 4, 2-4 or 2,3 (repeatable; default: sites only)")
    s.add_argument("--charge", type=float, help="ion charge in e (default: its common positive oxidation state)")
    s.add_argument("--no-siblings", action="store_true",
                   help="use only the named grids, not the other density/potential grids of the same cell")
    s.add_argument("--min-dist", type=float, help="drop sites closer than this to a host atom, Angstrom (0.9)")
    s.add_argument("--cluster-tol", type=float, help="merge sites closer than this, Angstrom (0.5)")
    s.add_argument("--avg-radius", type=float, help="radius of the local field average, Angstrom (0.4)")
    s.add_argument("--group-tol", type=float, help="symmetry mapping tolerance, Angstrom (0.5)")
    s.add_argument("--agreement-tol", type=float, help="density and potential sites agree within, Angstrom (0.5)")
    s.add_argument("--min-ion-distance", type=float, help="closest allowed ion-ion distance, Angstrom (2.0)")
    s.add_argument("--max-candidates", type=int, help="candidate sites for N ions at once (32)")
    s.add_argument("--top", type=int, help="placements kept per N (5)")
    s.add_argument("--ranker", choices=("ewald", "chgnet"),
                   help="rank placements by Ewald energy (default) or re-rank the best 20 with CHGNet "
                        "(needs the chgnet package)")
    s.add_argument("--png", help="also write a slice of the field with the sites to this PNG")
    s.add_argument("--dpi", type=int, default=120)
    s.add_argument("--as-of", help="snapshot id or tag of the grids (default: latest)")
    s.add_argument("--force", action="store_true", help="commit again even if the same run is stored")
    s.set_defaults(func=cmd_find)

    s = sub.add_parser("plot", parents=[common], help="PNG: a slice of the field with the stored sites")
    s.add_argument("id", help="volumetric record id (or unique prefix) or source file name")
    s.add_argument("--out", default=".", help="PNG file or folder (default: current folder)")
    s.add_argument("--ion", help="sites of this ion (default: the latest run)")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--dpi", type=int, default=120)
    s.set_defaults(func=cmd_plot)
