"""FEFF10 XANES throughput: spectra per hour through the compute module, serial vs N processes.

Each round makes a fresh lake, ingests ``--sites`` rock-salt NiO cells (lattice
constants 4.10-4.30 A, one inequivalent Ni site each) and runs
:func:`matlake.models.feff.compute.compute` over them with ``--workers 1`` and
then ``--workers N``: wall time from the first FEFF input to the last committed
site, so per-site commits and input preparation are included.  FEFF settings are
the shipped dataset's (``FeffParameters()``: MPXANESSet without SCF and LDOS, FMS
4 A, XANES 4.0 0.07 0.3) unless ``--fast`` (FMS 3 A, coarse grid, the tests' setting).

Run: ``.venv/bin/python bench/bench_feff.py [--sites 4] [--workers 2] [--fast] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, format_machine, machine_info, table  # noqa: E402


def _lake_with_nio(folder: Path, n: int):
    import matlake
    from pymatgen.core import Lattice, Structure

    paths = []
    for i, a in enumerate(4.10 + 0.20 * k / max(n - 1, 1) for k in range(n)):
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        p = folder / f"NiO_{i}.json"
        p.write_text(json.dumps(s.as_dict()))
        paths.append(str(p))
    lake = matlake.init(folder / "lake")
    lake.ingest(paths, progress=False)
    return lake


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from matlake.models.feff.compute import compute
    from matlake.models.feff.inputs import FeffParameters
    from matlake.models.feff.runner import feff_version

    params = (FeffParameters(cluster_radius=5.0, overrides=(("FMS", (3.0, 0)), ("XANES", (3.0, 0.1, 0.5))))
              if args.fast else FeffParameters())
    rows, results = [], []
    for workers in (1, args.workers):
        with tempfile.TemporaryDirectory() as tmp:
            lake = _lake_with_nio(Path(tmp), args.sites)
            t0 = time.perf_counter()
            rep = compute(lake, "Ni", params, workers=workers)
            wall = time.perf_counter() - t0
            lake.close()
        n = len(rep.computed)
        feff_s = sum(rep.seconds.values()) / max(n, 1)
        per_hour = 3600.0 * n / wall
        rows.append([workers, n, wall, feff_s, per_hour])
        results.append({"workers": workers, "spectra": n, "wall_s": wall, "feff_s_per_site": feff_s,
                        "spectra_per_hour": per_hour, "failed": len(rep.failed)})
    payload = {"benchmark": "feff", "machine": machine_info(), "code": feff_version(),
               "parameters": params.as_dict(), "sites": args.sites, "results": results}
    if args.json:
        emit_json(payload)
    else:
        print(format_machine(payload["machine"]))
        print(f"{feff_version()}, {'fast test setting' if args.fast else 'dataset setting'}: "
              f"{json.dumps(params.as_dict()['overrides'])}, removed {params.removed}")
        print(table(["processes", "spectra", "wall s", "FEFF s per site", "spectra per hour"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
