"""Rational approximation of an impedance spectrum with real coefficients.

Method (after arXiv:2510.17835, "Robust interpretation of electrochemical
impedance spectra using numerical complex analysis"):

1. **Real AAA.**  The AAA algorithm (Nakatsukasa, Sète, Trefethen, SIAM J. Sci.
   Comput. 40 (2018) A1494) is run on the samples Z(j omega_k) together with
   their mirror images conj Z(j omega_k) at -j omega_k.  Support points are added
   in conjugate pairs with conjugate barycentric weights, so the approximant is
   real on the real axis: r(conj s) = conj r(s).  Each pair raises the type by 2,
   so a type (2m-1, 2m-1) approximant is produced after m pairs.  Residuals are
   relative (weighted by 1/|Z|) because |Z| of a blocking electrode spans
   decades.  The number of pairs minimises the Bayesian information criterion
   (BIC) of the relative residuals, unless ``tol`` is reached first.
2. **Pole-residue refit.**  The AAA poles are kept fixed and
   Z(s) = d + e s + c0/s + sum_k r_k/(s - p_k) is refitted by real linear least
   squares.  Poles far above the band (|p| > 100 omega_max) are replaced by the
   e s term (a series inductance when e > 0); right-half-plane poles below the
   band are reflected (a capacitive pole pushed across 0 by noise), and so are
   right-half-plane poles in the band (noise pushed them across; dropping
   them, as before, lost the relaxation they stand for and left ~5 % error on
   the Gamry example instead of the lin-KK level).
3. **Cleanup.**  Froissart doublets (an AAA zero within ``doublet_tol`` |p| of
   a pole) are removed.  Then the model is reduced greedily while the BIC
   improves: drop a pole (or conjugate pair), drop the e term, or turn the
   lowest sub-band pole into the exact series-capacitance pole; small models
   (<= 6 poles) get their poles polished by Levenberg-Marquardt with the
   residues eliminated linearly (AAA poles from noisy data are displaced).
   Zeros follow from a generalized eigenvalue problem on the pole-residue form
   (no polynomial coefficients, which would be hopeless over ten decades).

Everything is deterministic (no random starts).  Poles and zeros are in rad/s
(the Laplace variable s = j omega), impedances in Ohm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.optimize

from matlake.models.eis.validity import check_spectrum

__all__ = ["RationalFit", "fit_rational", "aaa_real"]

_FAR_FACTOR = 100.0  # poles this far outside the band are capacitance/inductance proxies
_POLISH_MAX_POLES = 6
_MERGE_RTOL = 0.1  # poles closer than this fraction of |p| are one relaxation split by noise


@dataclass
class RationalFit:
    """Z(s) = d + e s + c0/s + sum_k r_k / (s - p_k), s = j omega (rad/s).

    ``poles``/``residues`` (rad/s, Ohm rad/s) hold every pole including both
    members of complex pairs, sorted by |p|; ``zeros`` (rad/s) sorted by |z|;
    ``d`` (Ohm) is the high-frequency limit of Re Z; ``e`` (H) the coefficient
    of s (series inductance when positive); ``c0`` (Ohm rad/s) the residue of
    the pole at the origin (1/C of a series capacitance; 0 when absent).
    ``rel_error`` is the RMS of |Z - Z_fit|/|Z| over the data.
    """

    poles: np.ndarray
    residues: np.ndarray
    zeros: np.ndarray
    d: float
    e: float
    c0: float
    rel_error: float
    max_rel_error: float
    n_support_pairs: int
    n_removed: int
    omega_range: tuple[float, float]
    aaa_errors: list[float] = field(default_factory=list)

    def __call__(self, frequency_hz: np.ndarray) -> np.ndarray:
        """Complex impedance (Ohm) of the fit at ``frequency_hz`` (Hz)."""
        s = 2j * np.pi * np.asarray(frequency_hz, dtype=float)
        return self.evaluate_s(s)

    def evaluate_s(self, s: np.ndarray | complex) -> np.ndarray:
        """Z at complex Laplace variable ``s`` (rad/s); a sum of poles, so stable."""
        s = np.asarray(s, dtype=complex)
        z = self.d + self.e * s
        if self.c0 != 0.0:
            z = z + self.c0 / s
        if self.poles.size:
            z = z + (self.residues / (s[..., None] - self.poles)).sum(axis=-1)
        return z

    def zeros_minus(self, shift: float) -> np.ndarray:
        """Zeros (rad/s) of Z(s) - shift, e.g. of Z - R_inf."""
        scale = float(np.sqrt(self.omega_range[0] * self.omega_range[1]))
        zs = _zeros(
            self.d - shift, self.e * scale, self.c0 / scale, self.poles / scale, self.residues / scale
        )
        zs = _pair_up(zs)
        zs = np.concatenate([zs, np.conj(zs[zs.imag != 0])])
        return zs * scale

    @property
    def limit_low(self) -> float:
        """Re Z at s -> 0 without the series-capacitance term (Ohm)."""
        val = self.d
        if self.poles.size:
            val += float(np.real(np.sum(-self.residues / self.poles)))
        return float(val)

    @property
    def limit_high(self) -> float:
        """Re Z at s -> infinity (Ohm)."""
        return float(self.d)


# --------------------------------------------------------------------------- AAA


def aaa_real(
    x: np.ndarray, f: np.ndarray, wt: np.ndarray, max_pairs: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Conjugate-symmetric AAA on samples f at s = j x (x > 0, scaled units).

    Returns for m = 1..max_pairs the tuple (support indices, weights w_j
    (complex, one per pair), approximant values at all points, weighted RMS
    error).  The full barycentric support is {j x_J, -j x_J} with weights
    {w, conj w} and values {f_J, conj f_J}.
    """
    n = x.size
    s = 1j * x
    support: list[int] = []
    r = np.full(n, np.average(f.real, weights=wt**2), dtype=complex)
    out = []
    mask = np.ones(n, bool)
    for _ in range(max_pairs):
        err = np.abs(f - r) * wt
        err[~mask] = -1.0
        k = int(np.argmax(err))
        support.append(k)
        mask[k] = False
        sj = s[support]
        fj = f[support]
        rows = np.flatnonzero(mask)
        sk = s[rows][:, None]
        fk = f[rows][:, None]
        c1 = 1.0 / (sk - sj[None, :])
        c2 = 1.0 / (sk + sj[None, :])
        l1 = (fk - fj[None, :]) * c1
        l2 = (fk - np.conj(fj)[None, :]) * c2
        # w = a + i b: residual = sum a (l1 + l2) + b i (l1 - l2); real unknowns
        lc = np.hstack([l1 + l2, 1j * (l1 - l2)]) * wt[rows][:, None]
        lr = np.vstack([lc.real, lc.imag])
        _, _, vh = np.linalg.svd(lr, full_matrices=False)
        v = vh[-1]
        m = len(support)
        w = v[:m] + 1j * v[m:]
        c1a = 1.0 / (s[rows][:, None] - sj[None, :])
        c2a = 1.0 / (s[rows][:, None] + sj[None, :])
        num = c1a @ (w * fj) + c2a @ np.conj(w * fj)
        den = c1a @ w + c2a @ np.conj(w)
        r = f.copy()
        r[rows] = num / den
        rms = float(np.sqrt(np.mean((np.abs(f - r) * wt) ** 2)))
        out.append((np.array(support), w, r.copy(), rms))
        if rms < 1e-13 or mask.sum() < 2:
            break
    return out


def _bary_poles(x_support: np.ndarray, w: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """Poles (values None) or zeros of the conjugate-symmetric barycentric form."""
    zs = np.concatenate([1j * x_support, -1j * x_support])
    ws = np.concatenate([w, np.conj(w)])
    if values is not None:
        ws = ws * np.concatenate([values, np.conj(values)])
    m = zs.size
    a = np.zeros((m + 1, m + 1), complex)
    a[0, 1:] = ws
    a[1:, 0] = 1.0
    a[1:, 1:] = np.diag(zs)
    b = np.eye(m + 1)
    b[0, 0] = 0.0
    ev = scipy.linalg.eigvals(a, b)
    ev = ev[np.isfinite(ev)]
    return ev[np.abs(ev) < 1e12]


def _pair_up(p: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """Snap nearly-real values to the real axis and make complex ones exact pairs.

    Returns one entry per real value and the upper member of each pair.
    """
    out: list[complex] = []
    used = np.zeros(p.size, bool)
    for i in np.argsort(np.abs(p)):
        if used[i]:
            continue
        used[i] = True
        v = p[i]
        scale = max(abs(v), 1e-300)
        if abs(v.imag) <= 1e-4 * scale:
            out.append(complex(v.real, 0.0))
            continue
        # find its conjugate partner
        cand = np.flatnonzero(~used)
        if cand.size:
            j = cand[np.argmin(np.abs(p[cand] - np.conj(v)))]
            if abs(p[j] - np.conj(v)) <= max(rtol, 1e-3) * scale:
                used[j] = True
                v = 0.5 * (v + np.conj(p[j]))
        out.append(complex(v.real, abs(v.imag)))
    return np.array(out, complex)


# ------------------------------------------------------------- pole-residue fit


@dataclass
class _Basis:
    poles: np.ndarray  # one per real pole / upper member per complex pair (scaled)
    use_c0: bool
    use_e: bool

    @property
    def n_params(self) -> int:
        # d, optional e and c0, then (pole, residue) = 2 per real pole, 4 per pair
        n_real = int(np.sum(self.poles.imag == 0))
        n_pair = self.poles.size - n_real
        return 1 + int(self.use_e) + int(self.use_c0) + 2 * n_real + 4 * n_pair


def _bic(rms: float, n_params: int, n_obs: int) -> float:
    """Bayesian information criterion for Gaussian relative residuals."""
    return n_obs * np.log(max(rms, 1e-300) ** 2) + n_params * np.log(n_obs)


def _design(s: np.ndarray, basis: _Basis) -> tuple[np.ndarray, list[str]]:
    """Complex design matrix whose real coefficients define a real rational function."""
    cols = [np.ones_like(s)]
    kinds = ["d"]
    if basis.use_e:
        cols.append(s)
        kinds.append("e")
    if basis.use_c0:
        cols.append(1.0 / s)
        kinds.append("c0")
    for p in basis.poles:
        if p.imag == 0:
            cols.append(1.0 / (s - p.real))
            kinds.append("real")
        else:
            g1 = 1.0 / (s - p)
            g2 = 1.0 / (s - np.conj(p))
            cols.append(g1 + g2)
            cols.append(1j * (g1 - g2))
            kinds += ["cre", "cim"]
    return np.stack(cols, axis=1), kinds


def _lsq(s: np.ndarray, f: np.ndarray, wt: np.ndarray, basis: _Basis) -> tuple[np.ndarray, np.ndarray]:
    a, _ = _design(s, basis)
    aw = a * wt[:, None]
    ar = np.vstack([aw.real, aw.imag])
    b = np.concatenate([(f * wt).real, (f * wt).imag])
    # column scaling keeps lstsq well conditioned across decades of poles
    norms = np.linalg.norm(ar, axis=0)
    norms[norms == 0] = 1.0
    coef = np.linalg.lstsq(ar / norms, b, rcond=None)[0] / norms
    return coef, a @ coef


def _polish(s: np.ndarray, f: np.ndarray, wt: np.ndarray, basis: _Basis) -> _Basis:
    """Move the poles to a local least-squares optimum (variable projection).

    AAA poles fitted to noisy data are displaced; fixed-pole pruning cannot
    repair that, so poles are refined by Levenberg-Marquardt with the residues
    eliminated linearly.  Real poles are p = -exp(t) (stay stable); complex
    pairs p = -exp(t1) + j exp(t2).
    """
    if basis.poles.size == 0 or basis.poles.size > _POLISH_MAX_POLES:
        # many poles mean a CPE-like cluster that AAA already places well;
        # a nonlinear fit there costs seconds for no gain in features
        return basis
    is_real = basis.poles.imag == 0
    theta0: list[float] = []
    for p in basis.poles:
        theta0.append(np.log(max(-p.real, 1e-12)))
        if p.imag != 0:
            theta0.append(np.log(p.imag))

    def poles_of(theta: np.ndarray) -> np.ndarray:
        theta = np.clip(theta, -60.0, 60.0)  # keep exp finite during LM trial steps
        out = []
        i = 0
        for real in is_real:
            if real:
                out.append(complex(-np.exp(theta[i]), 0.0))
                i += 1
            else:
                out.append(complex(-np.exp(theta[i]), np.exp(theta[i + 1])))
                i += 2
        return np.array(out, complex)

    def resid(theta: np.ndarray) -> np.ndarray:
        cand = _Basis(poles_of(theta), basis.use_c0, basis.use_e)
        _, g = _lsq(s, f, wt, cand)
        r = (f - g) * wt
        return np.concatenate([r.real, r.imag])

    theta0_arr = np.clip(np.array(theta0), -60, 60)
    if 2 * s.size <= theta0_arr.size:
        return basis
    sol = scipy.optimize.least_squares(resid, theta0_arr, method="lm", max_nfev=30 * (theta0_arr.size + 1))
    cand = _Basis(poles_of(sol.x), basis.use_c0, basis.use_e)
    before = np.sum(resid(theta0_arr) ** 2)
    return cand if np.sum(sol.fun**2) <= before else basis


def _rms(f: np.ndarray, g: np.ndarray, wt: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.abs(f - g) * wt) ** 2)))


def _unpack(coef: np.ndarray, basis: _Basis) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    d = coef[0]
    i = 1
    e = 0.0
    if basis.use_e:
        e = coef[i]
        i += 1
    c0 = 0.0
    if basis.use_c0:
        c0 = coef[i]
        i += 1
    poles: list[complex] = []
    res: list[complex] = []
    for p in basis.poles:
        if p.imag == 0:
            poles.append(complex(p.real, 0.0))
            res.append(complex(coef[i], 0.0))
            i += 1
        else:
            r = complex(coef[i], coef[i + 1])
            poles += [p, np.conj(p)]
            res += [r, np.conj(r)]
            i += 2
    return float(d), float(e), float(c0), np.array(poles, complex), np.array(res, complex)


def _zeros(d: float, e: float, c0: float, poles: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Zeros of d + e s + c0/s + sum r/(s-p) as eigenvalues of a Rosenbrock pencil."""
    p = list(poles)
    r = list(res)
    if c0 != 0.0:
        p.append(0.0)
        r.append(c0)
    n = len(p)
    has_e = e != 0.0
    size = n + (3 if has_e else 1)
    a = np.zeros((size, size), complex)
    b = np.zeros((size, size))
    u = size - 1  # input variable index
    for k in range(n):  # (s - p_k) x_k - u = 0
        b[k, k] = 1.0
        a[k, k] = p[k]
        a[k, u] = 1.0
    out_row = n
    if has_e:
        wi, qi = n, n + 1  # w = u (algebraic) and q = s w
        b[n, wi] = 1.0
        a[n, qi] = 1.0
        a[n + 1, wi] = -1.0
        a[n + 1, u] = 1.0
        out_row = n + 2
        a[out_row, qi] = -e
    a[out_row, :n] = -np.array(r, complex)
    a[out_row, u] = -d
    ev = scipy.linalg.eigvals(a, b)
    ev = ev[np.isfinite(ev)]
    return ev[np.abs(ev) < 1e10]


def _clean_and_reduce(
    s: np.ndarray,
    f: np.ndarray,
    wt: np.ndarray,
    x: np.ndarray,
    step: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    doublet_tol: float,
    n_obs: int,
) -> tuple[float, _Basis, np.ndarray, np.ndarray, int]:
    """Stable, doublet-free pole-residue model from one AAA step, reduced by BIC.

    Returns (BIC, basis, coefficients, fitted values, number of poles removed).
    """
    support, w, _, _ = step
    raw_poles = _bary_poles(x[support], w, None)
    raw_zeros = _bary_poles(x[support], w, f[support])

    x_lo, x_hi = x.min(), x.max()
    keep: list[complex] = []
    n_removed = 0
    for p in _pair_up(raw_poles):
        if abs(p) > x_hi * _FAR_FACTOR:
            continue  # constant + s across the band: taken by the d and e columns
        if p.real > 0:
            # a passive impedance has no right-half-plane poles: noise pushed this one
            # across the axis; reflect it (as vector fitting does) rather than lose
            # the relaxation it stands for
            p = complex(-p.real, p.imag)
        # Froissart doublet: a zero (almost) on top of the pole
        if raw_zeros.size and np.min(np.abs(raw_zeros - p)) < doublet_tol * abs(p):
            n_removed += 1
            continue
        keep.append(p)
    score, basis, coef, g, n_red = _reduce(s, f, wt, x, _Basis(np.array(keep, complex), use_c0=False, use_e=True), n_obs)
    return score, basis, coef, g, n_removed + n_red


def _reduce(
    s: np.ndarray, f: np.ndarray, wt: np.ndarray, x: np.ndarray, basis: _Basis, n_obs: int
) -> tuple[float, _Basis, np.ndarray, np.ndarray, int]:
    """Polish, then reduce ``basis`` greedily while the BIC improves.

    Returns (BIC, basis, coefficients, fitted values, number of reduction steps).
    """
    x_lo = x.min()
    n_removed = 0
    basis = _polish(s, f, wt, basis)
    coef, g = _lsq(s, f, wt, basis)
    score = _bic(_rms(f, g, wt), basis.n_params, n_obs)
    # greedy model reduction by BIC: drop poles that only fit noise, drop e,
    # or turn the lowest sub-band pole into the exact series-capacitance pole
    while True:
        cands: list[_Basis] = []
        for i in range(basis.poles.size):
            cands.append(_Basis(np.delete(basis.poles, i), basis.use_c0, basis.use_e))
            if basis.poles[i].imag != 0:
                # a pair that collapsed onto the real axis (e.g. a reflected noise
                # pole next to a real relaxation) is one real pole
                merged = basis.poles.copy()
                merged[i] = complex(-abs(merged[i]), 0.0)
                cands.append(_Basis(merged, basis.use_c0, basis.use_e))
        # Noise can split one relaxation into a near-degenerate cluster (seen: a
        # real pole beside a pair with Im p ~ 1e-6 |p| and residues ~ +-1e15).
        # Dropping any one member fits well only once the others move, so the
        # fixed-pole search below never leaves it; merging the two into one real
        # pole (then polished) does.
        merges: list[_Basis] = []
        for i in range(basis.poles.size):
            for j in range(i + 1, basis.poles.size):
                pi, pj = basis.poles[i], basis.poles[j]
                if abs(pi - pj) <= _MERGE_RTOL * max(abs(pi), abs(pj)):
                    merged = np.delete(basis.poles, j)
                    merged[i] = complex(-np.sqrt(abs(pi) * abs(pj)), 0.0)
                    merges.append(_Basis(merged, basis.use_c0, basis.use_e))
        cands += merges
        if basis.use_e:
            cands.append(_Basis(basis.poles, basis.use_c0, False))
        if basis.use_c0:
            cands.append(_Basis(basis.poles, False, basis.use_e))
        elif basis.poles.size:
            i0 = int(np.argmin(np.abs(basis.poles)))
            if abs(basis.poles[i0]) < x_lo:
                cands.append(_Basis(np.delete(basis.poles, i0), True, basis.use_e))
        best = None
        for cand in cands:
            c_coef, c_g = _lsq(s, f, wt, cand)
            c_score = _bic(_rms(f, c_g, wt), cand.n_params, n_obs)
            if best is None or c_score < best[0]:
                best = (c_score, cand, c_coef, c_g)
        if best is None:
            break
        if best[0] >= score:
            # a fixed-pole refit may undersell a reduced model: polish, then judge
            # (the best fixed-pole candidate and every merge of a near-degenerate pair)
            stuck = None
            for cand in [best[1], *(m for m in merges if m is not best[1])]:  # each basis polished once
                polished = _polish(s, f, wt, cand)
                p_coef, p_g = _lsq(s, f, wt, polished)
                p_score = _bic(_rms(f, p_g, wt), polished.n_params, n_obs)
                if p_score < score and (stuck is None or p_score < stuck[0]):
                    stuck = (p_score, polished, p_coef, p_g)
            if stuck is None:
                break
            best = stuck
        score, basis, coef, g = best
        n_removed += 1

    return score, basis, coef, g, n_removed


def fit_rational(
    frequency_hz: np.ndarray,
    z: np.ndarray,
    *,
    tol: float = 1e-6,
    doublet_tol: float = 1e-3,
    max_pairs: int | None = None,
) -> RationalFit:
    """Fit a real rational function to an impedance spectrum.

    Parameters
    ----------
    frequency_hz: frequencies (Hz).
    z: complex impedance (Ohm), capacitive Im Z < 0.
    tol: RMS relative error at which AAA stops adding support pairs; otherwise
        the AAA degree minimising the Bayesian information criterion is used.
    doublet_tol: a pole with a zero closer than ``doublet_tol * |p|`` is a
        Froissart doublet and removed.
    max_pairs: cap on AAA support pairs (default min(20, N // 4)).
    """
    fq, zz = check_spectrum(frequency_hz, z)
    order = np.argsort(fq)
    fq, zz = fq[order], zz[order]
    n = fq.size
    if max_pairs is None:
        max_pairs = max(1, min(20, n // 4))
    if max_pairs < 1:
        raise ValueError(f"max_pairs: expected >= 1, found {max_pairs}")
    omega = 2 * np.pi * fq
    w_ref = float(np.exp(np.mean(np.log(omega))))
    z_ref = float(np.median(np.abs(zz)))
    x = omega / w_ref
    f = zz / z_ref
    wt = z_ref / np.abs(zz)  # = 1/|f|: relative errors
    s = 1j * x

    steps = aaa_real(x, f, wt, max_pairs)
    errors = [st[3] for st in steps]
    n_obs = 2 * n
    # type (2m-1, 2m-1) real rational function: 4m - 1 real parameters
    crit = [_bic(err, 4 * (i + 1) - 1, n_obs) for i, err in enumerate(errors)]
    pick = next((i for i, err in enumerate(errors) if err <= tol), int(np.argmin(crit)))
    score, basis, coef, g, n_removed = _clean_and_reduce(s, f, wt, x, steps[pick], doublet_tol, n_obs)

    d, e, c0, p_s, r_s = _unpack(coef, basis)
    zer_s = _zeros(d, e, c0, p_s, r_s)
    zer_s = _pair_up(zer_s)
    zer_s = np.concatenate([zer_s, np.conj(zer_s[zer_s.imag != 0])])
    # back to physical units
    poles_out = p_s * w_ref
    res_out = r_s * w_ref * z_ref
    o = np.argsort(np.abs(poles_out), kind="stable")
    zeros_out = zer_s * w_ref
    zo = np.lexsort((zeros_out.imag, np.abs(zeros_out)))
    rel = np.abs(f - g) * wt
    return RationalFit(
        poles=poles_out[o],
        residues=res_out[o],
        zeros=zeros_out[zo],
        d=d * z_ref,
        e=e * z_ref / w_ref,
        c0=c0 * z_ref * w_ref,
        rel_error=float(np.sqrt(np.mean(rel**2))),
        max_rel_error=float(rel.max()),
        n_support_pairs=pick + 1,
        n_removed=n_removed,
        omega_range=(float(omega.min()), float(omega.max())),
        aaa_errors=errors,
    )
