"""EIS: matlake's lin-KK and circuit fit against impedance.py on the same data.

1. lin-KK on ``impedancepy_Circuit3_EIS_1.z`` with c = 0.69, M <= 100 (impedance.py's
   defaults otherwise: fit on the real part, no series C): ``lin_kk`` vs
   ``impedance.validation.linKK``.  Compared: M, mu, Z_fit and the residuals.
2. Fit of ``R0-p(R1,C1)-p(R2-Wo1,C2)`` to ``impedancepy_exampleData.csv`` (points with
   Im Z > 0 removed, initial guess [.01, .01, 100, .01, .05, 100, 1]): ``fit_circuit``
   (unit weighting, as impedance.py) vs ``CustomCircuit.fit`` with its default
   tolerances (the published tutorial numbers) and with tight ones (1e-14, converged).

Both sides get the same numpy arrays (read once with matlake's reader).  Times are
the median of ``--repeat`` runs in this process.  impedance.py evaluates circuit
strings that contain numpy-2 reprs (``np.float64(...)``); as in
tests/test_eis_validity.py, ``np`` is put into its element namespace first.

Run: ``.venv/bin/python bench/bench_eis.py [--repeat 20] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, format_machine, machine_info, table, time_call  # noqa: E402

from matlake.ingest.eis import read_spectra  # noqa: E402
from matlake.models.eis.fitting import fit_circuit  # noqa: E402
from matlake.models.eis.validity import lin_kk  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "samples" / "eis"
CIRCUIT = "R0-p(R1,C1)-p(R2-Wo1,C2)"
GUESS = [0.01, 0.01, 100, 0.01, 0.05, 100, 1]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from impedance import validation
    from impedance.models.circuits import CustomCircuit

    validation.circuit_elements["np"] = np  # numpy-2 reprs in impedance.py's eval'd strings

    info = machine_info()
    out: dict = {"machine": info}

    # ---- 1. lin-KK
    s = read_spectra(DATA / "impedancepy_Circuit3_EIS_1.z")[0]
    f, z = np.asarray(s.frequency, float), np.asarray(s.z, complex)
    t_ours, ours = time_call(lambda: lin_kk(f, z, c=0.69, max_m=100), args.repeat, "matlake lin_kk")
    def ref_linkk():
        with contextlib.redirect_stdout(io.StringIO()):  # linKK prints every M it tries
            return validation.linKK(f, z, c=0.69, max_M=100)

    t_ref, ref = time_call(ref_linkk, args.repeat, "impedance.py linKK")
    m_ref, mu_ref, zfit_ref, rr_ref, ri_ref = ref
    kk = {
        "M": (ours.m, int(m_ref)), "mu": (ours.mu, float(mu_ref)),
        "max_rel_diff_zfit": _rel(ours.z_fit, zfit_ref),
        "max_abs_diff_residuals": float(max(np.abs(ours.residuals_real - rr_ref).max(),
                                            np.abs(ours.residuals_imag - ri_ref).max())),
        "time_ours_s": t_ours.median, "time_ref_s": t_ref.median, "speedup": t_ref.median / t_ours.median,
    }
    out["linkk"] = kk

    # ---- 2. circuit fit
    s = read_spectra(DATA / "impedancepy_exampleData.csv")[0]
    f, z = np.asarray(s.frequency, float), np.asarray(s.z, complex)
    keep = z.imag < 0
    f, z = f[keep], z[keep]
    n_fit = max(3, args.repeat // 2)
    t_fit, fit = time_call(lambda: fit_circuit(CIRCUIT, f, z, GUESS), n_fit, "matlake fit_circuit")
    t_def, cc_def = time_call(lambda: CustomCircuit(CIRCUIT, initial_guess=GUESS).fit(f, z), n_fit,
                              "impedance.py fit (default tolerances)")
    t_tight, cc_tight = time_call(
        lambda: CustomCircuit(CIRCUIT, initial_guess=GUESS).fit(f, z, ftol=1e-14, xtol=1e-14, gtol=1e-14,
                                                                maxfev=100000),
        n_fit, "impedance.py fit (tolerances 1e-14)")
    chi2 = lambda zm: float(np.sum(np.abs(zm - z) ** 2))  # noqa: E731
    fitres = {
        "names": list(fit.parameter_names),
        "ours": [float(v) for v in fit.values],
        "ref_default": [float(v) for v in cc_def.parameters_],
        "ref_tight": [float(v) for v in cc_tight.parameters_],
        "max_rel_diff_vs_default": _rel(fit.values, cc_def.parameters_),
        "max_rel_diff_vs_tight": _rel(fit.values, cc_tight.parameters_),
        "chi2_ours": fit.chi_square, "chi2_ref_default": chi2(cc_def.predict(f)),
        "chi2_ref_tight": chi2(cc_tight.predict(f)),
        "time_ours_s": t_fit.median, "time_ref_default_s": t_def.median, "time_ref_tight_s": t_tight.median,
    }
    out["fit"] = fitres
    if args.json:
        emit_json(out)
        return

    print(format_machine(info))
    print(f"\nlin-KK, Circuit3_EIS_1.z (53 points), c = 0.69, median of {args.repeat} runs")
    print(table(["quantity", "matlake", "impedance.py"], [
        ["M", kk["M"][0], kk["M"][1]],
        ["mu", f"{kk['mu'][0]:.9f}", f"{kk['mu'][1]:.9f}"],
        ["time (ms)", f"{1e3 * kk['time_ours_s']:.2f}", f"{1e3 * kk['time_ref_s']:.2f}"],
    ]))
    print(f"max relative difference of Z_fit: {kk['max_rel_diff_zfit']:.2e}; "
          f"max |difference| of residuals: {kk['max_abs_diff_residuals']:.2e}; "
          f"impedance.py / matlake time: {kk['speedup']:.1f}x")

    print(f"\nfit {CIRCUIT}, exampleData.csv ({len(f)} points, Im Z > 0 removed), median of {n_fit} runs")
    rows = [[n, f"{a:.4g}", f"{b:.4g}", f"{c:.4g}"]
            for n, a, b, c in zip(fitres["names"], fitres["ours"], fitres["ref_default"], fitres["ref_tight"])]
    rows.append(["chi-square", f"{fitres['chi2_ours']:.6g}", f"{fitres['chi2_ref_default']:.6g}",
                 f"{fitres['chi2_ref_tight']:.6g}"])
    rows.append(["time (ms)", f"{1e3 * t_fit.median:.1f}", f"{1e3 * t_def.median:.1f}", f"{1e3 * t_tight.median:.1f}"])
    print(table(["parameter", "matlake", "impedance.py default tol", "impedance.py tol 1e-14"], rows))
    print(f"max relative difference: vs default tolerances {fitres['max_rel_diff_vs_default']:.2e}, "
          f"vs converged {fitres['max_rel_diff_vs_tight']:.2e}; time ratio impedance.py/matlake: "
          f"{t_def.median / t_fit.median:.2f}x (default tol), {t_tight.median / t_fit.median:.2f}x (tol 1e-14)")


if __name__ == "__main__":
    main()
