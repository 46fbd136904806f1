"""``matlake spectra fit-peaks | emitters | generate-emitters``: luminescence peak fits and emitter statistics.

- ``generate-emitters [--n 50] [--seed 0] [--noise 0.01] [--sample NAME]`` commits a seeded emitter set;
- ``fit-peaks [--where SQL] [--window LOW HIGH] [--models gaussian,lorentzian,voigt,pseudovoigt]
  [--png DIR] [--plot ID]`` fits every PL/CL spectrum selected and prints the chosen fit of each;
- ``emitters [--where SQL] [--name NAME]`` commits and prints the ensemble statistics.

Heavy imports (lmfit, matplotlib) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

LINE_SHAPES = ("gaussian", "lorentzian", "voigt", "pseudovoigt")  # matlake.models.spectra.luminescence.LINE_SHAPES


def _models(text: str) -> list[str]:
    models = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m.replace("-", "").replace("_", "") not in LINE_SHAPES]
    if bad or not models:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(LINE_SHAPES)}, "
                                         f"found {text!r}")
    return models


def _pm(value: Any, err: Any, spec: str) -> str:
    if value is None or value != value:
        return "-"
    if err is None or err != err:
        return format(value, spec)
    return f"{format(value, spec)} ± {format(err, spec)}"


def cmd_generate(args: argparse.Namespace) -> int:
    from matlake.models.spectra.luminescence_platform import generate_emitters
    from matlake.platform.cli import _lake

    rep = generate_emitters(_lake(args), args.n, args.seed, sample=args.sample, force=args.force, noise=args.noise,
                            center_mean_nm=args.center[0], center_sd_nm=args.center[1],
                            fwhm_mean_nm=args.fwhm[0], fwhm_sd_nm=args.fwhm[1])
    if rep.already:
        print(f"nothing new: this emitter set was generated before by activity {rep.activity_id} "
              f"({len(rep.spectrum_ids)} spectra; --force adds versions)")
    else:
        print(f"snapshot {rep.snapshot} (activity {rep.activity_id}): {len(rep.spectrum_ids)} PL spectra "
              f"(sample {args.sample!r}, seed {args.seed}), {rep.n_labels} planted labels")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import pandas as pd

    from matlake.models.spectra.luminescence_platform import fit_peaks, plot_fit
    from matlake.platform.cli import _lake, print_frame

    lake = _lake(args)
    report = fit_peaks(lake, where=args.where, models=args.models, window=args.window,
                       auto_window_fwhm=args.auto_window_fwhm, as_of=args.as_of, force=args.force,
                       progress=args.progress)
    for subject, msg in report.errors.items():
        print(f"FAILED {subject}: {msg}")
    if report.snapshot is None:
        if report.skipped:
            print(f"nothing new: {report.skipped} spectra already fitted by this fitter version with these options "
                  "(--force re-fits them)")
        else:
            print("no PL/CL spectra matched (nothing committed)")
    else:
        df = lake.sql("select f.subject_id, s.source_name, s.sample, f.model, f.center_nm, f.center_nm_stderr, "
                      "f.fwhm_nm, f.fwhm_nm_stderr, f.center_ev, f.fwhm_ev, f.reduced_chi_square, f.r_squared, "
                      "(select min(g.delta_bic) from pl_peak_fits g where g.subject_id = f.subject_id "
                      " and g.activity_id = f.activity_id and not g.chosen) as margin "
                      "from pl_peak_fits f join spectra s on s.record_id = f.subject_id "
                      "where f.activity_id = ? and f.chosen order by s.sample, s.source_locator, f.subject_id",
                      as_of=report.snapshot, params=[report.activity_id]).df()
        rows = [{
            "spectrum": f"{r.source_name or r.sample or ''} [{r.subject_id[:8]}]", "model": r.model,
            "centre / nm": _pm(r.center_nm, r.center_nm_stderr, ".3f"),
            "FWHM / nm": _pm(r.fwhm_nm, r.fwhm_nm_stderr, ".3f"),
            "centre / eV": f"{r.center_ev:.4f}", "FWHM / meV": f"{1000 * r.fwhm_ev:.1f}",
            "red. chi2": f"{r.reduced_chi_square:.2f}",
            "dBIC next": "-" if r.margin != r.margin else f"{r.margin:.1f}",
        } for r in df.itertuples()]
        print_frame(pd.DataFrame(rows), max_rows=args.max_rows)
        print(f"snapshot {report.snapshot} (activity {report.activity_id}): {report.n_subjects} spectra fitted, "
              f"{len(report.errors)} failed; {report.n_rows.get('pl_peak_fits', 0)} pl_peak_fits rows")
    if args.plot or args.png:
        targets = [args.plot] if args.plot else (
            [r[0] for r in lake.sql("select distinct subject_id from pl_peak_fits where activity_id = ? "
                                    "order by subject_id", params=[report.activity_id]).fetchall()]
            if report.activity_id else [])
        for ident in targets:
            print(f"wrote {plot_fit(lake, ident, args.png or '.', as_of=args.as_of if args.plot else None)}")
    return 1 if report.errors and args.strict else 0


def cmd_emitters(args: argparse.Namespace) -> int:
    from matlake.models.spectra.luminescence_platform import emitter_statistics
    from matlake.platform.cli import _lake

    rep = emitter_statistics(_lake(args), args.where, name=args.name, as_of=args.as_of, force=args.force)
    r = rep.row
    print(f"emitters: {r['name']}")
    print(f"  N              {r['n_emitters']}")
    print(f"  centre         {r['center_nm_mean']:.2f} ± {r['center_nm_sd']:.2f} nm   "
          f"({r['center_ev_mean']:.4f} ± {r['center_ev_sd']:.4f} eV)")
    print(f"  FWHM           {r['fwhm_nm_mean']:.2f} ± {r['fwhm_nm_sd']:.2f} nm   "
          f"({1000 * r['fwhm_ev_mean']:.1f} ± {1000 * r['fwhm_ev_sd']:.1f} meV)")
    print("  (± = sample SD over emitters; median fit error: centre "
          f"{r['center_nm_stderr_median']:.3g} nm, FWHM {r['fwhm_nm_stderr_median']:.3g} nm)")
    print(f"  models         {', '.join(f'{k} {v}' for k, v in json.loads(r['model_counts_json']).items())}")
    print(f"  selection      {r['selection_sql']}  @ snapshot {r['snapshot_id']}")
    if rep.already:
        print(f"nothing new: the same statistics were committed by activity {rep.activity_id} "
              f"(record {r['record_id']})")
    else:
        print(f"snapshot {rep.snapshot} (activity {rep.activity_id}): emitter_statistics record {r['record_id']}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``fit-peaks``, ``emitters`` and ``generate-emitters`` to ``matlake spectra``."""
    s = sub.add_parser("generate-emitters", parents=[common],
                       help="commit a seeded set of generated PL emitter spectra with planted centre/FWHM/shape")
    s.add_argument("--n", type=int, default=50, help="number of emitters (default 50)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--noise", type=float, default=0.01,
                   help="white-noise SD as a fraction of each line's height (default 0.01)")
    s.add_argument("--center", type=float, nargs=2, default=(590.7, 2.7), metavar=("MEAN", "SD"),
                   help="centre distribution in nm (default 590.7 2.7)")
    s.add_argument("--fwhm", type=float, nargs=2, default=(7.1, 1.7), metavar=("MEAN", "SD"),
                   help="FWHM distribution in nm, truncated below at 0.5 nm (default 7.1 1.7)")
    s.add_argument("--sample", default="generated hBN emitters", help="sample name of the spectra")
    s.add_argument("--force", action="store_true", help="commit again even if this set was generated before")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("fit-peaks", parents=[common],
                       help="fit one line + linear baseline (Gaussian/Lorentzian/Voigt/pseudo-Voigt, BIC) "
                            "to PL/CL spectra")
    s.add_argument("--where", help="SQL condition on subject_id, technique, sample, source_kind, source_name, code")
    s.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="fit window in nm (default: found around each spectrum's maximum)")
    s.add_argument("--models", type=_models, default=list(LINE_SHAPES),
                   help="comma-separated line shapes to try (default gaussian,lorentzian,voigt,pseudovoigt)")
    s.add_argument("--auto-window-fwhm", type=float, default=5.0,
                   help="automatic window: maximum +- this many estimated FWHM (default 5)")
    s.add_argument("--as-of", help="snapshot id or tag of the spectra (default: latest)")
    s.add_argument("--png", metavar="DIR", help="write a PNG (fit + residuals) per spectrum fitted, into DIR")
    s.add_argument("--plot", metavar="ID", help="write the PNG of this spectrum's fit only (into --png DIR or .)")
    s.add_argument("--max-rows", type=int, default=50, help="rows printed (default 50)")
    s.add_argument("--progress", action="store_true", help="progress bar")
    s.add_argument("--strict", action="store_true", help="exit 1 when any spectrum failed")
    s.add_argument("--force", action="store_true",
                   help="re-fit spectra already fitted by this fitter version with the same options")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("emitters", parents=[common],
                       help="ensemble statistics (N, mean ± SD of centre and FWHM in nm and eV) of chosen peak fits")
    s.add_argument("--where", help="SQL condition on the fit columns (model, center_nm, fwhm_nm, reduced_chi_square, "
                                   "...) and the spectrum's technique, sample, source_kind, source_name, code")
    s.add_argument("--name", help="name of the statistics record (default: the --where condition)")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--force", action="store_true", help="commit again even if nothing changed")
    s.set_defaults(func=cmd_emitters)
