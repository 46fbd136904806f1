"""``matlake feff ...``: computed XANES from stored structures with FEFF10.

- ``matlake feff compute [--element Ni] [--edge K] [--where SQL] [--workers N | --dask ADDR]``
  computes every not-yet-computed inequivalent absorbing site of the selected structure
  records and commits each site as it finishes (re-runs skip done sites);
- ``matlake feff recipe --out DIR`` writes the structures of the shipped Ni K-edge set;
- ``matlake feff export --out FILE --structures DIR`` writes the computed spectra as a dataset file;
- ``matlake feff load [FILE]`` loads a dataset file (default: the shipped Ni K-edge set) without FEFF;
- ``matlake feff list`` lists computed spectra with their labels;
- ``matlake feff transfer [--measured FILE ...] [--png PATH]`` runs the transfer experiment
  (:mod:`matlake.models.feff.transfer`).

Heavy imports (pymatgen, feff10) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys


def _params(args: argparse.Namespace):
    from matlake.models.feff.inputs import FeffParameters

    base = FeffParameters()
    overrides = dict(base.overrides)
    if args.fms is not None:
        overrides["FMS"] = (args.fms, 0)
    if args.xanes is not None:
        overrides["XANES"] = tuple(args.xanes)
    return FeffParameters(edge=args.edge, cluster_radius=args.cluster_radius or base.cluster_radius,
                          overrides=tuple(overrides.items()), removed=base.removed)


def cmd_compute(args: argparse.Namespace) -> int:
    from matlake.models.feff.compute import compute
    from matlake.models.feff.inputs import FeffInputError
    from matlake.platform.cli import CliError, _lake

    lake = _lake(args)
    try:
        rep = compute(lake, args.element, _params(args), where=args.where, as_of=args.as_of, workers=args.workers,
                      dask_address=args.dask, retry_failed=args.retry_failed, stage_timeout=args.stage_timeout,
                      progress=not args.quiet, limit=args.limit)
    except FeffInputError as exc:
        raise CliError(str(exc)) from None
    for line in rep.errors:
        print(f"skipped: {line}", file=sys.stderr)
    for sp, err in rep.failed.items():
        print(f"failed: spectrum {sp}: {err}", file=sys.stderr)
    total = sum(rep.seconds.values())
    print(f"{len(rep.computed)} spectra computed, {len(rep.failed)} failed, {rep.skipped} sites already done, "
          f"{len(rep.errors)} structures without a site; FEFF time {total:.0f} s")
    return 1 if rep.failed else 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from matlake.models.feff.recipe import write_structures

    paths = write_structures(args.out, Path(args.out).parent / "recipe_structures.json" if args.notes else None)
    print(f"{len(paths)} structure files written to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from matlake.models.feff.dataset import export
    from matlake.platform.cli import _lake

    recipe = json.loads(open(args.recipe).read()) if args.recipe else None
    counts = export(_lake(args), args.out, args.structures, recipe=recipe, as_of=args.as_of)
    print(f"{counts['spectra']} spectra, {counts['labels']} labels from {counts['structures']} structures "
          f"-> {args.out}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from matlake.models.feff.dataset import DATASET_FILE, DatasetError, load
    from matlake.platform.cli import CliError, _lake

    try:
        rep = load(_lake(args), args.file or DATASET_FILE)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    print(f"{rep.loaded} spectra loaded, {rep.skipped} already there, {rep.structures_ingested} structures ingested"
          + (f" (snapshot {rep.snapshot})" if rep.snapshot else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from matlake.platform.cli import _lake, print_frame

    frame = _lake(args).sql("""
        select s.record_id, s.element, s.edge, s.absorbing_site as site, s.n_points,
               max(case when l.label = 'oxidation_state' then l.value end) as oxidation_state,
               max(case when l.label like 'mean_%_distance' then round(l.value, 4) end) as first_shell_A,
               s.sample
        from spectra s left join spectrum_labels l on l.subject_id = s.record_id
        where s.source_kind = 'computed' and s.code like 'FEFF%'
        group by all order by s.sample, site""", as_of=args.as_of).df()
    print_frame(frame)
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    import pandas as pd

    from matlake.models.feff.transfer import FEATURIZERS, SHIFT_EV, run_transfer, write_curves_png
    from matlake.platform.cli import _lake, print_frame

    lake = _lake(args)
    rep = run_transfer(lake, args.measured or (), featurizers=args.featurizers or FEATURIZERS,
                       shift_ev=SHIFT_EV if args.shift_ev is None else args.shift_ev, n_estimators=args.n_estimators)
    cols = [c for c in ("featurizer", "model", "label", "cv_accuracy", "cv_macro_f1", "cv_mae", "cv_r2")
            if c in rep.models.columns]
    print("cross-validated on the computed spectra (5 folds grouped by structure):")
    print_frame(rep.models[cols].round(4))
    if not rep.predictions.empty:
        print("predictions on the measured spectra:")
        print_frame(rep.predictions.round(4))
    curves = pd.DataFrame([{"featurizer": s["featurizer"], "task": s["task"], "metric": s["metric"],
                            **{f"{x:+g} eV": round(v, 4) for x, v in zip(s["shifts"], s["values"])}}
                           for s in rep.curves if s["metric"] in ("accuracy", "mae")])
    print("shift robustness (test spectra moved in energy):")
    print_frame(curves)
    for note in rep.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.png:
        print(f"wrote {write_curves_png(rep.curves, args.png)}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake feff`` and its subcommands."""
    p = subparsers.add_parser("feff", help="computed XANES from stored structures (FEFF10, optional extra 'feff')")
    sub = p.add_subparsers(dest="feff_command", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("compute", parents=[common], help="run FEFF10 for every inequivalent absorbing site")
    s.add_argument("--element", default="Ni", help="absorbing element (default Ni)")
    s.add_argument("--edge", default="K", help="absorption edge: K, L1, L2, L3, M1..M5, N1..N7 (default K)")
    s.add_argument("--where", help="SQL condition on the structures table, e.g. \"reduced_formula = 'NiO'\"")
    s.add_argument("--workers", type=int, default=1, help="local FEFF processes (default 1)")
    s.add_argument("--dask", metavar="ADDRESS", help="run the sites on this Dask scheduler instead")
    s.add_argument("--fms", type=float, help="full multiple scattering radius, Angstrom (default 4.0)")
    s.add_argument("--xanes", type=float, nargs=3, metavar=("KMAX", "KSTEP", "ESTEP"),
                   help="XANES card: k max (1/A), k step (1/A), energy step near the edge (eV); default 4.0 0.07 0.3")
    s.add_argument("--cluster-radius", type=float, help="radius of the ATOMS cluster, Angstrom (default 7.0)")
    s.add_argument("--stage-timeout", type=float, help="seconds per FEFF stage before the site fails")
    s.add_argument("--retry-failed", action="store_true", help="run sites whose last attempt failed again")
    s.add_argument("--limit", type=int, help="compute at most this many sites now")
    s.add_argument("--as-of", help="snapshot id or tag of the structures (default: latest)")
    s.add_argument("--quiet", action="store_true", help="no per-site progress lines")
    s.set_defaults(func=cmd_compute)

    s = sub.add_parser("recipe", help="write the structures of the shipped Ni K-edge set (pymatgen JSON)")
    s.add_argument("--out", required=True, help="folder for the structure files")
    s.add_argument("--notes", action="store_true", help="also write recipe_structures.json next to the folder")
    s.set_defaults(func=cmd_recipe)

    s = sub.add_parser("export", parents=[common], help="write the lake's computed spectra as a dataset file")
    s.add_argument("--out", required=True, help="dataset file (.json.gz)")
    s.add_argument("--structures", required=True, help="folder holding the ingested structure files")
    s.add_argument("--recipe", help="JSON file describing the recipe, stored in the dataset")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("load", parents=[common], help="load a computed-spectra dataset (no FEFF run)")
    s.add_argument("file", nargs="?", help="dataset file (default: the shipped Ni K-edge set)")
    s.set_defaults(func=cmd_load)

    s = sub.add_parser("transfer", parents=[common],
                       help="train on the computed spectra per featurizer, shift curves, predict the measured ones")
    s.add_argument("--measured", nargs="*", help="measured spectra files to ingest first (e.g. an XDI of Ni foil)")
    s.add_argument("--featurizers", nargs="*", help="feature kinds (default: all six)")
    s.add_argument("--shift-ev", type=float, help="energy shift of the computed spectra, eV (default -5)")
    s.add_argument("--n-estimators", type=int, default=200, help="trees per random forest (default 200)")
    s.add_argument("--png", help="write the shift-robustness curves to this PNG")
    s.set_defaults(func=cmd_transfer)

    s = sub.add_parser("list", parents=[common], help="computed spectra with their labels")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.set_defaults(func=cmd_list)
