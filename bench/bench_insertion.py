"""Insertion-site finding: matlake vs pymatgen-analysis-defects on the same grid.

The YPO4 all-electron density (AECCAR0 + AECCAR2, 48^3, ``samples/dft``) as stored,
and the same density resampled to ``--size``^3 (default 200^3) with a periodic
cubic spline.  Each method runs in its own subprocess on the grid loaded from a
``.npy`` file, so that its peak memory (Linux VmHWM, reset after loading) is its
own; a run reports wall time, peak memory above the loaded grid and the sites and
groups it found:

* matlake: ``find_sites`` (extrema, distance filter, clustering, symmetry groups,
  local averages in 0.4 Angstrom);
* reference: ``ChargeInsertionAnalyzer(chgcar, working_ion="Mg").labeled_sites`` and
  ``filter_and_group(max_avg_charge=inf)`` (the same steps; grouping by structure
  matching, averages over the whole grid per group).

Usage: ``.venv/bin/python bench/bench_insertion.py [--size 200] [--repeat 3] [--skip-reference-large] [--json]``.
The reference needs ~27x the grid in memory (it tiles the grid 3x3x3): about 4 GiB at 200^3.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json, format_machine, machine_info, table  # noqa: E402

SAMPLES = ROOT / "samples" / "dft"


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(method: str, grid_path: str, structure_path: str) -> None:
    """Run one method once and print a JSON line: seconds, peak extra bytes, sites, groups."""
    import warnings

    import numpy as np
    from pymatgen.core import Structure

    warnings.filterwarnings("ignore")
    structure = Structure.from_dict(json.loads(Path(structure_path).read_text()))
    data = np.load(grid_path)
    if method == "reference":
        from pymatgen.analysis.defects.utils import ChargeInsertionAnalyzer
        from pymatgen.io.vasp import Chgcar, Poscar

        obj = Chgcar(Poscar(structure), {"total": data})
    else:
        from matlake.models.insertion.sites import Field, find_sites

        obj = Field("density", "AECCAR0+AECCAR2", data, structure)
    # warm up (imports, caches) on a coarse copy, so that the run below measures the work itself
    small = np.ascontiguousarray(data[::4, ::4, ::4])
    if method == "reference":
        warm = ChargeInsertionAnalyzer(Chgcar(Poscar(structure), {"total": small}), working_ion="Mg")
        warm.filter_and_group(max_avg_charge=float("inf"))
    else:
        find_sites(Field("density", "warm-up", small, structure))
    del data, small
    try:  # reset the peak-RSS counter (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    base = _status("VmRSS")
    t0 = time.perf_counter()
    if method == "reference":
        cia = ChargeInsertionAnalyzer(obj, working_ion="Mg")
        labeled = cia.labeled_sites
        groups = cia.filter_and_group(max_avg_charge=float("inf"))
        n_sites, n_groups = len(labeled), len(groups)
        values = sorted(float(a) for a, _ in groups)
    else:
        sites = find_sites(obj)
        n_sites, n_groups = len(sites), sites.n_groups
        values = sorted({round(float(v), 12) for v in sites.group_average})
    seconds = time.perf_counter() - t0
    peak = max(_status("VmHWM"), base) - base
    print(json.dumps({"seconds": seconds, "peak_extra_bytes": peak, "n_sites": n_sites, "n_groups": n_groups,
                      "group_averages": values}))


def run_child(method: str, grid: Path, structure: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, "--child", method, str(grid), str(structure)],
                         capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{method} on {grid.name} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_grids(workdir: Path, size: int) -> tuple[Path, dict[str, Path]]:
    import numpy as np
    from pymatgen.io.vasp import Chgcar
    from scipy import ndimage

    grids = []
    for name in ("YPO4_static_AECCAR0", "YPO4_static_AECCAR2"):
        path = workdir / name
        path.write_bytes(gzip.decompress((SAMPLES / f"{name}.gz").read_bytes()))
        grids.append(Chgcar.from_file(str(path)))
    total = grids[0].data["total"] + grids[1].data["total"]
    structure = workdir / "structure.json"
    structure.write_text(json.dumps(grids[0].structure.as_dict()))
    out = {}
    native = workdir / f"grid_{total.shape[0]}.npy"
    np.save(native, total)
    out[f"{total.shape[0]}^3"] = native
    if size and size != total.shape[0]:
        # periodic cubic spline at the points i * n_old / size (grid point 0 stays at the origin)
        n0 = total.shape[0]
        axis = np.arange(size) * n0 / size
        coeffs = ndimage.spline_filter(total, order=3, mode="grid-wrap")
        big = np.empty((size,) * 3)
        ii, jj = np.meshgrid(axis, axis, indexing="ij")
        for k in range(size):  # plane by plane: the coordinate arrays stay small
            kk = np.full_like(ii, axis[k])
            big[:, :, k] = ndimage.map_coordinates(coeffs, [ii, jj, kk], order=3, mode="grid-wrap", prefilter=False)
        path = workdir / f"grid_{size}.npy"
        np.save(path, big)
        out[f"{size}^3"] = path
    return structure, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=200, help="edge of the resampled grid (default 200)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method and grid (best and median)")
    ap.add_argument("--skip-reference-large", action="store_true",
                    help="run the reference on the stored 48^3 grid only")
    ap.add_argument("--workdir", help="folder for the grid files (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    info = machine_info()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        structure, grids = make_grids(Path(tmp), args.size)
        results = []
        for label, grid in grids.items():
            import numpy as np

            nbytes = np.load(grid, mmap_mode="r").nbytes
            methods = ["matlake", "reference"]
            if args.skip_reference_large and label != "48^3":
                methods = ["matlake"]
            runs: dict[str, list[dict]] = {m: [] for m in methods}
            for _ in range(args.repeat):  # the methods take turns
                for m in methods:
                    runs[m].append(run_child(m, grid, structure))
            for m in methods:
                secs = sorted(r["seconds"] for r in runs[m])
                peak = max(r["peak_extra_bytes"] for r in runs[m])
                last = runs[m][-1]
                results.append({"grid": label, "method": m, "best_s": secs[0], "median_s": secs[len(secs) // 2],
                                "peak_extra_mib": peak / 2**20, "peak_over_grid": peak / nbytes,
                                "grid_mib": nbytes / 2**20, "n_sites": last["n_sites"], "n_groups": last["n_groups"],
                                "group_averages": last["group_averages"]})
    if args.json:
        emit_json({"benchmark": "insertion", "machine": info, "results": results})
        return
    print(format_machine(info))
    rows = [[r["grid"], r["method"], r["best_s"], r["median_s"], r["peak_extra_mib"], r["peak_over_grid"],
             r["n_sites"], r["n_groups"]] for r in results]
    print(table(["grid", "method", "best s", "median s", "peak extra MiB", "peak / grid", "sites", "groups"], rows))
    for label in grids:
        pair = {r["method"]: r for r in results if r["grid"] == label}
        if len(pair) == 2:
            print(f"{label}: reference / matlake time {pair['reference']['best_s'] / pair['matlake']['best_s']:.1f}x;"
                  f" group averages matlake {pair['matlake']['group_averages'][:4]} reference "
                  f"{pair['reference']['group_averages'][:4]}")


if __name__ == "__main__":
    main()
