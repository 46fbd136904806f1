"""Pareto fronts and single-score ranking over predicted properties (pure, vectorised).

Objectives are columns of a matrix with a sense each (``max`` or ``min``); a
point dominates another when it is at least as good in every objective and
better in one.  Two objectives use an O(n log n) sweep; more use peeling with
numpy comparisons in blocks (O(n^2) per front, fine for the filtered sets a
campaign ranks).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np


def _oriented(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Values turned so that larger is better in every column."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(senses):
        raise ValueError(f"pareto: expected an (n, {len(senses)}) matrix, found shape {v.shape}")
    bad = [s for s in senses if s not in ("max", "min")]
    if bad:
        raise ValueError(f"pareto: senses must be 'max' or 'min', found {bad}")
    if np.isnan(v).any():
        raise ValueError("pareto: objectives contain NaN (filter those candidates first)")
    return v * np.array([1.0 if s == "max" else -1.0 for s in senses])


def _ranks_2d(v: np.ndarray) -> np.ndarray:
    """Non-domination ranks (1 = front) of two maximised objectives by one sweep.

    In the order (f1 desc, f2 desc) a point can only be dominated by points before it;
    each front, in that order, has strictly increasing f2, so its last point has the
    front's largest f2, and the point joins the first front whose last f2 is below its
    own (binary search over the fronts' last f2, which decrease with the front
    number), or equals the front's last point exactly (equal points do not dominate)."""
    order = np.lexsort((-v[:, 1], -v[:, 0]))
    ranks = np.empty(len(v), np.int64)
    neg_last: list[float] = []  # -(last f2) per front, increasing
    last_pt: list[tuple[float, float]] = []
    for i in order:
        f1, f2 = float(v[i, 0]), float(v[i, 1])
        k = bisect.bisect_right(neg_last, -f2)  # first front with last f2 < f2
        if k > 0 and last_pt[k - 1] == (f1, f2):
            k -= 1  # a duplicate of that front's last point joins it
            ranks[i] = k + 1
            continue
        if k == len(neg_last):
            neg_last.append(-f2)
            last_pt.append((f1, f2))
        else:
            neg_last[k] = -f2
            last_pt[k] = (f1, f2)
        ranks[i] = k + 1
    return ranks


def _dominated(v: np.ndarray, by: np.ndarray, block: int = 2048) -> np.ndarray:
    """For each row of ``v``: is some row of ``by`` at least as good everywhere and better once?"""
    out = np.zeros(len(v), bool)
    for s in range(0, len(v), block):
        a = v[s:s + block, None, :]
        ge = (by[None, :, :] >= a).all(-1)
        gt = (by[None, :, :] > a).any(-1)
        out[s:s + block] = (ge & gt).any(1)
    return out


def pareto_ranks(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Non-domination rank of each row (1 = Pareto front, 2 = front after removing it, ...)."""
    v = _oriented(values, senses)
    if len(v) == 0:
        return np.zeros(0, np.int64)
    if v.shape[1] == 1:
        # One objective: rank by distinct value.
        uniq = np.unique(-v[:, 0])
        return np.searchsorted(uniq, -v[:, 0]) + 1
    if v.shape[1] == 2:
        return _ranks_2d(v)
    ranks = np.zeros(len(v), np.int64)
    left = np.arange(len(v))
    r = 1
    while len(left):
        sub = v[left]
        dom = _dominated(sub, sub)
        ranks[left[~dom]] = r
        left = left[dom]
        r += 1
    return ranks


def pareto_front(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows."""
    return pareto_ranks(values, senses) == 1


def rank_order(primary: np.ndarray, keys: Sequence[str], descending: bool = True) -> np.ndarray:
    """Indices sorting by ``primary`` (descending by default), ties broken by ``keys`` ascending:
    a total, deterministic order."""
    p = np.asarray(primary, dtype=np.float64)
    if np.isnan(p).any():
        raise ValueError("rank: the score is NaN for some candidates")
    k = np.asarray(keys, dtype=object)
    key_rank = np.argsort(np.argsort(k, kind="stable"), kind="stable")
    return np.lexsort((key_rank, -p if descending else p))
