"""Evaluations of neural-ODE dynamics learned from coherent scattering series.

One ``dynamics_evaluations`` row is one extrapolation horizon of one trained model
on one series: the model was trained on the first ``n_train`` frames (reciprocal
space only) and rolled out beyond them; its error at ``horizon_frames`` frames past
the window is stored next to the errors of a constant baseline (last observed frame
held) and a linear one (last two observed frames extrapolated).  Reciprocal errors
are ||a_pred - a_obs|| of normalised amplitudes a = sqrt(I / sum I) over valid pixels
(0 = same pattern, sqrt 2 = orthogonal).  Real-space errors exist where the series
has a ground truth: mean 1 - cos(dtheta) for phases, RMS for fields (``real_error_kind``).
The fitted (training window) and extrapolated real-space trajectories and the
error-vs-horizon PNG are objects named on every row of the evaluation.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

DYNAMICS_EVALUATIONS = TableSchema(
    name="dynamics_evaluations",
    version=1,
    domain="scattering_dynamics",
    description="Neural-ODE extrapolation error vs horizon on a scattering series, with constant and linear baselines",
    hot=("model_id", "series_id", "system"),
    columns=(
        C("model_id", pa.string(), "model version evaluated (model_versions.model_id)", nullable=False),
        C("series_id", pa.string(), "scattering_series record trained and evaluated on", nullable=False),
        C("series_version", pa.int32(), "its version", nullable=False),
        C("system", pa.string(), "dynamical system, e.g. 'kuramoto', 'gray_scott'"),
        C("n_train", pa.int32(), "frames in the training window (the first n_train frames)", "frames", nullable=False),
        C("horizon_frames", pa.int32(), "frames beyond the last training frame", "frames", nullable=False),
        C("horizon_s", pa.float64(), "the same in time (times[n_train - 1 + h] - times[n_train - 1])", "s"),
        C("reciprocal_error", pa.float64(), "neural ODE: ||a_pred - a_obs|| of normalised amplitudes", nullable=False),
        C("constant_reciprocal_error", pa.float64(), "baseline: last observed frame held"),
        C("linear_reciprocal_error", pa.float64(), "baseline: last two observed frames extrapolated linearly"),
        C("real_error", pa.float64(), "neural ODE real-space error vs ground truth (null without truth)"),
        C("constant_real_error", pa.float64(), "real-space error of the true state at the window's end held"),
        C("linear_real_error", pa.float64(), "real-space error of the last two true states extrapolated"),
        C("real_error_kind", pa.string(), "'1-cos' (mean 1 - cos of phase differences) or 'rms' (fields)"),
        C("train_reciprocal_loss", pa.float64(), "mean reciprocal error of the fitted trajectory on training frames"),
        C("heldout_reciprocal_loss", pa.float64(), "mean reciprocal error over all held-out frames"),
        C("fitted_sha256", pa.string(), "chunked object: fitted real-space trajectory over the training window"),
        C("fitted_index_sha256", pa.string(), "its chunk index sha256"),
        C("extrapolated_sha256", pa.string(), "chunked object: extrapolated real-space trajectory beyond it"),
        C("extrapolated_index_sha256", pa.string(), "its chunk index sha256"),
        C("plot_sha256", pa.string(), "PNG object: error vs horizon"),
        C("assumptions", pa.string(), "what the evaluation assumed (e.g. first state of each roll-out from truth)"),
    ),
)

TABLES = [DYNAMICS_EVALUATIONS]

VIEWS: dict[str, str] = {}
