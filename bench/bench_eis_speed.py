"""EIS analysis steps: time per call against the budgets the analyzer is designed for.

These figures used to be assertions in the tests (features < 200 ms per spectrum,
lin-KK with automatic M < 100 ms, R/C enumeration up to seven elements < 5 s);
under load they failed for reasons that had nothing to do with the code, so they
are measured here and reported, never asserted.

1. ``extract_features`` on three synthetic 81-point spectra (R-RC-RC, R-CPE,
   R-L-RC; 0.3 % noise, seed 0), 1 mHz - 100 kHz.
2. ``lin_kk`` with c = 0.69 and M <= 100 on ``samples/eis/impedancepy_Circuit3_EIS_1.z``.
3. ``count_networks(7)``, the R/C enumeration and ``rc_families(7)`` from cold caches.

Run: ``.venv/bin/python bench/bench_eis_speed.py [--repeat 10] [--json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, format_machine, machine_info, table, time_call  # noqa: E402

from matlake.ingest.eis import read_spectra  # noqa: E402
from matlake.models.eis import enumeration  # noqa: E402
from matlake.models.eis.features import extract_features  # noqa: E402
from matlake.models.eis.validity import lin_kk  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "samples" / "eis"
F = np.logspace(-3, 5, 81)  # Hz
S = 2j * np.pi * F
BUDGET_S = {"features": 0.2, "lin_kk": 0.1, "enumeration": 5.0}


def _noisy(z: np.ndarray, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return z + level * np.abs(z) * (rng.standard_normal(z.size) + 1j * rng.standard_normal(z.size)) / np.sqrt(2)


def _spectra() -> dict[str, np.ndarray]:
    """Impedance (Ohm) on F of the three synthetic circuits."""
    return {
        "R-RC-RC": _noisy(10 + 20 / (1 + S * 1e-4) + 100 / (1 + S * 1e-1), 0.003, 0),
        "R-CPE": _noisy(10 + 1 / (1e-3 * S**0.8), 0.003, 0),
        "R-L-RC": _noisy(10 + S * 1e-5 + 100 / (1 + S * 1e-4), 0.003, 0),
    }


def _enumerate_cold() -> int:
    enumeration._rooted.cache_clear()
    enumeration._not_rooted.cache_clear()
    enumeration._family_trees.cache_clear()
    enumeration.count_networks(7)
    enumeration.enumerate_networks(7, ("R", "C"))
    return len(enumeration.rc_families(7))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    info = machine_info()
    rows: dict[str, dict] = {}
    for name, z in _spectra().items():
        extract_features(F, z)  # warm-up: imports, first-call caches
        t, ft = time_call(lambda z=z: extract_features(F, z), args.repeat, f"features {name}")
        rows[f"features {name}"] = {"budget_s": BUDGET_S["features"], **t.as_dict(),
                                    "n_time_constants": ft.n_time_constants}
    s = read_spectra(DATA / "impedancepy_Circuit3_EIS_1.z")[0]
    f, z = np.asarray(s.frequency, float), np.asarray(s.z, complex)
    lin_kk(f, z, c=0.69, max_m=100)
    t, kk = time_call(lambda: lin_kk(f, z, c=0.69, max_m=100), args.repeat, "lin_kk")
    rows["lin_kk Circuit3 (auto M)"] = {"budget_s": BUDGET_S["lin_kk"], **t.as_dict(), "m": kk.m}
    t, n_fam = time_call(_enumerate_cold, max(1, args.repeat // 5), "enumeration")
    rows["R/C enumeration n <= 7 (cold)"] = {"budget_s": BUDGET_S["enumeration"], **t.as_dict(),
                                             "families_n7": n_fam}
    if args.json:
        emit_json({"machine": info, "steps": rows})
        return
    print(format_machine(info))
    print(table(["step", "best (ms)", "median (ms)", "budget (ms)", "within budget"], [
        [k, 1e3 * v["best_s"], 1e3 * v["median_s"], 1e3 * v["budget_s"],
         "yes" if v["median_s"] <= v["budget_s"] else "NO"]
        for k, v in rows.items()
    ]))


if __name__ == "__main__":
    main()
