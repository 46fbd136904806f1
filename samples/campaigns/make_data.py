"""Generate the training table of the perovskite_demo campaign (a planted relation, seeded).

    python samples/campaigns/make_data.py        # rewrites perovskite_demo.csv next to this file

The candidate space is the ``[space]`` of ``perovskite_demo.toml`` (351 ABX3 compositions).
``N_TRAIN`` of them, drawn with ``numpy.random.default_rng(SEED)``, get two "computed"
properties from :func:`planted` plus Gaussian noise (``NOISE`` eV) from the same stream:

- ``gap`` (eV): ``1.35 + 2.4 dchi - 1.2 dchi^2 + 1.5 (r_B - 1.19)^2 - 0.4 (r_A - 1.88)``
  with ``dchi = chi_X - 2.66`` (X-site mean Pauling electronegativity) and r the A/B-site
  mean ionic radii (Angstrom) of the elemental table of
  :mod:`matlake.models.materials.descriptors`;
- ``dhd`` (decomposition energy, eV per formula unit): ``2.0 (t - 0.90)^2 - 0.06 + 0.05 (r_X - 2.0)``,
  t the Goldschmidt tolerance factor ``(r_A + r_X) / (sqrt 2 (r_B + r_X))`` of those radii.

Everything is a function of the ``materials-sites`` descriptor vector (per-site means), so
the campaign's featurizer sees exactly the inputs of the planted relation.  The notebook
uses :func:`planted_values` as the "calculation" of the active-learning loop and
:func:`truth_scorers` as the planted truth that precision at k is measured against.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SPEC = HERE / "perovskite_demo.toml"
CSV = HERE / "perovskite_demo.csv"
SEED = 2026
N_TRAIN = 60
NOISE = {"gap": 0.03, "dhd": 0.005}  # eV
PATTERN = ("A", "B", "X")


def space():
    """The campaign's candidate space (from perovskite_demo.toml)."""
    from matlake.models.materials.enumerate import Space

    return Space.from_dict(tomllib.loads(SPEC.read_text())["space"])


def all_keys() -> list[str]:
    """Every candidate key of the space, in enumeration order."""
    from matlake.models.materials.enumerate import enumerate_candidates

    return [k for b in enumerate_candidates(space()) for k in b.column("candidate_key").to_pylist()]


def planted(x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The planted (noise-free) properties, eV, from materials-sites descriptor columns."""
    col = {n: x[:, i] for i, n in enumerate(names)}
    ra, rb, rx = col["A_mean_ionic_radius"], col["B_mean_ionic_radius"], col["X_mean_ionic_radius"]
    dchi = col["X_mean_electronegativity"] - 2.66
    gap = 1.35 + 2.4 * dchi - 1.2 * dchi ** 2 + 1.5 * (rb - 1.19) ** 2 - 0.4 * (ra - 1.88)
    t = (ra + rx) / (np.sqrt(2.0) * (rb + rx))
    dhd = 2.0 * (t - 0.90) ** 2 - 0.06 + 0.05 * (rx - 2.0)
    return {"gap": gap, "dhd": dhd}


def features(keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """materials-sites vectors (per-site means) of candidate keys."""
    from matlake.models.materials.descriptors import site_features
    from matlake.models.materials.enumerate import parse_key

    x, names, _units = site_features([parse_key(k) for k in keys], PATTERN, stats=("mean",))
    return x, names


def planted_values(keys: Sequence[str], seed: int | None = None) -> dict[str, np.ndarray]:
    """The planted properties of ``keys`` (eV), with noise drawn from ``default_rng(seed)`` when seed is given."""
    vals = planted(*features(keys))
    if seed is not None:
        rng = np.random.default_rng(seed)
        vals = {p: v + rng.normal(0.0, NOISE[p], len(v)) for p, v in vals.items()}
    return vals


def table(keys: Sequence[str], values: dict[str, np.ndarray], prefix: str) -> pd.DataFrame:
    """Rows id, A, B, X, gap, dhd as the map reads them (site cells like Cs0.5MA0.5, I0.25Br0.75)."""
    from matlake.models.materials.enumerate import parse_key

    rows = []
    for i, k in enumerate(keys):
        occ = parse_key(k)
        cell = {s: "".join(sp if f == 1 else f"{sp}{f:g}" for sp, f in occ[s].items()) for s in PATTERN}
        rows.append({"id": f"{prefix}{i:03d}", **cell, **{p: round(float(v[i]), 5) for p, v in values.items()}})
    return pd.DataFrame(rows)


def training_keys(n: int = N_TRAIN, seed: int = SEED) -> list[str]:
    """``n`` candidate keys drawn without replacement (sorted)."""
    return sorted(np.random.default_rng(seed).choice(all_keys(), n, replace=False).tolist())


def make(n: int = N_TRAIN, seed: int = SEED) -> pd.DataFrame:
    """The training table: ``n`` compositions with noisy planted gap and dhd."""
    keys = training_keys(n, seed)
    return table(keys, planted_values(keys, seed=seed + 1), "pd")


def truth_scorers() -> dict:
    """Campaign scorers giving the planted values with zero uncertainty (the truth for precision at k)."""
    from matlake.models.materials.campaign import callable_scorer

    return {p: callable_scorer(f"planted-{p}", lambda x, n, p=p: (planted(x, n)[p], np.zeros(len(x))), unit="eV")
            for p in ("gap", "dhd")}


if __name__ == "__main__":
    make().to_csv(CSV, index=False)
    print(f"wrote {CSV.name}")
