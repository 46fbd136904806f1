"""``matlake spectra normalize | process | grid add | grid list | plot``.

- ``normalize [--where SQL] [--grid NAME] [--e0 --step --pre1 --pre2 --norm1 --norm2 --nnorm --npre] [--flat]``:
  larch-like pre-edge normalisation of ``spectra`` rows into ``spectra_processed``;
- ``process --pipeline xanes-study --shift 120 [--fwhm 3] [--grid NAME] [--where SQL]`` (or
  ``--pipeline NAME --steps JSON`` for a pipeline of your own);
- ``grid add NAME --start E --stop E (--n N | --step dE)`` and ``grid list``;
- ``plot ID --png out.png``.

Science imports happen inside the commands (every ``matlake`` call registers these).
"""

from __future__ import annotations

import argparse
import math
from typing import Any


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def _report(args: argparse.Namespace, lake, report, pipeline_name: str) -> int:
    import pandas as pd

    from matlake.platform.cli import print_frame

    for subject, msg in report.errors.items():
        print(f"FAILED {subject}: {msg}")
    if report.snapshot is None:
        if report.skipped:
            print(f"nothing new: {report.skipped} spectra already processed by pipeline {pipeline_name} with these "
                  "parameters (--force re-runs them)")
        else:
            print("no spectra matched (nothing committed)")
        return 0
    df = lake.sql("select p.record_id, s.source_name, s.element, s.edge, p.grid_name, p.n_points, p.e0, p.edge_step, "
                  "p.intensity_quantity from spectra_processed p join spectra s on s.record_id = p.subject_id "
                  "where p.activity_id = ? order by s.source_name, p.record_id",
                  as_of=report.snapshot, params=[report.activity_id]).df()
    rows = [{"processed": r.record_id[:12], "spectrum": r.source_name or "-",
             "edge": " ".join(str(v) for v in (r.element, r.edge) if isinstance(v, str)) or "-",
             "grid": r.grid_name if isinstance(r.grid_name, str) else "-", "points": r.n_points,
             "E0/eV": _fmt(r.e0, ".2f"), "edge step": _fmt(r.edge_step), "intensity": r.intensity_quantity}
            for r in df.itertuples()]
    if rows:
        print_frame(pd.DataFrame(rows))
    print(f"snapshot {report.snapshot} (activity {report.activity_id}): {report.n_subjects} spectra processed "
          f"by {pipeline_name}, {len(report.errors)} failed, {report.skipped} unchanged")
    return 1 if report.errors and args.strict else 0


def cmd_normalize(args: argparse.Namespace) -> int:
    from matlake.models.spectra.processing import normalize_pipeline, process
    from matlake.platform.cli import _lake

    lake = _lake(args)
    pipeline = normalize_pipeline(grid=args.grid, e0=args.e0, step=args.edge_step, pre1=args.pre1, pre2=args.pre2,
                                  norm1=args.norm1, norm2=args.norm2, nnorm=args.nnorm, npre=args.npre,
                                  output="flat" if args.flat else None)
    report = process(lake, pipeline, where=args.where, as_of=args.as_of, force=args.force, progress=args.progress)
    return _report(args, lake, report, pipeline.name)


def cmd_process(args: argparse.Namespace) -> int:
    from matlake.models.spectra.processing import BUILTIN_PIPELINES, Pipeline, builtin_pipeline, process
    from matlake.platform.cli import CliError, _lake

    if args.steps:
        if args.pipeline in BUILTIN_PIPELINES:
            raise CliError(f"--pipeline {args.pipeline} is built in; name your --steps pipeline otherwise")
        pipeline = Pipeline.from_json(args.pipeline, args.steps)
        if args.grid or args.shift is not None:
            raise CliError("--grid and --shift apply to built-in pipelines; put them in --steps")
    elif args.pipeline == "xanes-study":
        if args.shift is None:
            raise CliError("--pipeline xanes-study: expected --shift DE (eV; the study used 120 for computed spectra)")
        pipeline = builtin_pipeline("xanes-study", shift_ev=args.shift, fwhm_ev=args.fwhm,
                                    grid=args.grid or "xanes-ni-k")
    elif args.pipeline == "normalize":
        pipeline = builtin_pipeline("normalize", grid=args.grid)
    else:
        raise CliError(f"--pipeline: expected one of {sorted(BUILTIN_PIPELINES)}, or a name with --steps JSON; "
                       f"found {args.pipeline!r}")
    lake = _lake(args)
    report = process(lake, pipeline, where=args.where, as_of=args.as_of, force=args.force, progress=args.progress)
    return _report(args, lake, report, pipeline.name)


def cmd_grid_add(args: argparse.Namespace) -> int:
    from matlake.models.spectra.processing import add_grid, grid_points
    from matlake.platform.cli import _lake

    points = grid_points(args.start, args.stop, n=args.n, step=args.step)
    out = add_grid(_lake(args), args.name, points, unit=args.unit, element=args.element, edge=args.edge,
                   description=args.description or "", replace=args.replace)
    if out["status"] == "unchanged":
        print(f"grid {args.name} unchanged ({out['n']} points; record {out['record_id']})")
    else:
        print(f"grid {args.name} {out['status']}: {out['n']} points {points[0]:.6g}-{points[-1]:.6g} {args.unit} "
              f"(record {out['record_id']}, snapshot {out['snapshot']}, activity {out['activity_id']})")
    return 0


def cmd_grid_list(args: argparse.Namespace) -> int:
    from matlake.models.spectra.processing import list_grids
    from matlake.platform.cli import _lake, print_frame

    df = list_grids(_lake(args), as_of=args.as_of)
    print_frame(df.drop(columns=["description"]) if not args.long else df, max_rows=1000)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from matlake.models.spectra.plots import plot_record
    from matlake.platform.cli import _lake

    out = plot_record(_lake(args), args.id, args.png, as_of=args.as_of, dpi=args.dpi)
    what = f"{out['table']} {out['record_id']}"
    norm = f" with normalisation {out['normalization_id']}" if out["normalization_id"] else ""
    print(f"{what}{norm}")
    print(f"wrote {out['png']}")
    return 0


def _common_run(s: argparse.ArgumentParser) -> None:
    s.add_argument("--where", help="SQL condition on the spectra: subject_id, technique, element, edge, source_kind, "
                                   "code, sample, source_name, file_format, parent_id, axis_unit, n_points, ...")
    s.add_argument("--as-of", help="snapshot id or tag of the spectra and grids (default: latest)")
    s.add_argument("--force", action="store_true",
                   help="re-process spectra already processed with the same pipeline and parameters (adds versions)")
    s.add_argument("--progress", action="store_true", help="progress bar")
    s.add_argument("--strict", action="store_true", help="exit 1 when any spectrum failed")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add normalize, process, grid and plot to ``matlake spectra``."""
    s = sub.add_parser("normalize", parents=[common],
                       help="pre-edge normalisation (xraylarch's pre_edge rules) into spectra_processed")
    _common_run(s)
    s.add_argument("--grid", help="also interpolate onto this named grid (see `matlake spectra grid list`)")
    s.add_argument("--e0", type=float, help="edge energy E0 in eV (default: maximum of the derivative)")
    s.add_argument("--edge-step", type=float, help="fixed edge step (default: post - pre-edge at E0)")
    s.add_argument("--pre1", type=float, help="pre-edge fit start, eV relative to E0 (default: 2nd point, to 5 eV)")
    s.add_argument("--pre2", type=float, help="pre-edge fit end, eV relative to E0 (default: pre1/2)")
    s.add_argument("--norm1", type=float, help="post-edge fit start, eV relative to E0 (default: min(25, norm2/15))")
    s.add_argument("--norm2", type=float, help="post-edge fit end, eV relative to E0 (default: last point)")
    s.add_argument("--nnorm", type=int, help="post-edge polynomial degree 0-5 (default: by range, 0-2)")
    s.add_argument("--npre", type=int, choices=(0, 1), help="pre-edge: 1 line (default), 0 constant")
    s.add_argument("--flat", action="store_true", help="store the flattened spectrum instead of the normalised one")
    s.set_defaults(func=cmd_normalize)

    s = sub.add_parser("process", parents=[common], help="run a processing pipeline (xanes-study, normalize, "
                                                         "or your own --steps) into spectra_processed")
    _common_run(s)
    s.add_argument("--pipeline", required=True, help="xanes-study, normalize, or the name of your --steps pipeline")
    s.add_argument("--shift", type=float, help="xanes-study: energy shift dE in eV added to the axis (study: 120)")
    s.add_argument("--fwhm", type=float, default=3.0, help="xanes-study: Gaussian FWHM in eV (default 3)")
    s.add_argument("--grid", help="grid to interpolate onto (xanes-study default: xanes-ni-k)")
    s.add_argument("--steps", help='your own pipeline as JSON, e.g. \'[{"step": "shift", "delta_ev": 5}, '
                                   '{"step": "broaden", "fwhm_ev": 1.5, "shape": "lorentzian"}, '
                                   '{"step": "max_normalize"}, {"step": "grid", "grid": "xanes-ni-k"}]\'')
    s.set_defaults(func=cmd_process)

    g = sub.add_parser("grid", help="named interpolation grids: add, list")
    gsub = g.add_subparsers(dest="grid_command", metavar="ACTION")
    gsub.required = True
    s = gsub.add_parser("add", parents=[common], help="define a grid (a spectral_grids record)")
    s.add_argument("name")
    s.add_argument("--start", type=float, required=True, help="first point (eV or nm)")
    s.add_argument("--stop", type=float, required=True, help="last point (eV or nm)")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--n", type=int, help="number of evenly spaced points, both ends included")
    how.add_argument("--step", type=float, help="spacing; stop included when it falls on a step")
    s.add_argument("--unit", default="eV", choices=("eV", "nm"))
    s.add_argument("--element", help="element the grid is meant for, e.g. Ni")
    s.add_argument("--edge", help="edge the grid is meant for, e.g. K")
    s.add_argument("--description", help="where the grid comes from")
    s.add_argument("--replace", action="store_true", help="give an existing user grid new points (a new version)")
    s.set_defaults(func=cmd_grid_add)
    s = gsub.add_parser("list", parents=[common], help="built-in and user grids")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--long", action="store_true", help="with descriptions")
    s.set_defaults(func=cmd_grid_list)

    s = sub.add_parser("plot", parents=[common], help="PNG of a spectrum with its normalisation, or of a processed "
                                                      "record over its raw spectrum")
    s.add_argument("id", help="spectra or spectra_processed record_id (or unique prefix), or a source file name")
    s.add_argument("--png", required=True, help="output PNG file")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--dpi", type=int, default=120)
    s.set_defaults(func=cmd_plot)
