"""Sliding-window U-net ensemble inference vs one full-image forward pass: time, tiles/s, peak memory.

Each variant runs in a fresh process (peak resident memory is per process) on a
uint16 image held in a memory map on disk, so the image itself never has to be
in memory:

- ``sliding``: :func:`matlake.models.imaging.sliding.sliding_window` (tile 256,
  overlap 64, batch 4) writing the mean probabilities into an output memory map;
- ``full``: :func:`matlake.models.imaging.ensemble.member_probabilities`, one
  forward pass over the whole image (what a plain script does).

Peak memory is the growth of the process's peak RSS (``ru_maxrss``) over its
resident size after imports and a warm-up pass; pages of the memory maps that
were touched count too.  The full pass is skipped above ``--full-max`` pixels
per side (it needs every activation map of the image at once).

    .venv/bin/python bench/bench_sliding.py --sizes 2048,4096,8192 --full-max 4096
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json, format_machine, machine_info, table  # noqa: E402

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, torch
    torch.set_num_threads(int(sys.argv[4]))
    from matlake.models.imaging.ensemble import EnsembleSpec, build_ensemble, member_probabilities
    from matlake.models.imaging.sliding import sliding_window, tile_starts
    mode, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = EnsembleSpec.ea(("plain", "resnet", "mobilenet"), depth=3, base=8)
    net = build_ensemble(spec).eval()
    img = np.memmap(path, dtype=np.uint16, mode="r", shape=(n, n))
    # warm up kernels, thread pool and allocator on the tile batch shape before measuring
    sliding_window(net, np.zeros((256, 256), np.uint16), np.zeros((2, 256, 256), np.float32), tile=256,
                   overlap=64, batch_size=4, intensity=(0.0, 4000.0))
    with open("/proc/self/statm") as fh:
        base = int(fh.read().split()[1]) * resource.getpagesize() // 1024
    t0 = time.perf_counter()
    if mode == "sliding":
        out = np.memmap(path + ".out", dtype=np.float32, mode="w+", shape=(2, n, n))
        sliding_window(net, img, out, tile=256, overlap=64, batch_size=4, intensity=(0.0, 4000.0))
        tiles = len(tile_starts(n, 256, 64, 4)) ** 2
    else:
        member_probabilities(net, img, intensity=(0.0, 4000.0))
        tiles = 0
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": dt, "peak_mib": (peak - base) / 1024, "tiles": tiles}))
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2048,4096,8192", help="image sides in pixels")
    ap.add_argument("--full-max", type=int, default=4096, help="largest side for the full forward pass")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--workdir", help="folder for the memory maps (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import numpy as np

    rows, records = [], []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"img{n}.dat"
            img = np.memmap(path, dtype=np.uint16, mode="w+", shape=(n, n))
            rng = np.random.default_rng(0)
            for y0 in range(0, n, 1024):  # written by bands: the image is never in memory
                img[y0:y0 + 1024] = rng.integers(0, 4000, size=(min(1024, n - y0), n), dtype=np.uint16)
            img.flush()
            del img
            for mode in ("sliding", "full"):
                if mode == "full" and n > args.full_max:
                    rows.append([f"{n}^2", mode, "skipped", "", "", ""])
                    continue
                res = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(n), str(args.threads)],
                                     capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT),
                                                                                   "PATH": "/usr/bin:/bin"})
                if res.returncode != 0:
                    rows.append([f"{n}^2", mode, "failed", "", "", res.stderr.strip().splitlines()[-1][:60]])
                    continue
                r = json.loads(res.stdout.strip().splitlines()[-1])
                records.append({"side": n, "mode": mode, **r})
                tps = f"{r['tiles'] / r['seconds']:.1f}" if r["tiles"] else ""
                rows.append([f"{n}^2", mode, f"{r['seconds']:.1f}", tps, f"{r['peak_mib']:.0f}", ""])
            Path(str(path) + ".out").unlink(missing_ok=True)
            path.unlink()
    info = machine_info()
    if args.json:
        emit_json({"bench": "sliding", "machine": info, "results": records})
        return
    print(format_machine(info))
    print("EA ensemble (plain, resnet, mobilenet; depth 3, base 8), tile 256, overlap 64, batch 4, "
          f"{args.threads} thread(s)")
    print(table(["image", "variant", "seconds", "tiles/s", "peak MiB", "note"], rows))


if __name__ == "__main__":
    main()
