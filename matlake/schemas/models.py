"""Outputs of model modules: generic features and predictions."""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

FEATURES = TableSchema(
    name="features",
    version=1,
    domain="models",
    description="Derived features of a record (long format: one row per subject, featurizer and feature)",
    hot=("featurizer", "feature", "subject_id"),
    columns=(
        C("subject_id", pa.string(), "record_id the feature describes"),
        C("subject_table", pa.string(), "table of the subject record"),
        C("featurizer", pa.string(), "featurizer name"),
        C("featurizer_version", pa.string(), "featurizer version"),
        C("feature", pa.string(), "feature name"),
        C("value", pa.float64(), "feature value", "see unit"),
        C("unit", pa.string(), "unit of value"),
    ),
)

PREDICTIONS = TableSchema(
    name="predictions",
    version=1,
    domain="models",
    description="Predictions of a registered model version for a subject record or candidate",
    hot=("model_id", "model_name", "target", "subject_id"),
    columns=(
        C("model_id", pa.string(), "model version id (model_versions.model_id)"),
        C("model_name", pa.string(), "model module name"),
        C("model_version", pa.int32(), "version number of the model under its name"),
        C("subject_id", pa.string(), "record_id (or candidate id) the prediction is for"),
        C("subject_table", pa.string(), "table of the subject record"),
        C("target", pa.string(), "predicted quantity"),
        C("value", pa.float64(), "predicted value", "see unit"),
        C("uncertainty", pa.float64(), "one-sigma uncertainty of value, when the model gives one", "see unit"),
        C("unit", pa.string(), "unit of value and uncertainty"),
    ),
)

TABLES = [FEATURES, PREDICTIONS]

VIEWS = {
    "predictions_latest": """
        select p.* from predictions p
        qualify row_number() over (partition by p.model_name, p.subject_id, p.target
                                   order by p.model_version desc, p.created_at desc) = 1
    """,
}
