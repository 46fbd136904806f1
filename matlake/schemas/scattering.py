"""Coherent X-ray scattering: series of far-field detector frames.

One ``scattering_series`` row is one series (a time series, a scan, or a set
of simulated patterns).  The frames are ONE chunked array object
(:mod:`matlake.arrays`, shape ``(n_frames, height, width)``, one chunk per
frame) read lazily by frame; the beam-stop mask is another (1 = valid pixel).
Calibration: detector pixel size and distance in m, wavelength in m (and the
photon energy in eV), beam centre in pixels, and q per pixel (1/m) at small
angles, q = 4π sin(θ)/λ ≈ 2π · pixel_size / (distance · λ) per pixel.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

SOURCE_KINDS = ("measured", "simulated")

SCATTERING_SERIES = TableSchema(
    name="scattering_series",
    version=1,
    domain="scattering",
    description="Coherent scattering series: far-field frames as a chunked object (lazy by frame), calibration, time axis",
    hot=("source_kind", "sample", "system"),
    columns=(
        C("source_kind", pa.string(), "one of: " + ", ".join(SOURCE_KINDS), nullable=False),
        C("system", pa.string(), "what was measured or simulated, e.g. 'siemens star', 'disks', 'kuramoto'"),
        C("n_frames", pa.int32(), "frames in the series", nullable=False),
        C("height", pa.int32(), "detector rows", "px", nullable=False),
        C("width", pa.int32(), "detector columns", "px", nullable=False),
        C("dtype", pa.string(), "numpy dtype of the frames as stored", nullable=False),
        C("pixel_size", pa.float64(), "detector pixel size", "m"),
        C("distance", pa.float64(), "sample-detector distance", "m"),
        C("wavelength", pa.float64(), "X-ray wavelength", "m"),
        C("energy", pa.float64(), "photon energy", "eV"),
        C("beam_center_x", pa.float64(), "beam centre, column", "px"),
        C("beam_center_y", pa.float64(), "beam centre, row", "px"),
        C("q_per_pixel", pa.float64(), "momentum transfer per pixel at small angles (2π·pixel_size/(distance·λ))", "1/m"),
        C("times", pa.list_(pa.float64()), "time of each frame, strictly increasing (null for a scan without times)", "s"),
        C("frames_sha256", pa.string(), "chunked array object of the frames (n_frames, height, width)", nullable=False),
        C("frames_index_sha256", pa.string(), "sha256 of the frames object's chunk index", nullable=False),
        C("mask_sha256", pa.string(), "chunked object of the beam-stop/valid-pixel mask (height, width), 1 = valid"),
        C("mask_index_sha256", pa.string(), "sha256 of the mask object's chunk index"),
        C("total_counts_mean", pa.float64(), "mean over frames of the summed counts of a frame", "counts"),
        C("generator_json", pa.string(), "for simulated series: generator name, version and every parameter incl. the seed, JSON"),
        C("label_json", pa.string(), "labels of the series (e.g. number density class of a simulated disk system), JSON"),
        C("sample", pa.string(), "sample name"),
        C("facility", pa.string(), "facility / beamline"),
        C("metadata_json", pa.string(), "anything else the source says (extra arrays' objects, file attributes), JSON"),
        C("file_format", pa.string(), "source format, e.g. 'npz', 'hdf5', 'nexus', 'tiff', 'generated'"),
        C("source_name", pa.string(), "file name the series was parsed from"),
        C("source_sha256", pa.string(), "sha256 of the raw source object"),
        C("source_locator", pa.string(), "where in the source, e.g. the HDF5 dataset path"),
    ),
)

TABLES = [SCATTERING_SERIES]
VIEWS: dict[str, str] = {}
