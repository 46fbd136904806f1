"""Coherent scattering (issue #12) in one bench: patterns/s numpy vs torch, one training epoch each, peak memory.

What is measured (load average printed before and after: the machine is shared):

1. **Simulated patterns per second, numpy FFT vs torch**, same sizes and same work: a batch of
   ``--batch`` rasterised disk densities (RSA, 4 densities, made once, untimed) times the Gaussian
   probe -> ``fft2`` zero-padded x2 -> ``fftshift`` -> ``|.|^2`` -> beam stop -> scaled to 1e5 counts
   -> Poisson counts; numpy (``numpy.fft``, complex128, ``Generator.poisson``) against torch float64
   and float32 (``torch.fft``, ``torch.poisson``) on the CPU (and CUDA when torch sees a GPU), at
   real-space grids 64, 128, 256.  The variants run **interleaved** (numpy, torch64, torch32, numpy,
   ...) ``--repeat`` times so that load changes hit all of them alike; medians and the ratios to
   numpy are reported.  For context, the whole numpy simulator (``simulate_pattern``: RSA placement,
   rasterisation, probe, far field, counts) at 64 x 64.
2. **One training epoch on CPU**: the speckle CNN over 4 x ``--n-per-class`` 64 x 64 patterns
   (batch 32) and the Kuramoto 12 x 12 neural ODE (every sub-trajectory start of its 40-frame
   window once, batch 8, sub_len 5, RK4 2 steps/frame); median of ``--repeat`` epochs.
3. **Peak memory**: resident set (``ru_maxrss``) after each part (it only grows, so each part's
   figure includes the parts before), and the CUDA peak allocation when on a GPU.

Run: ``.venv/bin/python bench/bench_scattering.py [--repeat 5] [--batch 32] [--threads 1] [--json]``
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import emit_json, format_machine, machine_info, table  # noqa: E402

COUNTS = 1e5


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _densities(n: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(batch, n, n) rasterised RSA disk densities of the 4 default number densities, the simulator's
    Gaussian probe (n, n; sigma = 12 px) and its beam-stop mask of the 2n x 2n detector (radius 2 px)."""
    from matlake.models.scattering import disks as Dk
    from matlake.models.scattering import simulate as Sim

    densities = Sim.SpeckleSpec().number_densities
    rho = np.stack([Sim.rasterize(Dk.make_configuration(Dk.DiskParams(
        box=float(n), radius=2.0, number_density=densities[i % len(densities)], seed=i)), n, supersample=2)
        for i in range(batch)])
    return rho, Sim.gaussian_probe(n, float(n), 12.0), Sim.beam_stop_mask(2 * n, 2.0).astype(np.float64)


def _numpy_variant(rho: np.ndarray, probe: np.ndarray, mask: np.ndarray) -> Callable[[], np.ndarray]:
    rng = np.random.default_rng(1)
    n = rho.shape[-1]

    def run() -> np.ndarray:
        a = np.fft.fftshift(np.fft.fft2(rho * probe, s=(2 * n, 2 * n)), axes=(-2, -1))
        i = (a.real ** 2 + a.imag ** 2) * mask
        i *= COUNTS / i.sum(axis=(1, 2), keepdims=True)
        return rng.poisson(i)
    return run


def _torch_variant(rho: np.ndarray, probe: np.ndarray, mask: np.ndarray, dtype: Any,
                   device: str) -> Callable[[], Any]:
    import torch

    r = torch.as_tensor(rho, dtype=dtype, device=device)
    p = torch.as_tensor(probe, dtype=dtype, device=device)
    m = torch.as_tensor(mask, dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(1)
    n = rho.shape[-1]

    def run() -> Any:
        a = torch.fft.fftshift(torch.fft.fft2(r * p, s=(2 * n, 2 * n)), dim=(-2, -1))
        i = (a.real ** 2 + a.imag ** 2) * m
        i = i * (COUNTS / i.sum(dim=(1, 2), keepdim=True))
        out = torch.poisson(i, generator=gen)
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    return run


def bench_patterns(sizes: list[int], batch: int, repeat: int) -> list[dict[str, Any]]:
    import torch

    rows = []
    for n in sizes:
        rho, probe, mask = _densities(n, batch)
        variants = {"numpy complex128": _numpy_variant(rho, probe, mask),
                    "torch float64 cpu": _torch_variant(rho, probe, mask, torch.float64, "cpu"),
                    "torch float32 cpu": _torch_variant(rho, probe, mask, torch.float32, "cpu")}
        if torch.cuda.is_available():
            variants["torch float32 cuda"] = _torch_variant(rho, probe, mask, torch.float32, "cuda")
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for fn in variants.values():
            fn()  # warm-up (plans, allocations, CUDA context)
        for _ in range(repeat):
            for name, fn in variants.items():  # interleaved: a load change hits every variant alike
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
        base = statistics.median(samples["numpy complex128"])
        for name, s in samples.items():
            med = statistics.median(s)
            rows.append({"grid": n, "detector": 2 * n, "variant": name, "median_s": med,
                         "patterns_per_s": batch / med, "speed_vs_numpy": base / med, "samples": s})
    return rows


def bench_simulator(repeat: int) -> float:
    """Patterns per second of the whole numpy simulator at 64 x 64 (median of ``repeat`` batches of 8)."""
    from matlake.models.scattering.simulate import SpeckleSpec, build_dataset

    spec = SpeckleSpec(n_per_class=2, seed=0)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        build_dataset(spec)
        times.append(time.perf_counter() - t0)
    return 8 / statistics.median(times)


def bench_classifier_epoch(n_per_class: int, repeat: int, device: str) -> dict[str, Any]:
    from matlake.models.scattering import classifier as C
    from matlake.models.scattering.simulate import SpeckleSpec, build_dataset

    ds = build_dataset(SpeckleSpec(n_per_class=n_per_class, seed=1))
    times = []
    for r in range(repeat):
        res = C.train_cnn(ds.patterns, ds.labels, ds.mask, 4, C.TrainConfig(epochs=1, seed=r), device)
        times.append(res.history["train_seconds"])
    return {"n_patterns": len(ds), "batch": 32, "median_s": statistics.median(times), "samples": times}


def bench_node_epoch(repeat: int, device: str) -> dict[str, Any]:
    from matlake.models.scattering import neural_ode as N
    from matlake.models.scattering import systems as S

    system = S.KuramotoParams(size=12, n_frames=60, seed=0)
    sc = S.ScatterParams()
    tr = S.simulate(system)
    frames, mask = S.diffraction(S.density(system, tr.states), sc)
    base = N.NodeParams(n_train=40)
    steps = math.ceil((base.n_train - base.sub_len + 1) / base.batch)
    times = []
    for r in range(repeat):
        _, hist = N.train_node(system, frames, mask, tr.states, sc, replace(base, iters=steps, seed=r), device=device)
        times.append(hist["train_seconds"])
    return {"system": "kuramoto 12x12", "steps": steps, "median_s": statistics.median(times), "samples": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32, help="patterns per batch in part 1")
    ap.add_argument("--sizes", default="64,128,256", help="real-space grids of part 1")
    ap.add_argument("--n-per-class", type=int, default=100, help="CNN epoch: patterns per class (4 classes)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    info = machine_info()
    memory = {"start": _rss_mib()}
    patterns = bench_patterns([int(s) for s in args.sizes.split(",")], args.batch, args.repeat)
    sim = bench_simulator(max(1, args.repeat // 2))
    memory["after patterns"] = _rss_mib()
    cnn = bench_classifier_epoch(args.n_per_class, args.repeat, "cpu")
    memory["after CNN epochs"] = _rss_mib()
    node = bench_node_epoch(args.repeat, "cpu")
    memory["after neural-ODE epochs"] = _rss_mib()
    cuda: dict[str, Any] = {}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        cuda["cnn_epoch"] = bench_classifier_epoch(args.n_per_class, args.repeat, "cuda")
        cuda["node_epoch"] = bench_node_epoch(args.repeat, "cuda")
        cuda["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    load_after = os.getloadavg()
    if args.json:
        emit_json({"machine": info, "load_before": load_before, "load_after": load_after, "threads": args.threads,
                   "patterns": patterns, "simulator_patterns_per_s": sim, "cnn_epoch": cnn, "node_epoch": node,
                   "peak_rss_mib": memory, "cuda": cuda})
        return 0
    print(format_machine(info))
    print(f"load average before: {' '.join(f'{x:.1f}' for x in load_before)}; torch threads {args.threads}\n")
    print(f"far-field patterns per second (batch {args.batch}, density x probe -> fft2 padded x2 -> |.|^2 -> "
          f"beam stop -> Poisson at {COUNTS:g} counts), medians of {args.repeat} interleaved runs")
    print(table(["grid", "detector", "variant", "median s", "patterns/s", "x numpy"],
                [[r["grid"], r["detector"], r["variant"], r["median_s"], r["patterns_per_s"], r["speed_vs_numpy"]]
                 for r in patterns]))
    print(f"\nwhole numpy simulator (RSA, rasterise, probe, far field, counts), 64x64: {sim:.1f} patterns/s")
    print(f"\none CPU epoch, median of {args.repeat}:")
    print(table(["model", "work", "epoch s"],
                [["speckle CNN", f"{cnn['n_patterns']} patterns 64x64, batch 32", cnn["median_s"]],
                 ["neural ODE", f"{node['system']}, {node['steps']} steps of batch 8 x 5 frames", node["median_s"]]]))
    if cuda:
        print(f"\nCUDA: CNN epoch {cuda['cnn_epoch']['median_s']:.3f} s, neural-ODE epoch "
              f"{cuda['node_epoch']['median_s']:.3f} s, peak allocated {cuda['peak_allocated_mib']:.0f} MiB")
    print("\npeak resident memory (MiB, cumulative): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    print(f"load average after: {' '.join(f'{x:.1f}' for x in load_after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
