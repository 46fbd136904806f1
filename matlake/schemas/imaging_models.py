"""Imaging model outputs: segmentation predictions of U-net ensembles with their uncertainty maps.

One ``segmentation_predictions`` row is one micrograph row (at a version)
segmented by one model version.  The per-pixel maps are chunked array objects
(:mod:`matlake.arrays`) named by sha256 + index sha256: predicted class,
ensemble-mean probability per class, predictive entropy, mutual information
(entropy of the mean minus mean member entropy) and member variance of the
predicted class's probability (:mod:`matlake.models.imaging.uncertainty`).
Entropies are in nats.  The image-level uncertainty score (mean mutual
information) is the quality flag of a frame.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema


def _map(name: str, what: str) -> tuple[C, C]:
    return (C(f"{name}_sha256", pa.string(), f"chunked object of the {what}", nullable=False),
            C(f"{name}_index_sha256", pa.string(), f"sha256 of the chunk index of the {what} object", nullable=False))


SEGMENTATION_PREDICTIONS = TableSchema(
    name="segmentation_predictions",
    version=1,
    domain="imaging_models",
    description="U-net ensemble segmentation of a micrograph: class, probability and uncertainty maps as chunked objects",
    hot=("image_id", "model_id"),
    columns=(
        C("image_id", pa.string(), "record_id of the micrographs row segmented", nullable=False),
        C("image_version", pa.int32(), "version of that micrographs row", nullable=False),
        C("model_id", pa.string(), "model version used (model_versions.model_id)", nullable=False),
        C("model_name", pa.string(), "its model name"),
        C("model_version", pa.int32(), "its version number under that name"),
        C("ensemble_kind", pa.string(), "'EA' (different encoder families) or 'ER' (seeds of one family)"),
        C("n_members", pa.int32(), "members of the ensemble"),
        C("height", pa.int32(), "rows of the maps", "px", nullable=False),
        C("width", pa.int32(), "columns of the maps", "px", nullable=False),
        C("class_names", pa.list_(pa.string()), "class name per class index of the maps", nullable=False),
        C("class_fractions", pa.list_(pa.float64()), "fraction of pixels predicted as each class (mean-probability argmax)"),
        C("class_fractions_std", pa.list_(pa.float64()),
          "standard deviation over members of each member's predicted class fraction (ensemble spread)"),
        C("uncertainty_score", pa.float64(), "image-level uncertainty: mean mutual information over pixels", "nat"),
        C("mean_entropy", pa.float64(), "mean predictive entropy over pixels", "nat"),
        C("mean_mutual_information", pa.float64(), "mean mutual information over pixels", "nat"),
        C("mean_member_variance", pa.float64(), "mean over pixels of the member variance of the predicted class's probability"),
        *_map("class_map", "predicted class index per pixel (uint8, (height, width))"),
        *_map("probability", "ensemble-mean probability (float32, (n_classes, height, width))"),
        *_map("entropy", "predictive entropy (float32, (height, width), nat)"),
        *_map("mutual_information", "mutual information (float32, (height, width), nat)"),
        *_map("member_variance", "variance over members of the predicted class's probability (float32, (height, width))"),
        C("inference_json", pa.string(), "how the maps were made: tile, overlap, margin, batch, device, intensity range, JSON"),
    ),
)

TABLES = [SEGMENTATION_PREDICTIONS]

VIEWS: dict[str, str] = {}
