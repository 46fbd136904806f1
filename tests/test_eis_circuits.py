"""Equivalent-circuit trees: parsing, impedance against impedance.py, rational form, identifiability."""

from __future__ import annotations

import numpy as np
import pytest

from matlake.models.eis.circuits import Circuit, identifiability, parse_circuit

elements = pytest.importorskip("impedance.models.circuits.elements")
F = np.logspace(-4, 6, 81)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize(
    "kind, params",
    [
        ("R", [12.5]),
        ("C", [3.3e-5]),
        ("L", [2.1e-6]),
        ("CPE", [4.2e-4, 0.83]),
        ("W", [17.0]),
        ("Wo", [0.063, 233.0]),
        ("Ws", [0.9, 0.02]),
    ],
)
def test_element_impedance_matches_impedancepy_elements(kind: str, params: list[float]) -> None:
    ours = parse_circuit(f"{kind}1").impedance(params, F)
    theirs = getattr(elements, kind)(params, F)
    assert rel_err(ours, theirs) < 1e-12


@pytest.mark.parametrize(
    "text, params",
    [
        ("R0-p(R1,C1)-p(R2-Wo1,C2)", [0.0165, 0.0087, 3.32, 0.0054, 0.063, 233.0, 0.22]),
        ("R0-p(R1,CPE1)-W1", [10.0, 50.0, 1e-4, 0.9, 3.0]),
        ("L0-R0-p(R1,C1,Ws1)", [1e-6, 2.0, 30.0, 1e-5, 15.0, 0.5]),
        ("p(R1-C1,R2-p(C2,R3))", [5.0, 1e-3, 20.0, 2e-6, 100.0]),
    ],
)
@pytest.mark.filterwarnings("ignore:Simulating circuit based on initial parameters")
def test_composite_circuits_match_impedancepy_custom_circuit(text: str, params: list[float]) -> None:
    from impedance.models.circuits import CustomCircuit

    theirs = CustomCircuit(text, initial_guess=params).predict(F, use_initial=True)
    assert rel_err(parse_circuit(text).impedance(params, F), theirs) < 1e-12


@pytest.mark.parametrize(
    "text",
    ["R0", "R0-p(R1,C1)-p(R2-Wo1,C2)", "p(R1,p(C1,L1),CPE1)-W1", "p(R0-p(R1,C1),Ws1-Wo2)", "R_a-C_b"],
)
def test_parse_print_round_trips(text: str) -> None:
    c = parse_circuit(text)
    assert str(c) == text
    assert parse_circuit(str(c)) == c


def test_whitespace_is_ignored_and_printed_canonically() -> None:
    assert str(parse_circuit(" R0 - p( R1 , C1 ) ")) == "R0-p(R1,C1)"


@pytest.mark.parametrize(
    "text, position, expected",
    [
        ("R0-", 3, "expected an element"),
        ("R0--C1", 3, "expected an element"),
        ("p(R1)", 4, "second branch"),
        ("p(R1,C1", 7, "')' closing the parallel group"),
        ("R0-X1", 3, "one of R, C, L, CPE, W, Wo, Ws"),
        ("R0 C1", 3, "'-' (series)"),
        ("R0-p(R1,C1))", 11, "end of string"),
    ],
)
def test_bad_circuit_strings_name_position_and_expectation(text: str, position: int, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_circuit(text)
    assert f"position {position}" in str(err.value)
    assert expected in str(err.value)


def test_duplicate_labels_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="'R1' appears twice"):
        parse_circuit("R1-p(R1,C1)")


def test_parameter_names_units_and_order_follow_impedancepy() -> None:
    c = parse_circuit("R0-p(R1,CPE1)-p(R2-Wo1,C2)-W1")
    assert c.param_names == ("R0", "R1", "CPE1_Q", "CPE1_alpha", "R2", "Wo1_Z0", "Wo1_tau", "C2", "W1")
    assert c.param_units == ("ohm", "ohm", "F s^(alpha-1)", "1", "ohm", "ohm", "s", "F", "ohm s^-1/2")
    lo, hi = c.default_bounds
    assert np.all(lo == 0) and hi[3] == 1.0 and np.isinf(hi[0])


def test_wrong_parameter_count_names_expected_names() -> None:
    with pytest.raises(ValueError, match=r"expected 3 values \['R0', 'R1', 'C1'\]"):
        parse_circuit("R0-p(R1,C1)").impedance([1.0, 2.0], F)


def test_impedance_accepts_parameter_dict() -> None:
    c = parse_circuit("R0-p(R1,C1)")
    assert np.allclose(c.impedance({"C1": 1e-3, "R0": 1.0, "R1": 10.0}, F), c.impedance([1.0, 10.0, 1e-3], F))


def test_analytic_jacobian_matches_finite_differences() -> None:
    c = parse_circuit("R0-p(R1,CPE1)-p(R2-Wo1,C2)-Ws1-W1-L1")
    p = np.array([1.0, 5.0, 1e-3, 0.8, 3.0, 2.0, 10.0, 1e-4, 4.0, 0.3, 0.7, 1e-6])
    _, jac = c.impedance_jacobian(p, F)
    for i in range(len(p)):
        h = 1e-6 * p[i]
        up, dn = p.copy(), p.copy()
        up[i] += h
        dn[i] -= h
        fd = (c.impedance(up, F) - c.impedance(dn, F)) / (2 * h)
        scale = np.abs(fd) + np.abs(c.impedance(p, F)) / p[i] * 1e-3
        assert np.max(np.abs(jac[:, i] - fd) / scale) < 1e-5, c.param_names[i]


def test_finite_warburgs_are_finite_and_reach_their_limits_at_extreme_frequencies() -> None:
    f = np.array([1e-12, 1e12])
    z0, tau = 2.0, 5.0
    wo = parse_circuit("Wo1").impedance([z0, tau], f)
    ws = parse_circuit("Ws1").impedance([z0, tau], f)
    w = 2 * np.pi * f
    assert np.all(np.isfinite(wo)) and np.all(np.isfinite(ws))
    # low f: Ws -> Z0, Wo -> Z0/3 + Z0/(j w tau); high f: both -> Z0/sqrt(j w tau)
    assert ws[0] == pytest.approx(z0, rel=1e-9)
    assert wo[0] == pytest.approx(z0 / 3 + z0 / (1j * w[0] * tau), rel=1e-9)
    assert wo[1] == pytest.approx(z0 / np.sqrt(1j * w[1] * tau), rel=1e-9)
    assert ws[1] == pytest.approx(z0 / np.sqrt(1j * w[1] * tau), rel=1e-9)


def test_topology_ignores_order_and_nesting() -> None:
    a = parse_circuit("R0-p(R1,C1)-p(R2,C2)")
    b = parse_circuit("p(C2,R2)-R0-p(C1,R1)")
    assert a.topology() == b.topology() == "R-p(R,C)-p(R,C)"
    assert parse_circuit("p(R1,p(C1,C2))").topology() == parse_circuit("p(C1,R1,C2)").topology()
    assert a.topology() != parse_circuit("R0-p(R1,C1-p(R2,C2))").topology()


@pytest.mark.parametrize(
    "text, degrees",
    [("R0-p(R1,C1)-p(R2,C2)", (2, 2)), ("R0-C1-p(R1,C2)", (2, 2)), ("p(R1,L1)-C1", (2, 2)), ("C1-C2", (0, 1))],
)
def test_rational_function_equals_numeric_impedance(text: str, degrees: tuple[int, int]) -> None:
    c = parse_circuit(text)
    p = np.exp(np.random.default_rng(1).uniform(-1, 1, c.n_params))
    rf = c.rational(p)
    assert rf.degrees == degrees
    assert rel_err(rf(2j * np.pi * F), c.impedance(p, F)) < 1e-12


def test_series_capacitor_gives_structural_zero_in_denominator() -> None:
    rf = parse_circuit("R0-C1-p(R1,C2)").rational()
    assert rf.structural_zeros == ((), (0,))
    assert parse_circuit("R0-p(R1,C1)").rational().structural_zeros == ((), ())


def test_symbolic_rational_function_agrees_with_numeric() -> None:
    import sympy

    c = parse_circuit("R0-p(R1,C1)-p(R2,C2)")
    p = [1.3, 2.0, 0.7, 5.0, 0.01]
    num, den = c.rational_symbolic()
    subs = {sympy.Symbol(n, positive=True): v for n, v in zip(c.param_names, p)}
    s = sympy.Symbol("s")
    assert sympy.degree(num, s) == 2 and sympy.degree(den, s) == 2
    value = complex((num / den).subs(subs).subs(s, 2j * np.pi * 3.0))
    assert value == pytest.approx(c.impedance(p, [3.0])[0], rel=1e-12)


def test_rational_coefficient_jacobian_matches_finite_differences() -> None:
    c = parse_circuit("R0-p(R1,C1-p(R2,C2))")
    p = np.array([1.0, 2.0, 0.5, 3.0, 0.2])
    rf = c.rational(p)
    flat = lambda r: np.concatenate([r.numerator, np.delete(r.denominator, r.norm_index)])  # noqa: E731
    for i in range(len(p)):
        up, dn = p.copy(), p.copy()
        up[i] *= 1 + 1e-6
        dn[i] *= 1 - 1e-6
        fd = (flat(c.rational(up)) - flat(c.rational(dn))) / (2e-6 * p[i])
        assert np.allclose(rf.jacobian[:, i], fd, rtol=1e-6, atol=1e-9)


def test_voigt_two_time_constants_is_fully_identifiable() -> None:
    r = identifiability("R0-p(R1,C1)-p(R2,C2)")
    assert (r.rank, r.n_params, r.method) == (5, 5, "rational")
    assert r.identifiable and r.unidentifiable == ()


def test_series_resistors_identify_only_their_sum() -> None:
    r = identifiability("R1-R2", params=[2.0, 3.0])
    assert (r.rank, r.n_params) == (1, 2)
    assert r.unidentifiable == ("R1", "R2")
    # null direction in log-parameters: R1 dlnR1 + R2 dlnR2 = 0 keeps R1 + R2 fixed
    (direction,) = r.null_directions
    assert direction["R1"] / direction["R2"] == pytest.approx(-3.0 / 2.0)


def test_parallel_capacitors_identify_only_their_sum() -> None:
    r = identifiability("p(C1,C2)")
    assert (r.rank, r.n_params, r.unidentifiable) == (1, 2, ("C1", "C2"))


def test_resistor_with_cpe_is_fully_identifiable_over_frequency() -> None:
    r = identifiability("R0-CPE1")
    assert (r.rank, r.n_params, r.method) == (3, 3, "frequency")


def test_unidentifiable_pair_found_only_where_it_is_in_a_mixed_circuit() -> None:
    r = identifiability("R0-R3-p(R1,CPE1)-Wo1")
    assert (r.rank, r.n_params) == (6, 7)
    assert r.unidentifiable == ("R0", "R3")


def test_bad_parameters_in_circuit_constructor() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_circuit(3)  # type: ignore[arg-type]
    assert isinstance(Circuit.parse("R1"), Circuit)
