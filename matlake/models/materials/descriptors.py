"""Composition, per-site and defect descriptors from an elemental property table, vectorised.

Every function takes many subjects at once and returns ``(matrix, names, units)``:
``matrix`` is float64 (n_subjects, n_features), NaN where a species lacks a property.

- :func:`composition_features`: composition-weighted statistics of the property table over
  each composition's species (weights = amounts / total): ``mean`` (sum w_i p_i),
  ``std`` (sqrt(sum w_i p_i^2 - mean^2), the weighted population std) and ``range``
  (max - min over species present), named ``comp_<stat>_<property>``.
- :func:`site_features`: the same, **per site** of a declared site pattern (ABX3: A, B, X),
  with the mixing fractions of each site normalised to 1 on that site.
  ``"MA0.5FA0.5 Pb I2.5Br0.5"`` parses (:func:`parse_sites`) to
  A = {MA: 0.5, FA: 0.5}, B = {Pb: 1}, X = {I: 2.5/3, Br: 0.5/3}; a JSON mapping
  ``{"A": {"MA": 0.5, "FA": 0.5}, ...}`` (``material_subjects.sites_json``) is accepted too.
  A-site species take the ``-asite`` table (12-coordinate radii of molecular_ions.toml).
  Names ``<site>_<stat>_<property>``.
- :func:`defect_features`: impurity in a binary (or elemental) semiconductor host AB:
  host A and B properties (``hostA_*``, ``hostB_*``), impurity properties (``imp_*``),
  impurity minus the host atom of the site (``diff_*``), site one-hot (``site_<site>``)
  and host-type one-hot (``type_<type>``).  The "host atom of the site" is A for the
  substitution M_A and the interstitial M_i_A (an interstitial next to A atoms), B for
  M_B and M_i_B, and the mean of A and B for the neutral/other interstitials
  (M_i_neut, M_i_old), which sit between both.

Arrays of 10^6 compositions are processed in chunks (``chunk`` rows) so the memory of the
(rows x species x properties) intermediate stays bounded.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from matlake.models.materials.elements import ElementTable, element_table

STATS = ("mean", "std", "range")
PEROVSKITE_SITES = ("A", "B", "X")
DEFECT_SITES = ("M_A", "M_B", "M_i_A", "M_i_B", "M_i_neut", "M_i_old")
HOST_TYPES = ("II-VI", "III-V", "IV-IV")
FEATURIZER_VERSION = "1"



@lru_cache(maxsize=8)
def _species_pattern(known: tuple[str, ...]) -> "re.Pattern[str]":
    """Species (longest name first, so Co is not C + o) followed by an optional amount."""
    names = sorted(set(known), key=len, reverse=True)
    return re.compile("(" + "|".join(re.escape(n) for n in names) + r")(\d+(?:\.\d*)?|\.\d+)?")


def parse_species_amounts(text: str, known: Iterable[str]) -> dict[str, float]:
    """``"I2.5Br0.5"`` -> {"I": 2.5, "Br": 0.5}; species are the longest ``known`` names
    (so "MA" and "FA" win over "M"... and Co is not C + o).  Raises ValueError naming the text."""
    pattern = _species_pattern(tuple(known))
    out: dict[str, float] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = pattern.match(text, pos)
        if not m:
            raise ValueError(f"composition {text!r}: expected a species symbol at position {pos}, "
                             f"found {text[pos:pos + 4]!r}")
        amount = float(m.group(2)) if m.group(2) else 1.0
        out[m.group(1)] = out.get(m.group(1), 0.0) + amount
        pos = m.end()
    if not out:
        raise ValueError(f"composition {text!r}: expected at least one species, found none")
    return out


def parse_sites(value: str | Mapping[str, Any], pattern: Sequence[str] = PEROVSKITE_SITES,
                table: ElementTable | None = None) -> dict[str, dict[str, float]]:
    """Site -> {species: fraction summing to 1} from a space-separated string (one token per site,
    in ``pattern`` order) or a JSON text / mapping {site: {species: amount}}."""
    table = table or element_table()
    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = json.loads(value)
    if isinstance(value, str):
        tokens = value.split()
        if len(tokens) != len(pattern):
            raise ValueError(f"sites {value!r}: expected {len(pattern)} space-separated site tokens "
                             f"({' '.join(pattern)}), found {len(tokens)}")
        raw = {site: parse_species_amounts(tok, table.species) for site, tok in zip(pattern, tokens)}
    else:
        missing = [s for s in pattern if s not in value]
        if missing:
            raise ValueError(f"sites {value!r}: expected sites {list(pattern)}, missing {missing}")
        raw = {site: {str(k): float(v) for k, v in dict(value[site]).items()} for site in pattern}
    out = {}
    for site, amounts in raw.items():
        total = sum(amounts.values())
        if not total > 0 or any(v < 0 for v in amounts.values()):
            raise ValueError(f"site {site}: expected positive amounts, found {amounts}")
        unknown = [s for s in amounts if s not in table.index]
        if unknown:
            raise ValueError(f"site {site}: unknown species {unknown}")
        out[site] = {k: v / total for k, v in amounts.items()}
    return out


def _weights(compositions: Sequence[Mapping[str, float]], table: ElementTable) -> tuple[np.ndarray, np.ndarray]:
    """(rows, species-index) weights as a dense (n, k) matrix over the k species used, and the used indices."""
    idx = table.index
    used = sorted({idx[s] for comp in compositions for s in comp} if compositions else set())
    col = {u: j for j, u in enumerate(used)}
    w = np.zeros((len(compositions), len(used)))
    for i, comp in enumerate(compositions):
        total = float(sum(comp.values()))
        if not total > 0:
            raise ValueError(f"composition {i}: expected positive amounts, found {dict(comp)}")
        for s, a in comp.items():
            if s not in idx:
                raise KeyError(f"composition {i}: unknown species {s!r} (table {table.name})")
            w[i, col[idx[s]]] += a / total
    return w, np.asarray(used, dtype=int)


def weighted_stats(w: np.ndarray, values: np.ndarray, stats: Sequence[str] = STATS,
                   chunk: int = 65536) -> np.ndarray:
    """Statistics of ``values`` (k species x p properties) under row weights ``w`` (n x k, rows sum to 1).

    Returns (n, len(stats) * p), stat-major.  A species with weight 0 does not count, even
    when its value is NaN; a present species with a NaN value makes the result NaN.
    """
    unknown = set(stats) - set(STATS)
    if unknown:
        raise ValueError(f"stats: expected a subset of {STATS}, found {sorted(unknown)}")
    n, p = w.shape[0], values.shape[1]
    out = np.empty((n, len(stats) * p))
    present_all = w > 0
    nan_v = np.isnan(values)
    v0 = np.where(nan_v, 0.0, values)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        ws, pres = w[sl], present_all[sl]
        bad = (pres.astype(np.int32) @ nan_v.astype(np.int32)) > 0  # a present species lacks the value
        mean = ws @ v0
        cols = []
        for stat in stats:
            if stat == "mean":
                cols.append(mean)
            elif stat == "std":
                cols.append(np.sqrt(np.clip(ws @ (v0 ** 2) - mean ** 2, 0.0, None)))
            else:
                hi = np.where(pres[:, :, None], v0[None, :, :], -np.inf).max(axis=1)
                lo = np.where(pres[:, :, None], v0[None, :, :], np.inf).min(axis=1)
                cols.append(hi - lo)
        block = np.hstack(cols)
        block[np.tile(bad, len(stats))] = np.nan
        out[sl] = block
    return out


def composition_features(compositions: Sequence[Mapping[str, float]], table: ElementTable | None = None,
                         stats: Sequence[str] = STATS, prefix: str = "comp") -> tuple[np.ndarray, list[str], list[str]]:
    """Composition-weighted statistics (see the module docstring) of many compositions {species: amount}."""
    table = table or element_table()
    w, used = _weights(compositions, table)
    x = weighted_stats(w, table.values[used], stats)
    names = [f"{prefix}_{s}_{p}" for s in stats for p in table.properties]
    units = [u for s in stats for u in table.units]
    return x, names, units


def site_features(sites: Sequence[str | Mapping[str, Any]], pattern: Sequence[str] = PEROVSKITE_SITES,
                  stats: Sequence[str] = ("mean",), a_site_table: bool = True) -> tuple[np.ndarray, list[str], list[str]]:
    """Per-site statistics for a site pattern; ``sites`` are strings or mappings (:func:`parse_sites`).

    With ``a_site_table`` the site named "A" uses the ``-asite`` table (12-coordinate radii of
    the A-site ions); the other sites use the generic table.
    """
    generic = element_table()
    parsed = [parse_sites(s, pattern, generic) for s in sites]
    blocks, names, units = [], [], []
    for site in pattern:
        table = element_table(a_site=True) if (site == "A" and a_site_table) else generic
        x, n, u = composition_features([p[site] for p in parsed], table, stats, prefix=site)
        blocks.append(x)
        names += n
        units += u
    return np.hstack(blocks), names, units


_HOST = re.compile(r"[A-Z][a-z]?")


def split_host(host: str) -> tuple[str, str]:
    """(A, B) of a host formula: "CdTe" -> (Cd, Te), "SiGe" -> (Si, Ge), elemental "Si" -> (Si, Si)."""
    parts = _HOST.findall(host)
    if "".join(parts) != host or len(parts) not in (1, 2):
        raise ValueError(f"host {host!r}: expected a binary AB or an element, e.g. 'CdTe' or 'Si'")
    return (parts[0], parts[-1])


def defect_features(hosts: Sequence[str], sites: Sequence[str], impurities: Sequence[str],
                    host_types: Sequence[str], table: ElementTable | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Host, impurity, difference and one-hot features of impurities (see the module docstring).

    ``hosts`` like "CdTe", ``sites`` among :data:`DEFECT_SITES`, ``impurities`` element
    symbols, ``host_types`` among :data:`HOST_TYPES`; all of one length.
    """
    table = table or element_table()
    n = len(hosts)
    if not (len(sites) == len(impurities) == len(host_types) == n):
        raise ValueError(f"defect_features: expected equal lengths, found hosts {n}, sites {len(sites)}, "
                         f"impurities {len(impurities)}, host types {len(host_types)}")
    uniq_hosts = {h: split_host(h) for h in set(hosts)}
    a = np.array([uniq_hosts[h][0] for h in hosts], dtype=object)
    b = np.array([uniq_hosts[h][1] for h in hosts], dtype=object)
    pa_, pb = table.lookup(a), table.lookup(b)
    pi = table.lookup(np.asarray(impurities, dtype=object))
    site_arr = np.asarray(sites, dtype=object)
    bad = sorted(set(site_arr) - set(DEFECT_SITES))
    if bad:
        raise ValueError(f"site: expected one of {DEFECT_SITES}, found {bad}")
    type_arr = np.asarray(host_types, dtype=object)
    bad = sorted(set(type_arr) - set(HOST_TYPES))
    if bad:
        raise ValueError(f"host type: expected one of {HOST_TYPES}, found {bad}")
    on_a = np.isin(site_arr, ["M_A", "M_i_A"])[:, None]
    on_b = np.isin(site_arr, ["M_B", "M_i_B"])[:, None]
    replaced = np.where(on_a, pa_, np.where(on_b, pb, 0.5 * (pa_ + pb)))
    site_oh = (site_arr[:, None] == np.array(DEFECT_SITES, dtype=object)[None, :]).astype(float)
    type_oh = (type_arr[:, None] == np.array(HOST_TYPES, dtype=object)[None, :]).astype(float)
    x = np.hstack([pa_, pb, pi, pi - replaced, site_oh, type_oh])
    props, units = list(table.properties), list(table.units)
    names = ([f"hostA_{p}" for p in props] + [f"hostB_{p}" for p in props] + [f"imp_{p}" for p in props]
             + [f"diff_{p}" for p in props] + [f"site_{s}" for s in DEFECT_SITES] + [f"type_{t}" for t in HOST_TYPES])
    return x, names, units * 4 + [""] * (len(DEFECT_SITES) + len(HOST_TYPES))
