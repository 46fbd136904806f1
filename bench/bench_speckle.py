"""Speckle simulation and the density classifier (issue #12): speed, and the transfer study's accuracies.

What is measured:

* **simulation**: patterns per second of :func:`simulate_pattern` (RSA disks, rasterisation,
  Gaussian probe, far field, beam stop, Poisson counts) at n_grid 64 and 128, and of the
  far-field step alone on a batch of exit waves: ``numpy.fft.fft2`` vs ``torch.fft.fft2``
  (CPU; CUDA too when torch sees a GPU);
* **training**: one epoch of the CNN (:func:`train_cnn`) over ``--n-train`` patterns, CPU;
  peak resident memory of the process (``ru_maxrss``) after the run;
* **transfer**: the CNN, the CNN trained with binomial count thinning (totals 1e3-1e5) and the
  radial-average baseline, all trained on monodisperse RSA
  patterns at 1e5 counts, evaluated on held-out (other seeds) monodisperse patterns, on
  polydisperse ones (0.1, 0.2), on lower counts (1e4, 1e3) and on hard-disk Monte Carlo
  configurations; accuracy, macro-F1, chance 1/K.  ``--png DIR`` writes confusion matrices.

Run: ``.venv/bin/python bench/bench_speckle.py [--n-train 150] [--n-test 50] [--epochs 20] [--threads 1]
[--png DIR] [--json]``
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import emit_json, format_machine, machine_info, table  # noqa: E402


def bench_simulation(repeat: int = 3) -> list[dict]:
    from matlake.models.scattering.simulate import SpeckleSpec, build_dataset, far_field

    out = []
    for n_grid in (64, 128):
        spec = SpeckleSpec(n_grid=n_grid, box=float(n_grid), n_per_class=10, seed=0)
        best = min(_timed(lambda: build_dataset(spec)) for _ in range(repeat))
        n_disks = f"{33 * (n_grid // 64) ** 2}-{131 * (n_grid // 64) ** 2}"
        out.append({"what": f"simulate_pattern, {n_grid}x{n_grid}, 4 densities ({n_disks} disks, RSA)",
                    "patterns_per_s": 40 / best})
    import torch

    rng = np.random.default_rng(0)
    for n_grid in (64, 256):
        waves = rng.random((64, n_grid, n_grid))
        best = min(_timed(lambda: [far_field(w) for w in waves]) for _ in range(repeat))
        out.append({"what": f"far field only, numpy fft2, {n_grid}x{n_grid}", "patterns_per_s": 64 / best})
        t = torch.from_numpy(waves)
        best = min(_timed(lambda: torch.fft.fftshift(torch.fft.fft2(t), dim=(-2, -1)).abs().square())
                   for _ in range(repeat))
        out.append({"what": f"far field only, torch.fft.fft2 (CPU, batch 64), {n_grid}x{n_grid}",
                    "patterns_per_s": 64 / best})
        if torch.cuda.is_available():
            tc = t.cuda()

            def gpu() -> None:
                torch.fft.fftshift(torch.fft.fft2(tc), dim=(-2, -1)).abs().square()
                torch.cuda.synchronize()

            gpu()
            best = min(_timed(gpu) for _ in range(repeat))
            out.append({"what": f"far field only, torch.fft.fft2 (CUDA, batch 64), {n_grid}x{n_grid}",
                        "patterns_per_s": 64 / best})
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=150, help="training patterns per class")
    ap.add_argument("--n-test", type=int, default=50, help="test patterns per class and condition")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads while training")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--png", help="folder for confusion matrix PNGs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from matlake.models.scattering import classifier as C
    from matlake.models.scattering.plots import confusion_png
    from matlake.models.scattering.simulate import SpeckleSpec, build_dataset

    info = machine_info()
    sim = bench_simulation()

    train = SpeckleSpec(n_per_class=args.n_train, seed=1)
    test = SpeckleSpec(n_per_class=args.n_test, seed=2)
    conditions = {"mono (held out)": test, "poly 0.1": test.with_(polydispersity=0.1),
                  "poly 0.2": test.with_(polydispersity=0.2), "counts 1e4": test.with_(counts=1e4),
                  "counts 1e3": test.with_(counts=1e3), "hard-disk MC": test.with_(method="mc", mc_sweeps=20)}
    t0 = time.perf_counter()
    ds = build_dataset(train)
    t_sim = time.perf_counter() - t0
    cfg = C.TrainConfig(epochs=args.epochs, seed=0, threads=args.threads)
    res = C.train_cnn(ds.patterns, ds.labels, ds.mask, 4, cfg, args.device)
    epoch_s = res.history["train_seconds"] / args.epochs
    thin = C.train_cnn(ds.patterns, ds.labels, ds.mask, 4,
                       C.TrainConfig(epochs=args.epochs, seed=0, threads=args.threads, thin_counts=(1e3, 1e5)),
                       args.device)
    base = C.fit_radial_baseline(ds.patterns, ds.labels, ds.mask)
    rows, record = [], {}
    names = [f"{v:g}" for v in ds.class_values]
    for name, spec in conditions.items():
        te = build_dataset(spec)
        pred, _ = C.predict_cnn(res.network, te.patterns, te.mask)
        m = C.evaluate(te.labels, pred, 4)
        b = C.evaluate(te.labels, base.predict(C.radial_features(te.patterns, te.mask)), 4)
        t = C.evaluate(te.labels, C.predict_cnn(thin.network, te.patterns, te.mask)[0], 4)
        record[name] = {"cnn": m, "radial": b, "cnn_thinned": t}
        rows.append([name, m["accuracy"], m["macro_f1"], t["accuracy"], t["macro_f1"], b["accuracy"], b["macro_f1"],
                     m["chance"], m["n"]])
        if args.png:
            d = Path(args.png)
            d.mkdir(parents=True, exist_ok=True)
            (d / f"confusion-{name.split()[0]}-{name.split()[-1]}.png").write_bytes(
                confusion_png(m["confusion"], names, f"CNN, {name}"))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        emit_json({"machine": info, "simulation": sim, "epoch_seconds": epoch_s, "n_train": len(ds),
                   "device": res.history["device"], "peak_rss_mib": peak_mib, "transfer": record,
                   "train_simulation_seconds": t_sim})
        return
    print(format_machine(info))
    print(table(["simulation", "patterns/s"], [[r["what"], r["patterns_per_s"]] for r in sim]))
    print(f"\nCNN: one epoch over {len(ds)} patterns (64x64) on {res.history['device']}, {args.threads} thread(s): "
          f"{epoch_s:.2f} s; simulating them took {t_sim:.1f} s; peak RSS {peak_mib:.0f} MiB\n")
    print(table(["test condition", "CNN acc", "CNN macro-F1", "CNN+thinning acc", "CNN+thinning macro-F1",
                 "radial acc", "radial macro-F1", "chance", "n"], rows))


if __name__ == "__main__":
    main()
