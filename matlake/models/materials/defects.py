"""Impurity charge-transition levels: the defect table, its descriptors and the CV check.

The table is ``DFT_impurities.csv`` (lmjacoby/ai_semiconductors; GGA-level DFT):
columns ``AB`` (host), ``Type`` (II-VI, III-V, IV-IV), ``Site`` (M_A, M_B, M_i_A, M_i_B,
M_i_neut, M_i_old), ``Impurity`` (element), six transition levels ``(+3/+2)`` ...
``(-2/-3)`` in eV (Fermi level, from the valence-band maximum) and two formation
energies ``Delta_H (A_rich)``, ``Delta_H (B_rich)`` in eV; the file has empty spacer columns
and arrow marker columns that carry no data.  Rows without levels carry formation
energies only.

:func:`read_impurities` parses it (pure: bytes or path in, frame out; bad cells raise
:class:`~matlake.ingest.base.ParseError` naming the row and column), :func:`level_features`
builds the descriptors of :func:`matlake.models.materials.descriptors.defect_features`
and :func:`level_cv` cross-validates the levels against the mean predictor, with folds by
subject (host + site + impurity) or grouped by impurity element or by host.

All levels here are GGA: a model trained and evaluated on them reports a GGA-to-GGA
error, not the GGA-to-HSE error of the multi-fidelity study (RMSE 0.36 eV / MAE 0.27 eV
against HSE); :mod:`matlake.models.materials.multifidelity` is the path for HSE data.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from matlake.models.materials.descriptors import DEFECT_SITES, HOST_TYPES, defect_features, split_host
from matlake.models.materials.elements import element_table
from matlake.models.materials.regressors import CVResult, cross_validate

LEVELS = ("(+3/+2)", "(+2/+1)", "(+1/0)", "(0/-1)", "(-1/-2)", "(-2/-3)")
FORMATION = ("Delta_H (A_rich)", "Delta_H (B_rich)")
KEY_COLUMNS = ("AB", "Type", "Site", "Impurity")
GROUPINGS = {"subject": None, "impurity": "Impurity", "host": "AB"}


def subject_key(host: str, site: str, impurity: str) -> str:
    """The subject of a row: host + site + impurity, e.g. ``CdTe|M_A|Cu``."""
    return f"{host}|{site}|{impurity}"


def read_impurities(source: str | Path | bytes, name: str = "") -> pd.DataFrame:
    """The impurity table as a frame: KEY_COLUMNS, ``subject_key``, the levels and formation
    energies (float eV, NaN when empty), and ``row_number`` (1-based data row)."""
    from matlake.ingest.base import ParseError

    if isinstance(source, (bytes, bytearray)):
        raw, name = pd.read_csv(io.BytesIO(source), dtype=str, keep_default_na=False), name or "<bytes>"
    else:
        raw, name = pd.read_csv(source, dtype=str, keep_default_na=False), name or str(source)
    missing = [c for c in (*KEY_COLUMNS, *LEVELS, *FORMATION) if c not in raw.columns]
    if missing:
        raise ParseError("header", "columns " + ", ".join((*KEY_COLUMNS, *LEVELS, *FORMATION)),
                         f"missing {missing}", file=name)
    table = element_table()
    out = pd.DataFrame({c: raw[c].str.strip() for c in KEY_COLUMNS})
    for i, row in out.iterrows():
        where = f"row {i + 1}"
        try:
            a, b = split_host(row["AB"])
        except ValueError:
            raise ParseError(f"{where} column AB", "a host formula AB or an element", row["AB"], file=name) from None
        for sym in (a, b, row["Impurity"]):
            if sym not in table.index:
                raise ParseError(f"{where} column AB/Impurity", "element symbols", sym, file=name)
        if row["Site"] not in DEFECT_SITES:
            raise ParseError(f"{where} column Site", " or ".join(DEFECT_SITES), row["Site"], file=name)
        if row["Type"] not in HOST_TYPES:
            raise ParseError(f"{where} column Type", " or ".join(HOST_TYPES), row["Type"], file=name)
    for c in (*LEVELS, *FORMATION):
        text = raw[c].str.strip()
        values = pd.to_numeric(text.where(text != "", None), errors="coerce")
        bad = values.isna() & (text != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ParseError(f"row {i + 1} column {c}", "a number in eV or an empty cell", text.iloc[i], file=name)
        out[c] = values.astype(float)
    out["subject_key"] = [subject_key(h, s, m) for h, s, m in zip(out["AB"], out["Site"], out["Impurity"])]
    out["row_number"] = np.arange(1, len(out) + 1)
    return out


def level_features(frame: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """Descriptors of each row (host, impurity, difference, site and host-type one-hots)."""
    return defect_features(frame["AB"].tolist(), frame["Site"].tolist(), frame["Impurity"].tolist(),
                           frame["Type"].tolist())


def level_cv(frame: pd.DataFrame, kind: str = "rf", grouping: str = "subject", n_folds: int = 5,
             cv_seed: int = 0, seed: int = 0, levels: Sequence[str] = LEVELS, **params: Any) -> CVResult:
    """Cross-validated transition levels (eV) of the rows that have them, vs the mean predictor.

    ``grouping``: ``subject`` (folds by host + site + impurity), ``impurity`` (all rows of an
    impurity element in one fold: the model never saw that element) or ``host``.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping: expected one of {', '.join(GROUPINGS)}, found {grouping!r}")
    rows = frame[list(levels)].notna().any(axis=1).to_numpy()
    data = frame[rows].reset_index(drop=True)
    x, _, _ = level_features(data)
    col = GROUPINGS[grouping]
    groups = None if col is None else data[col].tolist()
    return cross_validate(x, data[list(levels)].to_numpy(float), list(levels), data["subject_key"].tolist(), kind,
                          n_folds, cv_seed, groups, grouping if col else "", seed, **params)
