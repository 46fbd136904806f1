"""``matlake scattering dynamics simulate | train | extrapolate | plot``: neural-ODE dynamics.

- ``simulate kuramoto|gray_scott [--set NAME=VALUE ...] [--scatter NAME=VALUE ...]`` commits a
  simulated diffraction series (parameters of :mod:`matlake.models.scattering.systems`);
- ``train SERIES_ID [--set NAME=VALUE ...] [--device cpu|cuda]`` trains and evaluates a neural
  ODE (parameters of ``neural_ode.NodeParams``; on CUDA when torch sees a GPU, unless ``--device``)
  and prints the error vs horizon;
- ``extrapolate MODEL_ID SERIES_ID --frames N [--out FILE.npz]`` rolls a model beyond the series;
- ``plot MODEL_ID [--out FILE.png]`` writes the error-vs-horizon PNG.

Torch and the science modules are imported inside the commands.
"""

from __future__ import annotations

import argparse
from typing import Any


def _params(cls: Any, items: list[str] | None) -> Any:
    from matlake.platform.cli import CliError, _kv

    values = _kv(items)
    try:
        return cls(**values)
    except TypeError as exc:
        raise CliError(f"--set: {exc} (parameters of {cls.__name__}: "
                       f"{', '.join(k for k in cls.__dataclass_fields__ if k != 'system')})") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    from matlake.models.scattering import systems as S
    from matlake.models.scattering.dynamics_lake import simulate_dynamics_into
    from matlake.platform.cli import _lake

    cls = {"kuramoto": S.KuramotoParams, "gray_scott": S.GrayScottParams}[args.system]
    system = _params(cls, args.set)
    scatter = _params(S.ScatterParams, args.scatter)
    sid, created = simulate_dynamics_into(_lake(args), system, scatter)
    print(f"{'committed' if created else 'already in the lake (same parameters)'}: series {sid} "
          f"({system.n_frames} frames, {system.size}x{system.size} lattice)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from matlake.models.scattering import neural_ode as N
    from matlake.models.scattering.dynamics_lake import train
    from matlake.platform.cli import _lake, print_frame

    lake = _lake(args)
    out = train(lake, args.series_id, _params(N.NodeParams, args.set), as_of=args.as_of, device=args.device)
    s = out["summary"]
    print(f"model {out['model_id']} ({out['name']} v{out['version']}), snapshot {out['snapshot']}: "
          f"trained on {s['n_train']} frames in {s['train_seconds']:.1f} s; held-out reciprocal error "
          f"{s['heldout_recip_mean']:.4f} (constant {s['constant_recip_mean']:.4f}, linear {s['linear_recip_mean']:.4f})")
    df = lake.sql("select horizon_frames, horizon_s, reciprocal_error, constant_reciprocal_error, "
                  "linear_reciprocal_error, real_error, constant_real_error, linear_real_error "
                  "from dynamics_evaluations where model_id = ? order by horizon_frames",
                  params=[out["model_id"]]).df()
    print_frame(pd.DataFrame(df), max_rows=args.max_rows)
    return 0


def cmd_extrapolate(args: argparse.Namespace) -> int:
    import numpy as np

    from matlake.models.scattering.dynamics_lake import extrapolate
    from matlake.platform.cli import _lake

    out = extrapolate(_lake(args), args.model_id, args.series_id, args.frames)
    path = args.out or f"{args.model_id}-extrapolated.npz"
    np.savez_compressed(path, **out)
    print(f"{args.frames} frames beyond {args.series_id}: states {out['states'].shape}, "
          f"frames {out['frames'].shape} -> {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from matlake.models.scattering.dynamics_lake import plot
    from matlake.platform.cli import _lake

    print(plot(_lake(args), args.model_id, args.out or f"{args.model_id}-horizon.png"))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``dynamics simulate|train|extrapolate|plot`` to ``matlake scattering``."""
    p = sub.add_parser("dynamics", help="neural-ODE dynamics learned from diffraction time series")
    dsub = p.add_subparsers(dest="dynamics_command", metavar="SUBCOMMAND")
    dsub.required = True

    s = dsub.add_parser("simulate", parents=[common], help="commit a simulated Kuramoto / Gray-Scott diffraction series")
    s.add_argument("system", choices=("kuramoto", "gray_scott"))
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="system parameter, e.g. size=12 coupling=1.5 n_frames=60 seed=0 (repeatable)")
    s.add_argument("--scatter", action="append", metavar="NAME=VALUE",
                   help="detector parameter: oversample, probe_sigma, beamstop_radius, total_counts, noise_seed")
    s.set_defaults(func=cmd_simulate)

    s = dsub.add_parser("train", parents=[common], help="train a neural ODE on a series through the forward model")
    s.add_argument("series_id")
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="training parameter: n_train, hidden, sub_len, batch, iters, lr, substeps, seed")
    s.add_argument("--as-of", help="snapshot id or tag of the series (default: latest)")
    s.add_argument("--device", default=None, help="torch device (default: cuda when torch sees a GPU, else cpu)")
    s.add_argument("--max-rows", type=int, default=50, help="rows printed (default 50)")
    s.set_defaults(func=cmd_train)

    s = dsub.add_parser("extrapolate", parents=[common], help="roll a trained model beyond the end of a series")
    s.add_argument("model_id")
    s.add_argument("series_id")
    s.add_argument("--frames", type=int, default=10, help="frames to predict (default 10)")
    s.add_argument("--out", help="output .npz (default MODEL_ID-extrapolated.npz)")
    s.set_defaults(func=cmd_extrapolate)

    s = dsub.add_parser("plot", parents=[common], help="PNG of a model's extrapolation error vs horizon")
    s.add_argument("model_id")
    s.add_argument("--out", help="output PNG (default MODEL_ID-horizon.png)")
    s.set_defaults(func=cmd_plot)
