"""Equivalent circuits for impedance spectroscopy: expression trees, impedance, rational functions, identifiability.

A circuit is a tree of elements composed in series and in parallel, written as in
impedance.py: ``R0-p(R1,C1)-p(R2-Wo1,C2)`` (``-`` is series, ``p(a,b,...)`` is parallel).
Frequencies are in Hz (``omega = 2 pi f``), impedances in ohm, ``s = j omega``.

Elements (parameter order as impedance.py, so its initial guesses carry over):

======  =====================  ==============================  =========================================
type    parameters             units                           impedance
======  =====================  ==============================  =========================================
R       R                      ohm                             R
C       C                      F                               1 / (j w C)
L       L                      H                               j w L
CPE     Q, alpha               F s^(alpha-1), 1                1 / (Q (j w)^alpha)
W       sigma                  ohm s^-1/2                      sigma (1 - j) / sqrt(w)
Wo      Z0, tau                ohm, s                          Z0 coth(sqrt(j w tau)) / sqrt(j w tau)
Ws      Z0, tau                ohm, s                          Z0 tanh(sqrt(j w tau)) / sqrt(j w tau)
======  =====================  ==============================  =========================================

``W`` is the semi-infinite Warburg element; its ``sigma`` is the Warburg coefficient,
identical to impedance.py's ``A_W`` (``Z = A_W (1 - j) / sqrt(w)``). CPE ``alpha`` lies in
(0, 1]; ``Q`` has units F s^(alpha-1) (= ohm^-1 s^alpha).

Parameter names: a one-parameter element is named by its label (``R0``, ``C1``); a
multi-parameter element by ``label_parameter`` (``CPE1_Q``, ``CPE1_alpha``, ``Wo1_Z0``,
``Wo1_tau``).

Circuits of R, C and L only have an impedance that is a rational function of ``s``;
:meth:`Circuit.rational` gives its coefficients (and, through forward-mode derivatives,
their Jacobian), which is what :func:`identifiability` uses for such circuits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

__all__ = [
    "ELEMENT_TYPES",
    "ElementType",
    "Element",
    "Series",
    "Parallel",
    "Circuit",
    "RationalFunction",
    "Identifiability",
    "parse_circuit",
    "identifiability",
]


@dataclass(frozen=True)
class ElementType:
    """Kind of circuit element: its parameter names, units and default bounds."""

    name: str
    parameters: tuple[str, ...]
    units: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    description: str


ELEMENT_TYPES: dict[str, ElementType] = {
    t.name: t
    for t in (
        ElementType("R", ("R",), ("ohm",), (0.0,), (np.inf,), "resistor"),
        ElementType("C", ("C",), ("F",), (0.0,), (np.inf,), "capacitor"),
        ElementType("L", ("L",), ("H",), (0.0,), (np.inf,), "inductor"),
        ElementType(
            "CPE", ("Q", "alpha"), ("F s^(alpha-1)", "1"), (0.0, 0.0), (np.inf, 1.0), "constant phase element"
        ),
        ElementType("W", ("sigma",), ("ohm s^-1/2",), (0.0,), (np.inf,), "semi-infinite Warburg"),
        ElementType("Wo", ("Z0", "tau"), ("ohm", "s"), (0.0, 0.0), (np.inf, np.inf), "finite-length open Warburg"),
        ElementType(
            "Ws", ("Z0", "tau"), ("ohm", "s"), (0.0, 0.0), (np.inf, np.inf), "finite-length short Warburg"
        ),
    )
}
# Longest names first so that "CPE1" is a CPE and "Wo1" an open Warburg, not C/W with a suffix.
_TYPE_NAMES_LONGEST_FIRST = sorted(ELEMENT_TYPES, key=len, reverse=True)
_TYPE_ORDER = {name: i for i, name in enumerate(ELEMENT_TYPES)}
RATIONAL_TYPES = frozenset({"R", "C", "L"})


@dataclass(frozen=True)
class Element:
    """A leaf of the circuit tree: element ``kind`` (a key of ELEMENT_TYPES) with a ``label`` such as ``R0``."""

    kind: str
    label: str

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Series:
    """Elements or sub-circuits in series: Z = sum of the children's Z."""

    children: tuple["Node", ...]

    def __str__(self) -> str:
        return "-".join(str(c) for c in self.children)


@dataclass(frozen=True)
class Parallel:
    """Sub-circuits in parallel: 1/Z = sum of the children's 1/Z."""

    children: tuple["Node", ...]

    def __str__(self) -> str:
        return "p(" + ",".join(str(c) for c in self.children) + ")"


Node = Union[Element, Series, Parallel]


# --------------------------------------------------------------------------- parsing


class _Parser:
    """Recursive-descent parser of impedance.py circuit strings; errors name the position."""

    _label = re.compile(r"[A-Za-z0-9_]*")

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def fail(self, expected: str) -> ValueError:
        found = repr(self.text[self.i]) if self.i < len(self.text) else "end of string"
        return ValueError(
            f"circuit string {self.text!r}: at position {self.i}: expected {expected}, found {found}"
        )

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.i] if self.i < len(self.text) else ""

    def series(self) -> Node:
        terms = [self.term()]
        while self.peek() == "-":
            self.i += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else Series(tuple(terms))

    def term(self) -> Node:
        self.skip()
        if self.text.startswith("p(", self.i):
            self.i += 2
            branches = [self.series()]
            while self.peek() == ",":
                self.i += 1
                branches.append(self.series())
            if self.peek() != ")":
                self.skip()
                raise self.fail("',' or ')' closing the parallel group")
            if len(branches) < 2:
                raise self.fail("',' and a second branch (p(...) needs at least two)")
            self.i += 1
            return Parallel(tuple(branches))
        for name in _TYPE_NAMES_LONGEST_FIRST:
            if self.text.startswith(name, self.i):
                start = self.i
                self.i += len(name)
                m = self._label.match(self.text, self.i)
                self.i = m.end()
                return Element(name, self.text[start : self.i])
        raise self.fail("an element (one of " + ", ".join(ELEMENT_TYPES) + ") or 'p('")

    def parse(self) -> Node:
        if not self.text.strip():
            raise ValueError(f"circuit string {self.text!r}: at position 0: expected an element or 'p(', found empty string")
        root = self.series()
        self.skip()
        if self.i != len(self.text):
            raise self.fail("'-' (series), ',' or end of string")
        return root


def parse_circuit(text: str) -> "Circuit":
    """Parse an impedance.py-style circuit string such as ``R0-p(R1,C1)-p(R2-Wo1,C2)``.

    Raises ValueError naming the position and what was expected when the string is malformed,
    or naming the label when two elements share one.
    """
    if not isinstance(text, str):
        raise ValueError(f"circuit: expected a string such as 'R0-p(R1,C1)', found {type(text).__name__}")
    return Circuit(_Parser(text).parse())


# --------------------------------------------------------------------------- element impedance


def _coth_over_x(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """coth(x)/x and its derivative for Re x > 0, stable for large and small |x|."""
    e = np.exp(-2.0 * x)
    em1 = -np.expm1(-2.0 * x)  # 1 - e^{-2x} without cancellation at small x
    coth = (1.0 + e) / em1
    csch2 = 4.0 * e / em1**2
    g = coth / x
    dg = -(x * csch2 + coth) / x**2
    small = np.abs(x) < 1e-3  # the closed forms lose digits to cancellation there; use the series
    if np.any(small):
        xs = x[small]
        g[small] = 1.0 / xs**2 + 1.0 / 3.0 - xs**2 / 45.0
        dg[small] = -2.0 / xs**3 - 2.0 * xs / 45.0
    return g, dg


def _tanh_over_x(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tanh(x)/x and its derivative for Re x > 0, stable for large and small |x|."""
    e = np.exp(-2.0 * x)
    tanh = -np.expm1(-2.0 * x) / (1.0 + e)
    sech2 = 4.0 * e / (1.0 + e) ** 2
    g = tanh / x
    dg = (x * sech2 - tanh) / x**2
    small = np.abs(x) < 1e-3
    if np.any(small):
        xs = x[small]
        g[small] = 1.0 - xs**2 / 3.0 + 2.0 * xs**4 / 15.0
        dg[small] = -2.0 * xs / 3.0 + 8.0 * xs**3 / 15.0
    return g, dg


def element_impedance(kind: str, p: Sequence[float], omega: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Impedance (ohm) of one element at angular frequencies ``omega`` (rad/s) and its parameter derivatives."""
    s = 1j * omega
    if kind == "R":
        return np.full(omega.shape, complex(p[0])), [np.ones(omega.shape, complex)]
    if kind == "C":
        z = 1.0 / (s * p[0])
        return z, [-z / p[0]]
    if kind == "L":
        return s * p[0], [s]
    if kind == "CPE":
        q, alpha = p
        log_s = np.log(omega) + 0.5j * np.pi
        z = 1.0 / (q * np.exp(alpha * log_s))
        return z, [-z / q, -z * log_s]
    if kind == "W":
        unit = (1.0 - 1.0j) / np.sqrt(omega)
        return p[0] * unit, [unit]
    if kind in ("Wo", "Ws"):
        z0, tau = p
        x = np.sqrt(s * tau)
        g, dg = (_coth_over_x if kind == "Wo" else _tanh_over_x)(x)
        # dx/dtau = x / (2 tau)
        return z0 * g, [g, z0 * dg * x / (2.0 * tau)]
    raise ValueError(f"element type: expected one of {', '.join(ELEMENT_TYPES)}, found {kind!r}")


# --------------------------------------------------------------------------- polynomials with gradients


@dataclass(frozen=True)
class _Poly:
    """Polynomial in s with ascending coefficients ``c`` and their gradient ``g`` (deg+1, n_params)."""

    c: np.ndarray
    g: np.ndarray

    def __add__(self, other: "_Poly") -> "_Poly":
        n = max(len(self.c), len(other.c))
        c = np.zeros(n)
        g = np.zeros((n, self.g.shape[1]))
        c[: len(self.c)] += self.c
        c[: len(other.c)] += other.c
        g[: len(self.c)] += self.g
        g[: len(other.c)] += other.g
        return _Poly(c, g)

    def __mul__(self, other: "_Poly") -> "_Poly":
        c = np.convolve(self.c, other.c)
        g = np.zeros((len(c), self.g.shape[1]))
        for i, a in enumerate(self.c):
            g[i : i + len(other.c)] += a * other.g
        for j, b in enumerate(other.c):
            g[j : j + len(self.c)] += b * self.g
        return _Poly(c, g)


def _strip_common_s(n: _Poly, d: _Poly) -> tuple[_Poly, _Poly]:
    # Coefficients of series/parallel R-C-L combinations are sums of products of positive
    # parameters (no subtraction ever occurs), so a structural zero is an exact 0.0.
    k = 0
    while k < len(n.c) - 1 and k < len(d.c) - 1 and n.c[k] == 0.0 and d.c[k] == 0.0:
        k += 1
    return _Poly(n.c[k:], n.g[k:]), _Poly(d.c[k:], d.g[k:])


def _trim_top(p: _Poly) -> _Poly:
    k = len(p.c)
    while k > 1 and p.c[k - 1] == 0.0:
        k -= 1
    return _Poly(p.c[:k], p.g[:k])


@dataclass(frozen=True)
class RationalFunction:
    """Z(s) = N(s) / D(s) with ascending coefficients, normalised so that D's lowest nonzero coefficient is 1.

    ``jacobian`` is d(coefficient)/d(parameter) for the concatenated free coefficients
    ``[N..., D without its normalising coefficient]`` (rows) by circuit parameter (columns).
    """

    numerator: np.ndarray
    denominator: np.ndarray
    jacobian: np.ndarray
    norm_index: int

    @property
    def degrees(self) -> tuple[int, int]:
        """(degree of N, degree of D) in s."""
        return len(self.numerator) - 1, len(self.denominator) - 1

    @property
    def structural_zeros(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Powers of s whose coefficient is structurally zero in N and in D."""
        return (
            tuple(int(i) for i in np.flatnonzero(self.numerator == 0.0)),
            tuple(int(i) for i in np.flatnonzero(self.denominator == 0.0)),
        )

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """Evaluate N(s)/D(s) at complex ``s`` (rad/s)."""
        s = np.asarray(s)
        return np.polyval(self.numerator[::-1], s) / np.polyval(self.denominator[::-1], s)


# --------------------------------------------------------------------------- circuit


@dataclass(frozen=True)
class Circuit:
    """An equivalent circuit: a tree of :class:`Element`, :class:`Series` and :class:`Parallel` nodes.

    Parameters are ordered as the elements appear in the string (impedance.py's order).
    """

    root: Node

    def __post_init__(self) -> None:
        seen: dict[str, Element] = {}
        for e in self.elements:
            if e.kind not in ELEMENT_TYPES:
                raise ValueError(f"element {e.label!r}: expected a type in {', '.join(ELEMENT_TYPES)}, found {e.kind!r}")
            if e.label in seen:
                raise ValueError(
                    f"circuit {str(self.root)!r}: element label {e.label!r} appears twice; labels must be unique"
                )
            seen[e.label] = e
        for node in _walk(self.root):
            if isinstance(node, (Series, Parallel)) and len(node.children) < 2:
                raise ValueError(f"{type(node).__name__}: expected at least 2 children, found {len(node.children)}")

    @classmethod
    def parse(cls, text: str) -> "Circuit":
        """Same as :func:`parse_circuit`."""
        return parse_circuit(text)

    def __str__(self) -> str:
        return str(self.root)

    @cached_property
    def elements(self) -> tuple[Element, ...]:
        """Elements in string order."""
        return tuple(n for n in _walk(self.root) if isinstance(n, Element))

    @cached_property
    def _offsets(self) -> dict[str, int]:
        out, k = {}, 0
        for e in self.elements:
            out[e.label] = k
            k += len(ELEMENT_TYPES[e.kind].parameters)
        return out

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters: ``R0``, or ``CPE1_Q`` / ``CPE1_alpha`` for multi-parameter elements."""
        names = []
        for e in self.elements:
            t = ELEMENT_TYPES[e.kind]
            names += [e.label] if len(t.parameters) == 1 else [f"{e.label}_{p}" for p in t.parameters]
        return tuple(names)

    @cached_property
    def param_units(self) -> tuple[str, ...]:
        """Units of the parameters, in the order of :attr:`param_names`."""
        return tuple(u for e in self.elements for u in ELEMENT_TYPES[e.kind].units)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @cached_property
    def default_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper): parameters positive, CPE alpha in (0, 1]."""
        lo = [b for e in self.elements for b in ELEMENT_TYPES[e.kind].lower]
        hi = [b for e in self.elements for b in ELEMENT_TYPES[e.kind].upper]
        return np.array(lo, float), np.array(hi, float)

    @property
    def is_rational(self) -> bool:
        """True when every element is R, C or L, so Z(s) is a rational function."""
        return all(e.kind in RATIONAL_TYPES for e in self.elements)

    def topology(self) -> str:
        """Unlabelled canonical string: series/parallel flattened, children sorted (``R-p(R,C)-p(R,C)``).

        Two circuits are isomorphic (same network up to commutativity and associativity of
        series and parallel) exactly when their topologies are equal.
        """
        return _topology_string(_canonical_tree(self.root))

    def _check_params(self, params: Sequence[float] | Mapping[str, float]) -> np.ndarray:
        if isinstance(params, Mapping):
            missing = [n for n in self.param_names if n not in params]
            if missing:
                raise ValueError(f"params of {self}: missing {missing}; expected names {list(self.param_names)}")
            params = [params[n] for n in self.param_names]
        p = np.asarray(params, dtype=float)
        if p.shape != (self.n_params,):
            raise ValueError(
                f"params of {self}: expected {self.n_params} values {list(self.param_names)}, found shape {p.shape}"
            )
        return p

    def impedance(self, params: Sequence[float] | Mapping[str, float], f: Sequence[float] | np.ndarray) -> np.ndarray:
        """Complex impedance (ohm) at frequencies ``f`` (Hz), vectorised over ``f``."""
        return self._evaluate(params, f, jacobian=False)[0]

    def impedance_jacobian(
        self, params: Sequence[float] | Mapping[str, float], f: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Z, dZ/dparams): impedance (ohm) at ``f`` (Hz) and its exact derivative, shape (len(f), n_params)."""
        return self._evaluate(params, f, jacobian=True)

    def _evaluate(self, params, f, jacobian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        p = self._check_params(params)
        f = np.atleast_1d(np.asarray(f, dtype=float))
        if f.ndim != 1 or np.any(f <= 0) or not np.all(np.isfinite(f)):
            raise ValueError("f: expected a 1-D array of positive finite frequencies in Hz")
        omega = 2.0 * np.pi * f
        n = self.n_params
        offsets = self._offsets

        def ev(node: Node) -> tuple[np.ndarray, np.ndarray | None]:
            if isinstance(node, Element):
                k = offsets[node.label]
                m = len(ELEMENT_TYPES[node.kind].parameters)
                z, dz = element_impedance(node.kind, p[k : k + m], omega)
                if not jacobian:
                    return z, None
                jac = np.zeros((len(omega), n), complex)
                for i, d in enumerate(dz):
                    jac[:, k + i] = d
                return z, jac
            parts = [ev(c) for c in node.children]
            if isinstance(node, Series):
                z = sum(zc for zc, _ in parts)
                jac = sum(jc for _, jc in parts) if jacobian else None
                return z, jac
            y = sum(1.0 / zc for zc, _ in parts)
            z = 1.0 / y
            if not jacobian:
                return z, None
            # d(1/sum 1/Z_i) = (Z / Z_i)^2 dZ_i
            jac = sum(((z / zc) ** 2)[:, None] * jc for zc, jc in parts)
            return z, jac

        return ev(self.root)

    def rational(self, params: Sequence[float] | Mapping[str, float] | None = None) -> RationalFunction:
        """Z(s) = N(s)/D(s) of an R/C/L circuit at ``params`` (default: all ones), with the coefficient Jacobian.

        Common powers of s are cancelled; no other common factors occur for generic parameters.
        """
        if not self.is_rational:
            bad = sorted({e.kind for e in self.elements if e.kind not in RATIONAL_TYPES})
            raise ValueError(f"circuit {self}: rational form needs R, C, L elements only, found {bad}")
        p = np.ones(self.n_params) if params is None else self._check_params(params)
        n = self.n_params
        offsets = self._offsets

        def const(v: float, grad_index: int | None = None, power: int = 0) -> _Poly:
            c = np.zeros(power + 1)
            c[power] = v
            g = np.zeros((power + 1, n))
            if grad_index is not None:
                g[power, grad_index] = 1.0
            return _Poly(c, g)

        def ev(node: Node) -> tuple[_Poly, _Poly]:
            if isinstance(node, Element):
                k = offsets[node.label]
                if node.kind == "R":
                    return const(p[k], k), const(1.0)
                if node.kind == "C":
                    return const(1.0), const(p[k], k, power=1)
                return const(p[k], k, power=1), const(1.0)
            num, den = ev(node.children[0])
            for child in node.children[1:]:
                n2, d2 = ev(child)
                if isinstance(node, Series):
                    num, den = num * d2 + n2 * den, den * d2
                else:
                    num, den = num * n2, num * d2 + n2 * den
                num, den = _strip_common_s(num, den)
            return _trim_top(num), _trim_top(den)

        num, den = ev(self.root)
        j = int(np.flatnonzero(den.c != 0.0)[0])
        d0, g0 = den.c[j], den.g[j]
        # quotient rule for the normalisation by D's lowest nonzero coefficient
        nc = num.c / d0
        ng = num.g / d0 - np.outer(num.c, g0) / d0**2
        dc = den.c / d0
        dg = den.g / d0 - np.outer(den.c, g0) / d0**2
        keep = np.ones(len(dc), bool)
        keep[j] = False
        jac = np.vstack([ng, dg[keep]])
        return RationalFunction(nc, dc, jac, j)

    def rational_symbolic(self):
        """(N, D) as sympy expressions in ``s`` and the parameter symbols (exact; needs sympy)."""
        import sympy

        s = sympy.Symbol("s")
        syms = {name: sympy.Symbol(name, positive=True) for name in self.param_names}

        def ev(node: Node):
            if isinstance(node, Element):
                if node.kind == "R":
                    return syms[node.label]
                if node.kind == "C":
                    return 1 / (s * syms[node.label])
                if node.kind == "L":
                    return s * syms[node.label]
                raise ValueError(f"circuit {self}: rational form needs R, C, L elements only, found {node.kind!r}")
            zs = [ev(c) for c in node.children]
            return sympy.Add(*zs) if isinstance(node, Series) else 1 / sympy.Add(*[1 / z for z in zs])

        num, den = sympy.fraction(sympy.cancel(sympy.together(ev(self.root))))
        return sympy.expand(num), sympy.expand(den)


def _walk(node: Node) -> Iterable[Node]:
    yield node
    if not isinstance(node, Element):
        for c in node.children:
            yield from _walk(c)


# --------------------------------------------------------------------------- canonical unlabelled trees
# A canonical tree is a type name (leaf) or a tuple ("s"|"p", child, child, ...) with series
# and parallel flattened and the children sorted by _tree_key; it is hashable and shared
# with enumeration.py.


def _tree_key(t) -> tuple:
    if isinstance(t, str):
        return (0, _TYPE_ORDER.get(t, len(_TYPE_ORDER)), 0, t)
    return (1, 0, _tree_size(t), _topology_string(t))


def _tree_size(t) -> int:
    return 1 if isinstance(t, str) else sum(_tree_size(c) for c in t[1:])


def _topology_string(t) -> str:
    if isinstance(t, str):
        return t
    if t[0] == "s":
        return "-".join(_topology_string(c) for c in t[1:])
    return "p(" + ",".join(_topology_string(c) for c in t[1:]) + ")"


def _canonical_tree(node: Node):
    if isinstance(node, Element):
        return node.kind
    op = "s" if isinstance(node, Series) else "p"
    kids = []
    for c in node.children:
        ct = _canonical_tree(c)
        if not isinstance(ct, str) and ct[0] == op:
            kids.extend(ct[1:])  # associativity: a nested series in a series is the same series
        else:
            kids.append(ct)
    return (op, *sorted(kids, key=_tree_key))


# --------------------------------------------------------------------------- identifiability


@dataclass(frozen=True)
class Identifiability:
    """How many parameters of a circuit the data can determine.

    ``rank`` is the numerical rank of the Jacobian (log-parameter scaling) at generic
    parameters; ``null_directions`` are the combinations of log-parameters that leave Z
    unchanged, as {parameter name: coefficient}; ``unidentifiable`` names every parameter
    that takes part in one of them.
    """

    circuit: str
    n_params: int
    rank: int
    method: str
    unidentifiable: tuple[str, ...]
    null_directions: tuple[dict, ...]
    singular_values: tuple[float, ...]

    @property
    def identifiable(self) -> bool:
        return self.rank == self.n_params


def generic_parameters(circuit: Circuit, rng: np.random.Generator) -> np.ndarray:
    """Random 'generic' parameters: log-uniform in [0.3, 3], CPE alpha uniform in [0.5, 0.95]."""
    p = np.exp(rng.uniform(np.log(0.3), np.log(3.0), circuit.n_params))
    for i, name in enumerate(circuit.param_names):
        if name.endswith("_alpha"):
            p[i] = rng.uniform(0.5, 0.95)
    return p


def identifiability(
    circuit: Circuit | str,
    params: Sequence[float] | None = None,
    *,
    f: Sequence[float] | None = None,
    rtol: float = 1e-9,
    seed: int = 0,
) -> Identifiability:
    """Rank of the parameter -> data map and the unidentifiable parameter combinations.

    R/C/L circuits (method ``"rational"``): Jacobian of the normalised coefficients of
    Z(s) = N(s)/D(s) with respect to log-parameters. Otherwise (method ``"frequency"``):
    Jacobian of [Re Z, Im Z] / |Z| with respect to log-parameters on ``f`` (Hz; default 10
    points per decade over 1e-4..1e5 Hz, which covers time constants of the default generic
    parameters). ``params`` default to random generic values (``seed``). A singular value
    counts as zero when below ``rtol`` times the largest one; the Jacobians are exact
    (analytic), so true null directions sit at ~1e-15 and the default ``rtol`` = 1e-9 leaves
    room for poorly-conditioned but identifiable parameters.
    """
    c = parse_circuit(circuit) if isinstance(circuit, str) else circuit
    p = generic_parameters(c, np.random.default_rng(seed)) if params is None else c._check_params(params)
    if c.is_rational:
        jac = c.rational(p).jacobian * p[None, :]
        method = "rational"
    else:
        freqs = np.logspace(-4, 5, 91) if f is None else np.asarray(f, float)
        z, dz = c.impedance_jacobian(p, freqs)
        scaled = dz * p[None, :] / np.abs(z)[:, None]
        jac = np.vstack([scaled.real, scaled.imag])
        method = "frequency"
    _, sv, vt = np.linalg.svd(jac, full_matrices=True)
    sv_full = np.zeros(c.n_params)
    sv_full[: len(sv)] = sv
    tol = rtol * (sv_full.max() if sv_full.max() > 0 else 1.0)
    rank = int(np.sum(sv_full > tol))
    null = vt[rank:]
    # a parameter is unidentifiable when it has a component in the null space (basis-independent)
    involved = np.linalg.norm(null, axis=0) > 1e-6 if len(null) else np.zeros(c.n_params, bool)
    directions = []
    for v in null:
        v = v / v[np.argmax(np.abs(v))]
        directions.append({c.param_names[i]: float(v[i]) for i in np.flatnonzero(np.abs(v) > 1e-6)})
    return Identifiability(
        circuit=str(c),
        n_params=c.n_params,
        rank=rank,
        method=method,
        unidentifiable=tuple(n for n, m in zip(c.param_names, involved) if m),
        null_directions=tuple(directions),
        singular_values=tuple(float(x) for x in sv_full),
    )
