"""``matlake eis ...``: analyse impedance spectra, plot them, inspect circuits.

- ``matlake eis analyze [--where SQL] [--circuit STR] [--weighting W] [--initial VALUES] [--as-of TAG]``
  runs :func:`matlake.models.eis.analysis.analyze` and prints one line per spectrum;
- ``matlake eis plot ID [--out DIR]`` writes Nyquist and Bode PNGs (data, latest fit, KK residuals);
- ``matlake eis circuit STR`` prints parameters, rational form, identifiability and R/C family.

Heavy imports (scipy, matplotlib) happen inside the commands: every ``matlake``
invocation imports this module to register the commands.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

WEIGHTING_CHOICES = ("unit", "modulus", "proportional")  # matlake.models.eis.fitting.WEIGHTINGS


def _initial(text: str | None) -> Any:
    """--initial: a JSON list/object, or comma-separated numbers."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--initial: expected a JSON list/object or comma-separated numbers, "
                             f"found {text!r}") from None
    if isinstance(value, (int, float)):
        value = [value]
    if not isinstance(value, (list, dict)) or not value:
        raise ValueError(f"--initial: expected a non-empty list or {{name: value}}, found {text!r}")
    return value


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def cmd_analyze(args: argparse.Namespace) -> int:
    import pandas as pd

    from matlake.models.eis.analysis import analyze
    from matlake.platform.cli import _lake, print_frame

    lake = _lake(args)
    options: dict[str, Any] = {"c": args.c, "max_m": args.max_m, "fit_type": args.fit_type,
                               "add_cap": args.add_cap, "kk_threshold": args.kk_threshold, "drt": args.drt,
                               "n_starts": args.n_starts}
    report = analyze(lake, where=args.where, circuit=args.circuit, weighting=args.weighting,
                     initial=_initial(args.initial), as_of=args.as_of, progress=args.progress,
                     force=args.force, **options)
    for subject, msg in report.errors.items():
        print(f"FAILED {subject}: {msg}")
    if report.snapshot is None:
        if report.skipped:
            print(f"nothing new: {report.skipped} spectra already analysed by this analyzer version with these "
                  "options (--force re-runs them)")
        else:
            print("no spectra matched (nothing committed)")
        return 0
    df = _summary(lake, report)
    rows = [{
        "spectrum": f"{r.source_name or ''} [{r.spectrum_id[:8]}]", "points": r.n_points, "M": r.m,
        "mu": _fmt(r.mu, ".4f"), "KK valid": r.valid,
        "inductive": f"{bool(r.inductive)} ({r.n_inductive_points})", "n_tau": r.n_time_constants,
        "CPE alpha": _fmt(r.cpe_alpha), "fit chi2": _fmt(r.chi_square) if args.circuit else "-",
    } for r in df.itertuples()]
    print_frame(pd.DataFrame(rows))
    counts = ", ".join(f"{t} {n}" for t, n in sorted(report.n_rows.items()))
    print(f"snapshot {report.snapshot} (activity {report.activity_id}): {report.n_subjects} spectra analysed, "
          f"{len(report.errors)} failed; rows: {counts}")
    return 1 if report.errors and args.strict else 0


def _summary(lake, report):
    """One row per spectrum analysed by the report's activity."""
    return lake.sql(
        "select i.record_id as spectrum_id, i.source_name, i.n_points, v.m, v.mu, v.valid, f.inductive, "
        "f.n_inductive_points, f.n_time_constants, f.cpe_alpha, ft.circuit, ft.chi_square "
        "from impedance i "
        "join eis_validity v on v.subject_id = i.record_id and v.activity_id = ? "
        "join eis_features f on f.subject_id = i.record_id and f.activity_id = ? "
        "left join (select * from eis_fits where activity_id = ?) ft on ft.subject_id = i.record_id "
        "order by i.source_name, i.record_id",
        as_of=report.snapshot, params=[report.activity_id] * 3,
    ).df()


def cmd_plot(args: argparse.Namespace) -> int:
    from matlake.models.eis.plots import plot_spectrum
    from matlake.platform.cli import _lake

    out = plot_spectrum(_lake(args), args.id, args.out, as_of=args.as_of, dpi=args.dpi)
    fit = f" with fit {out['circuit']} ({out['fit_id']})" if out["fit_id"] else " (no fit stored)"
    print(f"spectrum {out['spectrum_id']}{fit}")
    print(f"wrote {out['nyquist']}")
    print(f"wrote {out['bode']}")
    return 0


def cmd_circuit(args: argparse.Namespace) -> int:
    from matlake.models.eis.circuits import identifiability, parse_circuit

    c = parse_circuit(args.circuit)
    print(f"circuit   {c}")
    print(f"topology  {c.topology()}")
    print("parameters " + ", ".join(f"{n} [{u}]" for n, u in zip(c.param_names, c.param_units)))
    if c.is_rational:
        r = c.rational()
        dn, dd = r.degrees
        print(f"Z(s) = N(s)/D(s): deg N = {dn}, deg D = {dd}; "
              f"{len(r.numerator) + len(r.denominator) - 1} normalised coefficients")
        zn, zd = r.structural_zeros
        if zn or zd:
            print(f"  structurally zero powers of s: N {list(zn)}, D {list(zd)}")
        try:
            num, den = c.rational_symbolic()
            print(f"  N = {num}")
            print(f"  D = {den}")
        except ImportError:  # sympy is optional
            pass
    else:
        kinds = sorted({e.kind for e in c.elements} - {"R", "C", "L"})
        print(f"Z(s) is not rational (elements {', '.join(kinds)})")
    ident = identifiability(c)
    print(f"identifiability ({ident.method}): {ident.rank} of {ident.n_params} parameters identifiable")
    if ident.unidentifiable:
        print(f"  unidentifiable: {', '.join(ident.unidentifiable)}")
        for d in ident.null_directions:
            print("  invariant direction (log-parameters): "
                  + ", ".join(f"{k} {v:+.3g}" for k, v in d.items()))
    if {e.kind for e in c.elements} <= {"R", "C"}:
        from matlake.models.eis.enumeration import family_of

        try:
            fam = family_of(c)
        except ValueError as exc:
            print(f"R/C family: none ({exc})")
        else:
            rc = fam.rc
            print(f"R/C family: {len(fam)} circuits with the same spectra (series R: {rc.series_resistance}, "
                  f"series C: {rc.series_capacitance}, {rc.n_time_constants} time constants)")
            for m in fam.members[: args.max_members]:
                print(f"  {m}")
            if len(fam) > args.max_members:
                print(f"  ... ({len(fam) - args.max_members} more; --max-members N)")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``matlake eis`` and its subcommands."""
    p = subparsers.add_parser("eis", help="impedance spectra: analyze, plot, circuit")
    sub = p.add_subparsers(dest="eis_command", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("analyze", parents=[common],
                       help="lin-KK, features, DRT and an optional circuit fit for impedance spectra")
    s.add_argument("--where", help="SQL condition on subject_id, source_name, file_format, sample")
    s.add_argument("--circuit", help="circuit to fit, e.g. 'R0-p(R1,C1)-p(R2-Wo1,C2)'")
    s.add_argument("--weighting", default="unit", choices=WEIGHTING_CHOICES,
                   help="fit residual weighting (default unit, as impedance.py)")
    s.add_argument("--initial", help="initial values: JSON list/object or comma-separated (default: automatic)")
    s.add_argument("--as-of", help="snapshot id or tag of the spectra (default: latest)")
    s.add_argument("--c", type=float, default=0.85, help="lin-KK mu cut-off (default 0.85)")
    s.add_argument("--max-m", type=int, default=100, help="largest lin-KK M (default 100)")
    s.add_argument("--fit-type", default="complex", choices=("real", "imag", "complex"),
                   help="lin-KK fit (default complex)")
    s.add_argument("--no-add-cap", dest="add_cap", action="store_false",
                   help="lin-KK without a series capacitance")
    s.add_argument("--kk-threshold", type=float, default=0.01,
                   help="valid when the RMS relative KK residual is <= this (default 0.01)")
    s.add_argument("--no-drt", dest="drt", action="store_false", help="skip the DRT")
    s.add_argument("--n-starts", type=int, default=1, help="fit starts (default 1)")
    s.add_argument("--progress", action="store_true", help="progress bar")
    s.add_argument("--strict", action="store_true", help="exit 1 when any spectrum failed")
    s.add_argument("--force", action="store_true", help="re-analyse spectra already analysed by this analyzer version with the same options")
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("plot", parents=[common], help="Nyquist and Bode PNGs with the latest fit and KK residuals")
    s.add_argument("id", help="impedance record_id (or unique prefix) or source file name")
    s.add_argument("--out", default=".", help="output folder (default: current)")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--dpi", type=int, default=120)
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("circuit", parents=[common], help="rational form, identifiability and R/C family of a circuit")
    s.add_argument("circuit", help="e.g. 'R0-p(R1,C1)-p(R2,C2)'")
    s.add_argument("--max-members", type=int, default=20)
    s.set_defaults(func=cmd_circuit)
