"""Lin-KK validity test: reference numbers from impedance.py and synthetic checks."""

from __future__ import annotations


import numpy as np
import pytest
from conftest import eis_spectrum as load_spectrum

from matlake.models.eis.validity import lin_kk, time_constants



def _rc_rc(f: np.ndarray) -> np.ndarray:
    s = 2j * np.pi * f
    return 10 + 20 / (1 + s * 1e-4) + 100 / (1 + s * 1e-1)


def test_linkk_reproduces_impedancepy_m_and_mu_on_circuit3():
    f, z = load_spectrum("impedancepy_Circuit3_EIS_1.z")
    res = lin_kk(f, z, c=0.69, max_m=100)
    assert res.m == 10
    assert round(res.mu, 6) == 0.684382
    assert res.residuals_real.shape == f.shape
    assert res.pseudo_chi_square == pytest.approx(np.sum(res.residuals_real**2 + res.residuals_imag**2))


@pytest.mark.parametrize("fit_type", ["real", "complex", "imag"])
@pytest.mark.parametrize("add_cap", [False, True])
def test_linkk_residuals_match_impedancepy(fit_type, add_cap, monkeypatch):
    validation = pytest.importorskip("impedance.validation")
    # impedance.py evaluates circuit strings that contain numpy-2 reprs (np.float64(...))
    monkeypatch.setitem(validation.circuit_elements, "np", np)
    f, z = load_spectrum("impedancepy_Circuit3_EIS_1.z")
    m_ref, mu_ref, z_ref, rr_ref, ri_ref = validation.linKK(
        f, z, c=0.69, max_M=100, fit_type=fit_type, add_cap=add_cap
    )
    res = lin_kk(f, z, c=0.69, max_m=100, fit_type=fit_type, add_cap=add_cap)
    assert res.m == m_ref
    assert res.mu == pytest.approx(mu_ref, abs=1e-8)
    np.testing.assert_allclose(res.z_fit, z_ref, rtol=1e-7, atol=1e-6 * np.abs(z).max())
    np.testing.assert_allclose(res.residuals_real, rr_ref, atol=1e-8)
    np.testing.assert_allclose(res.residuals_imag, ri_ref, atol=1e-8)


def test_linkk_separates_kk_consistent_from_drifting_spectrum():
    f = np.logspace(-2, 5, 60)
    z = _rc_rc(f)
    good = lin_kk(f, z, fit_type="complex", c=None, max_m=30)
    assert np.max(np.abs(good.residuals_real)) < 5e-3
    assert np.max(np.abs(good.residuals_imag)) < 5e-3
    # a real part that drifts by +30 % below 1 Hz (time variance) is not KK-consistent
    bad_z = z.real * (1 + 0.3 / (1 + (f / 0.3) ** 2)) + 1j * z.imag
    bad = lin_kk(f, bad_z, fit_type="complex", c=None, max_m=30)
    assert bad.pseudo_chi_square > 20 * good.pseudo_chi_square
    assert np.max(np.abs(bad.residuals_real)) > 0.01


def test_linkk_fixed_m_uses_log_spaced_time_constants():
    f = np.logspace(-1, 4, 40)
    res = lin_kk(f, _rc_rc(f), c=None, max_m=7)
    assert res.m == 7
    np.testing.assert_allclose(res.tau[[0, -1]], [1 / (2 * np.pi * 1e4), 1 / (2 * np.pi * 0.1)])
    assert np.allclose(np.diff(np.log(res.tau)), np.log(res.tau[1] / res.tau[0]))
    np.testing.assert_allclose(time_constants(f, 7), res.tau)


def test_linkk_with_series_capacitance_recovers_c():
    f = np.logspace(-2, 4, 50)
    s = 2j * np.pi * f
    z = 5 + 50 / (1 + s * 1e-3) + 1 / (s * 2e-3)
    res = lin_kk(f, z, fit_type="complex", add_cap=True, c=None, max_m=25)
    assert res.capacitance == pytest.approx(2e-3, rel=0.02)
    assert res.noise_estimate < 5e-3


# lin-KK time per call: bench/bench_eis_speed.py and bench/bench_eis.py (measured, never asserted)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"frequency_hz": np.array([1.0, 2.0, 3.0]), "z": np.ones(2, complex)}, "z"),
        ({"frequency_hz": np.array([-1.0, 2.0, 3.0]), "z": np.ones(3, complex)}, "frequency_hz"),
        ({"frequency_hz": np.array([1.0, 2.0, 3.0]), "z": np.ones(3)}, "z"),
        ({"frequency_hz": np.array([1.0, 2.0, 3.0]), "z": np.ones(3, complex), "c": 1.5}, "c"),
        ({"frequency_hz": np.array([1.0, 2.0, 3.0]), "z": np.ones(3, complex), "fit_type": "abs"}, "fit_type"),
    ],
)
def test_linkk_rejects_bad_input_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        lin_kk(**kwargs)


def test_linkk_negative_mu_does_not_stop_at_an_under_resolved_m():
    # noise-free R-RC-C: impedance.py stops at M = 3 with mu = -0.998 and 8 % residuals
    f = np.logspace(-3, 5, 81)
    s = 2j * np.pi * f
    z = 10 + 100 / (1 + s * 1e-2) + 1 / (s * 1e-2)
    res = lin_kk(f, z, c=0.85, max_m=100, fit_type="complex", add_cap=True)
    assert res.mu_history[2] < 0  # the early dip is still recorded
    assert res.m > 3 and 0 <= res.mu <= 0.85
    assert res.noise_estimate < 0.05


def test_linkk_min_m_holds_back_the_mu_test():
    f = np.logspace(-3, 5, 81)
    s = 2j * np.pi * f
    z = 10 + 100 / (1 + s * 1e-2)
    early = lin_kk(f, z, c=0.85, fit_type="complex", add_cap=True)
    late = lin_kk(f, z, c=0.85, fit_type="complex", add_cap=True, min_m=9)
    assert early.m == 3 and late.m >= 9
    assert late.noise_estimate < early.noise_estimate
    with pytest.raises(ValueError, match="min_m"):
        lin_kk(f, z, min_m=0)
