"""Luminescence domain: peak fits of PL/CL `spectra` rows and emitter-ensemble statistics.

- ``pl_peak_fits``: one row per spectrum and line shape tried (one line + a
  linear baseline over a window, lmfit), the lowest-BIC one per spectrum and
  run flagged ``chosen``; written by the ``featurize`` activity of
  :class:`matlake.models.spectra.luminescence_platform.PeakFitter`.
- ``emitter_statistics``: one row per selection of fits (the selection SQL is
  the record's key): N, mean and SD of centre and FWHM in nm and eV, the
  models, the snapshot read; written by an ``analyze`` activity that used every
  fit record at its version.

View ``pl_peak_choice``: the chosen fit of each spectrum from its latest fit run
(a later run with other models or window replaces an earlier choice).
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

_F64 = pa.list_(pa.float64())
_STR = pa.list_(pa.string())

PL_PEAK_FITS = TableSchema(
    name="pl_peak_fits",
    version=1,
    domain="luminescence",
    description="Single-line fits (Gaussian/Lorentzian/Voigt/pseudo-Voigt + linear baseline) of PL/CL spectra",
    hot=("subject_id", "model", "chosen", "center_nm", "fwhm_nm"),
    columns=(
        C("subject_id", pa.string(), "record_id of the fitted `spectra` row", nullable=False),
        C("model", pa.string(), "line shape: gaussian, lorentzian, voigt (gamma = sigma) or pseudovoigt",
          nullable=False),
        C("chosen", pa.bool_(), "lowest BIC among the models tried on this spectrum in this run"),
        C("delta_bic", pa.float64(), "BIC minus the lowest BIC of the run's models (0 for the chosen one)", ""),
        C("models_tried", _STR, "every line shape tried in this run"),
        C("window_min", pa.float64(), "first wavelength of the fit window", "nm"),
        C("window_max", pa.float64(), "last wavelength of the fit window", "nm"),
        C("window_source", pa.string(), "'given' (by the caller) or 'auto' (around the maximum)"),
        C("n_points", pa.int32(), "points in the fit window"),
        C("n_params", pa.int32(), "free parameters (line + baseline)"),
        C("noise_sd", pa.float64(), "noise SD estimated from second differences; residual weight 1/noise_sd",
          "intensity unit"),
        C("center_nm", pa.float64(), "line centre", "nm"),
        C("center_nm_stderr", pa.float64(), "standard error of center_nm (lmfit, scaled by sqrt(reduced chi2))", "nm"),
        C("fwhm_nm", pa.float64(), "full width at half maximum", "nm"),
        C("fwhm_nm_stderr", pa.float64(), "standard error of fwhm_nm", "nm"),
        C("center_ev", pa.float64(), "maximum of the fitted line converted to energy with the Jacobian", "eV"),
        C("center_ev_stderr", pa.float64(), "center_nm_stderr x hc / center_nm^2", "eV"),
        C("fwhm_ev", pa.float64(), "FWHM of the fitted line converted to energy (half-maximum energies)", "eV"),
        C("fwhm_ev_stderr", pa.float64(), "fwhm_nm_stderr x fwhm_ev / fwhm_nm", "eV"),
        C("height", pa.float64(), "line height above the baseline", "intensity unit"),
        C("height_stderr", pa.float64(), "standard error of height", "intensity unit"),
        C("amplitude", pa.float64(), "line area", "intensity unit x nm"),
        C("amplitude_stderr", pa.float64(), "standard error of amplitude", "intensity unit x nm"),
        C("fraction", pa.float64(), "Lorentzian fraction (pseudo-Voigt only)", ""),
        C("baseline_at_center", pa.float64(), "linear baseline at center_nm", "intensity unit"),
        C("baseline_slope", pa.float64(), "baseline slope", "intensity unit / nm"),
        C("x_ref_nm", pa.float64(), "wavelength the fit's x axis starts from: lmfit x = wavelength - x_ref_nm",
          "nm"),
        C("param_names", _STR, "lmfit parameter names (p_: line, b_: baseline, in x = wavelength - x_ref_nm)"),
        C("param_values", _F64, "lmfit parameter values, same order"),
        C("param_stderr", _F64, "lmfit standard errors, same order (null where lmfit gives none)"),
        C("chi_square", pa.float64(), "weighted chi-square", ""),
        C("reduced_chi_square", pa.float64(), "chi-square / (n_points - n_params); ~1 when the model fits to the noise",
          ""),
        C("aic", pa.float64(), "Akaike information criterion (lmfit)", ""),
        C("bic", pa.float64(), "Bayesian information criterion (lmfit)", ""),
        C("r_squared", pa.float64(), "1 - SS_res / SS_tot over the window (unweighted)", ""),
        C("success", pa.bool_(), "lmfit reported convergence"),
        C("message", pa.string(), "lmfit's message"),
        C("nfev", pa.int32(), "function evaluations"),
        C("failed_models_json", pa.string(), "models whose fit failed on this spectrum in this run -> why, JSON"),
        C("featurizer", pa.string(), "name of the writer, 'pl-peak-fit'"),
        C("featurizer_version", pa.string(), "its version; bumped when the science changes"),
        C("params_json", pa.string(), "the run's options (models, window, auto_window_fwhm), JSON"),
    ),
)

EMITTER_STATISTICS = TableSchema(
    name="emitter_statistics",
    version=1,
    domain="luminescence",
    description="Ensemble statistics of emitter peak fits selected by SQL (N, mean and SD of centre and FWHM)",
    hot=("name", "n_emitters", "center_nm_mean", "fwhm_nm_mean"),
    columns=(
        C("name", pa.string(), "name given to the selection (default: the --where condition)"),
        C("selection_sql", pa.string(), "the SQL that selected the fits"),
        C("where_sql", pa.string(), "the caller's condition inside it (null: every chosen fit)"),
        C("snapshot_id", pa.int64(), "snapshot the selection was read at"),
        C("n_emitters", pa.int32(), "number of fits (one per spectrum)"),
        C("center_nm_mean", pa.float64(), "mean centre", "nm"),
        C("center_nm_sd", pa.float64(), "sample SD (ddof 1) of the centres: the spread over emitters", "nm"),
        C("fwhm_nm_mean", pa.float64(), "mean FWHM", "nm"),
        C("fwhm_nm_sd", pa.float64(), "sample SD of the FWHMs", "nm"),
        C("center_ev_mean", pa.float64(), "mean centre", "eV"),
        C("center_ev_sd", pa.float64(), "sample SD of the centres", "eV"),
        C("fwhm_ev_mean", pa.float64(), "mean FWHM", "eV"),
        C("fwhm_ev_sd", pa.float64(), "sample SD of the FWHMs", "eV"),
        C("center_nm_stderr_median", pa.float64(), "median fit standard error of the centres", "nm"),
        C("fwhm_nm_stderr_median", pa.float64(), "median fit standard error of the FWHMs", "nm"),
        C("models", _STR, "line shapes among the fits"),
        C("model_counts_json", pa.string(), "line shape -> number of fits, JSON"),
        C("fit_ids", _STR, "record_id of every pl_peak_fits row used"),
        C("spectrum_ids", _STR, "record_id of every spectrum those fits are of"),
        C("method", pa.string(), "who computed it and how, e.g. 'pl-emitter-statistics 1'"),
    ),
)

TABLES = [PL_PEAK_FITS, EMITTER_STATISTICS]

VIEWS = {
    # The chosen fit of each spectrum from the latest run that fitted it.
    "pl_peak_choice": """
        select * from pl_peak_fits where chosen
        qualify row_number() over (partition by subject_id order by created_at desc, record_id) = 1
    """,
}
