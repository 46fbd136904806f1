"""Fuzzing every parser through the platform: bad input never crashes a batch and is never lost.

Inputs: the real sample files of samples/ (every kind, gzip removed)
truncated anywhere, random bytes under real file names, the same texts
re-encoded as UTF-16 or with Latin-1 characters, NaN/inf written into numeric
fields, and headers claiming absurd sizes (10^12 atoms or points).  Whatever
the parser makes of it, ``ingest`` returns; a failure is a ``failed`` ledger
row whose message names the file, and the raw bytes are kept as an object.
No input may end as an ``error``: that status means a detector or parser
raised something other than ParseError, i.e. a bug, and fails the test.
"""

from __future__ import annotations

import gzip
import re
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import SAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matlake.platform.operations import doctor

pytestmark = pytest.mark.slow
MAX_BYTES = 200_000  # larger prefixes only slow the volumetric parser down


def _samples() -> list[Path]:
    files = sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    # samples/computed/*/structures holds 32 pymatgen structure JSON files of one format: one stands for all
    structures = [p for p in files if p.parent.name == "structures" and "computed" in p.parts]
    files = [p for p in files if p not in structures[1:]]
    if not files:
        pytest.fail(f"no sample files under {SAMPLES} (samples/ ships with the repository)")
    return files


@lru_cache(maxsize=None)
def content(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        with gzip.open(path) as fh:
            return fh.read(MAX_BYTES * 2)
    return raw[: MAX_BYTES * 2]


def clean_name(path: Path) -> str:
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def _texts() -> list[Path]:
    out = []
    for p in _samples():
        try:
            content(p)[:4096].decode("utf-8")
            out.append(p)
        except UnicodeDecodeError:
            pass
    return out


NUMBER = re.compile(rb"(?<![A-Za-z_])-?\d+\.\d+(?:[eE][-+]?\d+)?")
BAD_NUMBERS = [b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e999", b"-1e999"]


def _huge_headers() -> list[tuple[str, bytes]]:
    poscar = (b"Si2\n1.0\n5.4 0 0\n0 5.4 0\n0 0 5.4\nSi\n1000000000000\nDirect\n0 0 0\n0.25 0.25 0.25\n")
    chgcar = (b"Si2\n1.0\n5.4 0 0\n0 5.4 0\n0 0 5.4\nSi\n2\nDirect\n0 0 0\n0.25 0.25 0.25\n\n"
              b"10000 10000 10000\n0.1 0.2 0.3 0.4 0.5\n")
    msa = (b"#FORMAT      : EMSA/MAS Spectral Data File\n#VERSION     : 1.0\n#TITLE       : huge\n"
           b"#NPOINTS     : 1000000000000\n#NCOLUMNS    : 1\n#XUNITS      : eV\n#DATATYPE    : XY\n"
           b"#SPECTRUM    :\n1.0, 2.0\n2.0, 3.0\n#ENDOFDATA   :\n")
    xdi = (b"# XDI/1.0\n# Element.symbol: Cu\n# Element.edge: K\n# Column.1: energy eV\n# Column.2: mu\n"
           b"# Scan.npoints: 1000000000000\n#----\n# energy mu\n8979 0.1\n8980 0.2\n")
    gamry_like = b"EXPLAIN\nTAG\tEISPOT\nZCURVE\tTABLE\t1000000000000\n\tPt\tTime\tFreq\tZreal\tZimag\n"
    return [("POSCAR", poscar), ("CHGCAR", chgcar), ("huge.msa", msa), ("huge.xdi", xdi), ("huge.DTA", gamry_like)]


@st.composite
def bad_inputs(draw) -> tuple[str, bytes]:
    samples, texts = _samples(), _texts()
    how = draw(st.sampled_from(["truncate", "random", "utf16", "latin1", "nan", "huge"]))
    if how == "huge":
        return draw(st.sampled_from(_huge_headers()))
    src = draw(st.sampled_from(texts if how in ("utf16", "latin1", "nan") else samples))
    data, name = content(src), clean_name(src)
    if how == "truncate":
        data = data[: draw(st.integers(0, min(len(data), MAX_BYTES)))]
        if draw(st.booleans()):
            return name + ".gz", gzip.compress(data, compresslevel=1)
        return name, data
    if how == "random":
        return name, draw(st.binary(max_size=4096))
    data = data[:MAX_BYTES]
    if how == "utf16":
        return name, data.decode("utf-8", "replace").encode("utf-16")
    if how == "latin1":
        text = data.decode("utf-8", "replace")
        at = draw(st.integers(0, len(text)))
        return name, (text[:at] + "Å°é µΩ ÿ" + text[at:]).encode("latin-1", "replace")
    # how == "nan": replace some numbers in numeric fields by NaN/inf spellings
    bad = draw(st.sampled_from(BAD_NUMBERS))
    every = draw(st.integers(1, 7))
    count = [0]

    def sub(m: re.Match) -> bytes:
        count[0] += 1
        return bad if count[0] % every == 0 else m.group(0)

    return name, NUMBER.sub(sub, data)


def _check_outcomes(lake, report, paths: list[Path]) -> None:
    assert len(report.outcomes) == len(paths)
    errors = [(m, d) for p, m, d in lake.sql("select source_path, message, detail from ledger where status = 'error'")
              .fetchall() if p in {str(x) for x in paths}]
    assert not errors, "parser bugs (status error):\n" + "\n\n".join(f"{m}\n{d}" for m, d in errors)
    assert report.errors == 0
    for o in report.outcomes:
        assert o.status in ("ok", "failed", "unchanged"), (o.status, o.message, o.detail)
        if not o.sha256:
            continue
        assert lake.objects.exists(o.sha256), f"raw bytes of {o.path} not kept"
        if o.status == "failed":
            row = lake.sql("select status, message from ledger where sha256 = ? and source_path = ?",
                           params=[o.sha256, o.path]).fetchone()
            assert row is not None and row[0] == "failed", o.path
            assert Path(o.path).name in row[1], row[1]
        elif o.status == "unchanged":
            assert lake.sql("select count(*) from ledger where sha256 = ?", params=[o.sha256]).fetchone()[0] >= 1


def test_every_sample_file_truncated_fails_cleanly_or_parses(sqlite_lake, tmp_path):
    samples = _samples()
    paths = []
    for i, src in enumerate(samples):
        data = content(src)
        for frac in (0.0, 0.013, 0.5, 0.97):
            p = tmp_path / f"t{i}_{int(frac * 1000)}" / clean_name(src)
            p.parent.mkdir()
            p.write_bytes(data[: int(min(len(data), MAX_BYTES) * frac)])
            paths.append(p)
    report = sqlite_lake.ingest(paths, progress=False)
    _check_outcomes(sqlite_lake, report, paths)
    assert report.failed >= len(samples)  # at least the empty files
    assert doctor(sqlite_lake).ok


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=bad_inputs())
def test_fuzzed_inputs_never_crash_and_failures_are_recorded(sqlite_lake, tmp_path, case):
    name, data = case
    folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    report = sqlite_lake.ingest([path], progress=False)
    _check_outcomes(sqlite_lake, report, [path])


# Inputs the fuzzing above found, or that reach the same spots more directly: each used to end as a
# crash inside a parser (ZeroDivisionError, AttributeError, or spglib killing the process on NaN).
_CELL = b"5 0 0\n0 5 0\n0 0 5\n"
DEGENERATE = {
    "zero_lattice/POSCAR": (b"Si2\n1.0\n0 0 0\n0 0 0\n0 0 0\nSi\n2\nDirect\n0 0 0\n0.25 0.25 0.25\n",
                            "cell volume above"),
    "coplanar/POSCAR": (b"Si2\n1.0\n5 0 0\n5 0 0\n0 0 5\nSi\n2\nDirect\n0 0 0\n0.25 0.25 0.25\n", "cell volume above"),
    "nan_scale/POSCAR": (b"Si2\nnan\n" + _CELL + b"Si\n2\nDirect\n0 0 0\n0.25 0.25 0.25\n", "finite lattice"),
    "nan_site/POSCAR": (b"Si2\n1.0\n" + _CELL + b"Si\n2\nDirect\nnan 0 0\n0.25 0.25 inf\n", "finite coordinates"),
    "unknown_element/POSCAR": (b"Si2\n1.0\n" + _CELL + b"Xx\n2\nDirect\n0 0 0\n0.25 0.25 0.25\n", "chemical elements"),
}


def _mp_entry(**changes) -> bytes:
    import json

    entry = {"@module": "pymatgen.entries.computed_entries", "@class": "ComputedEntry", "energy": -10.0,
             "composition": {"Ga": 1.0, "N": 1.0}, "entry_id": "mp-1", "correction": 0.0, "energy_adjustments": [],
             "parameters": {"run_type": "GGA", "pseudo_potential": {"functional": "PBE"}}, "data": {}}
    bad = dict(entry, entry_id="mp-2", **changes)
    return json.dumps([entry, bad]).encode()  # a good first document, so detection is not what fails


MP_DOCS = {
    "energy_null.json": (_mp_entry(energy=None), "energy"),
    "no_atoms.json": (_mp_entry(composition={}), "composition"),
    "pseudo_text.json": (_mp_entry(parameters={"pseudo_potential": "PBE"}), "pseudo_potential"),
    "potcars_number.json": (_mp_entry(parameters={"potcar_symbols": 3.0}), "potcar_symbols"),
    "class_list.json": (_mp_entry(**{"@class": ["ComputedEntry"]}), "@class"),
    "adjustments_text.json": (_mp_entry(energy_adjustments=["x"]), "energy_adjustments"),
    "band_gap_text.json": (_mp_entry(data={"band_gap": "wide"}), "band_gap"),
}


@pytest.mark.parametrize("name", list(DEGENERATE) + list(MP_DOCS))
def test_degenerate_cells_and_malformed_entries_are_bad_input_not_parser_crashes(sqlite_lake, tmp_path, name):
    data, field = DEGENERATE[name] if name in DEGENERATE else MP_DOCS[name]
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    report = sqlite_lake.ingest([path], kind="auto" if name in DEGENERATE else "mp-json", progress=False)
    _check_outcomes(sqlite_lake, report, [path])
    [o] = report.outcomes
    assert o.status == "failed" and field in o.message, o.message
