"""``matlake campaign run | status | report | next``: screening campaigns.

- ``matlake campaign run SPEC.toml [--as-of SNAP] [--report DIR]`` runs a spec and commits its outputs;
- ``matlake campaign status [NAME]`` lists runs (candidates, passed, best candidate, models);
- ``matlake campaign report NAME|RUN_ID --out DIR`` writes the top table and plots, kept as objects;
- ``matlake campaign next NAME|RUN_ID --budget N [--csv FILE]`` proposes the next N calculations.

Heavy imports happen inside the commands: every ``matlake`` invocation imports this module.
"""

from __future__ import annotations

import argparse
import json


def cmd_run(args: argparse.Namespace) -> int:
    from matlake.models.materials.campaign_lake import report, run
    from matlake.platform.cli import _lake

    lake = _lake(args)
    out = run(lake, args.spec, as_of=args.as_of)
    c = out["counts"]
    retrained = f"; retrained {json.dumps(out['retrained'])}" if out["retrained"] else ""
    print(f"snapshot {out['snapshot']} ({out['run_id']}, read snapshot {out['snapshot_read']}): "
          f"{c['candidates']} candidates (closed-form count {c['closed_form']}, {c['excluded']} already in the lake), "
          f"{c['passed']} passed the filters, top {c['top_k']} ranked{retrained}")
    for table, digest in out["digests"].items():
        print(f"  {table:<11} sha256 {digest}")
    if args.report:
        rep = report(lake, out["run_id"], args.report)
        print(f"report: {len(rep['files'])} files in {rep['dir']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from matlake.models.materials.campaign_lake import status
    from matlake.platform.cli import _lake, print_frame

    df = status(_lake(args), args.name)
    if df.empty:
        print("no campaign runs" + (f" of {args.name!r}" if args.name else ""))
        return 0
    print_frame(df)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from matlake.models.materials.campaign_lake import report
    from matlake.platform.cli import _lake

    rep = report(_lake(args), args.name, args.out)
    print(f"report of {rep['run_id']}: {len(rep['files'])} files in {rep['dir']} (kept as objects)")
    for note in rep["notes"].values():
        print(f"  note: {note}")
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    from matlake.models.materials.campaign_lake import propose
    from matlake.platform.cli import _lake, print_frame

    out = propose(_lake(args), args.name, args.budget, csv=args.csv)
    print_frame(out["todo"][["rank", "formula", "candidate_key", "acquisition", "value", "mean", "std"]])
    where = f"; wrote {args.csv}" if args.csv else ""
    print(f"snapshot {out['snapshot']}: {len(out['todo'])} campaign_todo rows from {out['run_id']}{where}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake campaign`` and its subcommands."""
    p = subparsers.add_parser("campaign", help="screening campaigns: run, status, report, next")
    sub = p.add_subparsers(dest="campaign_command", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("run", parents=[common], help="enumerate, score, filter and rank a campaign spec (TOML)")
    s.add_argument("spec", help="campaign spec TOML file")
    s.add_argument("--as-of", help="snapshot id or tag to read models and existing compositions at (default: latest)")
    s.add_argument("--report", metavar="DIR", help="also write the report into DIR")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", parents=[common], help="runs of a campaign (all campaigns without a name)")
    s.add_argument("name", nargs="?", help="campaign name")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("report", parents=[common], help="top table and plots of a run, kept as objects")
    s.add_argument("name", help="campaign name (its latest run) or run_... id")
    s.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("next", parents=[common], help="propose the next calculations by EI or UCB ([active] of the spec)")
    s.add_argument("name", help="campaign name (its latest run) or run_... id")
    s.add_argument("--budget", type=int, required=True, help="number of calculations to propose")
    s.add_argument("--csv", help="also write the to-do list to this CSV file")
    s.set_defaults(func=cmd_next)
