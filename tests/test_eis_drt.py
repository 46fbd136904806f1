"""Distribution of relaxation times: peak positions and areas on known circuits."""

from __future__ import annotations

import numpy as np
import pytest

from matlake.models.eis.drt import fit_drt

F = np.logspace(-3, 5, 81)
S = 2j * np.pi * F


def noisy(z: np.ndarray, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return z + level * np.abs(z) * (rng.standard_normal(z.size) + 1j * rng.standard_normal(z.size)) / np.sqrt(2)


@pytest.mark.parametrize(("level", "seed"), [(0.0, 0), (0.003, 0), (0.003, 1), (0.003, 2), (0.003, 3)])
def test_two_rc_elements_give_two_peaks_at_rc_with_their_resistances(level, seed):
    z = 10 + 20 / (1 + S * 1e-4) + 100 / (1 + S * 1e-1)
    res = fit_drt(F, noisy(z, level, seed))
    big = sorted((p for p in res.peaks if p.resistance_ohm > 5), key=lambda p: p.tau_s)
    assert len(big) == 2
    assert abs(np.log10(big[0].tau_s / 1e-4)) < 0.1
    assert abs(np.log10(big[1].tau_s / 1e-1)) < 0.1
    assert big[0].resistance_ohm == pytest.approx(20, rel=0.1)
    assert big[1].resistance_ohm == pytest.approx(100, rel=0.1)
    assert res.r_inf == pytest.approx(10, rel=0.02)
    assert res.r_pol == pytest.approx(120, rel=0.03)
    assert np.all(res.gamma >= 0)  # exactly: the fit clips bvls's -1e-319 at the bound x >= 0


@pytest.mark.parametrize("level", [0.0, 0.003])
def test_zarc_gives_one_broad_peak_centred_at_tau0(level):
    tau0 = 1e-2
    z = 10 + 100 / (1 + (S * tau0) ** 0.8)
    res = fit_drt(F, noisy(z, level, 1))
    main = max(res.peaks, key=lambda p: p.resistance_ohm)
    assert abs(np.log10(main.tau_s / tau0)) < 0.1
    assert main.resistance_ohm > 0.9 * res.r_pol
    # broad: clearly wider at half maximum than the peak of a single RC element
    rc = fit_drt(F, noisy(10 + 100 / (1 + S * tau0), level, 1))

    def fwhm_decades(r):
        above = r.tau[r.gamma >= 0.5 * r.gamma.max()]
        return np.log10(above.max() / above.min())

    assert fwhm_decades(res) > 1.3 * fwhm_decades(rc)


def test_drt_fits_series_inductance():
    z = 10 + S * 2e-6 + 50 / (1 + S * 1e-3)
    res = fit_drt(F, noisy(z, 0.002, 2), inductance=True)
    assert res.inductance == pytest.approx(2e-6, rel=0.05)
    main = max(res.peaks, key=lambda p: p.resistance_ohm)
    assert abs(np.log10(main.tau_s / 1e-3)) < 0.1


def test_larger_lambda_smooths_the_drt():
    z = noisy(10 + 20 / (1 + S * 1e-4) + 100 / (1 + S * 1e-1), 0.003, 3)
    rough = fit_drt(F, z, lam=1e-6)
    smooth = fit_drt(F, z, lam=1.0)
    assert smooth.gamma.max() < rough.gamma.max()
    assert smooth.lam == 1.0


def test_drt_rejects_bad_lambda():
    with pytest.raises(ValueError, match="lam"):
        fit_drt(F, 10 + 100 / (1 + S * 1e-2), lam=-1.0)
