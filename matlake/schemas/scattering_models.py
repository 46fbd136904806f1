"""Evaluations of scattering models (beyond :mod:`matlake.schemas.scattering`).

One ``speckle_evaluations`` row is one model version evaluated on one test
condition: the speckle density classifier's accuracy, macro-F1 and confusion
matrix on a set of simulated series (e.g. monodisperse held out, polydisperse,
lower counts), with the chance level and the drop from a reference condition.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

SPECKLE_EVALUATIONS = TableSchema(
    name="speckle_evaluations",
    version=1,
    domain="scattering_models",
    description="Speckle classifier evaluations: accuracy, macro-F1, confusion matrix per model and test condition",
    hot=("model_id", "condition"),
    columns=(
        C("model_id", pa.string(), "model version evaluated (model_versions.model_id)", nullable=False),
        C("model_name", pa.string(), "its model name"),
        C("model_version", pa.int32(), "its version number under that name"),
        C("condition", pa.string(), "test condition name, e.g. 'mono', 'poly-0.2', 'counts-1e3'", nullable=False),
        C("dataset", pa.string(), "simulated data set (label_json.dataset of the series) tested on"),
        C("accuracy", pa.float64(), "fraction of test patterns classified correctly", nullable=False),
        C("macro_f1", pa.float64(), "F1 averaged over the classes", nullable=False),
        C("chance", pa.float64(), "chance level 1/K", nullable=False),
        C("per_class_accuracy", pa.list_(pa.float64()), "recall of each class, in class order"),
        C("confusion_json", pa.string(), "confusion matrix, rows true class, columns predicted, JSON", nullable=False),
        C("class_values", pa.list_(pa.float64()), "number density of each class", "1/box unit^2"),
        C("n", pa.int32(), "number of test patterns", nullable=False),
        C("n_series", pa.int32(), "number of series (frames = patterns) tested"),
        C("polydispersity", pa.float64(), "radius std/mean of the test disks"),
        C("counts", pa.float64(), "declared mean total counts per test pattern (null: noiseless)", "counts"),
        C("reference_condition", pa.string(), "condition the drop is measured from (the training-like one)"),
        C("accuracy_drop", pa.float64(), "accuracy on the reference condition minus this one"),
        C("data_snapshot", pa.int64(), "snapshot the test series were read at"),
        C("test_sql", pa.string(), "SQL selecting the test series"),
        C("confusion_png_sha256", pa.string(), "object holding the confusion matrix PNG"),
    ),
)

TABLES = [SPECKLE_EVALUATIONS]
VIEWS: dict[str, str] = {}
