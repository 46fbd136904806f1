"""Coherent-scattering forward model and neural-ODE training on CPU (issue #12).

1. Far-field patterns per second: |FFT(rho * probe)|^2 of a 64 x 64 density zero-padded
   to 128 x 128, a batch of 64, numpy (``np.fft.fft2``, complex128) against
   ``forward.grid_intensity`` in torch float64 and float32 (same threads).
2. Point-cloud intensity (disks, 2J1(x)/x form factor) of 200 disks at 4,096 q vectors, torch.
3. One epoch of neural-ODE training (every sub-trajectory start of the training window
   once, in batches) for Kuramoto 12 x 12 and 16 x 16 and Gray-Scott 24 x 24, default
   ``NodeParams``; seconds per epoch and per step.
4. Peak resident memory of the process (``ru_maxrss``) after all of it.

Run: ``.venv/bin/python bench/bench_node.py [--repeat 5] [--threads 1] [--json]``
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, format_machine, machine_info, table, time_call  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from matlake.models.scattering import forward as fw
    from matlake.models.scattering import neural_ode as N
    from matlake.models.scattering import systems as S

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    batch, n, o = 64, 64, 2
    rho = rng.uniform(0, 1, size=(batch, n, n))
    probe = fw.gaussian_probe((n, n), 16.0, dtype=torch.float64).numpy()

    def numpy_fft() -> np.ndarray:
        a = np.fft.fftshift(np.fft.fft2(rho * probe, s=(n * o, n * o)), axes=(-2, -1))
        return a.real ** 2 + a.imag ** 2

    r64, p64 = torch.as_tensor(rho), torch.as_tensor(probe)
    r32, p32 = r64.float(), p64.float()
    rows, record = [], {}
    for name, fn in [("numpy fft2 (complex128)", numpy_fft),
                     ("torch grid_intensity float64", lambda: fw.grid_intensity(r64, p64, oversample=o)),
                     ("torch grid_intensity float32", lambda: fw.grid_intensity(r32, p32, oversample=o))]:
        t, _ = time_call(fn, args.repeat, name)
        rows.append([name, batch / t.best, batch / t.median])
        record[name] = t.as_dict()
    print(format_machine(machine_info()))
    print(f"\nfar-field patterns per second ({n}x{n} density, padded to {n * o}x{n * o}, batch {batch}, "
          f"torch threads {args.threads})")
    print(table(["variant", "patterns/s (best)", "patterns/s (median)"], rows))

    pos = torch.as_tensor(rng.uniform(-500, 500, size=(200, 2)))
    radii = torch.as_tensor(rng.uniform(8, 12, size=200))
    q = torch.as_tensor(rng.normal(scale=0.05, size=(4096, 2)))
    t, _ = time_call(lambda: fw.pointcloud_intensity(pos, radii, q, kind="disk"), args.repeat, "disks")
    record["pointcloud_disks_200x4096"] = t.as_dict()
    print(f"\npoint cloud, 200 disks x 4096 q (float64): best {t.best:.3f} s, median {t.median:.3f} s")

    rows = []
    cases = [("kuramoto 12x12", S.KuramotoParams(size=12)), ("kuramoto 16x16", S.KuramotoParams(size=16)),
             ("gray-scott 24x24", S.GrayScottParams(size=24))]
    for name, system in cases:
        tr = S.simulate(system)
        sc = S.ScatterParams()
        frames, mask = S.diffraction(S.density(system, tr.states), sc)
        base = N.NodeParams(n_train=min(40, system.n_frames - 5))
        steps = math.ceil((base.n_train - base.sub_len + 1) / base.batch)
        params = replace(base, iters=steps)
        t, (_, hist) = time_call(lambda: N.train_node(system, frames, mask, tr.states, sc, params), args.repeat, name)
        rows.append([name, base.n_train, steps, t.best, t.median, t.best / steps])
        record[f"epoch {name}"] = dict(t.as_dict(), steps=steps, params=params.as_dict())
    print(f"\nneural-ODE training epoch (every start of the n_train-frame window once, batch {base.batch}, "
          f"sub_len {base.sub_len}, rk4 {base.substeps} steps/frame)")
    print(table(["system", "n_train", "steps", "epoch s (best)", "epoch s (median)", "s/step (best)"], rows))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"\npeak resident memory of this process: {peak_mib:.0f} MiB")
    if args.json:
        emit_json({"machine": machine_info(), "results": record, "peak_rss_mib": peak_mib})
    return 0


if __name__ == "__main__":
    sys.exit(main())
