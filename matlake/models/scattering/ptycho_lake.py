"""Lake side of the probe-trajectory demo: read an ingested ptychographic series, recover its scan
positions (:mod:`matlake.models.scattering.ptycho`), commit ``ptycho_runs`` + ``ptycho_positions``.

The series must carry its recorded positions and probe as chunked objects named in ``metadata_json``
(ingest with ``--kind scattering --option positions=KEY --option probe=KEY``).  The run starts from the
recorded positions plus a zero-mean Gaussian perturbation (``sigma_px``, ``seed``) and is scored against
the recorded positions (RMSE after removing the mean difference, the translation gauge).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.base import derived_record_id
from matlake.models.scattering import ptycho as pt

if TYPE_CHECKING:
    from matlake.platform.lake import Lake


@dataclass
class PtychoReport:
    snapshot: int | None            # None: the same run was committed before
    activity_id: str
    run_id: str
    rmse_before_px: float
    rmse_after_px: float
    sanity_loss_recorded: float | None
    sanity_loss_start: float | None
    already: bool = False
    seconds: float = 0.0


def series_arrays(lake: "Lake", series_id: str, as_of: int | str | None = None) -> dict[str, Any]:
    """Frames, recorded positions and probe of a series (ValueError naming what is missing)."""
    row = lake.series(series_id, as_of)
    meta = json.loads(row.get("metadata_json") or "{}")
    missing = [k for k in ("positions", "probe") if k not in meta]
    if missing:
        raise ValueError(f"series {series_id} has no {' and no '.join(missing)} object: ingest it with --kind "
                         "scattering --option positions=KEY --option probe=KEY")
    pos_ref, probe_ref = meta["positions"], meta["probe"]
    if pos_ref.get("unit", "px") != "px":
        raise ValueError(f"series {series_id}: positions in {pos_ref['unit']!r}; the recovery needs probe pixels")
    positions = lake.chunked(pos_ref["sha256"], pos_ref["index_sha256"]).read().astype(np.float64)
    probe = lake.chunked(probe_ref["sha256"], probe_ref["index_sha256"]).read()
    frames = lake.frames(series_id, as_of=as_of)
    return {"row": row, "frames": frames, "positions": positions, "probe": probe}


def recover_series(lake: "Lake", series_id: str, *, sigma_px: float = 3.0, seed: int = 0,
                   config: pt.PtychoConfig | None = None, sanity_iterations: int = 60, as_of: int | str | None = None,
                   force: bool = False) -> PtychoReport:
    """Recover the scan positions of ``series_id`` from a perturbed start and commit the run.

    ``sanity_iterations`` > 0 also reconstructs the object at the recorded and at the starting positions
    (positions fixed) and records both losses: the recorded ones should give the lower loss.
    The same call again commits nothing (returns the earlier activity) unless ``force``."""
    from matlake.platform import catalog as cat
    from matlake.platform.derivation import commit_derived, find_same_run

    cfg = config or pt.PtychoConfig(seed=seed)
    cfg.seed = seed
    got = series_arrays(lake, series_id, as_of)
    row = got["row"]
    used = {("scattering_series", series_id): int(row["version"])}
    params = {"series_id": series_id, "sigma_px": float(sigma_px), "seed": int(seed),
              "sanity_iterations": int(sanity_iterations), "config": cfg.as_dict()}
    run_id = derived_record_id(pt.NAME, series_id, json.dumps(params, sort_keys=True))
    if not force:
        done = find_same_run(lake, "analyze", pt.NAME, pt.VERSION, params, used)
        if done:
            prior = lake.sql("select * from ptycho_runs where activity_id = ?", params=[done]).arrow().to_pylist()
            if prior:
                p = prior[0]
                return PtychoReport(None, done, p["record_id"], p["rmse_before_px"], p["rmse_after_px"],
                                    p["sanity_loss_recorded"], p["sanity_loss_start"], already=True)
    started = cat.utcnow()
    t0 = time.perf_counter()
    recorded = got["positions"]
    start = pt.perturb_positions(recorded, sigma_px, seed)
    result = pt.recover_positions(got["frames"], got["probe"], start, cfg)
    sanity_rec = sanity_start = None
    if sanity_iterations > 0:
        sanity_rec = pt.reconstruct_object(got["frames"], got["probe"], recorded, sanity_iterations,
                                           margin=cfg.margin, device=cfg.device,
                                           probe_from=cfg.probe_from).loss_history[-1]
        sanity_start = pt.reconstruct_object(got["frames"], got["probe"], start, sanity_iterations,
                                             margin=cfg.margin, device=cfg.device,
                                             probe_from=cfg.probe_from).loss_history[-1]
    before = pt.position_rmse(start, recorded)
    after = pt.position_rmse(result.positions, recorded)

    def errors(found: np.ndarray) -> np.ndarray:
        e = found - recorded
        e = e - e.mean(axis=0)
        return np.sqrt((e ** 2).sum(axis=1))

    err_after, err_before = errors(result.positions), errors(start)
    frames = [{
        "record_id": derived_record_id(pt.NAME, run_id, f"frame:{j}"), "run_id": run_id, "series_id": series_id,
        "frame_index": j,
        "recovered_x": float(result.positions[j, 1]), "recovered_y": float(result.positions[j, 0]),
        "recorded_x": float(recorded[j, 1]), "recorded_y": float(recorded[j, 0]),
        "start_x": float(start[j, 1]), "start_y": float(start[j, 0]),
        "error_px": float(err_after[j]), "start_error_px": float(err_before[j]),
    } for j in range(len(recorded))]
    summary = {
        "record_id": run_id, "series_id": series_id, "series_version": int(row["version"]), "method": pt.NAME,
        "method_version": pt.VERSION, "n_frames": int(len(recorded)),
        "start": "recorded positions + zero-mean gaussian perturbation", "perturbation_px": float(sigma_px),
        "seed": int(seed), "iterations": int(cfg.iterations), "rmse_before_px": before, "rmse_after_px": after,
        "loss_start": float(result.loss_history[0]), "loss_final": float(result.loss_history[-1]),
        "sanity_loss_recorded": sanity_rec, "sanity_loss_start": sanity_start,
        "assumptions_json": json.dumps(pt.ASSUMPTIONS, sort_keys=True),
        "config_json": json.dumps(params, sort_keys=True),
    }
    sid, act = commit_derived(lake, kind="analyze", name=pt.NAME, version=pt.VERSION, parameters=params, used=used,
                              rows={"ptycho_runs": [summary], "ptycho_positions": frames}, started_at=started,
                              message=f"{pt.NAME}: series {series_id}, RMSE {before:.2f} -> {after:.2f} px")
    return PtychoReport(sid, act, run_id, before, after, sanity_rec, sanity_start, seconds=time.perf_counter() - t0)
