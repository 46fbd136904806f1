"""``matlake materials element-table | featurize | train | train-levels``: descriptors and models.

- ``matlake materials element-table [--a-site]`` commits the elemental property table
  (``element_property_tables``; nothing new when the same table is there);
- ``matlake materials featurize --dataset NAME [--kind defect|sites|composition] [--stats mean,std,range]``
  writes descriptor vectors to ``material_features``;
- ``matlake materials train --dataset NAME --target PROP --fidelity FID [--kind rf|gb|gp|mlp]
  [--featurizer materials-defect] [--group-by TAG] [--param K=V ...]`` trains one model version;
- ``matlake materials train-levels [--dataset dft_impurities] [--kind rf] [--fidelity GGA]
  [--group-by Impurity] [--no-predict]`` featurizes the defects and trains + predicts one model per
  transition level, printing CV RMSE/MAE against the mean predictor.

Predictions of a single model use the generic ``matlake predict MODEL``.  Heavy imports happen
inside the commands: every ``matlake`` invocation imports this module.
"""

from __future__ import annotations

import argparse

KINDS = ("rf", "gb", "gp", "mlp")


def cmd_element_table(args: argparse.Namespace) -> int:
    from matlake.models.materials.models_lake import commit_element_table
    from matlake.platform.cli import _lake

    out = commit_element_table(_lake(args), a_site=args.a_site)
    what = "already stored" if out["skipped"] else f"snapshot {out['snapshot']}"
    print(f"{out['table_name']} v{out['table_version']} sha256 {out['table_sha256']}: {out['rows']} values, {what}")
    return 0


def cmd_featurize(args: argparse.Namespace) -> int:
    from matlake.models.materials.models_lake import featurize_materials
    from matlake.platform.cli import _lake

    stats = [s for s in args.stats.split(",") if s]
    rep = featurize_materials(_lake(args), args.dataset, args.kind, as_of=args.as_of, force=args.force, stats=stats)
    print(f"materials-{args.kind}: {rep.n_subjects} subjects featurized, {rep.skipped} skipped (already done), "
          f"{len(rep.errors)} errors; snapshot {rep.snapshot}")
    for sid, msg in list(rep.errors.items())[:10]:
        print(f"  ERROR {sid}: {msg}")
    return 1 if rep.errors and not rep.n_subjects else 0


def cmd_train(args: argparse.Namespace) -> int:
    from matlake.models.materials.models_lake import train_property
    from matlake.platform.cli import _kv, _lake

    info = train_property(_lake(args), args.dataset, args.target, args.fidelity, args.kind, as_of=args.as_of,
                          featurizer=args.featurizer, group_by=args.group_by, cv_folds=args.cv_folds,
                          cv_seed=args.cv_seed, seed=args.seed, regressor=_kv(args.param))
    m = info.metrics
    print(f"{info.name} v{info.version} ({info.model_id}) on snapshot {info.snapshot_id}: n={info.n_train} "
          f"CV RMSE {m['cv_rmse']:.4g} MAE {m['cv_mae']:.4g} R2 {m['cv_r2']:.3f} | mean predictor RMSE "
          f"{m['cv_baseline_rmse']:.4g} MAE {m['cv_baseline_mae']:.4g} (folds sha256 {m['cv_fold_sha256'][:12]})")
    if args.group_by:
        print(f"  folds grouped by {args.group_by}: RMSE {m['cv_grouped_rmse']:.4g} MAE {m['cv_grouped_mae']:.4g} | "
              f"mean predictor RMSE {m['cv_grouped_baseline_rmse']:.4g}")
    return 0


def cmd_train_levels(args: argparse.Namespace) -> int:
    from matlake.models.materials.models_lake import train_levels
    from matlake.platform.cli import _kv, _lake

    rows = train_levels(_lake(args), args.dataset, args.kind, args.fidelity, group_by=args.group_by or None,
                        predict=not args.no_predict, as_of=args.as_of, regressor=_kv(args.param))
    print(f"{args.kind} on {args.dataset} ({args.fidelity}-trained, {args.fidelity}-evaluated), 5-fold CV, eV:")
    print(f"{'level':<16}{'n':>5}{'RMSE':>8}{'MAE':>8}{'R2':>7}{'mean RMSE':>11}{'mean MAE':>10}"
          + (f"{'grouped RMSE':>14}" if args.group_by else "") + "  model")
    for r in rows:
        print(f"{r['target']:<16}{r['n']:>5}{r['cv_rmse']:>8.3f}{r['cv_mae']:>8.3f}{r['cv_r2']:>7.2f}"
              f"{r['baseline_rmse']:>11.3f}{r['baseline_mae']:>10.3f}"
              + (f"{r['grouped_rmse']:>14.3f}" if args.group_by else "") + f"  {r['model_id']}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the descriptor and model subcommands under ``matlake materials``."""
    s = subparsers.add_parser("element-table", parents=[common], help="store the elemental property table")
    s.add_argument("--a-site", action="store_true", help="the A-site table (12-coordinate radii of A-site ions)")
    s.set_defaults(func=cmd_element_table)

    s = subparsers.add_parser("featurize", parents=[common], help="descriptor vectors of a dataset's subjects")
    s.add_argument("--dataset", required=True, help="dataset name (from its map file)")
    s.add_argument("--kind", choices=("defect", "sites", "composition"), default="defect")
    s.add_argument("--stats", default="mean", help="comma-separated of mean,std,range (sites, composition)")
    s.add_argument("--as-of", default=None, help="snapshot id or tag (default: latest)")
    s.add_argument("--force", action="store_true", help="re-run subjects already featurized")
    s.set_defaults(func=cmd_featurize)

    s = subparsers.add_parser("train", parents=[common], help="train a model of one property at one fidelity")
    s.add_argument("--dataset", required=True)
    s.add_argument("--target", required=True, help="property name, e.g. 'level(+1/0)'")
    s.add_argument("--fidelity", required=True, help="e.g. GGA, HSE, PBE")
    s.add_argument("--kind", choices=KINDS, default="rf")
    s.add_argument("--featurizer", default="materials-defect", help="material_features.featurizer to train on")
    s.add_argument("--group-by", default=None, help="a tag for grouped folds too (e.g. Impurity, AB)")
    s.add_argument("--cv-folds", type=int, default=5)
    s.add_argument("--cv-seed", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--param", action="append", metavar="K=V", help="regressor parameter (repeatable)")
    s.add_argument("--as-of", default=None)
    s.set_defaults(func=cmd_train)

    s = subparsers.add_parser("train-levels", parents=[common],
                              help="defect transition levels: featurize, train and predict one model per level")
    s.add_argument("--dataset", default="dft_impurities")
    s.add_argument("--kind", choices=KINDS, default="rf")
    s.add_argument("--fidelity", default="GGA")
    s.add_argument("--group-by", default="Impurity", help="tag for grouped folds ('' for none)")
    s.add_argument("--param", action="append", metavar="K=V", help="regressor parameter (repeatable)")
    s.add_argument("--no-predict", action="store_true", help="train only")
    s.add_argument("--as-of", default=None)
    s.set_defaults(func=cmd_train_levels)
