"""Weighted complex nonlinear least squares against impedance.py's getting-started example."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import sample

from matlake.models.eis.circuits import parse_circuit
from matlake.models.eis.fitting import fit_circuit

CIRCUIT = "R0-p(R1,C1)-p(R2-Wo1,C2)"
GUESS = [0.01, 0.01, 100, 0.01, 0.05, 100, 1]
# impedance.py 1.7 getting-started tutorial (CustomCircuit.fit with curve_fit defaults)
PUBLISHED = {"R0": 1.65e-2, "R1": 8.68e-3, "C1": 3.32, "R2": 5.39e-3, "Wo1_Z0": 6.31e-2, "Wo1_tau": 233, "C2": 0.220}


@pytest.fixture(scope="module")
def example() -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(sample("eis", "impedancepy_exampleData.csv"), delimiter=",")
    f, z = data[:, 0], data[:, 1] + 1j * data[:, 2]
    keep = z.imag < 0  # the tutorial's ignoreBelowX: drop the inductive points
    return f[keep], z[keep]


@pytest.fixture(scope="module")
def fit(example):
    return fit_circuit(CIRCUIT, *example, GUESS)


def test_fit_reproduces_impedancepy_tutorial_parameters(fit) -> None:
    assert fit.success and fit.n_points == 57
    values = fit.parameters()
    for name in ("R0", "R1", "C1", "R2", "C2"):
        assert values[name] == pytest.approx(PUBLISHED[name], rel=6e-3), name  # 3 significant digits
    assert f"{values['R0']:.3g} {values['R1']:.3g} {values['C1']:.3g}" == "0.0165 0.00868 3.32"
    assert f"{values['R2']:.3g} {values['C2']:.3g}" == "0.00539 0.22"
    # The published Wo1 (6.31e-2, 233) is where curve_fit's default tolerances stop; the converged
    # minimum (6.37e-2, 238) lies well within one standard error of it and has a lower chi-square.
    for name in ("Wo1_Z0", "Wo1_tau"):
        i = fit.parameter_names.index(name)
        assert abs(fit.values[i] - PUBLISHED[name]) < fit.stderr[i], name


def test_fit_reaches_lower_chi_square_than_impedancepy_defaults(fit, example) -> None:
    from impedance.models.circuits import CustomCircuit

    f, z = example
    theirs = CustomCircuit(CIRCUIT, initial_guess=GUESS).fit(f, z)
    chi2_theirs = float(np.sum(np.abs(theirs.predict(f) - z) ** 2))
    assert fit.chi_square < chi2_theirs
    assert np.allclose(theirs.parameters_, [PUBLISHED[n] for n in fit.parameter_names], rtol=6e-3)


def test_fit_matches_converged_impedancepy_custom_circuit(fit, example) -> None:
    from impedance.models.circuits import CustomCircuit

    f, z = example
    theirs = CustomCircuit(CIRCUIT, initial_guess=GUESS).fit(f, z, ftol=1e-14, xtol=1e-14, gtol=1e-14, maxfev=100000)
    assert np.allclose(fit.values, theirs.parameters_, rtol=1e-4)
    # curve_fit's confidence = sqrt(diag(pcov)) scaled by the residual variance, as our stderr
    assert np.allclose(fit.stderr, theirs.conf_, rtol=1e-3)


def test_fit_result_is_frozen_and_evaluates_fitted_impedance(fit, example) -> None:
    f, z = example
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.weighting = "modulus"  # type: ignore[misc]
    assert np.allclose(fit.impedance(f), z - fit.residuals, rtol=1e-12)
    assert fit.chi_square == pytest.approx(float(np.sum(np.abs(fit.residuals) ** 2)), rel=1e-10)
    assert np.allclose(np.diag(fit.correlation), 1.0)
    assert np.all(np.abs(fit.correlation) <= 1 + 1e-9)
    assert fit.parameter_units == ("ohm", "ohm", "F", "ohm", "ohm", "s", "F")


def _synthetic(circuit: str, params: list[float], noise: float = 0.0, seed: int = 0):
    f = np.logspace(-2, 5, 50)
    z = parse_circuit(circuit).impedance(params, f)
    rng = np.random.default_rng(seed)
    z = z + noise * np.abs(z) * (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f)))
    return f, z


@pytest.mark.parametrize("weighting", ["unit", "modulus", "proportional"])
def test_each_weighting_recovers_noise_free_parameters(weighting: str) -> None:
    true = [10.0, 100.0, 1e-5, 0.85, 50.0, 1e-3]
    circuit = "R0-p(R1,CPE1)-p(R2,C2)"
    f, z = _synthetic(circuit, true)
    result = fit_circuit(circuit, f, z, [5.0, 50.0, 3e-5, 0.7, 20.0, 3e-3], weighting=weighting)
    assert result.weighting == weighting
    assert np.allclose(result.values, true, rtol=1e-6)


def test_fixed_parameter_is_held_and_gets_no_stderr() -> None:
    f, z = _synthetic("R0-p(R1,C1)", [10.0, 100.0, 1e-5], noise=1e-3)
    result = fit_circuit("R0-p(R1,C1)", f, z, [50.0, 1e-4], fixed={"R0": 12.0})
    assert result.values[0] == 12.0 and result.fixed == (True, False, False)
    assert np.isnan(result.stderr[0]) and np.all(result.stderr[1:] > 0)
    assert result.n_free == 2


def test_alpha_stays_within_bounds_when_started_on_the_bound() -> None:
    f, z = _synthetic("R0-p(R1,CPE1)", [10.0, 100.0, 1e-5, 0.8])
    result = fit_circuit("R0-p(R1,CPE1)", f, z, [10.0, 100.0, 1e-5, 1.0])
    assert 0 < result.values[3] <= 1
    assert result.values[3] == pytest.approx(0.8, rel=1e-6)


def test_multistart_is_seeded_and_never_worse_than_a_single_start(example) -> None:
    f, z = example
    single = fit_circuit(CIRCUIT, f, z, GUESS)
    multi = fit_circuit(CIRCUIT, f, z, GUESS, n_starts=5, seed=3)
    again = fit_circuit(CIRCUIT, f, z, GUESS, n_starts=5, seed=3)
    assert multi.n_starts == 5
    assert multi.chi_square <= single.chi_square * (1 + 1e-12)
    assert np.array_equal(multi.values, again.values)


def test_information_criteria_prefer_the_generating_circuit() -> None:
    f, z = _synthetic("R0-p(R1,C1)-p(R2,C2)", [10.0, 100.0, 1e-5, 80.0, 1e-2], noise=2e-3, seed=1)
    one = fit_circuit("R0-p(R1,C1)", f, z, [10.0, 150.0, 1e-4], weighting="modulus")
    two = fit_circuit("R0-p(R1,C1)-p(R2,C2)", f, z, [10.0, 100.0, 3e-5, 50.0, 3e-2], weighting="modulus")
    assert two.aic < one.aic and two.bic < one.bic
    # each real residual / |Z| has noise variance (2e-3)^2; 95 degrees of freedom: +-15 % per sigma
    assert two.reduced_chi_square == pytest.approx(2e-3**2, rel=0.4)


def test_bad_fit_inputs_name_the_field() -> None:
    f, z = _synthetic("R0-p(R1,C1)", [10.0, 100.0, 1e-5])
    with pytest.raises(ValueError, match="weighting: expected one of"):
        fit_circuit("R0-p(R1,C1)", f, z, [1, 1, 1], weighting="sigma")
    with pytest.raises(ValueError, match="initial_guess: expected 3 values"):
        fit_circuit("R0-p(R1,C1)", f, z, [1, 1])
    with pytest.raises(ValueError, match="f, z: expected 1-D arrays of equal length"):
        fit_circuit("R0-p(R1,C1)", f[:-1], z, [1, 1, 1])
    with pytest.raises(ValueError, match=r"fixed: unknown parameter names \['R9'\]"):
        fit_circuit("R0-p(R1,C1)", f, z, [1, 1, 1], fixed={"R9": 1.0})
    with pytest.raises(ValueError, match="initial_guess: expected positive values"):
        fit_circuit("R0-p(R1,C1)", f, z, [1, -1, 1])


def test_parameters_with_negative_lower_bound_are_fitted_linearly() -> None:
    # an offset that may be negative (e.g. a mis-calibrated series resistance) needs a linear fit
    f, z = _synthetic("R0-p(R1,C1)", [-2.0, 100.0, 1e-5])
    bounds = ([-np.inf, 0.0, 0.0], [np.inf, np.inf, np.inf])
    result = fit_circuit("R0-p(R1,C1)", f, z, [1.0, 50.0, 3e-5], bounds=bounds)
    assert np.allclose(result.values, [-2.0, 100.0, 1e-5], rtol=1e-7)
