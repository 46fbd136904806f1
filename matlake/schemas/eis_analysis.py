"""EIS analysis domain: what :mod:`matlake.models.eis.analysis` derives from `impedance` spectra.

Four tables, each row about one spectrum (``subject_id`` = record_id of an
`impedance` row), all written by one ``featurize`` activity per run:

- ``eis_validity``: the linear Kramers-Kronig test (Schönleber 2014) and its
  per-point residuals;
- ``eis_features``: circuit-free features (rational-function limits, poles and
  zeros, CPE signature, time constants; arXiv:2510.17835) and the DRT;
- ``eis_fits``: one equivalent-circuit fit (weighted complex NLLS) per spectrum,
  circuit and weighting, with identifiability and, for R/C circuits, the
  family of circuits that give the same spectra;
- ``eis_predicted``: the fitted model evaluated on a dense frequency grid.

The same features also go to the generic long-format `features` table
(subject_table = 'impedance') so cross-domain models can use them.

Sign convention as in `impedance`: Z = Z' + jZ'', capacitive Z'' < 0.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

_F64 = pa.list_(pa.float64())
_STR = pa.list_(pa.string())
_SUBJECT = C("subject_id", pa.string(), "record_id of the analysed spectrum in `impedance`", nullable=False)
_PRODUCER = (
    C("featurizer", pa.string(), "name of the featurizer that wrote the row (e.g. 'eis-analysis')"),
    C("featurizer_version", pa.string(), "version of that featurizer; bumped when the science changes"),
)

EIS_VALIDITY = TableSchema(
    name="eis_validity",
    version=1,
    domain="eis_analysis",
    description="Linear Kramers-Kronig (lin-KK) validity test of each impedance spectrum",
    hot=("subject_id", "valid", "m", "mu"),
    columns=(
        _SUBJECT,
        C("m", pa.int32(), "number of RC elements of the KK circuit chosen by the mu criterion"),
        C("mu", pa.float64(), "over/under-fit measure 1 - sum|R_k<0| / sum|R_k>=0| at the chosen m", ""),
        C("c", pa.float64(), "mu cut-off used: m grows until mu < c (null: fixed m = max_m)", ""),
        C("max_m", pa.int32(), "largest m tried"),
        C("fit_type", pa.string(), "lin-KK fit: 'real', 'imag' or 'complex'"),
        C("add_cap", pa.bool_(), "a series capacitance was part of the KK circuit"),
        C("r_series", pa.float64(), "series resistance of the KK circuit", "ohm"),
        C("inductance", pa.float64(), "series inductance of the KK circuit", "H"),
        C("pseudo_chi_square", pa.float64(), "sum over points of the squared relative residuals (real + imag)", ""),
        C("rms_residual", pa.float64(), "RMS relative residual over real and imaginary parts", ""),
        C("max_abs_residual", pa.float64(), "largest |relative residual| over both parts", ""),
        C("residuals_real", _F64, "(Z' - Z'_KK)/|Z| per point, in the spectrum's file order", ""),
        C("residuals_imag", _F64, "(Z'' - Z''_KK)/|Z| per point, in the spectrum's file order", ""),
        C("threshold", pa.float64(), "validity threshold on rms_residual (default 0.01 = 1 %)", ""),
        C("valid", pa.bool_(), "rms_residual <= threshold: the spectrum is KK-consistent within the threshold"),
        *_PRODUCER,
    ),
)

EIS_FEATURES = TableSchema(
    name="eis_features",
    version=2,  # v2: r_inf_extrapolated, kk_rel_error, fit_reliable (additive)
    domain="eis_analysis",
    description="Circuit-free features of each impedance spectrum (rational fit, poles/zeros, CPE, DRT), wide form",
    hot=("subject_id", "r0", "r_inf", "inductive", "n_time_constants", "cpe_signature", "pattern"),
    columns=(
        _SUBJECT,
        C("r0", pa.float64(), "DC resistance Re Z(s->0) of the rational fit (extrapolated with a series C)", "ohm"),
        C("r0_extrapolated", pa.bool_(), "r0 is an extrapolation (a series capacitance blocks DC, or the "
          "low-frequency limit is not reached inside the measured band)"),
        C("r_inf", pa.float64(), "high-frequency resistance Re Z(s->infinity)", "ohm"),
        C("r_inf_extrapolated", pa.bool_(), "r_inf is not reached inside the measured band"),
        C("series_capacitance", pa.float64(), "series capacitance (pole at the origin); null if none", "F"),
        C("series_inductance", pa.float64(), "series inductance (s term, with measured Im Z > 0); null if none", "H"),
        C("slope_low", pa.float64(), "d log10|Z| / d log10 f over the lowest decade", "1/decade"),
        C("slope_high", pa.float64(), "d log10|Z| / d log10 f over the highest decade", "1/decade"),
        C("phase_low", pa.float64(), "phase of Z at the lowest frequency", "degree"),
        C("phase_high", pa.float64(), "phase of Z at the highest frequency", "degree"),
        C("inductive", pa.bool_(), "an inductive response beyond the noise (Im Z > 0, series L or a zero first)"),
        C("n_inductive_points", pa.int32(), "number of measured points with Im Z > 0"),
        C("inductive_indices", pa.list_(pa.int32()), "0-based indices (file order) of the points with Im Z > 0"),
        C("cpe_signature", pa.bool_(), "a run of >= 3 geometric, alternating real poles/zeros (a CPE)"),
        C("cpe_alpha", pa.float64(), "CPE exponent estimated from that run; null without a CPE signature", ""),
        C("n_time_constants", pa.int32(), "distinct in-band time constants (a CPE run counts once)"),
        C("time_constants_s", _F64, "those time constants, ascending", "s"),
        C("poles_real", _F64, "real parts of the poles (one per real pole or conjugate pair, by |p|)", "rad/s"),
        C("poles_imag", _F64, "imaginary parts (>= 0) of the same poles", "rad/s"),
        C("zeros_real", _F64, "real parts of the zeros (one per real zero or conjugate pair, by |z|)", "rad/s"),
        C("zeros_imag", _F64, "imaginary parts (>= 0) of the same zeros", "rad/s"),
        C("pattern", pa.string(), "in-band poles (P) and zeros (Z) by |s|, complex ones lower-case, e.g. 'PZPZ'"),
        C("rc_interlacing", pa.bool_(), "real poles and zeros interlace with a pole first (an R/C network)"),
        C("fit_rel_error", pa.float64(), "RMS relative error |dZ|/|Z| of the rational fit", ""),
        C("kk_rel_error", pa.float64(), "RMS relative error of a lin-KK fit (3 RC per decade), same measure: "
          "the data's own consistency level", ""),
        C("fit_reliable", pa.bool_(), "the rational fit is at the data's level (fit_rel_error <= max(1.5 kk, "
          "kk + 0.002)) and the data are KK-consistent (kk_rel_error <= 0.02); pole/zero features of "
          "unreliable fits should not be trusted"),
        C("drt_lambda", pa.float64(), "DRT regularisation parameter (GCV-chosen)", ""),
        C("drt_r_pol", pa.float64(), "polarisation resistance = area under the DRT", "ohm"),
        C("drt_tau", _F64, "DRT grid of relaxation times", "s"),
        C("drt_gamma", _F64, "DRT gamma(ln tau) on drt_tau", "ohm"),
        C("drt_peak_tau", _F64, "DRT peak positions", "s"),
        C("drt_peak_r", _F64, "DRT peak areas (resistances), same order as drt_peak_tau", "ohm"),
        C("drt_peaks", pa.int32(), "number of DRT peaks"),
        C("features_method", pa.string(), "name and version of the feature extractor "
          "(matlake.models.eis.features FEATURIZER_NAME, FEATURIZER_VERSION)"),
        *_PRODUCER,
    ),
)

EIS_FITS = TableSchema(
    name="eis_fits",
    version=1,
    domain="eis_analysis",
    description="Equivalent-circuit fits (weighted complex NLLS), one row per spectrum, circuit and weighting",
    hot=("subject_id", "circuit", "weighting", "success", "aic", "bic"),
    columns=(
        _SUBJECT,
        C("circuit", pa.string(), "circuit string, e.g. 'R0-p(R1,C1)-p(R2-Wo1,C2)' (- series, p(,) parallel)"),
        C("topology", pa.string(), "unlabelled canonical topology, e.g. 'R-p(R,C)-p(R,C)'"),
        C("weighting", pa.string(), "residual weighting: 'unit', 'modulus' or 'proportional'"),
        C("parameter_names", _STR, "parameter names in circuit order (R0, C1, Wo1_Z0, CPE1_alpha, ...)"),
        C("parameter_units", _STR, "unit of each parameter (ohm, F, H, s, F s^(alpha-1), ...)"),
        C("parameter_values", _F64, "fitted values, units in parameter_units", "see parameter_units"),
        C("parameter_stderr", _F64, "standard errors of the values (NaN for fixed parameters)",
          "see parameter_units"),
        C("correlation", _F64, "parameter correlation matrix, n_params x n_params, row-major", ""),
        C("initial_guess", _F64, "starting values, units in parameter_units", "see parameter_units"),
        C("initial_guess_source", pa.string(), "'given' (user values) or 'auto' (from the features)"),
        C("n_params", pa.int32(), "number of circuit parameters"),
        C("n_points", pa.int32(), "number of points fitted"),
        C("n_excluded", pa.int32(), "points left out (Im Z > 0 when the circuit has no inductor)"),
        C("chi_square", pa.float64(), "weighted sum of squared residuals", "ohm^2 (unit weighting) or 1"),
        C("reduced_chi_square", pa.float64(), "chi_square / (2 n_points - n_free)", "as chi_square"),
        C("aic", pa.float64(), "Akaike information criterion on the 2 n_points real residuals", ""),
        C("bic", pa.float64(), "Bayesian information criterion on the 2 n_points real residuals", ""),
        C("success", pa.bool_(), "the optimiser reported convergence"),
        C("message", pa.string(), "optimiser message"),
        C("n_identifiable", pa.int32(), "rank of the parameter->spectrum map (identifiable combinations)"),
        C("unidentifiable", _STR, "parameters taking part in an unidentifiable combination"),
        C("identifiability_method", pa.string(), "'rational' (R/C/L: coefficients of N/D) or 'frequency'"),
        C("family_circuits", _STR, "R/C circuits only: every identifiable network with the same spectra "
          "(null for other circuits)"),
        *_PRODUCER,
    ),
)

EIS_PREDICTED = TableSchema(
    name="eis_predicted",
    version=1,
    domain="eis_analysis",
    description="Spectrum of a fitted circuit (eis_fits row) on a dense log-spaced frequency grid",
    hot=("subject_id", "fit_id", "circuit"),
    columns=(
        _SUBJECT,
        C("fit_id", pa.string(), "record_id of the eis_fits row"),
        C("circuit", pa.string(), "circuit string of the fit"),
        C("frequency", _F64, "frequencies, 20 per decade over the measured range", "Hz"),
        C("z_real", _F64, "Re Z of the fitted circuit", "ohm"),
        C("z_imag", _F64, "Im Z of the fitted circuit (capacitive < 0)", "ohm"),
        *_PRODUCER,
    ),
)

TABLES = [EIS_VALIDITY, EIS_FEATURES, EIS_FITS, EIS_PREDICTED]

VIEWS = {
    # the latest fit of each spectrum (any circuit), for the summary
    "eis_fits_latest": """
        select * from eis_fits
        qualify row_number() over (partition by subject_id order by created_at desc, record_id) = 1
    """,
    # one row per fitted parameter: `select * from eis_fit_parameters where name = 'R0'`
    "eis_fit_parameters": """
        select record_id as fit_id, subject_id, circuit, weighting,
               unnest(parameter_names) as name, unnest(parameter_units) as unit,
               unnest(parameter_values) as value, unnest(parameter_stderr) as stderr
        from eis_fits
    """,
    "eis_summary": """
        select i.record_id as spectrum_id, i.source_name, i.file_format, i.sample, i.n_points, i.f_min, i.f_max,
               v.m as kk_m, v.mu as kk_mu, v.rms_residual as kk_rms_residual, v.valid as kk_valid,
               f.r0, f.r_inf, f.inductive, f.n_inductive_points, f.series_inductance, f.series_capacitance,
               f.n_time_constants, f.cpe_signature, f.cpe_alpha, f.pattern, f.fit_reliable, f.drt_peaks,
               ft.record_id as fit_id, ft.circuit, ft.weighting, ft.chi_square as fit_chi_square,
               ft.aic as fit_aic, ft.bic as fit_bic, ft.success as fit_success
        from impedance i
        left join eis_validity v on v.subject_id = i.record_id
        left join eis_features f on f.subject_id = i.record_id
        left join eis_fits_latest ft on ft.subject_id = i.record_id
    """,
}
