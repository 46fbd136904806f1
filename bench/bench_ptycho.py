"""Probe-trajectory demo at full length: scan-position recovery on the 64 measured siemens-star frames.

Starts from the recorded positions plus a zero-mean Gaussian perturbation (``--sigma`` px, ``--seed``),
runs :func:`matlake.models.scattering.ptycho.recover_positions` for ``--iterations`` and prints the RMSE
against the recorded positions before and after (mean difference removed), the losses, the sanity check
(object-only reconstruction at the recorded vs the perturbed positions) and the wall time.
``--from-recorded`` also runs from the recorded positions themselves (how far the method moves them:
the self-consistency of the recorded positions under this model).

Run: ``.venv/bin/python bench/bench_ptycho.py [--iterations 250] [--sigma 3] [--seed 0] [--device cpu] [--json]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, format_machine, machine_info  # noqa: E402

SUBSET = Path(__file__).resolve().parent.parent / "samples" / "imaging" / "siemens_star_ptycho_subset.npz"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--search-every", type=int, default=5)
    ap.add_argument("--probe-from", type=int, default=10, help="refine the probe from this iteration (-1: fixed)")
    ap.add_argument("--sigma", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sanity", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--from-recorded", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from matlake.models.scattering import ptycho as pt

    with np.load(SUBSET) as npz:
        data, probe = npz["data"], npz["probe"]
        recorded = npz["scan"][npz["source_frames"]].astype(np.float64)
    cfg = pt.PtychoConfig(iterations=args.iterations, warmup=args.warmup, search_every=args.search_every,
                          probe_from=args.probe_from, seed=args.seed, device=args.device)
    out: dict = {"config": cfg.as_dict(), "sigma_px": args.sigma}
    start = pt.perturb_positions(recorded, args.sigma, args.seed)
    t0 = time.perf_counter()
    res = pt.recover_positions(data, probe, start, cfg)
    out["seconds"] = time.perf_counter() - t0
    out["rmse_before_px"] = pt.position_rmse(start, recorded)
    out["rmse_after_px"] = pt.position_rmse(res.positions, recorded)
    out["loss_start"], out["loss_final"] = res.loss_history[0], res.loss_history[-1]
    if args.sanity:
        for key, where in (("sanity_loss_recorded", recorded), ("sanity_loss_start", start)):
            out[key] = pt.reconstruct_object(data, probe, where, args.sanity, device=args.device,
                                             probe_from=cfg.probe_from).loss_history[-1]
    if args.from_recorded:
        own = pt.recover_positions(data, probe, recorded, cfg)
        out["drift_from_recorded_px"] = pt.position_rmse(own.positions, recorded)
        out["rmse_after_vs_self_consistent_px"] = pt.position_rmse(res.positions, own.positions)
        out["loss_final_from_recorded"] = own.loss_history[-1]
    if args.json:
        emit_json({"machine": machine_info(), **out})
    else:
        print(format_machine(machine_info()))
        for k, v in out.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
