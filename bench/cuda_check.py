"""Do the torch models train and infer on this machine's device?  A few steps each, loss before and after.

Checks (each: build seeded, loss before training, train a few steps on the device, infer
on the device, loss after; it passes when the network's weights sat on the requested
device, both losses are finite and the loss went down):

* ``speckle``: the speckle density CNN (:mod:`matlake.models.scattering.classifier`) on simulated
  disk patterns (2 densities); loss = cross-entropy over the training patterns;
* ``node``: the Kuramoto neural ODE through the forward model
  (:mod:`matlake.models.scattering.neural_ode`); loss = mean reciprocal-space error of the
  fitted trajectory over the training window (``evaluate``'s ``train_recip_mean``);
* ``ptycho``: the probe-trajectory recovery (:mod:`matlake.models.scattering.ptycho`), if importable,
  on the first measured Siemens-star frames (no network: object and positions are iterated);
  loss = amplitude loss of the first and the last iteration;
* ``unet``: the imaging U-net ensemble (:mod:`matlake.models.imaging.ensemble`), if importable,
  on a synthetic disk image; loss = pixel cross-entropy of the ensemble's mean probabilities;
* ``spectra-mlp`` / ``spectra-cnn``: the spectra deep ensembles
  (:mod:`matlake.models.spectra.models`) on synthetic peak spectra whose target is the peak
  position; loss = mean squared error of the ensemble mean (target units^2).

The device defaults to ``cuda`` when torch sees a GPU (``--device cpu`` forces the CPU;
``--device cuda`` fails when there is no GPU).  Prints one line per check and exits 1 when
any check fails, 0 otherwise.  ``--tiny`` shrinks every size (the CPU test uses it).

Run: ``.venv/bin/python bench/cuda_check.py [--device cpu|cuda] [--steps N] [--tiny] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _on(net: Any, device: str) -> bool:
    """Whether every parameter of ``net`` sits on a device of type ``device``."""
    return all(p.device.type == device for p in net.parameters())


def check_speckle(device: str, steps: int, tiny: bool) -> dict[str, Any]:
    import torch

    from matlake.models.scattering import classifier as C
    from matlake.models.scattering.simulate import SpeckleSpec, build_dataset

    n = 32 if tiny else 64
    spec = SpeckleSpec(number_densities=(0.008, 0.032), n_per_class=8 if tiny else 32, n_grid=n, box=float(n),
                       supersample=2, seed=1)
    ds = build_dataset(spec)
    x = torch.from_numpy(C._inputs(ds.patterns, ds.mask)).to(device)
    y = torch.from_numpy(ds.labels.astype(np.int64)).to(device)

    def loss(net: Any) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(net(x), y))

    seed = 0
    torch.manual_seed(seed)  # the same initial weights train_cnn starts from
    before = loss(C.build_network(2, n).to(device))
    batch = 8
    epochs = max(1, math.ceil(steps * batch / len(y)))
    res = C.train_cnn(ds.patterns, ds.labels, ds.mask, 2,
                      C.TrainConfig(epochs=epochs, batch_size=batch, lr=3e-3, augment=False, seed=seed), device)
    pred, _ = C.predict_cnn(res.network, ds.patterns, ds.mask)
    return {"loss_before": before, "loss_after": loss(res.network), "on_device": _on(res.network, device),
            "detail": f"{len(y)} patterns {n}x{n}, {epochs} epochs of batch {batch}, "
                      f"train accuracy {float((pred == ds.labels).mean()):.2f}"}


def check_node(device: str, steps: int, tiny: bool) -> dict[str, Any]:
    import torch

    from matlake.models.scattering import neural_ode as N
    from matlake.models.scattering import systems as S

    system = S.KuramotoParams(size=8 if tiny else 12, n_frames=20 if tiny else 40, seed=3)
    scatter = S.ScatterParams(total_counts=1e6, noise_seed=2)
    traj = S.simulate(system)
    frames, mask = S.diffraction(S.density(system, traj.states), scatter)
    params = N.NodeParams(n_train=14 if tiny else 30, sub_len=4, batch=4, iters=steps, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)  # train_node's initial weights
        untrained = N.build_network(system, params.hidden).to(device)
    before = N.evaluate(untrained, system, frames, mask, traj.states, scatter, params)["summary"]
    net, hist = N.train_node(system, frames, mask, traj.states, scatter, params, device=device)
    after = N.evaluate(net, system, frames, mask, traj.states, scatter, params)["summary"]
    return {"loss_before": before["train_recip_mean"], "loss_after": after["train_recip_mean"],
            "on_device": _on(net, device),
            "detail": f"Kuramoto {system.size}x{system.size}, {params.iters} steps; held-out reciprocal error "
                      f"{before['heldout_recip_mean']:.4f} -> {after['heldout_recip_mean']:.4f}"}


def _disk_image(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    mask = np.zeros((n, n), np.int64)
    for _ in range(n // 8):
        cy, cx, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(3, 7)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    image = mask * 1.0 + rng.normal(0, 0.35, (n, n))
    return image.astype(np.float32), mask


def check_unet(device: str, steps: int, tiny: bool) -> dict[str, Any]:
    try:
        from matlake.models.imaging import ensemble as E
    except ImportError as exc:
        return {"skipped": f"matlake.models.imaging.ensemble not importable ({exc})"}
    import torch

    image, mask = _disk_image(64 if tiny else 128, seed=0)

    def loss(net: Any) -> tuple[float, Any]:
        p = E.member_probabilities(net, image, device=device).mean(axis=0)  # (C, H, W)
        picked = np.take_along_axis(p, mask[None], axis=0)[0]
        return float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()), net

    spec = E.EnsembleSpec.er("plain", n_members=2, seed=0, epochs=1, steps_per_epoch=steps, batch=4,
                             tile=32, depth=3, base=8 if tiny else 16)
    before, _ = loss(E.build_ensemble(spec))
    net, hist = E.train_ensemble([image], [mask], spec, device=device)
    # train_ensemble hands the net back on the CPU; inference moves it to the device
    after, net = loss(net)
    return {"loss_before": before, "loss_after": after, "on_device": _on(net, device) and hist["device"] == device,
            "detail": f"ER ensemble of 2 plain U-nets, {steps} steps each, image {image.shape[0]}^2; "
                      f"torch {torch.__version__}"}


def _spectra_data(n: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian peaks at a random centre (the target, in grid points) on a noisy baseline."""
    rng = np.random.default_rng(seed)
    grid = np.arange(width, dtype=float)
    centre = rng.uniform(0.25 * width, 0.75 * width, n)
    x = np.exp(-0.5 * ((grid[None, :] - centre[:, None]) / 3.0) ** 2) + rng.normal(0, 0.02, (n, width))
    return x.astype(np.float32), centre


def _check_spectra(kind: str, device: str, steps: int, tiny: bool) -> dict[str, Any]:
    from matlake.models.spectra import models as M

    cls = M.SpectraMLPRegressor if kind == "mlp" else M.SpectraCNNRegressor
    x, y = _spectra_data(64 if tiny else 256, 64, seed=0)
    batch = 32
    epochs = max(1, math.ceil(steps * batch / len(y)))
    model = cls(n_members=2, epochs=0, batch_size=batch, learning_rate=3e-3, device=device, seed=0)

    def mse(net: Any) -> float:
        pred = model._predict_members(net, x, device).mean(axis=0)
        return float(np.mean((pred - y) ** 2))

    before = mse(model._train(x, y, device))  # 0 epochs: the seeded initial ensemble
    model.params["epochs"] = epochs
    net = model._train(x, y, device)
    after = mse(net)
    return {"loss_before": before, "loss_after": after, "on_device": _on(net, device),
            "detail": f"{model.base_name}, 2 members, {len(y)} spectra x 64 points, {epochs} epochs of batch {batch}"}


def check_ptycho(device: str, steps: int, tiny: bool) -> dict[str, Any]:
    try:
        from matlake.models.scattering import ptycho as pt
    except ImportError as exc:
        return {"skipped": f"matlake.models.scattering.ptycho not importable ({exc})"}
    import torch

    path = Path(__file__).resolve().parents[1] / "samples" / "imaging" / "siemens_star_ptycho_subset.npz"
    with np.load(path) as z:
        n = 16 if tiny else 32
        data, probe = z["data"][:n].astype(np.float32), z["probe"]
        recorded = z["scan"][z["source_frames"][:n]].astype(np.float64)
    start = pt.perturb_positions(recorded, 2.0, seed=0)
    cfg = pt.PtychoConfig(iterations=steps, warmup=min(5, steps // 2), search_every=2, device=device, seed=0)
    res = pt.recover_positions(data, probe, start, cfg)
    used_gpu = device != "cuda" or torch.cuda.max_memory_allocated() > 0
    return {"loss_before": res.loss_history[0], "loss_after": res.loss_history[-1], "on_device": used_gpu,
            "detail": f"{n} measured frames, {steps} iterations; position RMSE {pt.position_rmse(start, recorded):.2f}"
                      f" -> {pt.position_rmse(res.positions, recorded):.2f} px"}


CHECKS: dict[str, Callable[[str, int, bool], dict[str, Any]]] = {
    "speckle": check_speckle,
    "node": check_node,
    "ptycho": check_ptycho,
    "unet": check_unet,
    "spectra-mlp": lambda d, s, t: _check_spectra("mlp", d, s, t),
    "spectra-cnn": lambda d, s, t: _check_spectra("cnn", d, s, t),
}


def run(device: str, steps: int, tiny: bool, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the checks; one result dict per check (``ok`` True/False, or ``skipped``)."""
    import torch

    out = []
    for name, fn in CHECKS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            r = fn(device, steps, tiny)
        except Exception as exc:  # noqa: BLE001 - a failing check is reported, the others still run
            r = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        r.update(name=name, device=device, seconds=round(time.perf_counter() - t0, 2))
        if device == "cuda":
            r["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        if "skipped" not in r:
            b, a = r.get("loss_before"), r.get("loss_after")
            r["ok"] = ("error" not in r and r.get("on_device", False) and b is not None and a is not None
                       and math.isfinite(b) and math.isfinite(a) and a < b)
        out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="default: cuda when torch sees a GPU, else cpu")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per model (default 20, tiny 12)")
    ap.add_argument("--tiny", action="store_true", help="smallest sizes (CPU test)")
    ap.add_argument("--only", action="append", choices=sorted(CHECKS), help="run only these checks")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("FAIL: --device cuda but torch sees no CUDA device")
        return 1
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}")
    results = run(device, args.steps or (12 if args.tiny else 20), args.tiny, args.only)
    for r in results:
        if "skipped" in r:
            print(f"SKIP {r['name']:<12} {r['skipped']}")
            continue
        status = "ok  " if r["ok"] else "FAIL"
        mem = f", CUDA peak {r['cuda_peak_mib']} MiB" if "cuda_peak_mib" in r else ""
        if "error" in r:
            print(f"{status} {r['name']:<12} {r['error']} ({r['seconds']} s)\n{r['traceback']}")
        else:
            print(f"{status} {r['name']:<12} on {r['device']}: loss {r['loss_before']:.4g} -> {r['loss_after']:.4g} "
                  f"({r['seconds']} s{mem}); {r['detail']}" + ("" if r["on_device"] else "; NOT on the device"))
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "traceback"} for r in results], indent=1))
    return 0 if all(r.get("ok", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
