"""EIS readers: real vendor files, the sign convention, detection, validation, fuzz."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pyarrow as pa
import pytest
from conftest import sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matlake.ingest.base import ParseContext, ParseError
from matlake.ingest.eis import PARSERS, Spectrum, detect_format, read_bytes, read_spectra
from matlake.schemas.eis import IMPEDANCE

# file, parser, file_format, points, f_min, f_max (Hz)
FILES = [
    ("impedancepy_exampleData.csv", "eis-csv", "csv", 66, 3.1623e-3, 1e4),
    ("impedancepy_exampleDataParstat.txt", "eis-parstat-txt", "parstat-txt", 31, 10.0, 1e4),
    ("impedancepy_exampleDataAutolab.txt", "eis-autolab-txt", "autolab-txt", 41, 0.1, 1e4),
    ("impedancepy_exampleDataBioLogic.mpt", "eis-biologic-mpt", "biologic-mpt", 43, 0.01689554, 1000.3201),
    ("impedancepy_exampleDataGamry.DTA", "eis-gamry-dta", "gamry-dta", 72, 0.0158898, 200015.6),
    ("impedancepy_Circuit3_EIS_1.z", "eis-zplot-z", "zplot-z", 53, 1.0, 1.5e5),
]
IDS = [f[0] for f in FILES]


def _parse(parser_name: str, data: bytes, filename: str = "f", options: dict | None = None) -> list[dict]:
    p = next(p for p in PARSERS if p.name == parser_name)
    ctx = ParseContext(hashlib.sha256(data).hexdigest(), filename, p.name, options or {})
    return p.parse(data, ctx).tables["impedance"]


@pytest.mark.parametrize("name,parser,fmt,n,fmin,fmax", FILES, ids=IDS)
def test_sample_file_gives_one_spectrum_with_published_point_count(name, parser, fmt, n, fmin, fmax):
    spectra = read_spectra(sample("eis", name))
    assert len(spectra) == 1
    s = spectra[0]
    assert isinstance(s, Spectrum) and s.z.dtype == complex
    assert len(s.frequency) == n == len(s.z)
    assert s.metadata["file_format"] == fmt
    assert s.frequency.min() == pytest.approx(fmin, rel=1e-9)
    assert s.frequency.max() == pytest.approx(fmax, rel=1e-9)


@pytest.mark.parametrize("name,parser,fmt,n,fmin,fmax", FILES, ids=IDS)
def test_capacitive_arc_has_negative_imaginary_part(name, parser, fmt, n, fmin, fmax):
    s = read_spectra(sample("eis", name))[0]
    low = s.frequency < np.median(s.frequency)
    assert (s.z.imag[low] < 0).mean() > 0.8  # the low-frequency half is the capacitive arc
    assert (s.z.real > 0).mean() > 0.95


def test_example_csv_nine_highest_frequencies_are_inductive():
    s = read_spectra(sample("eis", "impedancepy_exampleData.csv"))[0]
    order = np.argsort(s.frequency)[::-1]
    assert (s.z.imag[order[:9]] > 0).all()
    assert (s.z.imag[order[9:]] < 0).all()
    assert "kept" in json.loads(json.dumps(s.metadata["header"]))["imag_sign_rule"]


def _reference(name: str):
    from impedance import preprocessing as pp

    readers = {"exampleData.csv": pp.readCSV, "Parstat": pp.readParstat, "Autolab": pp.readAutolab,
               "BioLogic": pp.readBioLogic, "Gamry": pp.readGamry, "Circuit3": pp.readZPlot}
    reader = next(r for key, r in readers.items() if key in name)
    return reader(str(sample("eis", name)))


@pytest.mark.parametrize("name", IDS)
def test_values_match_impedance_py_reference(name):
    # impedance.py returns Z = Z' + jZ'' with the imaginary part itself (it negates BioLogic's -Im(Z)),
    # the same convention as ours, so the values compare directly.
    f_ref, z_ref = _reference(name)
    s = read_spectra(sample("eis", name))[0]
    np.testing.assert_allclose(s.frequency, f_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(s.z.real, z_ref.real, rtol=1e-12, atol=0)
    np.testing.assert_allclose(s.z.imag, z_ref.imag, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name,parser,fmt,n,fmin,fmax", FILES, ids=IDS)
def test_detect_picks_its_parser_and_the_others_reject(name, parser, fmt, n, fmin, fmax):
    head = sample("eis", name).read_bytes()[:8192]
    assert [p.name for p in PARSERS if p.detect(head, name)] == [parser]
    # the extension is only a hint: a neutral name gives the same answer
    assert [p.name for p in PARSERS if p.detect(head, "upload.bin")] == [parser]
    assert detect_format(head) == fmt


def test_registry_detect_routes_eis_files_to_eis_parsers():
    from matlake.ingest import detect

    for name, parser, *_ in FILES:
        assert detect(sample("eis", name).read_bytes()[:8192], name, kind="eis").name == parser


@pytest.mark.parametrize("name,parser,fmt,n,fmin,fmax", FILES, ids=IDS)
def test_rows_conform_to_impedance_schema(name, parser, fmt, n, fmin, fmax):
    data = sample("eis", name).read_bytes()
    rows = _parse(parser, data, name)
    table = IMPEDANCE.conform(pa.Table.from_pylist(rows), source=name)
    row = table.to_pylist()[0]
    ctx = ParseContext(hashlib.sha256(data).hexdigest(), name, parser)
    assert row["record_id"] == ctx.record_id(row["source_locator"])
    assert row["n_points"] == n == len(row["frequency"]) == len(row["z_imag"])
    assert row["f_min"] == min(row["frequency"]) and row["f_max"] == max(row["frequency"])
    assert row["file_format"] == fmt and row["sweep"] == 0
    assert row["source_name"] == name and row["source_sha256"] == ctx.source_sha256
    assert isinstance(json.loads(row["metadata_json"]), dict)


def test_vendor_header_fields_reach_their_columns():
    by_fmt = {}
    for name, parser, fmt, *_ in FILES:
        by_fmt[fmt] = _parse(parser, sample("eis", name).read_bytes(), name)[0]
    g = by_fmt["gamry-dta"]
    assert g["instrument"] == "Gamry REF3000-34128"
    assert g["measured_at"].isoformat() == "2018-04-23T16:43:15"
    assert g["dc_potential"] == pytest.approx(-0.3411, abs=2e-4)  # median ZCURVE Vdc
    assert json.loads(g["metadata_json"])["TITLE"] == "Potentiostatic EIS"  # header keys kept, OCVCURVE rows not
    assert json.loads(g["metadata_json"])["tables"]["OCVCURVE"]["rows"] == 387
    b = by_fmt["biologic-mpt"]
    assert b["instrument"] == "BioLogic SP-150" and b["cycle"] == 1 and b["source_locator"] == "cycle=1"
    assert b["measured_at"].isoformat() == "2018-02-04T10:02:46"
    assert json.loads(b["metadata_json"])["Va (mV)"] == "20.0"
    z = by_fmt["zplot-z"]
    assert z["instrument"] == "Scribner ZPlot 3.2c" and z["measured_at"].isoformat() == "2018-10-12T11:41:01"
    assert json.loads(z["metadata_json"])["Experiment"]["vs Freq-Initial"] == "150000"
    assert by_fmt["parstat-txt"]["dc_potential"] == pytest.approx(3.50029397010803)
    assert json.loads(by_fmt["parstat-txt"]["metadata_json"])["time_series_rows"] == 781


def test_options_fill_sample_temperature_and_state_of_charge():
    data = sample("eis", "impedancepy_exampleData.csv").read_bytes()
    row = _parse("eis-csv", data, options={"sample": "cell-7", "temperature": 298.15, "state_of_charge": 0.5})[0]
    assert (row["sample"], row["temperature"], row["state_of_charge"]) == ("cell-7", 298.15, 0.5)
    with pytest.raises(ParseError, match="state_of_charge: expected a fraction between 0 and 1, found 50"):
        _parse("eis-csv", data, options={"state_of_charge": 50})


# ----------------------------------------------------------------------------- generic CSV variants

SWEEP = [(1e4, 1.0, -0.5), (1e3, 2.0, -1.5), (1e2, 3.0, -1.0), (10.0, 4.0, -0.2)]


def _csv(header: str | None, rows, sep=",", fmt="{}") -> bytes:
    lines = [header] if header else []
    lines += [sep.join(fmt.format(v) for v in r) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def test_csv_header_units_and_minus_sign_are_converted():
    rows = [(f / 1e3, zr * 1e3, -zi * 1e3) for f, zr, zi in SWEEP]  # kHz, mOhm, -Z''
    s = read_bytes(_csv("freq/kHz,Re(Z)/mOhm,-Im(Z)/mOhm", rows), "x.csv")[0]
    np.testing.assert_allclose(s.frequency, [r[0] for r in SWEEP], rtol=1e-12)
    np.testing.assert_allclose(s.z.real, [r[1] for r in SWEEP], rtol=1e-12)
    np.testing.assert_allclose(s.z.imag, [r[2] for r in SWEEP], rtol=1e-12)
    assert "header" in s.metadata["header"]["imag_sign_rule"]


def test_csv_semicolons_with_decimal_comma_and_bracket_units():
    text = "Frequency [Hz];Z' [Ω];Z'' [Ω]\n" + "\n".join(
        f"{f:g};{zr:g};{zi:g}".replace(".", ",") for f, zr, zi in [(1e4, 1.5, -0.25), (1e3, 2.5, -1.25),
                                                                   (1e2, 3.5, -1.0)]) + "\n"
    s = read_bytes(text.encode(), "x.csv")[0]
    np.testing.assert_allclose(s.z, [1.5 - 0.25j, 2.5 - 1.25j, 3.5 - 1.0j])


def test_csv_mostly_positive_unlabelled_imaginary_column_is_negated():
    rows = [(f, zr, -zi) for f, zr, zi in SWEEP]  # file holds -Im(Z) under an ambiguous name
    s = read_bytes(_csv("f,Zre,Zim", rows), "x.csv")[0]
    np.testing.assert_allclose(s.z.imag, [r[2] for r in SWEEP])
    assert s.metadata["header"]["imag_sign_rule"].startswith("negated: most values positive")
    forced = read_bytes(_csv("f,Zre,Zim", rows), "x.csv", options={"imag_sign": "im"})[0]
    np.testing.assert_allclose(forced.z.imag, [-r[2] for r in SWEEP])


def test_csv_with_two_sweeps_gives_two_spectra():
    s = read_bytes(_csv(None, SWEEP + SWEEP), "x.csv")
    assert [x.metadata["locator"] for x in s] == ["sweep=0", "sweep=1"]
    assert [len(x.frequency) for x in s] == [4, 4]


def test_nova_column_export_is_autolab_with_minus_z_imag_negated():
    text = "Index;Frequency (Hz);Z' (Ω);-Z'' (Ω);Z (Ω);-Phase (°)\n" + "\n".join(
        f"{i + 1};{f};{zr};{-zi};{abs(complex(zr, zi))};0" for i, (f, zr, zi) in enumerate(SWEEP)) + "\n"
    data = b"\xef\xbb\xbf" + text.encode()
    assert detect_format(data) == "autolab-txt"
    s = read_bytes(data, "nova.txt")[0]
    np.testing.assert_allclose(s.z.imag, [r[2] for r in SWEEP], rtol=1e-12)
    assert s.metadata["file_format"] == "autolab-txt"


def test_unit_overflow_is_a_parse_error():
    with pytest.raises(ParseError, match="frequency: expected a finite value after unit conversion, found inf"):
        read_bytes(_csv("freq/kHz,Z'/Ohm,Z''/Ohm", [(1e307, 1, -1)] + SWEEP), "x.csv")


def test_utf16_export_with_bom_is_read():
    text = _csv("Freq (Hz)\tZ' (Ohm)\tZ'' (Ohm)", SWEEP, sep="\t").decode()
    s = read_bytes(text.encode("utf-16"), "x.txt")[0]
    np.testing.assert_allclose(s.frequency, [r[0] for r in SWEEP])


@pytest.mark.parametrize(
    "data,field,expected,found",
    [
        (_csv("f,Z',Z''", SWEEP[:2]), "csv", "at least 3 frequencies", "2"),
        (_csv("f,Z',Z''", SWEEP[:2] + [(100.0, "nan", -1.0)]), "csv line 4 column Z'", "a finite number", "'nan'"),
        (_csv("f,Z',Z''", SWEEP[:2] + [(-100.0, 1.0, -1.0)]), "csv line 4 frequency", "a positive frequency",
         "-100.0"),
        (_csv("f,Z',Z''", SWEEP[:2] + [(1e3, 1.0, -1.0)]), "csv line 4 frequency", "each frequency once",
         "1000.0 Hz again"),
        (_csv("f,Z',Z''", SWEEP + [(1.0, 2.0)]), "csv line 6", "3 fields", "2 fields"),
        (_csv("freq/Hz,frequency,Z',Z''", [(f, f, a, b) for f, a, b in SWEEP]), "csv header",
         "exactly one frequency column", "2: ['freq/Hz', 'frequency']"),
        (_csv("freq/Hz,|Z|/Ohm,Z''", SWEEP), "csv header", "a Z' (real part) column", "columns ['freq/Hz'"),
        (_csv("freq/Hz,Z'/Ohm.cm2,Z''", SWEEP), "csv header column \"Z'/Ohm.cm2\" unit", "an impedance unit",
         "'Ohm.cm2'"),
        (_csv("f,Z',Z''", SWEEP).replace(b"2.0", b"2.x"), "csv line 3 column Z'", "a number", "'2.x'"),
        (_csv("f,Z',Z''", SWEEP).decode().encode("utf-16-le"), "encoding", "text", "NUL byte at offset 1"),
    ],
    ids=["too-few", "nan", "negative-f", "dup-f", "ragged", "dup-col", "missing-col", "unit", "garbled",
         "utf16-no-bom"],
)
def test_csv_bad_input_names_field_expected_and_found(data, field, expected, found):
    # parsed with the CSV parser named explicitly (as an ingest job does): detect() rightly refuses
    # some of these, e.g. a table without a Z' column is not recognisably impedance data
    with pytest.raises(ParseError) as err:
        _parse("eis-csv", data)
    e = err.value
    assert e.field.startswith(field) and expected in e.expected and found in e.found, str(e)
    assert f"field {e.field}: expected {e.expected}, found {e.found}" in str(e)


# ----------------------------------------------------------------------------- vendor files, broken

def test_gamry_garbled_number_names_table_row_and_column():
    lines = sample("eis", "impedancepy_exampleDataGamry.DTA").read_bytes().split(b"\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith(b"ZCURVE\tTABLE")) + 3
    cells = lines[start + 16].split(b"\t")
    cells[5] = b"abc"  # Zimag of the 17th data row
    lines[start + 16] = b"\t".join(cells)
    with pytest.raises(ParseError) as err:
        read_bytes(b"\n".join(lines), "x.DTA")
    assert (err.value.field, err.value.expected, err.value.found) == ("ZCURVE row 17 column Zimag", "a number",
                                                                      "'abc'")


def test_mpt_without_minus_im_column_is_rejected():
    data = sample("eis", "impedancepy_exampleDataBioLogic.mpt").read_bytes().replace(b"-Im(Z)/Ohm", b"Im(Z)/Ohm")
    with pytest.raises(ParseError, match=r"column header \(line 61\): expected exactly one '-Im\(Z\)/Ohm' column"):
        read_bytes(data, "x.mpt")


def test_mpt_cycles_become_separate_spectra():
    data = sample("eis", "impedancepy_exampleDataBioLogic.mpt").read_bytes()
    lines = data.split(b"\n")
    body = [ln for ln in lines[61:] if ln.strip()]
    second = [ln.replace(b"\t1.000000000000000E+000\t", b"\t2.000000000000000E+000\t") for ln in body]
    s = read_bytes(b"\n".join(lines[:61] + body + second) + b"\n", "x.mpt")
    assert [x.metadata["locator"] for x in s] == ["cycle=1", "cycle=2"]
    assert [x.metadata["cycle"] for x in s] == [1, 2] and [x.metadata["sweep"] for x in s] == [0, 1]
    np.testing.assert_array_equal(s[0].z, s[1].z)


@pytest.mark.parametrize("name,parser,fmt,n,fmin,fmax", FILES, ids=IDS)
def test_truncated_copy_raises_parse_error(name, parser, fmt, n, fmin, fmax, tmp_path):
    data = sample("eis", name).read_bytes()
    cut = len(data) * 3 // 4
    while data[cut - 1:cut + 1].strip(b"0123456789") == data[cut - 1:cut + 1]:  # cut inside a number
        cut += 1
    path = tmp_path / name
    path.write_bytes(data[:cut])
    with pytest.raises(ParseError) as err:
        spectra = read_spectra(path)
        # CSV has no declared length: a cut mid-row is the only thing it can notice
        pytest.fail(f"truncated {name} parsed into {[len(s.frequency) for s in spectra]} points")
    assert err.value.file == name and err.value.expected and err.value.found


@pytest.mark.parametrize("name,parser,fmt,n,fmin,fmax", FILES, ids=IDS)
def test_declared_counts_catch_truncation_at_a_line_boundary(name, parser, fmt, n, fmin, fmax):
    data = sample("eis", name).read_bytes()
    cut = data.rstrip(b"\r\n").rfind(b"\n") + 1  # drop the last data line cleanly
    if fmt in ("csv", "parstat-txt", "biologic-mpt", "gamry-dta"):
        # these formats declare no row count for the impedance table: one point fewer is all we can see
        assert len(read_bytes(data[:cut], name)[0].frequency) == n - 1
    else:
        with pytest.raises(ParseError, match="as declared"):
            read_bytes(data[:cut], name)


def test_binary_garbage_is_not_an_impedance_file():
    with pytest.raises(ParseError, match="field format: expected an impedance file"):
        read_bytes(bytes(range(256)) * 4, "x.csv")


# ----------------------------------------------------------------------------- BioLogic .mpr (synthetic)
# No real .mpr file is available to us: this writer follows the same publicly described module layout as
# the reader, so these tests prove self-consistency and the validation, not compatibility with EC-Lab.

MAGIC = b"BIO-LOGIC MODULAR FILE\x1a".ljust(0x30, b" ") + b"\x00" * 4


def _module(short: bytes, body: bytes, version: int) -> bytes:
    return (b"MODULE" + short.ljust(10) + short.ljust(25) + struct.pack("<II", len(body), version) + b"06/15/24"
            + body)


def _mpr(freq, re_z, minus_im, cycle, version=2, ids=(1, 32, 37, 38, 24, 77), npts=None) -> bytes:
    offset = {2: 0x195, 3: 0x196}[version]
    head = struct.pack("<IH", len(freq) if npts is None else npts, len(ids)) + struct.pack(f"<{len(ids)}H", *ids)
    rows = b"".join(struct.pack("<Bfffdf", 0, f, r, m, c, 0.25) for f, r, m, c in zip(freq, re_z, minus_im, cycle))
    data = head.ljust(offset, b"\x00") + rows
    return MAGIC + _module(b"VMP Set", b"\x00" * 40, 0) + _module(b"VMP data", data, version) + _module(
        b"VMP LOG", b"\x00" * 20, 0)


def _mpt_columns():
    s = read_spectra(sample("eis", "impedancepy_exampleDataBioLogic.mpt"))[0]
    return s.frequency, s.z.real, -s.z.imag


@pytest.mark.parametrize("version", [2, 3])
def test_mpr_synthetic_file_reads_back_float32_values_with_im_sign_flipped(version):
    f, re_z, minus_im = _mpt_columns()
    cyc = [1.0] * 20 + [2.0] * (len(f) - 20)
    data = _mpr(f, re_z, minus_im, cyc, version=version)
    assert detect_format(data[:8192]) == "biologic-mpr"
    s = read_bytes(data, "x.mpr")
    assert [x.metadata["locator"] for x in s] == ["cycle=1", "cycle=2"]
    got_f = np.concatenate([x.frequency for x in s])
    got_z = np.concatenate([x.z for x in s])
    np.testing.assert_array_equal(got_f, f.astype(np.float32))
    np.testing.assert_array_equal(got_z.real, re_z.astype(np.float32))
    np.testing.assert_array_equal(got_z.imag, -minus_im.astype(np.float32))
    assert s[0].metadata["dc_potential"] == 0.25 and s[0].metadata["file_format"] == "biologic-mpr"


@pytest.mark.parametrize(
    "mutate,field,expected",
    [
        (lambda d: d[:-10], "module 'VMP LOG' length", "20 bytes"),
        (lambda d: d.replace(b"VMP data", b"VMP dat_"), "modules", "exactly one 'VMP data' module"),
        (lambda d: d[:52] + b"XODULE" + d[58:], "module at byte 52", "'MODULE'"),
    ],
    ids=["truncated", "no-data-module", "bad-module-tag"],
)
def test_mpr_broken_layout_is_rejected(mutate, field, expected):
    f, re_z, minus_im = _mpt_columns()
    data = mutate(_mpr(f, re_z, minus_im, [1.0] * len(f)))
    with pytest.raises(ParseError) as err:
        read_bytes(data, "x.mpr")
    assert err.value.field == field and expected in err.value.expected


def test_mpr_row_count_and_unknown_column_are_rejected():
    f, re_z, minus_im = _mpt_columns()
    with pytest.raises(ParseError, match="VMP data rows: expected 44 rows of 25 bytes"):
        read_bytes(_mpr(f, re_z, minus_im, [1.0] * len(f), npts=len(f) + 1), "x.mpr")
    with pytest.raises(ParseError, match="VMP data column id: expected a known column id .*, found 999"):
        read_bytes(_mpr(f, re_z, minus_im, [1.0] * len(f), ids=(1, 32, 37, 38, 24, 999)), "x.mpr")


# ----------------------------------------------------------------------------- fuzz

def _real_files() -> list[bytes]:
    return [sample("eis", f[0]).read_bytes() for f in FILES]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(FILES)), cut=st.floats(0, 1), pos=st.floats(0, 1), junk=st.binary(max_size=8))
def test_mutated_files_raise_only_parse_error(which, cut, pos, junk):
    files = _real_files()
    f, re_z, minus_im = _mpt_columns()
    data = files[which] if which < len(files) else _mpr(f, re_z, minus_im, [1.0] * len(f))
    data = data[: int(len(data) * cut)]
    p = int(len(data) * pos)
    data = data[:p] + junk + data[p + len(junk):]
    for parser in PARSERS:  # every reader, whatever detect says: a wrong format is a ParseError too
        parser.detect(data[:8192], "x")
        try:
            parser.parse(data, ParseContext("0" * 64, "x", parser.name))
        except ParseError:
            pass


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_parse_error(data):
    for parser in PARSERS:
        parser.detect(data, "x.csv")
        try:
            parser.parse(data, ParseContext("0" * 64, "x", parser.name))
        except ParseError:
            pass
