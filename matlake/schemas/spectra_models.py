"""Evaluations of spectra models (beyond the tables of :mod:`matlake.schemas.spectra`).

One ``spectrum_model_evaluations`` row is one curve: a model version's metric
on a test set of spectra as a function of a perturbation, e.g. the accuracy of
an oxidation-state classifier as the test spectra are shifted by 0-3 eV and
re-featurized (``evaluation = 'shift-robustness'``).
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

SPECTRUM_MODEL_EVALUATIONS = TableSchema(
    name="spectrum_model_evaluations",
    version=1,
    domain="spectra_models",
    description="A model version's metric on a test set of spectra as a function of a perturbation (e.g. energy shift)",
    hot=("evaluation", "model_id", "featurizer", "metric"),
    columns=(
        C("evaluation", pa.string(), "kind of evaluation, e.g. 'shift-robustness'", nullable=False),
        C("model_id", pa.string(), "model version evaluated (model_versions.model_id)", nullable=False),
        C("model_name", pa.string(), "its model name"),
        C("model_version", pa.int32(), "its version number under that name"),
        C("module", pa.string(), "its model module (package.module:Class)"),
        C("featurizer", pa.string(), "feature kind the model was trained on and the test spectra re-featurized with"),
        C("feature_params_json", pa.string(), "parameters of that feature kind, JSON"),
        C("grid_name", pa.string(), "named grid of the features"),
        C("target", pa.string(), "label predicted, e.g. 'oxidation_state'"),
        C("metric", pa.string(), "metric name: 'accuracy', 'macro_f1', 'mae', 'r2'", nullable=False),
        C("metric_unit", pa.string(), "unit of the metric values ('' when dimensionless)"),
        C("perturbation", pa.string(), "what was varied, e.g. 'energy_shift'"),
        C("perturbation_unit", pa.string(), "unit of the perturbation values, e.g. 'eV'"),
        C("perturbations", pa.list_(pa.float64()), "the perturbation values, in order", "see perturbation_unit"),
        C("values", pa.list_(pa.float64()), "metric value at each perturbation", "see metric_unit"),
        C("n_test", pa.int32(), "number of test spectra"),
        C("test_set_json", pa.string(),
          "the test set: SQL condition, snapshot, generator seeds and data sets of generated spectra, JSON"),
    ),
)

TABLES = [SPECTRUM_MODEL_EVALUATIONS]

VIEWS = {
    # One row per (evaluation, model, metric, perturbation value): ready to plot or compare.
    # DuckDB unnests the two equal-length lists side by side.
    "spectrum_model_evaluation_points": """
        select record_id, evaluation, model_id, model_name, model_version, featurizer, grid_name, target, metric,
               perturbation, unnest(perturbations) as perturbation_value, perturbation_unit,
               unnest("values") as metric_value, metric_unit, n_test
        from spectrum_model_evaluations
    """,
}
