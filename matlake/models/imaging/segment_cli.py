"""``matlake images train | predict``: U-net ensembles on (micrograph, mask) pairs.

- ``matlake images train (--spec FILE.toml | --ensemble EA|ER) [--encoders plain,resnet,mobilenet]
  [--encoder plain --members 3] [--seed S] [--set K=V ...] [--view-sql SQL] [--as-of SNAP] [--device cpu|cuda]``
  trains an ensemble (:func:`~matlake.models.imaging.segment_lake.train`); a spec file holds the
  fields of :class:`~matlake.models.imaging.ensemble.EnsembleSpec` (``kind``, ``members =
  [["plain", 0], ...]``, ``epochs``, ``tile``, ...);
- ``matlake images predict MODEL [--image ID ...] [--where SQL] [--tile N --overlap N --batch N]``
  segments micrographs and commits ``segmentation_predictions`` rows with their maps
  (:func:`~matlake.models.imaging.segment_lake.predict`).

Heavy imports happen inside the commands: every ``matlake`` invocation imports this module.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _spec(args: argparse.Namespace):
    from matlake.models.imaging.ensemble import EnsembleSpec
    from matlake.platform.cli import CliError, _kv

    extra: dict[str, Any] = _kv(args.set)
    try:
        if args.spec:
            import tomllib

            with open(args.spec, "rb") as fh:
                return EnsembleSpec.from_dict({**tomllib.load(fh), **extra})
        if args.ensemble == "EA":
            encoders = [e.strip() for e in (args.encoders or "plain,resnet,mobilenet").split(",") if e.strip()]
            return EnsembleSpec.ea(encoders, seed=args.seed, **extra)
        return EnsembleSpec.er(args.encoder, args.members, seed=args.seed, **extra)
    except (ValueError, TypeError, OSError) as exc:
        raise CliError(f"ensemble spec: {exc}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from matlake.models.imaging.segment_lake import train
    from matlake.platform.cli import _lake

    spec = _spec(args)
    info = train(_lake(args), spec, view_sql=args.view_sql, as_of=args.as_of, device=args.device)
    shown = {k: round(v, 4) for k, v in info.metrics.items()}
    print(f"trained {info.name} v{info.version} ({info.model_id}, {spec.kind}: "
          f"{', '.join(f'{e}/seed {s}' for e, s in spec.members)}) on snapshot {info.snapshot_id} with "
          f"{info.n_train} images on {info.params.get('trained_on', {}).get('device')}; {json.dumps(shown)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from matlake.models.imaging.segment_lake import predict
    from matlake.platform.cli import _lake, print_frame

    lake = _lake(args)
    out = predict(lake, args.model, image_ids=args.image or None, where=args.where, as_of=args.as_of,
                  tile=args.tile, overlap=args.overlap, batch_size=args.batch, device=args.device)
    if not out["n"]:
        print("no micrographs match")
        return 0
    print_frame(lake.sql("select image_id, class_names, class_fractions, uncertainty_score, mean_entropy "
                         "from segmentation_predictions where record_id in (select unnest(?))",
                         params=[out["record_ids"]]).df())
    print(f"snapshot {out['snapshot']}: {out['n']} segmentation_predictions rows "
          "with class, probability, entropy, mutual information and member variance maps")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``train`` and ``predict`` to ``matlake images``."""
    s = sub.add_parser("train", parents=[common], help="train a U-net ensemble (EA or ER) on micrograph/mask pairs")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--spec", help="TOML file with the EnsembleSpec fields (kind, members, epochs, tile, ...)")
    how.add_argument("--ensemble", choices=("EA", "ER"), help="EA: one member per encoder family; ER: seeds of one")
    s.add_argument("--encoders", help="EA: comma-separated families (default plain,resnet,mobilenet)")
    s.add_argument("--encoder", default="plain", help="ER: the encoder family (default plain)")
    s.add_argument("--members", type=int, default=3, help="ER: number of members (default 3)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first member; the others count up (recorded)")
    s.add_argument("--set", action="append", metavar="K=V", help="spec field, e.g. epochs=10 or tile=128")
    s.add_argument("--view-sql", help="training view (default: every pair of image_mask_pairs)")
    s.add_argument("--as-of", help="snapshot id or tag of the training data (default: latest)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", parents=[common],
                       help="segment micrographs: class, probability and uncertainty maps by sliding window")
    s.add_argument("model", help="model id or name[:version]")
    s.add_argument("--image", action="append", help="micrographs record id (repeatable)")
    s.add_argument("--where", help="SQL condition on the micrographs row, e.g. \"sample = 'ice-3'\"")
    s.add_argument("--as-of", help="snapshot id or tag of the images (default: latest)")
    s.add_argument("--tile", type=int, default=256, help="tile side in pixels (default 256)")
    s.add_argument("--overlap", type=int, default=64, help="overlap of neighbouring tiles in pixels (default 64)")
    s.add_argument("--batch", type=int, default=4, help="tiles per forward pass (default 4)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.set_defaults(func=cmd_predict)
