"""Series-parallel networks up to isomorphism, and families of R/C circuits that give the same spectra.

Enumeration. A network is a canonical tree (see ``circuits._canonical_tree``): a leaf is an
element type (``"R"``), an inner node ``("s"|"p", child, child, ...)`` has at least two
children, never a child of its own kind (associativity), and its children sorted
(commutativity). Each network is generated exactly once: an ``s`` node is a multiset of
>= 2 networks whose root is not ``s``, chosen in non-decreasing order from a fixed list.
With one element type the counts are OEIS A000084 (1, 2, 4, 10, 24, 66, 180, ...).

Families (arXiv:2510.17835, section on R/C circuits). Every R/C impedance is
``Z(s) = k_inf + k_0/s + sum_i k_i/(s + sigma_i)`` with all k, sigma > 0 (Foster), so the
set of spectra of an R/C network is fixed by its *class* ``(k_inf present, k_0 present,
n time constants)``: ``D(s) = s^[k_0] prod(s + sigma_i)`` has degree ``n + [k_0]`` with
``D(0) = 0`` iff ``k_0``; ``N`` has degree ``deg D - 1 + [k_inf]``; the number of free
normalised coefficients is ``2n + [k_inf] + [k_0]``. The class is computed structurally
(series adds Z-terms, parallel adds admittance terms ``c_inf s + c_0 + sum c_j s/(s+p_j)``).

A network is *identifiable* when no series node has two children with a resistive
high-frequency limit (k_inf) or two with a series capacitance (k_0), and no parallel node
two children with a capacitive (c_inf) or two with a resistive DC (c_0) admittance term;
then its coefficient Jacobian has full rank (#elements = 2n + [k_inf] + [k_0]) and, by
induction over the tree, the network realises *every* R/C impedance of its class. A
family is the set of identifiable networks of one class. Degenerate (non-identifiable)
networks are left out of families; ``enumerate_networks(..., identifiable_only=False)``
lists them and :func:`rc_class` tells which they are. tests/test_eis_enumeration.py checks
the structural class and identifiability against the rational function and the rank of its
Jacobian for every R/C network up to 6 elements.

Parameter maps. :func:`map_parameters` takes a member's parameters, forms Z(s), and
realises the target network top-down: at a series node the partial fractions of Z are
split among the children by their classes, at a parallel node those of Y = 1/Z. For the
Voigt form this is Foster's partial-fraction expansion, for a ladder it is Cauer's
continued fraction; for every other member it is the same exact construction (roots
polished by Newton's method to machine precision). The map is finite-to-one: where a node
has several children that take time constants, the time constants are given out fastest
first (largest sigma = 1/tau first) in the children's string order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from numpy.polynomial import polynomial as P

from matlake.models.eis.circuits import (
    ELEMENT_TYPES,
    Circuit,
    Element,
    Parallel,
    Series,
    _canonical_tree,
    _topology_string,
    _tree_key,
    _tree_size,
    parse_circuit,
)

__all__ = [
    "RCClass",
    "Family",
    "enumerate_networks",
    "count_networks",
    "rc_class",
    "rc_families",
    "family_of",
    "map_parameters",
    "circuit_from_tree",
]


# --------------------------------------------------------------------------- enumeration


def _check_types(types: Sequence[str]) -> tuple[str, ...]:
    t = tuple(sorted(set(types), key=lambda x: _tree_key(x)))
    bad = [x for x in t if x not in ELEMENT_TYPES]
    if not t or bad:
        raise ValueError(f"types: expected element types from {list(ELEMENT_TYPES)}, found {list(types)}")
    return t


@lru_cache(maxsize=None)
def _rooted(n: int, op: str, types: tuple[str, ...]) -> tuple:
    """Networks with n elements whose root is the operator ``op``."""
    if n < 2:
        return ()
    pool = [t for k in range(1, n) for t in _not_rooted(k, op, types)]
    sizes = [_tree_size(t) for t in pool]
    out = []

    def grow(start: int, remaining: int, chosen: list) -> None:
        if remaining == 0:
            if len(chosen) >= 2:
                out.append((op, *sorted(chosen, key=_tree_key)))
            return
        for i in range(start, len(pool)):
            if sizes[i] > remaining:
                continue
            chosen.append(pool[i])
            grow(i, remaining - sizes[i], chosen)
            chosen.pop()

    grow(0, n, [])
    return tuple(out)


@lru_cache(maxsize=None)
def _not_rooted(n: int, op: str, types: tuple[str, ...]) -> tuple:
    """Networks with n elements whose root is not ``op`` (leaves or the other operator)."""
    if n == 1:
        return types
    return _rooted(n, "p" if op == "s" else "s", types)


def enumerate_networks(n: int, types: Sequence[str] = ("R",), *, identifiable_only: bool = False) -> list:
    """Every series-parallel network of exactly ``n`` elements of ``types``, up to isomorphism.

    Returns canonical trees; ``circuits._topology_string`` / :func:`circuit_from_tree` turn
    them into strings / circuits. ``identifiable_only`` (R/C networks only) drops the
    degenerate networks. Results are cached.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected a positive number of elements, found {n!r}")
    t = _check_types(types)
    nets = list(t) if n == 1 else list(_rooted(n, "s", t) + _rooted(n, "p", t))
    if identifiable_only:
        nets = [x for x in nets if rc_class(x).identifiable]
    return nets


def count_networks(n: int, types: Sequence[str] = ("R",)) -> int:
    """Number of series-parallel networks of ``n`` elements up to isomorphism (A000084 for one type)."""
    return len(enumerate_networks(n, types))


def circuit_from_tree(tree) -> Circuit:
    """Labelled circuit of a canonical tree: resistors R0, R1, ..., other types numbered from 1."""
    counters: dict[str, int] = {}

    def build(t):
        if isinstance(t, str):
            k = counters.get(t, 0 if t == "R" else 1)
            counters[t] = k + 1
            return Element(t, f"{t}{k}")
        kids = tuple(build(c) for c in t[1:])
        return Series(kids) if t[0] == "s" else Parallel(kids)

    return Circuit(build(tree))


# --------------------------------------------------------------------------- R/C classes


@dataclass(frozen=True)
class RCClass:
    """Spectral class of an R/C network: Z = k_inf + k_0/s + sum of n terms k_i/(s + sigma_i)."""

    series_resistance: bool  # k_inf > 0: Z(infinity) is a finite resistance
    series_capacitance: bool  # k_0 > 0: a pole at s = 0, DC is blocked
    n_time_constants: int
    identifiable: bool
    n_elements: int

    @property
    def n_free(self) -> int:
        """Number of free normalised coefficients of N/D = dimension of the set of spectra."""
        return 2 * self.n_time_constants + int(self.series_resistance) + int(self.series_capacitance)

    @property
    def degrees(self) -> tuple[int, int]:
        """(deg N, deg D) of Z(s) = N(s)/D(s)."""
        deg_d = self.n_time_constants + int(self.series_capacitance)
        return deg_d - 1 + int(self.series_resistance), deg_d

    @property
    def key(self) -> tuple[bool, bool, int]:
        return (self.series_resistance, self.series_capacitance, self.n_time_constants)


def _y_class(a_inf: int, a0: int, n: int) -> tuple[int, int, int]:
    # Y = 1/Z: capacitive HF (c_inf) iff Z(inf) = 0; DC conductance (c_0) iff Z(0) finite;
    # the network order n + a0 = n' + c_inf is shared by Z and Y.
    return 1 - a_inf, 1 - a0, n + a0 + a_inf - 1


@lru_cache(maxsize=None)
def _class_tuple(tree) -> tuple[int, int, int, bool, int]:
    if isinstance(tree, str):
        if tree == "R":
            return 1, 0, 0, True, 1
        if tree == "C":
            return 0, 1, 0, True, 1
        raise ValueError(f"R/C class: expected element types R and C only, found {tree!r}")
    kids = [_class_tuple(c) for c in tree[1:]]
    ident = all(k[3] for k in kids)
    size = sum(k[4] for k in kids)
    if tree[0] == "s":
        a_inf = sum(k[0] for k in kids)
        a0 = sum(k[1] for k in kids)
        n = sum(k[2] for k in kids)
        return min(a_inf, 1), min(a0, 1), n, ident and a_inf <= 1 and a0 <= 1, size
    ys = [_y_class(*k[:3]) for k in kids]
    c_inf = sum(y[0] for y in ys)
    c0 = sum(y[1] for y in ys)
    n_y = sum(y[2] for y in ys)
    a_inf, a0, n = _y_class(min(c_inf, 1), min(c0, 1), n_y)  # the map is its own inverse
    return a_inf, a0, n, ident and c_inf <= 1 and c0 <= 1, size


def rc_class(circuit: Circuit | str | tuple) -> RCClass:
    """Spectral class and identifiability of an R/C circuit (string, Circuit or canonical tree)."""
    tree = circuit
    if isinstance(circuit, str):
        circuit = parse_circuit(circuit)
    if isinstance(circuit, Circuit):
        bad = sorted({e.kind for e in circuit.elements} - {"R", "C"})
        if bad:
            raise ValueError(f"circuit {circuit}: expected R and C elements only, found {bad}")
        tree = _canonical_tree(circuit.root)
    a_inf, a0, n, ident, size = _class_tuple(tree)
    return RCClass(bool(a_inf), bool(a0), n, ident, size)


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """All identifiable R/C series-parallel networks that produce one set of spectra.

    ``members`` are labelled circuit strings (:func:`circuit_from_tree` labels, except that
    :func:`family_of` keeps the caller's own circuit string for its member), ``topologies``
    the matching unlabelled canonical strings.
    """

    rc: RCClass
    members: tuple[str, ...]
    topologies: tuple[str, ...]

    @property
    def n_time_constants(self) -> int:
        return self.rc.n_time_constants

    @property
    def n_params(self) -> int:
        return self.rc.n_free

    @property
    def degrees(self) -> tuple[int, int]:
        return self.rc.degrees

    @property
    def structural_zeros(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Structurally zero coefficients (powers of s) in N and D; N(0) is never 0 for R/C."""
        return (), ((0,) if self.rc.series_capacitance else ())

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, circuit: object) -> bool:
        c = parse_circuit(circuit) if isinstance(circuit, str) else circuit
        return isinstance(c, Circuit) and c.topology() in self.topologies


@lru_cache(maxsize=None)
def _family_trees(key: tuple[bool, bool, int]) -> tuple:
    a_inf, a0, n = key
    size = 2 * n + int(a_inf) + int(a0)
    trees = [t for t in enumerate_networks(size, ("R", "C")) if rc_class(t).identifiable and rc_class(t).key == key]
    return tuple(sorted(trees, key=lambda t: (_depth(t), _topology_string(t))))


def _depth(t) -> int:
    return 0 if isinstance(t, str) else 1 + max(_depth(c) for c in t[1:])


def _make_family(key, own: Circuit | None = None) -> Family:
    trees = _family_trees(key)
    own_topology = own.topology() if own is not None else None
    members, topologies = [], []
    for t in trees:
        top = _topology_string(t)
        topologies.append(top)
        members.append(str(own) if top == own_topology else str(circuit_from_tree(t)))
    a_inf, a0, n = key
    rc = RCClass(a_inf, a0, n, True, 2 * n + int(a_inf) + int(a0))
    return Family(rc, tuple(members), tuple(topologies))


def rc_families(max_elements: int = 6) -> list[Family]:
    """Every family of identifiable R/C networks with up to ``max_elements`` elements."""
    keys = []
    for size in range(1, max_elements + 1):
        for a_inf in (True, False):
            for a0 in (True, False):
                rest = size - int(a_inf) - int(a0)
                if rest >= 0 and rest % 2 == 0:
                    keys.append((a_inf, a0, rest // 2))
    return [f for f in (_make_family(k) for k in keys) if len(f)]


def family_of(circuit: Circuit | str) -> Family:
    """The family of an R/C circuit such as ``R0-p(R1,C1)-p(R2,C2)``: every network giving the same spectra.

    Raises ValueError for circuits with other elements or with unidentifiable parameters.
    """
    c = parse_circuit(circuit) if isinstance(circuit, str) else circuit
    cls = rc_class(c)
    if not cls.identifiable:
        raise ValueError(
            f"circuit {c}: expected identifiable parameters, found a degenerate network "
            f"({c.n_params} parameters for a {cls.n_free}-dimensional set of spectra)"
        )
    return _make_family(cls.key, own=c)


# --------------------------------------------------------------------------- exact parameter maps
# A Foster form (inf, zero, rates, residues) stands for
#   impedance:  Z = inf + zero/s + sum residues/(s + rates)
#   admittance: Y = inf*s + zero + sum residues*s/(s + rates)
# Converting between them goes through the polynomials N, D of Z = N/D.


def _polish_roots(coef: np.ndarray) -> np.ndarray:
    """Real roots of an R/C polynomial (all real, negative), polished by Newton's method."""
    if len(coef) <= 1:
        return np.zeros(0)
    roots = np.sort(P.polyroots(coef).real)
    d = P.polyder(coef)
    for _ in range(4):
        step = P.polyval(roots, coef) / P.polyval(roots, d)
        roots = roots - np.where(np.isfinite(step), step, 0.0)
    return roots


def _z_polys(inf: float, zero: float, rates: np.ndarray, res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) ascending, of Z = inf + zero/s + sum res/(s+rates)."""
    base = np.array([1.0])
    for r in rates:
        base = P.polymul(base, [r, 1.0])
    s_pow = np.array([0.0, 1.0]) if zero > 0 else np.array([1.0])
    den = P.polymul(s_pow, base)
    num = P.polyadd(inf * den, zero * base) if zero > 0 else inf * den
    for j, k in enumerate(res):
        others = np.array([1.0])
        for i, r in enumerate(rates):
            if i != j:
                others = P.polymul(others, [r, 1.0])
        num = P.polyadd(num, k * P.polymul(s_pow, others))
    return _trim(num), _trim(den)


def _trim(c: np.ndarray) -> np.ndarray:
    c = np.atleast_1d(np.asarray(c, float))
    k = len(c)
    while k > 1 and c[k - 1] == 0.0:
        k -= 1
    return c[:k]


def _foster_of_ratio(num: np.ndarray, den: np.ndarray, admittance: bool):
    """Foster form of F = num/den: Z-form (admittance=False) or Y-form (admittance=True)."""
    num, den = _trim(num), _trim(den)
    if admittance:
        # Y = inf*s + zero + sum res*s/(s+rates): expand Y/s = num/(s*den) in partial fractions
        den = P.polymul([0.0, 1.0], den)
    scale = den[-1]
    num, den = num / scale, den / scale
    inf = num[-1] if len(num) == len(den) else 0.0
    rest = _trim(P.polysub(num, inf * den)) if inf else num
    # a pole at s = 0 (DC-blocking capacitor, or the division by s) is an exact 0.0 coefficient
    has_zero = den[0] == 0.0
    reduced = den[1:] if has_zero else den
    zero = P.polyval(0.0, rest) / reduced[0] if has_zero else 0.0
    roots = _polish_roots(reduced)
    d_der = P.polyder(den)
    rates = -roots
    res = P.polyval(roots, rest) / P.polyval(roots, d_der)
    order = np.argsort(rates)[::-1]  # fastest first
    return float(inf), float(zero), np.asarray(rates)[order], np.asarray(res)[order]


def _z_to_y(form):
    num, den = _z_polys(*form)
    return _foster_of_ratio(den, num, admittance=True)


def _y_to_z(form):
    inf, zero, rates, res = form
    # Y = P/Q with Q = prod(s+rates), P = inf*s*Q + zero*Q + sum res*s*prod_{i!=j}
    q = np.array([1.0])
    for r in rates:
        q = P.polymul(q, [r, 1.0])
    p = P.polyadd(inf * P.polymul([0.0, 1.0], q), zero * q)
    for j, k in enumerate(res):
        others = np.array([0.0, 1.0])
        for i, r in enumerate(rates):
            if i != j:
                others = P.polymul(others, [r, 1.0])
        p = P.polyadd(p, k * others)
    return _foster_of_ratio(q, p, admittance=False)


def _node_class(node) -> tuple[int, int, int, bool, int]:
    return _class_tuple(_canonical_tree(node))


def _split(form, kids_classes, slots) -> list:
    """Give ``inf`` to the child whose class has it, ``zero`` likewise, time constants in order."""
    inf, zero, rates, res = form
    out, k = [], 0
    for cls in kids_classes:
        has_inf, has_zero, n = slots(cls)
        out.append((inf if has_inf else 0.0, zero if has_zero else 0.0, rates[k : k + n], res[k : k + n]))
        k += n
    return out


def _realize_z(node, form, values: dict) -> None:
    if isinstance(node, Element):
        values[node.label] = form[0] if node.kind == "R" else 1.0 / form[1]
    elif isinstance(node, Series):
        kids = [_node_class(c) for c in node.children]
        for child, part in zip(node.children, _split(form, kids, lambda c: c[:3])):
            _realize_z(child, part, values)
    else:
        _realize_y(node, _z_to_y(form), values)


def _realize_y(node, form, values: dict) -> None:
    if isinstance(node, Element):
        values[node.label] = 1.0 / form[1] if node.kind == "R" else form[0]
    elif isinstance(node, Parallel):
        kids = [_node_class(c) for c in node.children]
        for child, part in zip(node.children, _split(form, kids, lambda c: _y_class(*c[:3]))):
            _realize_y(child, part, values)
    else:
        _realize_z(node, _y_to_z(form), values)


def map_parameters(
    src_circuit: Circuit | str, params: Sequence[float] | Mapping[str, float], dst_circuit: Circuit | str
) -> np.ndarray:
    """Parameters of ``dst_circuit`` (ohm, F; in its parameter order) giving exactly the Z of ``src_circuit`` at ``params``.

    Both must be identifiable R/C circuits of the same family; raises ValueError otherwise.
    """
    src = parse_circuit(src_circuit) if isinstance(src_circuit, str) else src_circuit
    dst = parse_circuit(dst_circuit) if isinstance(dst_circuit, str) else dst_circuit
    cs, cd = rc_class(src), rc_class(dst)
    for name, c, cls in (("src_circuit", src, cs), ("dst_circuit", dst, cd)):
        if not cls.identifiable:
            raise ValueError(f"{name} {c}: expected identifiable parameters, found a degenerate network")
    if cs.key != cd.key:
        raise ValueError(
            f"dst_circuit {dst}: expected a member of the family of {src} "
            f"(series R={cs.series_resistance}, series C={cs.series_capacitance}, "
            f"{cs.n_time_constants} time constants), found series R={cd.series_resistance}, "
            f"series C={cd.series_capacitance}, {cd.n_time_constants} time constants"
        )
    p = src._check_params(params)
    if np.any(p <= 0) or not np.all(np.isfinite(p)):
        raise ValueError(f"params of {src}: expected positive finite values, found {p.tolist()}")
    rf = src.rational(p)
    form = _foster_of_ratio(rf.numerator, rf.denominator, admittance=False)
    values: dict[str, float] = {}
    _realize_z(dst.root, form, values)
    return np.array([values[name] for name in dst.param_names])
