"""EIS domain: electrochemical impedance spectra.

Sign convention (the only one stored anywhere in matlake): the complex
impedance is Z = Z' + jZ'' with Z'' the imaginary part itself, so a
capacitive response has Z'' < 0 and an inductive one Z'' > 0.  ``z_imag`` is
therefore Im(Z), *not* the -Im(Z) that Nyquist plots and some instruments
(BioLogic "-Im(Z)/Ohm", many "-Z''" CSV columns) use; the readers in
:mod:`matlake.ingest.eis` convert on the way in.

Frequencies are in Hz and impedances in ohm whatever the source file used
(kHz, mOhm, ... are converted).
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

_SOURCE = (
    C("source_name", pa.string(), "file name the record was parsed from"),
    C("source_sha256", pa.string(), "sha256 of the raw source object"),
    C("source_locator", pa.string(), "where in the source the spectrum was found, e.g. 'cycle=1' or 'sweep=0'"),
)

FILE_FORMATS = ("csv", "gamry-dta", "biologic-mpt", "biologic-mpr", "autolab-txt", "parstat-txt", "zplot-z")

IMPEDANCE = TableSchema(
    name="impedance",
    version=1,
    domain="eis",
    description="Impedance spectra, one row per frequency sweep; Z = z_real + j*z_imag with capacitive z_imag < 0",
    hot=("sample", "cycle", "temperature", "state_of_charge", "instrument", "file_format", "measured_at"),
    columns=(
        C("frequency", pa.list_(pa.float64()), "measurement frequencies in file order", "Hz"),
        C("z_real", pa.list_(pa.float64()), "real part Z' of the impedance, one per frequency", "ohm"),
        C("z_imag", pa.list_(pa.float64()),
          "imaginary part Z'' = Im(Z) (NOT -Im Z): capacitive < 0, inductive > 0", "ohm"),
        C("n_points", pa.int32(), "number of frequencies in the spectrum", nullable=False),
        C("f_min", pa.float64(), "lowest frequency", "Hz"),
        C("f_max", pa.float64(), "highest frequency", "Hz"),
        C("sample", pa.string(), "cell / sample name when the file (or the ingest options) give one"),
        C("cycle", pa.int32(), "cycle number from the file (e.g. BioLogic 'cycle number'); null if none"),
        C("sweep", pa.int32(), "0-based index of this spectrum within its file"),
        C("temperature", pa.float64(), "cell temperature when recorded", "K"),
        C("state_of_charge", pa.float64(), "state of charge as a fraction 0..1; null if unknown", ""),
        C("dc_potential", pa.float64(),
          "DC potential during the sweep, as the file gives it (median of the recorded values, else the setpoint)",
          "V"),
        C("instrument", pa.string(), "vendor and instrument/software, e.g. 'Gamry REF3000-34128', 'BioLogic SP-150'"),
        C("file_format", pa.string(), "source format: " + ", ".join(FILE_FORMATS)),
        C("measured_at", pa.timestamp("us"), "start of the measurement, instrument local time (no zone)"),
        C("metadata_json", pa.string(), "every other header entry of the source file, as JSON"),
        *_SOURCE,
    ),
)

TABLES = [IMPEDANCE]

VIEWS = {"eis": "select * from impedance"}
