"""Series-parallel enumeration, R/C families with identical spectra, and exact parameter maps."""

from __future__ import annotations

import numpy as np
import pytest

from matlake.models.eis import enumeration
from matlake.models.eis.circuits import _canonical_tree, _topology_string, identifiability, parse_circuit
from matlake.models.eis.enumeration import (
    circuit_from_tree,
    count_networks,
    enumerate_networks,
    family_of,
    map_parameters,
    rc_class,
    rc_families,
)

F = np.logspace(-4, 4, 81)


def test_one_type_counts_are_oeis_a000084() -> None:
    assert [count_networks(n) for n in range(1, 8)] == [1, 2, 4, 10, 24, 66, 180]


def _closure(n: int, types: tuple[str, ...]) -> set[str]:
    """Independent count: every binary series/parallel combination, deduplicated by topology."""
    by_size: dict[int, set[str]] = {1: set(types)}
    for size in range(2, n + 1):
        found = set()
        for k in range(1, size // 2 + 1):
            for a in by_size[k]:
                for b in by_size[size - k]:
                    for text in (f"{a}-{b}", f"p({a},{b})"):
                        found.add(_label_and_topology(text))
        by_size[size] = found
    return by_size[n]


def _label_and_topology(text: str) -> str:
    # give every element a unique label so the string parses, then take its topology
    out, k = [], 0
    i = 0
    while i < len(text):
        if text.startswith("p(", i):
            out.append("p(")
            i += 2
        elif text[i] in "RC":
            out.append(f"{text[i]}{k}")
            k += 1
            i += 1
        else:
            out.append(text[i])
            i += 1
    return parse_circuit("".join(out)).topology()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_two_type_enumeration_matches_brute_force_closure(n: int) -> None:
    ours = [_topology_string(t) for t in enumerate_networks(n, ("R", "C"))]
    assert len(ours) == len(set(ours))  # each network exactly once
    assert set(ours) == _closure(n, ("R", "C"))


def test_enumerated_trees_are_canonical() -> None:
    for t in enumerate_networks(6, ("R", "C")):
        c = circuit_from_tree(t)
        assert _canonical_tree(c.root) == t


def test_enumeration_up_to_seven_elements_from_cold_caches_is_consistent() -> None:
    # its time is measured in bench/bench_eis_speed.py, not asserted here
    enumeration._rooted.cache_clear()
    enumeration._not_rooted.cache_clear()
    enumeration._family_trees.cache_clear()
    assert count_networks(7) == 180
    assert count_networks(7, ("R", "C")) == len(set(map(str, enumerate_networks(7, ("R", "C")))))
    families = rc_families(7)
    assert sum(len(f) for f in families) == sum(
        len(enumerate_networks(n, ("R", "C"), identifiable_only=True)) for n in range(1, 8)
    )


def test_structural_class_agrees_with_rational_function_and_jacobian_rank() -> None:
    for n in range(1, 7):
        for tree in enumerate_networks(n, ("R", "C")):
            c = circuit_from_tree(tree)
            cls = rc_class(tree)
            p = np.exp(np.random.default_rng(n).uniform(-0.5, 0.5, c.n_params))
            rf = c.rational(p)
            assert rf.degrees == cls.degrees, str(c)
            assert rf.structural_zeros == ((), (0,) if cls.series_capacitance else ()), str(c)
            rank = identifiability(c, params=p).rank
            assert rank == cls.n_free, str(c)
            assert cls.identifiable == (rank == c.n_params), str(c)


def test_two_time_constant_family_holds_voigt_cauer_and_maxwell_forms() -> None:
    family = family_of("R0-p(R1,C1)-p(R2,C2)")
    assert family.n_time_constants == 2 and family.n_params == 5 and family.degrees == (2, 2)
    assert "R0-p(R1,C1)-p(R2,C2)" in family.members  # the caller's own labels
    for text in ("R0-p(C1,R1-p(C2,R2))", "p(R0,R1-C1,R2-C2)", "p(R2,C2)-R0-p(C1,R1)"):
        assert parse_circuit(text) in family
    assert parse_circuit("R0-p(R1,C1)") not in family
    assert len(set(family.topologies)) == len(family)


def test_degenerate_networks_are_kept_out_of_families() -> None:
    assert not rc_class("R1-R2-p(R3,C1)").identifiable
    assert not rc_class("p(C1,C2)").identifiable
    with pytest.raises(ValueError, match="degenerate"):
        family_of("R1-R2-p(R3,C1)")
    with pytest.raises(ValueError, match=r"R and C elements only, found \['CPE'\]"):
        family_of("R0-p(R1,CPE1)")


SOURCES = {
    1: ["R0-p(R1,C1)", "C0-p(R0,C1)"],
    2: ["R0-p(R1,C1)-p(R2,C2)", "p(R0,C1)-p(R1,C2)", "R0-C0-p(R1,C1)-p(R2,C2)"],
    3: ["R0-p(R1,C1)-p(R2,C2)-p(R3,C3)", "C0-p(R1,C1)-p(R2,C2)-p(R3,C3)"],
}


@pytest.mark.parametrize("n_tau", [1, 2, 3])
def test_every_family_member_reproduces_the_impedance_after_mapping(n_tau: int) -> None:
    for src in SOURCES[n_tau]:
        source = parse_circuit(src)
        family = family_of(source)
        assert family.n_time_constants == n_tau
        for seed in range(3):
            p = np.exp(np.random.default_rng(seed).uniform(np.log(0.1), np.log(10.0), source.n_params))
            z = source.impedance(p, F)
            for member in family.members:
                q = map_parameters(source, p, member)
                assert np.all(q > 0), member
                z_member = parse_circuit(member).impedance(q, F)
                assert np.max(np.abs(z_member - z) / np.abs(z)) < 1e-10, member


def test_voigt_to_cauer_and_back_recovers_parameters_up_to_relabelling() -> None:
    voigt, cauer = "R0-p(R1,C1)-p(R2,C2)-p(R3,C3)", "R0-p(C1,R1-p(C2,R2-p(C3,R3)))"
    p = np.array([0.5, 2.0, 1e-3, 7.0, 0.3, 1.5, 40.0])
    back = map_parameters(cauer, map_parameters(voigt, p, cauer), voigt)
    taus = lambda x: sorted(x[1::2][:3] * x[2::2][:3])  # noqa: E731
    assert back[0] == pytest.approx(p[0], rel=1e-12)
    assert np.allclose(taus(back), taus(p), rtol=1e-11)
    assert sorted(back[1::2]) == pytest.approx(sorted(p[1::2]), rel=1e-11)


def test_map_parameters_rejects_a_circuit_of_another_family() -> None:
    with pytest.raises(ValueError, match="expected a member of the family"):
        map_parameters("R0-p(R1,C1)-p(R2,C2)", [1, 2, 3, 4, 5], "C0-p(R0,C1)-p(R1,C2)")
    with pytest.raises(ValueError, match="positive"):
        map_parameters("R0-p(R1,C1)", [1, -2, 3], "p(R0,R1-C1)")


def test_enumeration_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive number of elements"):
        enumerate_networks(0)
    with pytest.raises(ValueError, match="element types"):
        enumerate_networks(3, ("X",))


# ------------------------------------------- R/C counts against an independent brute force


def _brute_force_rc(n_max: int) -> dict[int, set[str]]:
    """Every series-parallel network of R and C up to ``n_max`` elements, by size.

    Independent of matlake's enumeration: every network of k elements is a series or
    parallel join of two smaller ones, so all binary joins are formed and each result
    canonicalised by hand - a join of same-kind nodes is flattened (associativity) and
    the children's canonical strings are sorted (commutativity).
    """
    nodes: dict[str, tuple[str, tuple[str, ...]]] = {"R": ("", ()), "C": ("", ())}
    by_size: dict[int, set[str]] = {1: {"R", "C"}}

    def join(op: str, a: str, b: str) -> str:
        kids: list[str] = []
        for x in (a, b):
            x_op, x_kids = nodes[x]
            kids += list(x_kids) if x_op == op else [x]
        key = f"{op}[{','.join(sorted(kids))}]"
        nodes.setdefault(key, (op, tuple(sorted(kids))))
        return key

    for size in range(2, n_max + 1):
        found: set[str] = set()
        for k in range(1, size // 2 + 1):
            for a in by_size[k]:
                for b in by_size[size - k]:
                    found.add(join("s", a, b))
                    found.add(join("p", a, b))
        by_size[size] = found
    return by_size


def _brute_force_key(tree) -> str:
    """A matlake tree (leaf type, or (op, *children)) in the brute force's canonical notation."""
    if isinstance(tree, str):
        return tree
    op, *kids = tree
    flat: list[str] = []
    stack = list(kids)
    while stack:  # flatten same-kind children (matlake's trees have none; checked, not assumed)
        kid = stack.pop()
        if not isinstance(kid, str) and kid[0] == op:
            stack += kid[1:]
        else:
            flat.append(_brute_force_key(kid))
    return f"{op}[{','.join(sorted(flat))}]"


def test_rc_network_counts_match_an_independent_brute_force_up_to_seven_elements() -> None:
    brute = _brute_force_rc(7)
    counts = [len(brute[n]) for n in range(1, 8)]
    assert counts == [2, 6, 20, 80, 340, 1570, 7540]
    assert [count_networks(n, ("R", "C")) for n in range(1, 8)] == counts
    for n in range(1, 8):
        ours = [_brute_force_key(t) for t in enumerate_networks(n, ("R", "C"))]
        assert len(ours) == len(set(ours)), n  # each network exactly once
        assert set(ours) == brute[n], n
