"""Probe-trajectory recovery from a ptychographic scan (issue #12, item 6).

``ptycho_runs``: one row per recovery run on one ``scattering_series`` version:
how the start was made (recorded positions plus a seeded perturbation), the
RMSE of the positions against the recorded ones before and after (px, after
removing the mean difference: a common translation is not identifiable), the
losses, the sanity check (object-only reconstruction at the recorded vs the
starting positions) and every setting and assumption as JSON.
``ptycho_positions``: one row per frame of a run: recovered, recorded and
starting positions (x = column, y = row, probe pixels) and the errors.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

PTYCHO_RUNS = TableSchema(
    name="ptycho_runs",
    version=1,
    domain="scattering_ptycho",
    description="Scan-position recovery runs on a ptychographic series: RMSE before/after, losses, assumptions",
    hot=("series_id", "method"),
    columns=(
        C("series_id", pa.string(), "scattering_series record the patterns came from", nullable=False),
        C("series_version", pa.int32(), "its version used"),
        C("method", pa.string(), "recovery method name", nullable=False),
        C("method_version", pa.string(), "its version"),
        C("n_frames", pa.int32(), "frames used"),
        C("start", pa.string(), "how the starting positions were made, e.g. 'recorded + gaussian perturbation'"),
        C("perturbation_px", pa.float64(), "std per axis of the zero-mean Gaussian perturbation of the start", "px"),
        C("seed", pa.int64(), "seed of the perturbation"),
        C("iterations", pa.int32(), "iterations run"),
        C("rmse_before_px", pa.float64(), "RMSE of the start vs the recorded positions (mean difference removed)", "px"),
        C("rmse_after_px", pa.float64(), "RMSE of the recovered vs the recorded positions (mean difference removed)",
          "px"),
        C("loss_start", pa.float64(), "amplitude loss at the first iteration (mean squared sqrt-count residual)",
          "counts"),
        C("loss_final", pa.float64(), "amplitude loss at the last iteration", "counts"),
        C("sanity_loss_recorded", pa.float64(), "object-only reconstruction loss at the recorded positions", "counts"),
        C("sanity_loss_start", pa.float64(), "object-only reconstruction loss at the starting positions", "counts"),
        C("assumptions_json", pa.string(), "the method's assumptions (probe known, geometry, gauge...), JSON"),
        C("config_json", pa.string(), "every setting of the run, JSON"),
    ),
)

PTYCHO_POSITIONS = TableSchema(
    name="ptycho_positions",
    version=1,
    domain="scattering_ptycho",
    description="Per-frame recovered vs recorded scan positions of a ptycho_runs run (probe pixels)",
    hot=("run_id", "series_id"),
    columns=(
        C("run_id", pa.string(), "ptycho_runs record of the run", nullable=False),
        C("series_id", pa.string(), "scattering_series record", nullable=False),
        C("frame_index", pa.int32(), "frame in the series", nullable=False),
        C("recovered_x", pa.float64(), "recovered position, column", "px"),
        C("recovered_y", pa.float64(), "recovered position, row", "px"),
        C("recorded_x", pa.float64(), "recorded position, column", "px"),
        C("recorded_y", pa.float64(), "recorded position, row", "px"),
        C("start_x", pa.float64(), "starting position, column", "px"),
        C("start_y", pa.float64(), "starting position, row", "px"),
        C("error_px", pa.float64(), "distance recovered - recorded after removing the mean difference", "px"),
        C("start_error_px", pa.float64(), "distance start - recorded after removing the mean difference", "px"),
    ),
)

TABLES = [PTYCHO_RUNS, PTYCHO_POSITIONS]
VIEWS: dict[str, str] = {}
