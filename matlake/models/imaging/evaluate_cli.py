"""``matlake images generate | evaluate | plot``: generated melting movies, ensemble evaluations, figures.

- ``matlake images generate [--seed S] [--frames T] [--size H W] [--dose D] [--set NAME=VALUE ...]``
  commits a generated two-phase melting movie with ground-truth masks
  (:func:`~matlake.models.imaging.evaluate_lake.generate_movie_into`);
- ``matlake images evaluate (--images ID ... | --where SQL) [--model ID_OR_NAME ...] [--baseline SIGMAS ...]
  [--predictor package.module:Class --param K=V ...] [--name EVAL] [--out DIR]`` scores member
  predictors against the ground truth and commits ``segmentation_evaluations`` and
  ``phase_fractions`` rows and the PNG figures (:func:`~matlake.models.imaging.evaluate_lake.evaluate`);
- ``matlake images plot EVALUATION_ID ... --out DIR`` redraws the figures from the stored rows.

Heavy imports happen inside the commands: every ``matlake`` invocation imports this module.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_generate(args: argparse.Namespace) -> int:
    from matlake.models.imaging.evaluate_lake import generate_movie_into
    from matlake.platform.cli import _kv, _lake

    overrides: dict[str, Any] = dict(_kv(args.set))
    for key, value in (("seed", args.seed), ("n_frames", args.frames), ("dose", args.dose)):
        if value is not None:
            overrides[key] = value
    if args.size:
        overrides["height"], overrides["width"] = args.size
    out = generate_movie_into(_lake(args), overrides, force=args.force)
    p = out["parameters"]
    if out["skipped"]:
        print(f"nothing new: this movie (parameters {out['digest']}, seed {p['seed']}) was already generated "
              "(--force adds versions)")
    else:
        print(f"snapshot {out['snapshot']}: {p['n_frames']} frames {p['height']}x{p['width']} (seed {p['seed']}, "
              f"dose {p['dose']} e/px/frame) with ground-truth masks; generated data, not measurements")
    print(f"images: sample = 'generated-ice-movie-{out['digest']}' (first {out['image_ids'][0]})")
    return 0


def _models(args: argparse.Namespace) -> list[Any]:
    from matlake.models.imaging.evaluation import SmoothedThresholdEnsemble
    from matlake.platform.cli import _kv

    models: list[Any] = []
    for text in args.baseline or []:
        try:
            sigmas = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"--baseline: expected comma-separated smoothing widths in px, found {text!r}") from None
        models.append(SmoothedThresholdEnsemble(sigmas=sigmas, name=f"smoothed-threshold-{text}"))
    models.extend(args.model or [])  # stored model versions: loaded by evaluate() on the same lake
    if args.predictor:
        from matlake.platform.modeling import load_module

        models.append(load_module(args.predictor, _kv(args.param)))
    if not models:
        models.append(SmoothedThresholdEnsemble())
    return models


def cmd_evaluate(args: argparse.Namespace) -> int:
    from matlake.models.imaging.evaluate_lake import evaluate
    from matlake.platform.cli import _lake

    out = evaluate(_lake(args), _models(args), image_ids=args.images, where=args.where, as_of=args.as_of,
                   evaluation=args.name, phase=args.phase, n_bins=args.bins, error_threshold=args.error_threshold,
                   out_dir=args.out, force=args.force)
    if out["skipped"]:
        print(f"already evaluated by activity {out['activity_id']} (nothing committed; --force re-runs)")
        return 0
    keys = ("model_name", "n_members", "accuracy", "mean_iou", "ece", "brier", "nll", "quality_auroc", "aurc",
            "phase_fraction_mae", "evaluation_id")
    print("\t".join(keys))
    for s in out["summary"]:
        print("\t".join(f"{s[k]:.4f}" if isinstance(s[k], float) else str(s[k]) for k in keys))
    print(f"snapshot {out['snapshot']}: segmentation_evaluations and phase_fractions rows; figures "
          f"{json.dumps(out['figures'])}")
    for path in out["files"]:
        print(f"wrote {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from matlake.models.imaging.evaluate_lake import plot_evaluations
    from matlake.platform.cli import _lake

    for path in plot_evaluations(_lake(args), args.evaluation_ids, args.out, as_of=args.as_of):
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``generate``, ``evaluate`` and ``plot`` to ``matlake images``."""
    s = sub.add_parser("generate", parents=[common],
                       help="commit a generated two-phase melting movie (ice/water) with ground-truth masks")
    s.add_argument("--seed", type=int, help="random seed (recorded; default 0)")
    s.add_argument("--frames", type=int, help="number of frames (default 40)")
    s.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="frame size in px (default 128 128)")
    s.add_argument("--dose", type=float, help="electrons per pixel per frame (default 20)")
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="generator parameter, e.g. drift_x=0.5 (see matlake.models.imaging.generator)")
    s.add_argument("--force", action="store_true", help="commit again even if this movie was generated")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("evaluate", parents=[common],
                       help="accuracy, IoU, ECE, Brier, NLL, quality-flag AUROC and phase fractions of ensembles")
    s.add_argument("--images", nargs="+", metavar="ID", help="micrographs record ids")
    s.add_argument("--where", help="SQL condition on micrographs, e.g. \"sample = 'generated-ice-movie-…'\"")
    s.add_argument("--baseline", action="append", metavar="SIGMAS",
                   help="a smoothed-threshold ensemble with these smoothing widths (px), e.g. 1,2,3; repeatable")
    s.add_argument("--model", action="append", metavar="ID_OR_NAME",
                   help="a stored U-net ensemble (model id or name[:version]); repeatable")
    s.add_argument("--predictor", metavar="package.module:Class",
                   help="a member-predictor class (callable frames -> (M, C, b, H, W) probabilities)")
    s.add_argument("--param", action="append", metavar="K=V", help="parameter of --predictor")
    s.add_argument("--name", default="default", help="evaluation name (default 'default')")
    s.add_argument("--phase", default="ice", help="class whose area fraction is tracked (default ice)")
    s.add_argument("--bins", type=int, default=15, help="ECE bins (default 15)")
    s.add_argument("--error-threshold", type=float,
                   help="per-image error rate above which an image is bad (default: the median)")
    s.add_argument("--out", help="also write the PNG figures to this folder")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.add_argument("--force", action="store_true", help="commit again even if the same evaluation was run")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("plot", parents=[common], help="redraw evaluation figures from stored rows")
    s.add_argument("evaluation_ids", nargs="+", help="segmentation_evaluations record ids (overlaid)")
    s.add_argument("--out", required=True, help="folder for the PNG files")
    s.add_argument("--as-of", help="snapshot id or tag (default: latest)")
    s.set_defaults(func=cmd_plot)
