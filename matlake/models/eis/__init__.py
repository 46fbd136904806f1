"""Impedance spectroscopy (EIS) model module.

Science (pure functions on numpy arrays; Hz, ohm, Z = Z' + jZ'' with capacitive Z'' < 0):
:func:`lin_kk` (Kramers-Kronig validity), :func:`fit_rational` and :func:`extract_features`
(circuit-free features), :func:`fit_drt` (distribution of relaxation times),
:func:`parse_circuit` / :func:`identifiability` (circuits), :func:`fit_circuit` (weighted
complex NLLS), :func:`family_of` (R/C circuits with the same spectra).

Platform: :class:`EisAnalyzer` and :func:`analyze` write `eis_validity`, `eis_features`,
`features`, `eis_fits` and `eis_predicted` rows with provenance; :func:`plot_spectrum`
draws Nyquist and Bode plots from the lake; ``matlake eis ...`` is the command line.

Names are imported on first use (PEP 562), so that ``import matlake.models.eis.cli``
(done by every ``matlake`` command) does not load scipy.
"""

from __future__ import annotations

from matlake.models.lazy import lazy_exports

_EXPORTS = {
    "lin_kk": "validity", "LinKKResult": "validity",
    "fit_rational": "rational", "RationalFit": "rational",
    "extract_features": "features", "EisFeatures": "features",
    "fit_drt": "drt", "DrtResult": "drt",
    "parse_circuit": "circuits", "Circuit": "circuits", "identifiability": "circuits", "Identifiability": "circuits",
    "fit_circuit": "fitting", "FitResult": "fitting", "WEIGHTINGS": "fitting",
    "family_of": "enumeration", "rc_families": "enumeration", "map_parameters": "enumeration",
    "EisAnalyzer": "analysis", "analyze": "analysis", "auto_initial_guess": "analysis",
    "ANALYZER_NAME": "analysis", "ANALYZER_VERSION": "analysis",
    "plot_spectrum": "plots", "spectrum_figures": "plots",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
