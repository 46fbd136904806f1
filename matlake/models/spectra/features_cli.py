"""``matlake spectra featurize | pca fit | similar``: feature vectors, PCA models, similarity search.

- ``matlake spectra featurize --feature KIND --grid NAME [--source processed|spectra] [--param K=V]
  [--where SQL] [--as-of S] [--force]`` writes one ``spectrum_features`` vector per spectrum
  (:func:`matlake.models.spectra.featurize.featurize_spectra`); ``--feature pca --model MODEL``
  writes PCA scores with a fitted model version;
- ``matlake spectra pca fit --feature cdf --grid NAME --n 10 [--where SQL] [--as-of S]`` trains a
  PCA on the stored vectors as a model version;
- ``matlake spectra similar ID [--k 10] [--feature cdf] [--metric cosine|l2] [--where SQL] [--as-of S]``
  prints the nearest spectra.

Heavy imports happen inside the commands: every ``matlake`` invocation registers them.
"""

from __future__ import annotations

import argparse

FEATURE_CHOICES = ("intensity", "derivative", "cdf", "gaussians", "cubic", "cwt")  # features.FEATURE_KINDS


def cmd_featurize(args: argparse.Namespace) -> int:
    from matlake.models.spectra import featurize as fz
    from matlake.platform.cli import CliError, _kv, _lake

    lake = _lake(args)
    if args.feature == "pca":
        if not args.model:
            raise CliError("--feature pca needs --model MODEL (a model_... id or a PCA model name, "
                           "e.g. pca-cdf-xanes-ni-k; see matlake spectra pca fit)")
        if args.param or args.grid or args.source != "processed":
            raise CliError("--feature pca takes its grid and input vectors from the model; "
                           "drop --grid, --param and --source")
        report = fz.featurize_pca(lake, args.model, where=args.where, as_of=args.as_of, force=args.force,
                                  progress=args.progress)
    else:
        if args.model:
            raise CliError(f"--model is for --feature pca, not {args.feature}")
        if not args.grid:
            raise CliError(f"--feature {args.feature} needs --grid NAME (e.g. xanes-ni-k; built-in grids and "
                           "spectral_grids records)")
        report = fz.featurize_spectra(lake, args.feature, args.grid, args.source, where=args.where,
                                      as_of=args.as_of, force=args.force, progress=args.progress,
                                      **_kv(args.param))
    for subject, msg in list(report.errors.items())[: args.max_errors]:
        print(f"FAILED {subject}: {msg}")
    if len(report.errors) > args.max_errors:
        print(f"... and {len(report.errors) - args.max_errors} more failures (see the activity's parameters)")
    if report.snapshot is None:
        if report.skipped:
            print(f"nothing new: {report.skipped} spectra already featurized ({args.feature}) by this version with "
                  "these parameters (--force re-runs them)")
        else:
            print("no spectra matched (nothing committed)")
        return 0
    print(f"snapshot {report.snapshot} (activity {report.activity_id}): {report.n_subjects} spectra featurized "
          f"({args.feature}), {len(report.errors)} failed, {report.skipped} already done")
    return 1 if report.errors and args.strict else 0


def cmd_pca_fit(args: argparse.Namespace) -> int:
    from matlake.models.spectra.featurize import fit_pca
    from matlake.platform.cli import _kv, _lake

    info = fit_pca(_lake(args), args.feature, args.grid, args.n, where=args.where, as_of=args.as_of,
                   feature_params=_kv(args.param))
    ratios = [info.metrics[f"explained_variance_ratio_{k + 1}"] for k in range(args.n)]
    print(f"model {info.model_id}: {info.name} v{info.version}, trained on {info.n_train} {args.feature} vectors "
          f"at snapshot {info.snapshot_id}")
    print("explained variance ratio: " + ", ".join(f"pc{k + 1} {r:.4f}" for k, r in enumerate(ratios))
          + f" (total {info.metrics['explained_variance_ratio_total']:.4f})")
    print(f"scores: matlake spectra featurize --feature pca --model {info.model_id}")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from matlake.models.spectra.featurize import similar
    from matlake.platform.cli import _lake, print_frame

    frame = similar(_lake(args), args.id, k=args.k, feature=args.feature, metric=args.metric, grid=args.grid,
                    model=args.model, where=args.where, as_of=args.as_of)
    a = frame.attrs
    print(f"nearest to spectrum {a['query_spectrum']} by {a['feature']} ({a['metric']} distance, "
          f"snapshot {a['snapshot']}):")
    if frame.empty:
        print("no other spectrum has a comparable vector")
        return 0
    shown = frame.drop(columns=["subject_id"]) if (frame["subject_id"] == frame["spectrum_id"]).all() else frame
    print_frame(shown, max_rows=args.k, wide=args.wide)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``featurize``, ``pca fit`` and ``similar`` to ``matlake spectra``."""
    s = sub.add_parser("featurize", parents=[common], help="feature vectors of spectra into spectrum_features")
    s.add_argument("--feature", required=True, choices=FEATURE_CHOICES + ("pca",),
                   help="kind of vector; pca needs --model")
    s.add_argument("--grid", help="named grid of the vectors (required, except with --feature pca)")
    s.add_argument("--source", default="processed", choices=("processed", "spectra"),
                   help="processed: spectra_processed rows on the grid (default); spectra: raw rows interpolated")
    s.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="parameter of the kind, e.g. window=5 (cubic), n_gaussians=20, negative=clip (cdf)")
    s.add_argument("--model", help="PCA model for --feature pca: model_... id, NAME or NAME:VERSION")
    s.add_argument("--where", help="SQL condition on subject_id, spectrum_id, technique, element, edge, sample, "
                                   "source_kind (processed and pca: also pipeline, intensity_quantity; "
                                   "pca: also subject_table)")
    s.add_argument("--as-of", help="snapshot id or tag of the input (default: latest)")
    s.add_argument("--force", action="store_true", help="re-run spectra already featurized this way (adds versions)")
    s.add_argument("--progress", action="store_true", help="progress bar")
    s.add_argument("--strict", action="store_true", help="exit 1 when any spectrum failed")
    s.add_argument("--max-errors", type=int, default=20, help="failures printed (default 20)")
    s.set_defaults(func=cmd_featurize)

    p = sub.add_parser("pca", help="PCA of stored feature vectors as model versions")
    psub = p.add_subparsers(dest="pca_command", metavar="ACTION")
    psub.required = True
    s = psub.add_parser("fit", parents=[common], help="fit a PCA on a snapshot's vectors (a model version)")
    s.add_argument("--feature", default="cdf", choices=FEATURE_CHOICES, help="vectors to fit on (default cdf)")
    s.add_argument("--grid", required=True, help="grid of the vectors")
    s.add_argument("--n", type=int, default=10, help="number of components (default 10)")
    s.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="parameters the vectors were made with, when not the defaults")
    s.add_argument("--where", help="SQL condition on spectrum_id, subject_table, technique, element, edge, sample, "
                                   "source_kind, pipeline, intensity_quantity")
    s.add_argument("--as-of", help="snapshot id or tag of the training data (default: latest)")
    s.set_defaults(func=cmd_pca_fit)

    s = sub.add_parser("similar", parents=[common], help="spectra nearest to one spectrum by feature vectors")
    s.add_argument("id", help="spectrum record id (or processed/feature id, or a unique prefix of 8+ characters)")
    s.add_argument("--k", type=int, default=10, help="how many (default 10)")
    s.add_argument("--feature", default="cdf", choices=FEATURE_CHOICES + ("pca",), help="vectors (default cdf)")
    s.add_argument("--metric", default="cosine", choices=("cosine", "l2"), help="distance (default cosine)")
    s.add_argument("--grid", help="grid of the vectors, when a spectrum has them on several")
    s.add_argument("--model", help="PCA model whose scores to compare (with --feature pca)")
    s.add_argument("--where", help="SQL condition on the candidates: spectrum_id, subject_id, subject_table, "
                                   "technique, element, edge, sample, source_kind, pipeline, intensity_quantity")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--wide", action="store_true", help="print whole cells")
    s.set_defaults(func=cmd_similar)
