"""``matlake scattering ptycho SERIES_ID``: recover the scan positions of an ingested ptychographic series.

The series needs its recorded positions and probe (ingest with ``--kind scattering --option positions=KEY
--option probe=KEY``).  The run starts from the recorded positions perturbed by ``--sigma`` px (seeded),
commits ``ptycho_runs`` + ``ptycho_positions`` and prints the RMSE before and after.  torch is imported
inside the command.
"""

from __future__ import annotations

import argparse


def cmd_ptycho(args: argparse.Namespace) -> int:
    from matlake.models.scattering import ptycho as pt
    from matlake.models.scattering.ptycho_lake import recover_series
    from matlake.platform.cli import _lake

    cfg = pt.PtychoConfig(iterations=args.iterations, seed=args.seed, device=args.device, probe_from=args.probe_from)
    rep = recover_series(_lake(args), args.series_id, sigma_px=args.sigma, seed=args.seed, config=cfg,
                         sanity_iterations=args.sanity, as_of=args.as_of, force=args.force)
    head = (f"nothing new: run {rep.run_id} was committed before by activity {rep.activity_id} (--force runs again)"
            if rep.already else f"snapshot {rep.snapshot} (activity {rep.activity_id}): run {rep.run_id} "
            f"in {rep.seconds:.1f} s")
    print(head)
    print(f"position RMSE vs recorded (mean difference removed): {rep.rmse_before_px:.3f} px at the start, "
          f"{rep.rmse_after_px:.3f} px recovered")
    if rep.sanity_loss_recorded is not None:
        print(f"sanity: object-only loss at the recorded positions {rep.sanity_loss_recorded:.4f}, "
              f"at the start {rep.sanity_loss_start:.4f}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``ptycho`` to ``matlake scattering``."""
    s = sub.add_parser("ptycho", parents=[common],
                       help="recover the scan positions of a ptychographic series (probe known), RMSE vs recorded")
    s.add_argument("series_id", help="scattering_series record id (with positions and probe objects)")
    s.add_argument("--sigma", type=float, default=3.0, help="perturbation of the start, px per axis (default 3)")
    s.add_argument("--seed", type=int, default=0, help="seed of the perturbation (default 0)")
    s.add_argument("--iterations", type=int, default=300, help="iterations (default 300)")
    s.add_argument("--sanity", type=int, default=60,
                   help="iterations of the object-only sanity reconstructions (0: skip; default 60)")
    s.add_argument("--probe-from", type=int, default=10,
                   help="refine the stored probe from this iteration on (-1: keep it fixed; default 10)")
    s.add_argument("--device", default=None, help="torch device (default: cuda when torch sees a GPU, else cpu)")
    s.add_argument("--as-of", help="snapshot id or tag of the series (default: latest)")
    s.add_argument("--force", action="store_true", help="run and commit again even if this run exists")
    s.set_defaults(func=cmd_ptycho)
