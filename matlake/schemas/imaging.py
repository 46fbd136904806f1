"""Imaging domain: micrographs (images, movies, stacks, volumes) and their segmentation masks.

One ``micrographs`` row is one 2D image: a single image, or one frame of a
movie, or one slice of a stack or volume.  The pixels of the whole source
(every frame) are ONE chunked array object (:mod:`matlake.arrays`, shape
``(n_frames, height, width[, channels])``, one chunk per frame and tile) so a
tile or a frame is read and verified without reading the rest;
``frame_index`` picks the row's frame.  Calibration is kept per axis exactly
as the file gives it (value and unit) and normalised to nm for queries.

A ``segmentations`` row is a label mask for one micrograph row (at a
version): the mask's pixel values are class values named by ``class_names``.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

TECHNIQUES = ("TEM", "STEM", "SEM", "cryo-EM", "optical", "AFM", "generated", "other")
STACK_AXES = ("none", "time", "z", "stack")
MASK_KINDS = ("ground_truth", "annotation", "prediction")

_SOURCE = (
    C("file_format", pa.string(), "source format, e.g. 'tiff', 'ome-tiff', 'imagej-tiff', 'mrc', 'png', 'dm3', 'generated'"),
    C("source_name", pa.string(), "file name the record was parsed from (null for images generated inside the lake)"),
    C("source_sha256", pa.string(), "sha256 of the raw source object"),
    C("source_locator", pa.string(), "where in the source the image was found, e.g. 'page=3' or 'frame=3'"),
)

MICROGRAPHS = TableSchema(
    name="micrographs",
    version=1,
    domain="imaging",
    description="Micrographs: one row per image or per frame/slice of a movie, stack or volume; pixels as a chunked object",
    hot=("technique", "sample", "source_name", "frame_index"),
    columns=(
        C("technique", pa.string(), "one of: " + ", ".join(TECHNIQUES), nullable=False),
        C("height", pa.int32(), "rows of the frame (y)", "px", nullable=False),
        C("width", pa.int32(), "columns of the frame (x)", "px", nullable=False),
        C("n_channels", pa.int32(), "samples per pixel (1 grey, 3 RGB)"),
        C("dtype", pa.string(), "numpy dtype of the pixels as stored, e.g. 'uint16', '<f4'", nullable=False),
        C("frame_index", pa.int32(), "index of this frame/slice in the array object (0 for a single image)", nullable=False),
        C("n_frames", pa.int32(), "frames/slices in the array object", nullable=False),
        C("stack_axis", pa.string(), "what the frames are: one of " + ", ".join(STACK_AXES)),
        C("pixel_size_x", pa.float64(), "pixel width as the file gives it", "see pixel_unit_x"),
        C("pixel_unit_x", pa.string(), "unit of pixel_size_x as the file gives it, e.g. 'nm', 'Å', 'µm', 'm'"),
        C("pixel_size_y", pa.float64(), "pixel height as the file gives it", "see pixel_unit_y"),
        C("pixel_unit_y", pa.string(), "unit of pixel_size_y"),
        C("pixel_size_z", pa.float64(), "slice spacing of a stack/volume", "see pixel_unit_z"),
        C("pixel_unit_z", pa.string(), "unit of pixel_size_z"),
        C("pixel_size_nm_x", pa.float64(), "pixel width normalised to nm (null when uncalibrated)", "nm"),
        C("pixel_size_nm_y", pa.float64(), "pixel height normalised to nm (null when uncalibrated)", "nm"),
        C("calibration_source", pa.string(),
          "where the calibration came from, e.g. 'imagej', 'ome', 'fei', 'mrc header', 'option', 'none'"),
        C("frame_time", pa.float64(), "time of this frame from the start of the movie", "s"),
        C("frame_interval", pa.float64(), "time between frames of a movie", "s"),
        C("voltage", pa.float64(), "accelerating voltage", "V"),
        C("magnification", pa.float64(), "nominal magnification"),
        C("exposure_time", pa.float64(), "exposure (dwell x pixels, or frame exposure)", "s"),
        C("detector", pa.string(), "detector name"),
        C("instrument", pa.string(), "microscope / camera"),
        C("acquired_at", pa.timestamp("us"), "acquisition time, local as the file gives it"),
        C("sample", pa.string(), "sample name from the file or the ingest options"),
        C("intensity_min", pa.float64(), "minimum pixel value of this frame", "counts or as stored"),
        C("intensity_max", pa.float64(), "maximum pixel value of this frame", "counts or as stored"),
        C("intensity_mean", pa.float64(), "mean pixel value of this frame", "counts or as stored"),
        C("intensity_std", pa.float64(), "standard deviation of the pixel values of this frame", "counts or as stored"),
        C("array_sha256", pa.string(), "chunked array object (matlake.arrays) holding every frame of the source", nullable=False),
        C("array_index_sha256", pa.string(), "sha256 of that object's chunk index (verifies tiles read lazily)", nullable=False),
        C("array_shape", pa.list_(pa.int64()), "shape of the whole array object, frames first"),
        C("chunk_shape", pa.list_(pa.int64()), "chunk shape of the array object"),
        C("metadata_json", pa.string(), "the vendor metadata as found (TIFF tags, ImageJ/OME/FEI/..., MRC header), JSON"),
        *_SOURCE,
    ),
)

SEGMENTATIONS = TableSchema(
    name="segmentations",
    version=1,
    domain="imaging",
    description="Label masks of micrographs: class per pixel as a chunked object, linked to the image row",
    hot=("image_id", "mask_kind"),
    columns=(
        C("image_id", pa.string(), "record_id of the micrographs row this mask labels", nullable=False),
        C("image_version", pa.int32(), "version of that micrographs row"),
        C("mask_kind", pa.string(), "one of: " + ", ".join(MASK_KINDS), nullable=False),
        C("height", pa.int32(), "rows", "px"),
        C("width", pa.int32(), "columns", "px"),
        C("class_names", pa.list_(pa.string()), "class name per class value"),
        C("class_values", pa.list_(pa.int32()), "pixel value of each class in the mask"),
        C("class_fractions", pa.list_(pa.float64()), "fraction of pixels per class (same order)"),
        C("array_sha256", pa.string(), "chunked object of the mask (uint8/uint16 class values, shape (height, width))"),
        C("array_index_sha256", pa.string(), "sha256 of the mask object's chunk index"),
        C("annotator", pa.string(), "who or what made the mask (person, tool, generator)"),
        C("metadata_json", pa.string(), "anything else the mask file says, JSON"),
        *_SOURCE,
    ),
)

TABLES = [MICROGRAPHS, SEGMENTATIONS]

VIEWS = {
    # one row per micrograph with its latest ground-truth/annotation mask, for training views
    "image_mask_pairs": """
        select m.record_id as image_id, m.version as image_version, s.record_id as mask_id,
               s.version as mask_version, s.mask_kind, m.height, m.width, m.frame_index,
               m.array_sha256, m.array_index_sha256, s.array_sha256 as mask_sha256,
               s.array_index_sha256 as mask_index_sha256, s.class_names, s.class_values,
               m.pixel_size_nm_x, m.pixel_size_nm_y, m.frame_time, m.source_name, m.sample
        from micrographs m join segmentations s on s.image_id = m.record_id
        where s.mask_kind in ('ground_truth', 'annotation')
    """,
}
