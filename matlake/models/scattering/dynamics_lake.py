"""Platform side of the neural-ODE dynamics: simulated series in, model versions and evaluations out.

* :func:`simulate_dynamics_into` commits a simulated diffraction time series as a
  ``scattering_series`` row (``source_kind = 'simulated'``): frames, mask and the
  ground-truth real-space trajectory are chunked objects (the truth is named in
  ``metadata_json['ground_truth']``), every parameter and seed in ``generator_json``.
  The record id is a hash of the generator, so the same parameters are committed once.
* :func:`train` reads a series at a snapshot (``Lake.frames``), trains the network of
  :mod:`matlake.models.scattering.neural_ode` on its first ``n_train`` frames, and
  commits in one change: the model version (state dict as safetensors, dataset version =
  view SQL + snapshot), the fitted and extrapolated trajectories and the
  error-vs-horizon PNG as objects, and one ``dynamics_evaluations`` row per horizon.
* :func:`extrapolate` rolls a stored model beyond the end of its series;
  :func:`plot` redraws the PNG from the evaluation rows.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.scattering import neural_ode as N
from matlake.models.scattering import systems as S

if TYPE_CHECKING:
    from matlake.platform.lake import Lake

__all__ = ["simulate_dynamics_into", "train", "extrapolate", "plot", "series_id_for", "SIMULATOR", "TRAINER"]

SIMULATOR = "scattering-dynamics-simulate"
TRAINER = "scattering-node"
ASSUMPTIONS = ("initial state of every training sub-trajectory and of the extrapolation taken from the "
               "simulator's ground truth (intensities do not fix the real-space phase); dynamics learned "
               "from diffraction frames only")


def _generator(system: S.KuramotoParams | S.GrayScottParams, scatter: S.ScatterParams) -> dict[str, Any]:
    from matlake.models.scattering.forward import FORWARD_VERSION

    return {"generator": "matlake.models.scattering.systems", "version": S.SYSTEMS_VERSION,
            "forward_version": FORWARD_VERSION, "system": system.as_dict(), "scatter": scatter.as_dict()}


def series_id_for(system: S.KuramotoParams | S.GrayScottParams, scatter: S.ScatterParams) -> str:
    """Record id of the simulated series of these parameters (a hash of the generator JSON)."""
    text = json.dumps(_generator(system, scatter), sort_keys=True)
    return f"dyn-{system.system}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _exists(lake: "Lake", table: str, record_id: str) -> bool:
    rows = lake.sql(f"select record_id from {table} where record_id = ?", params=[record_id]).fetchall()
    return bool(rows)


def simulate_dynamics_into(lake: "Lake", system: S.KuramotoParams | S.GrayScottParams,
                           scatter: S.ScatterParams | None = None) -> tuple[str, bool]:
    """Simulate ``system``, diffract it, commit the series; (series_id, created).

    ``created`` is False when a series with the same parameters is already in the lake
    (nothing is written then)."""
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities

    scatter = scatter or S.ScatterParams()
    rid = series_id_for(system, scatter)
    if _exists(lake, "scattering_series", rid):
        return rid, False
    traj = S.simulate(system)
    frames, mask = S.diffraction(S.density(system, traj.states), scatter)
    n, h, w = frames.shape
    f_ref = lake.put_chunked(frames.astype(np.float32), chunks=(1, h, w))
    m_ref = lake.put_chunked(mask.astype(np.uint8))
    truth = traj.states.astype(np.float64)
    t_ref = lake.put_chunked(truth, chunks=(1,) + truth.shape[1:])
    extras = {}
    objects = [ObjectSpec.stored(f_ref, "application/vnd.matlake.chunked", f"{rid}-frames"),
               ObjectSpec.stored(m_ref, "application/vnd.matlake.chunked", f"{rid}-mask"),
               ObjectSpec.stored(t_ref, "application/vnd.matlake.chunked", f"{rid}-truth")]
    for name, arr in traj.extras.items():
        ref = lake.put_chunked(np.asarray(arr, dtype=np.float64))
        extras[name] = {"sha256": ref.sha256, "index_sha256": ref.index_sha256, "shape": list(np.shape(arr))}
        objects.append(ObjectSpec.stored(ref, "application/vnd.matlake.chunked", f"{rid}-{name}"))
    quantity = "theta (rad)" if isinstance(system, S.KuramotoParams) else "(u, v) concentrations"
    generator = _generator(system, scatter)
    row = {
        "record_id": rid, "source_kind": "simulated", "system": system.system, "n_frames": n, "height": h,
        "width": w, "dtype": "float32", "beam_center_x": float(w // 2), "beam_center_y": float(h // 2),
        "times": [float(t) for t in traj.times], "frames_sha256": f_ref.sha256,
        "frames_index_sha256": f_ref.index_sha256, "mask_sha256": m_ref.sha256, "mask_index_sha256": m_ref.index_sha256,
        "total_counts_mean": float(frames.sum(axis=(1, 2)).mean()),
        "generator_json": json.dumps(generator, sort_keys=True),
        "label_json": json.dumps({"system": system.system}),
        "metadata_json": json.dumps({
            "ground_truth": {"sha256": t_ref.sha256, "index_sha256": t_ref.index_sha256,
                             "shape": list(truth.shape), "dtype": "float64", "quantity": quantity},
            "extras": extras,
            "note": "lattice units: no detector calibration (pixel size, distance, wavelength are null); "
                    "frame q = 2 pi k / (L * oversample) per lattice spacing"}, sort_keys=True),
        "file_format": "generated", "source_name": f"{SIMULATOR} {system.system}",
    }
    spec = ActivitySpec(SIMULATOR, S.SYSTEMS_VERSION, generator,
                        generated_entities=[("object", o.sha256) for o in objects],
                        rows={"scattering_series": [row]})
    commit_activities(lake, kind="simulate", message=f"simulate {system.system} diffraction series {rid}",
                      activities=[spec], objects=objects)
    return rid, True


def _load_series(lake: "Lake", series_id: str, as_of: int | None) -> dict[str, Any]:
    """Series row, parameters, frames, mask and ground truth (None when absent)."""
    row = lake.series(series_id, as_of=as_of)
    if not row.get("generator_json"):
        raise ValueError(f"{series_id}: generator_json: expected the parameters of a simulated dynamical "
                         "system, found none")
    gen = json.loads(row["generator_json"])
    system = S.params_from_dict(gen["system"])
    scatter = S.ScatterParams(**gen["scatter"])
    frames = np.asarray(lake.frames(series_id, as_of=as_of), dtype=float)
    with lake.chunked(row["mask_sha256"], row["mask_index_sha256"]) as arr:
        mask = np.asarray(arr.read(), dtype=float)
    meta = json.loads(row.get("metadata_json") or "{}")
    truth = None
    if "ground_truth" in meta:
        gt = meta["ground_truth"]
        with lake.chunked(gt["sha256"], gt["index_sha256"]) as arr:
            truth = np.asarray(arr.read(), dtype=float)
    return {"row": row, "system": system, "scatter": scatter, "frames": frames, "mask": mask, "truth": truth}


def train(lake: "Lake", series_id: str, params: N.NodeParams | None = None, as_of: int | str | None = None,
          device: str | None = None) -> dict[str, Any]:
    """Train on series ``series_id`` at snapshot ``as_of``, evaluate vs horizon and commit.
    ``device``: torch device (None: ``cuda`` when available, else ``cpu``; the one used is recorded).

    Returns {model_id, name, version, summary, evaluation_ids, snapshot}."""
    from sqlalchemy import func, select

    from matlake.models.base import artifact_format, torch_state_dumps
    from matlake.models.scattering.node_plots import figure_png, horizon_figure
    from matlake.platform import catalog as cat
    from matlake.platform.lake import ChangeSet, LakeError, new_id

    params = params or N.NodeParams()
    device = device or N.default_device()
    sid = lake.resolve_snapshot(as_of)
    started = cat.utcnow()
    data = _load_series(lake, series_id, sid)
    system, scatter, row = data["system"], data["scatter"], data["row"]
    if data["truth"] is None:
        raise ValueError(f"{series_id}: metadata_json.ground_truth: expected the true states (the initial "
                         "states of the roll-outs come from them), found none")
    net, hist = N.train_node(system, data["frames"], data["mask"], data["truth"], scatter, params, device=device)
    ev = N.evaluate(net, system, data["frames"], data["mask"], data["truth"], scatter, params)
    blob = torch_state_dumps(net)
    art_sha = lake.put_object(blob)
    chunk = (1,) + ev["fitted"].shape[1:]
    fit_ref = lake.put_chunked(ev["fitted"].astype(np.float64), chunks=chunk)
    ext_ref = lake.put_chunked(ev["extrapolated"].astype(np.float64), chunks=chunk)
    times = np.asarray(row["times"], dtype=float)
    n_train = params.n_train
    horizon_s = times[n_train - 1 + ev["horizon"]] - times[n_train - 1]
    real_kind = "1-cos" if isinstance(system, S.KuramotoParams) else "rms"
    real = None if ev["node_real"] is None else (ev["node_real"], ev["constant_real"], ev["linear_real"])
    fig = horizon_figure(ev["horizon"], ev["node_recip"], ev["constant_recip"], ev["linear_recip"], real=real,
                         real_label=f"real-space error ({real_kind})",
                         title=f"{system.system} {series_id}: trained on {n_train} frames")
    png = figure_png(fig)
    png_sha = lake.put_object(png)
    view_sql = f"select * from scattering_series where record_id = '{series_id}'"
    series_version = int(row["version"])
    summary = dict(ev["summary"], train_seconds=round(hist["train_seconds"], 3), final_loss=hist["loss"][-1])
    name = f"{TRAINER}-{system.system}"

    def attempt() -> dict[str, Any]:
        with lake.engine.connect() as conn:
            last = conn.execute(select(func.max(cat.ModelVersion.version))
                                .where(cat.ModelVersion.name == name)).scalar() or 0
        version = int(last) + 1
        model_id = new_id("model")
        cs = ChangeSet("train", f"train {name} v{version} on {series_id} at snapshot {sid}")
        act = cs.activity("train", TRAINER, N.NODE_VERSION, started_at=started, parameters={
            "view_sql": view_sql, "snapshot_id": sid, "series_id": series_id, "params": params.as_dict(),
            "module": "matlake.models.scattering.neural_ode", "artifact_format": artifact_format(blob),
            "device": device, "assumptions": ASSUMPTIONS})
        act.used("snapshot", str(sid))
        act.used("record", series_id, version=series_version, table="scattering_series")
        act.generated("model", model_id)
        act.generated("object", art_sha)
        # Evaluating is a second activity that used the model, so an evaluation row's
        # lineage runs through the model to the series and the simulation.
        ev_act = cs.activity("evaluate", TRAINER + "-evaluate", N.NODE_VERSION, started_at=started, parameters={
            "model_id": model_id, "series_id": series_id, "snapshot_id": sid, "n_train": n_train,
            "baselines": ["constant: last observed frame held", "linear: last two observed frames extrapolated"],
            "assumptions": ASSUMPTIONS})
        ev_act.used("model", model_id)
        ev_act.used("record", series_id, version=series_version, table="scattering_series")
        for sha in (fit_ref.sha256, ext_ref.sha256, png_sha):
            ev_act.generated("object", sha)
        cs.add_object(art_sha, len(blob), media_type="application/x-model", original_name=f"{name}-v{version}")
        cs.add_object(fit_ref.sha256, fit_ref.size, media_type="application/vnd.matlake.chunked",
                      original_name=f"{name}-v{version}-fitted")
        cs.add_object(ext_ref.sha256, ext_ref.size, media_type="application/vnd.matlake.chunked",
                      original_name=f"{name}-v{version}-extrapolated")
        cs.add_object(png_sha, len(png), media_type="image/png", original_name=f"{name}-v{version}-horizon.png")
        cs.add_model(model_id=model_id, name=name, version=version, module="matlake.models.scattering.neural_ode",
                     module_version=N.NODE_VERSION, target="dynamics", view_sql=view_sql, snapshot_id=sid,
                     metrics_json=json.dumps(summary, sort_keys=True),
                     params_json=json.dumps({"node": params.as_dict(), "system": system.as_dict(),
                                             "scatter": scatter.as_dict()}, sort_keys=True),
                     artifact_sha256=art_sha, n_train=n_train, activity_id=act.activity_id)
        rows = []
        for i, h in enumerate(ev["horizon"]):
            rows.append({
                "record_id": f"{model_id}-h{int(h):04d}", "model_id": model_id, "series_id": series_id,
                "series_version": series_version, "system": system.system, "n_train": n_train,
                "horizon_frames": int(h), "horizon_s": float(horizon_s[i]),
                "reciprocal_error": float(ev["node_recip"][i]),
                "constant_reciprocal_error": float(ev["constant_recip"][i]),
                "linear_reciprocal_error": float(ev["linear_recip"][i]),
                "real_error": None if real is None else float(real[0][i]),
                "constant_real_error": None if real is None else float(real[1][i]),
                "linear_real_error": None if real is None else float(real[2][i]),
                "real_error_kind": real_kind, "train_reciprocal_loss": summary["train_recip_mean"],
                "heldout_reciprocal_loss": summary["heldout_recip_mean"],
                "fitted_sha256": fit_ref.sha256, "fitted_index_sha256": fit_ref.index_sha256,
                "extrapolated_sha256": ext_ref.sha256, "extrapolated_index_sha256": ext_ref.index_sha256,
                "plot_sha256": png_sha, "assumptions": ASSUMPTIONS})
        cs.add_rows("dynamics_evaluations", rows, ev_act, version=1)
        snap = lake.commit(cs)
        return {"model_id": model_id, "name": name, "version": version, "summary": summary,
                "evaluation_ids": [r["record_id"] for r in rows], "snapshot": snap, "plot_sha256": png_sha}

    for _ in range(5):  # two trainers of one name may race for a version number
        try:
            return attempt()
        except Exception as exc:  # noqa: BLE001
            if "unique" not in str(exc).lower():
                raise
    raise LakeError(f"could not allocate a version for model {name}")


def _model(lake: "Lake", model_id: str) -> tuple[Any, dict[str, Any]]:
    """(network with stored weights, params_json) of a stored neural-ODE model version."""
    from sqlalchemy import select

    from matlake.models.base import torch_state_loads
    from matlake.platform import catalog as cat
    from matlake.platform.lake import LakeError

    with lake.engine.connect() as conn:
        t = cat.ModelVersion
        mv = conn.execute(select(t.module, t.params_json, t.artifact_sha256, t.view_sql)
                          .where(t.model_id == model_id)).first()
    if mv is None or mv.module != "matlake.models.scattering.neural_ode":
        raise LakeError(f"model {model_id!r}: expected a neural-ODE model version, found "
                        f"{'none' if mv is None else mv.module}")
    p = json.loads(mv.params_json)
    system = S.params_from_dict(p["system"])
    node = N.NodeParams(**p["node"])
    net = N.build_network(system, node.hidden)
    torch_state_loads(lake.objects.get(mv.artifact_sha256), net)
    return net, {"system": system, "node": node, "scatter": S.ScatterParams(**p["scatter"]), "view_sql": mv.view_sql}


def extrapolate(lake: "Lake", model_id: str, series_id: str, n_frames: int) -> dict[str, np.ndarray]:
    """Roll model ``model_id`` ``n_frames`` frames beyond the END of series ``series_id``,
    from its true final state; returns {'states', 'frames' (noise-free, scaled to the
    series' mean counts), 'mask'}."""
    from matlake.optional import require_torch

    torch = require_torch("neural-ODE extrapolation")
    net, info = _model(lake, model_id)
    data = _load_series(lake, series_id, None)
    if data["truth"] is None:
        raise ValueError(f"{series_id}: metadata_json.ground_truth: expected the true states, found none")
    system, node = info["system"], info["node"]
    dev = N.default_device()
    net = net.to(dev)
    y0 = N._state_tensor(system, data["truth"][-1:], torch.float32).to(dev)
    with torch.no_grad():
        ys = N.rollout(net, y0, n_frames + 1, node.substeps, node.method)[1:, 0]
        inten = N._forward(system, info["scatter"], ys,
                           torch.as_tensor(data["mask"], dtype=torch.float32, device=dev))
    inten = inten.cpu().numpy().astype(float)
    ys = ys.cpu()
    inten *= float(data["frames"].sum(axis=(1, 2)).mean()) / np.maximum(inten.sum(axis=(1, 2), keepdims=True), 1e-300)
    states = ys.numpy().astype(float)
    return {"states": states[:, 0] if isinstance(system, S.KuramotoParams) else states, "frames": inten,
            "mask": data["mask"]}


def plot(lake: "Lake", model_id: str, path: str) -> str:
    """Redraw the error-vs-horizon PNG of ``model_id`` from its ``dynamics_evaluations`` rows into ``path``."""
    from matlake.models.scattering.node_plots import horizon_figure

    df = lake.sql("select * from dynamics_evaluations where model_id = ? order by horizon_frames",
                  params=[model_id]).df()
    if df.empty:
        raise ValueError(f"model_id: expected a model with dynamics_evaluations rows, found none for {model_id!r}")
    real = None
    if df["real_error"].notna().all():
        real = (df["real_error"], df["constant_real_error"], df["linear_real_error"])
    fig = horizon_figure(df["horizon_frames"], df["reciprocal_error"], df["constant_reciprocal_error"],
                         df["linear_reciprocal_error"], real=real,
                         real_label=f"real-space error ({df['real_error_kind'].iloc[0]})",
                         title=f"{df['system'].iloc[0]} {df['series_id'].iloc[0]} model {model_id}")
    fig.savefig(path, dpi=110)
    return path


