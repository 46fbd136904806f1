"""``matlake scattering simulate | classify``: simulated speckle data sets and the density classifier.

- ``matlake scattering simulate SPEC.toml [--force] [--examples-png FILE]`` commits every ``[[dataset]]`` of the spec
  (:func:`~matlake.models.scattering.simulate_lake.simulate_into`); a data set already
  simulated with the same parameters is skipped.  Spec::

      length_unit_m = 1e-8              # one box unit in m (q calibration); optional
      [defaults]                        # SpeckleSpec fields shared by every data set
      number_densities = [0.008, 0.016, 0.024, 0.032]   # disks per box unit^2, one class each
      n_grid = 64
      radius = 2.0
      counts = 1e5                      # "none" for noiseless patterns
      [[dataset]]
      name = "train"
      n_per_class = 100
      seed = 1
      [[dataset]]
      name = "test-poly"
      polydispersity = 0.2
      seed = 3

- ``matlake scattering classify train [--dataset train] [--param epochs=20 ...] [--as-of S]`` trains the CNN
  (:func:`~matlake.models.scattering.classify_lake.train_classifier`);
- ``matlake scattering classify evaluate MODEL --condition mono=test-mono --condition poly=test-poly
  [--reference mono] [--png-dir DIR] [--force]`` commits ``speckle_evaluations`` rows.

Heavy imports happen inside the commands: every ``matlake`` invocation imports this module.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SPEC_KEYS = ("number_densities", "n_per_class", "n_grid", "box", "radius", "polydispersity", "counts",
             "probe_sigma", "beam_stop_radius", "supersample", "periodic", "method", "mc_sweeps", "seed")


def load_spec(path: str | Path) -> tuple[list[tuple[str, dict[str, Any]]], float | None]:
    """The (name, SpeckleSpec fields) of every data set of a spec file, and its ``length_unit_m``.
    A ``ValueError`` names the file, the key, what was expected and what was found."""
    import tomllib

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: expected a TOML speckle spec, found: {exc}") from None
    unknown = set(doc) - {"defaults", "dataset", "length_unit_m"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected defaults, dataset, "
                         "length_unit_m")
    defaults = doc.get("defaults", {})
    datasets = doc.get("dataset", [])
    if not isinstance(datasets, list) or not datasets:
        raise ValueError(f"{path}: field 'dataset': expected one or more [[dataset]] tables, found none")
    out = []
    for i, ds in enumerate(datasets):
        merged = {**defaults, **ds}
        name = merged.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: dataset {i}: field 'name': expected a non-empty string, found {name!r}")
        bad = set(merged) - set(SPEC_KEYS)
        if bad:
            raise ValueError(f"{path}: dataset {name!r}: unknown field(s) {sorted(bad)}; expected some of "
                             f"{', '.join(SPEC_KEYS)}")
        if isinstance(merged.get("counts"), str):
            if merged["counts"].lower() != "none":
                raise ValueError(f"{path}: dataset {name!r}: field 'counts': expected a number or \"none\", "
                                 f"found {merged['counts']!r}")
            merged["counts"] = None
        if isinstance(merged.get("probe_sigma"), str) and merged["probe_sigma"].lower() == "none":
            merged["probe_sigma"] = None
        out.append((name, merged))
    unit = doc.get("length_unit_m")
    if unit is not None and not (isinstance(unit, (int, float)) and unit > 0):
        raise ValueError(f"{path}: field 'length_unit_m': expected a positive number of metres, found {unit!r}")
    return out, unit


def cmd_simulate(args: argparse.Namespace) -> int:
    from matlake.models.scattering.simulate import SpeckleSpec
    from matlake.models.scattering.simulate_lake import DEFAULT_LENGTH_UNIT_M, simulate_into
    from matlake.platform.cli import CliError, _lake

    try:
        datasets, unit = load_spec(args.spec)
        specs = [(name, SpeckleSpec.from_dict(fields)) for name, fields in datasets]
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    lake = _lake(args)
    first = None
    for name, spec in specs:
        out = simulate_into(lake, spec, name, length_unit_m=unit or DEFAULT_LENGTH_UNIT_M, force=args.force)
        first = first or (out, spec)
        if out["skipped"]:
            print(f"{name}: already simulated by activity {out['activity_id']} (nothing new; --force adds versions)")
        else:
            print(f"{name}: snapshot {out['snapshot']} (activity {out['activity_id']}): {len(out['series'])} "
                  f"scattering_series (one per density class), {out['n_patterns']} simulated patterns")
    if args.examples_png and first:
        print(f"wrote {write_examples_png(lake, first[0]['series'], first[1], args.examples_png)}")
    return 0


def write_examples_png(lake: Any, series_ids: list[str], spec: Any, path: str, per_class: int = 3) -> str:
    """The first ``per_class`` frames of each class series, read back from the lake, as a PNG."""
    import numpy as np

    from matlake.models.scattering.plots import examples_png

    frames, labels = [], []
    for k, sid in enumerate(series_ids):
        f = lake.frames(sid, 0, per_class)
        frames.append(f)
        labels += [k] * len(f)
    row = lake.series(series_ids[0])
    mask = lake.chunked(row["mask_sha256"], row["mask_index_sha256"]).read()
    names = [f"n = {v:g}" for v in spec.number_densities]
    Path(path).write_bytes(examples_png(np.concatenate(frames), np.asarray(labels), mask, names, per_class))
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from matlake.models.scattering.classify_lake import train_classifier
    from matlake.platform.cli import _kv, _lake

    info = train_classifier(_lake(args), args.dataset, as_of=args.as_of, **_kv(args.param))
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.metrics.items()}
    print(f"trained {info.name} v{info.version} ({info.model_id}) on snapshot {info.snapshot_id}, "
          f"{info.n_train} series; {json.dumps(shown)}")
    return 0


def _conditions(items: list[str] | None) -> dict[str, str]:
    from matlake.platform.cli import CliError

    out: dict[str, str] = {}
    for it in items or []:
        cond, sep, dataset = it.partition("=")
        if not sep or not cond or not dataset:
            raise CliError(f"--condition {it!r}: expected NAME=DATASET, e.g. mono=test-mono")
        out[cond] = dataset
    if not out:
        raise CliError("give at least one --condition NAME=DATASET")
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from matlake.models.scattering.classify_lake import evaluate_classifier
    from matlake.platform.cli import _lake

    lake = _lake(args)
    out = evaluate_classifier(lake, args.model, _conditions(args.condition), reference=args.reference,
                              as_of=args.as_of, force=args.force)
    for r in out["rows"]:
        drop = "" if r.get("accuracy_drop") is None else f", drop {r['accuracy_drop']:+.3f} from {r['reference_condition']}"
        print(f"{r['condition']:<16} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  "
              f"chance {r['chance']:.3f}  n {r['n']}{drop}")
    if out["skipped"]:
        print(f"already evaluated by activity {out['activity_id']} (nothing committed; --force re-runs)")
    else:
        print(f"snapshot {out['snapshot']} (activity {out['activity_id']}): {len(out['rows'])} speckle_evaluations rows")
    if args.png_dir:
        d = Path(args.png_dir)
        d.mkdir(parents=True, exist_ok=True)
        for r in out["rows"]:
            p = d / f"confusion-{r['model_id']}-{r['condition']}.png"
            p.write_bytes(lake.objects.get(r["confusion_png_sha256"]))
            print(f"wrote {p}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``simulate`` and ``classify train|evaluate`` to ``matlake scattering``."""
    s = sub.add_parser("simulate", parents=[common],
                       help="commit simulated speckle data sets of disk systems (one series per density class)")
    s.add_argument("spec", help="TOML spec: [defaults] and [[dataset]] tables of SpeckleSpec fields")
    s.add_argument("--force", action="store_true", help="commit again even if a data set was simulated")
    s.add_argument("--examples-png", metavar="FILE", help="write example patterns of each class of the first data set")
    s.set_defaults(func=cmd_simulate)

    c = sub.add_parser("classify", help="speckle density classifier: train, evaluate")
    csub = c.add_subparsers(dest="classify_command", metavar="ACTION")
    csub.required = True
    s = csub.add_parser("train", parents=[common], help="train the density CNN on a simulated data set")
    s.add_argument("--dataset", default="train", help="simulated data set name (default train)")
    s.add_argument("--param", action="append", metavar="K=V",
                   help="training parameter: epochs, batch_size, lr, weight_decay, augment, seed, threads, device")
    s.add_argument("--as-of", help="snapshot id or tag of the training data (default: latest)")
    s.set_defaults(func=cmd_train)
    s = csub.add_parser("evaluate", parents=[common], help="evaluate a density classifier on test data sets")
    s.add_argument("model", help="model id or name")
    s.add_argument("--condition", action="append", metavar="NAME=DATASET", help="test condition and its data set")
    s.add_argument("--reference", default="mono", help="condition the accuracy drop is measured from (default mono)")
    s.add_argument("--png-dir", help="write the confusion matrix PNGs here")
    s.add_argument("--as-of", help="snapshot id or tag of the test data (default: latest)")
    s.add_argument("--force", action="store_true", help="commit again even if the same evaluation was run")
    s.set_defaults(func=cmd_evaluate)
