"""Luminescence: nm <-> eV with the Jacobian, lmfit peak fits chosen by BIC, emitter sets through the lake.

The emitter ensemble is the hBN quantum-emitter study's (centre 590.7 +- 2.7 nm,
FWHM 7.1 +- 1.7 nm over emitters).  A generated set of 48 emitters (white
noise of SD 1 % of each line's height) goes through the CLI: generate ->
fit-peaks -> emitters, and the fits are compared with the planted labels.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from scipy import constants

from matlake.models.spectra import luminescence as lum
from matlake.models.spectra import units
from matlake.models.spectra.luminescence_platform import (FITTER_NAME, STATISTICS_NAME, PeakFitter,
                                                          emitter_statistics, fit_peaks, generate_emitters)
from matlake.platform.cli import main
from matlake.platform.derivation import commit_derived
from matlake.platform.provenance import lineage

N_EMITTERS = 48
SEED = 20261201
NOISE = 0.01  # white-noise SD / line height: BIC picks the generating shape >= 90 % at this level


# --------------------------------------------------------------------------- units

def test_hc_is_codata_and_conversions_round_trip():
    assert units.HC_EV_NM == pytest.approx(1239.841984, abs=1e-6)
    assert units.HC_EV_NM == pytest.approx(constants.physical_constants["Planck constant in eV/Hz"][0]
                                           * constants.c * 1e9, rel=1e-12)
    lam = np.linspace(200.0, 2000.0, 97)
    np.testing.assert_allclose(units.ev_to_nm(units.nm_to_ev(lam)), lam, rtol=1e-14)
    assert units.nm_to_ev(590.7) == pytest.approx(2.098937, abs=1e-6)
    x = np.linspace(540.0, 640.0, 1001)
    y = lum.line_profile("gaussian", x, 100.0, 590.7, 3.0) + 0.5
    e, ye = units.spectrum_nm_to_ev(x, y)
    assert np.all(np.diff(e) > 0), "the energy axis must increase"
    x2, y2 = units.spectrum_ev_to_nm(e, ye)
    np.testing.assert_allclose(x2, x, rtol=1e-14)
    np.testing.assert_allclose(y2, y, rtol=1e-12)
    with pytest.raises(ValueError, match="wavelength: expected a strictly increasing"):
        units.spectrum_nm_to_ev(x[::-1], y)
    with pytest.raises(ValueError, match="positive"):
        units.nm_to_ev(np.array([500.0, 0.0]))


@pytest.mark.parametrize("step", [0.1, 0.02])
def test_jacobian_preserves_integrated_intensity(step):
    x = np.arange(450.0, 750.0 + step / 2, step)
    y = lum.line_profile("lorentzian", x, 1000.0, 590.7, 3.5) + lum.line_profile("gaussian", x, 500.0, 620.0, 3.0)
    e, ye = units.spectrum_nm_to_ev(x, y)
    assert np.trapezoid(ye, e) == pytest.approx(np.trapezoid(y, x), rel=1e-6)
    band = (x >= 580.0) & (x <= 600.0)
    eband = (e >= units.nm_to_ev(600.0)) & (e <= units.nm_to_ev(580.0))
    assert np.trapezoid(ye[eband], e[eband]) == pytest.approx(np.trapezoid(y[band], x[band]), rel=1e-6)
    # without the Jacobian the area would be off by ~ (lambda^2 / hc) - a real error, not rounding
    assert abs(np.trapezoid(y[::-1], e) / np.trapezoid(y, x) - 1) > 0.5


def _numeric_half_max(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(position of the maximum, low and high half-maximum crossings) by linear interpolation on samples."""
    i = int(np.argmax(y))
    half = y[i] / 2
    lo = np.nonzero(y[:i] < half)[0][-1]
    hi = i + np.nonzero(y[i:] < half)[0][0]
    x_lo = np.interp(half, [y[lo], y[lo + 1]], [x[lo], x[lo + 1]])
    x_hi = np.interp(half, [y[hi], y[hi - 1]], [x[hi], x[hi - 1]])
    return float(x[i]), float(x_lo), float(x_hi)


@pytest.mark.parametrize("shape,center,fwhm", [("gaussian", 590.7, 7.1), ("lorentzian", 590.7, 7.1),
                                               ("voigt", 575.0, 12.0), ("gaussian", 800.0, 40.0)])
def test_fwhm_in_ev_matches_the_numeric_half_maximum_of_the_converted_line(shape, center, fwhm):
    sigma = lum.sigma_for_fwhm(shape, fwhm)
    x = np.linspace(center - 15 * fwhm, center + 15 * fwhm, 400_001)
    y = lum.line_profile(shape, x, 1.0, center, sigma)
    e, ye = units.spectrum_nm_to_ev(x, y)
    peak_e, lo_e, hi_e = _numeric_half_max(e, ye)
    res = units.line_in_energy(lambda lam: lum.line_profile(shape, lam, 1.0, center, sigma), center, fwhm)
    assert res.fwhm_ev == pytest.approx(hi_e - lo_e, rel=1e-5)
    assert res.peak_ev == pytest.approx(peak_e, abs=2 * (e[1] - e[0]) * 50)
    # mapping the wavelength half-maximum points (no reshaping) is close, the linear rule is lower
    _, lo_nm, hi_nm = _numeric_half_max(x, y)
    mapped = units.HC_EV_NM / lo_nm - units.HC_EV_NM / hi_nm
    assert units.fwhm_nm_to_ev(center, fwhm) == pytest.approx(mapped, rel=1e-6)
    linear = units.fwhm_nm_to_ev_linear(center, fwhm)
    assert linear < mapped
    assert mapped / linear - 1 == pytest.approx((fwhm / (2 * center)) ** 2, rel=1e-3)


def test_peak_energy_of_a_converted_gaussian_matches_the_closed_form():
    # I(lambda) lambda^2 peaks where lambda^2 - c lambda - 2 sigma^2 = 0
    c, sigma = 590.7, 12.0
    lam_star = (c + math.sqrt(c * c + 8 * sigma * sigma)) / 2
    res = units.line_in_energy(lambda lam: lum.line_profile("gaussian", lam, 1.0, c, sigma), c, 2.3548 * sigma)
    # the maximum of a smooth function is located to ~sqrt(machine eps); the Jacobian shift is ~1e-3
    assert res.peak_ev == pytest.approx(units.HC_EV_NM / lam_star, rel=1e-7)
    assert res.peak_ev < units.HC_EV_NM / c  # the Jacobian pulls the energy maximum to the red


# --------------------------------------------------------------------------- pure fits and generator

@pytest.mark.parametrize("shape", lum.LINE_SHAPES)
def test_noiseless_line_is_recovered_by_its_own_model(shape):
    x = np.arange(550.0, 630.0, 0.1)
    sigma = lum.sigma_for_fwhm(shape, 6.3)
    y = lum.line_profile(shape, x, 5000.0, 589.3, sigma, 0.4) + 40.0 + 0.2 * (x - 589.3)
    fits = lum.fit_peak(x, y + 1e-3 * np.sin(37.0 * x), models=[shape])  # a trace of ripple as "noise"
    f = fits.chosen
    assert f.center_nm == pytest.approx(589.3, abs=1e-4)
    assert f.fwhm_nm == pytest.approx(6.3, rel=5e-4)  # voigt: lmfit's FWHM expression is good to 0.02 %
    assert f.baseline_slope == pytest.approx(0.2, abs=1e-4)
    assert f.r_squared > 0.999999
    assert f.center_ev == pytest.approx(units.HC_EV_NM / 589.3, rel=2e-4)


def test_gaussian_fit_and_standard_errors_agree_with_scipy_curve_fit():
    from scipy.optimize import curve_fit

    e = lum.generate_emitter_set(1, 4, line_shapes=["gaussian"], noise=0.02)[0]
    fits = lum.fit_peak(e.wavelength_nm, e.intensity, models=["gaussian"])
    fit = fits.chosen
    sel = (e.wavelength_nm >= fits.window_nm[0]) & (e.wavelength_nm <= fits.window_nm[1])
    xs, ys = e.wavelength_nm[sel], e.intensity[sel]
    assert xs.size == fit.n_points

    def model(lam, amplitude, center, sigma, intercept, slope):
        return (amplitude / (sigma * math.sqrt(2 * math.pi)) * np.exp(-((lam - center) ** 2) / (2 * sigma**2))
                + intercept + slope * (lam - 590.0))

    p0 = [fit.amplitude * 1.1, fit.center_nm + 0.3, fit.fwhm_nm / 2.2, 0.0, 0.0]
    # unweighted, covariance scaled by the residual variance: lmfit's errors with one weight per spectrum
    popt, pcov = curve_fit(model, xs, ys, p0=p0)
    perr = np.sqrt(np.diag(pcov))
    fwhm_factor = 2 * math.sqrt(2 * math.log(2))
    assert fit.center_nm == pytest.approx(popt[1], abs=1e-6)
    assert fit.fwhm_nm == pytest.approx(fwhm_factor * popt[2], rel=1e-6)
    assert fit.amplitude == pytest.approx(popt[0], rel=1e-6)
    assert fit.center_nm_stderr == pytest.approx(perr[1], rel=1e-3)
    assert fit.fwhm_nm_stderr == pytest.approx(fwhm_factor * perr[2], rel=1e-3)
    assert fit.amplitude_stderr == pytest.approx(perr[0], rel=1e-3)


def test_generator_is_seeded_and_draws_the_published_ensemble():
    a = lum.generate_emitter_set(5, 7)
    b = lum.generate_emitter_set(5, 7)
    c = lum.generate_emitter_set(5, 8)
    assert all(np.array_equal(p.intensity, q.intensity) for p, q in zip(a, b))
    assert not np.array_equal(a[0].intensity, c[0].intensity)
    big = lum.generate_emitter_set(3000, 1, axis_nm=(560.0, 620.0, 1.0))
    centers = np.array([e.center_nm for e in big])
    fwhms = np.array([e.fwhm_nm for e in big])
    assert centers.mean() == pytest.approx(590.7, abs=0.15) and centers.std(ddof=1) == pytest.approx(2.7, rel=0.05)
    assert fwhms.mean() == pytest.approx(7.1, abs=0.1) and fwhms.std(ddof=1) == pytest.approx(1.7, rel=0.05)
    assert fwhms.min() >= 0.5
    shapes = Counter(e.line_shape for e in big)
    assert set(shapes) == set(lum.LINE_SHAPES) and all(650 < k < 850 for k in shapes.values())  # 750 +- 24
    assert a[0].parameters["seed"] == 7 and a[3].parameters["index"] == 3


def test_bad_spectra_fail_with_a_message_naming_the_field():
    x = np.arange(550.0, 630.0, 0.1)
    flat = np.full_like(x, 50.0) + np.random.default_rng(0).normal(0, 1.0, x.size)
    with pytest.raises(lum.PeakFitError, match=r"flatty: intensity: expected a line .* \(no peak\)"):
        lum.fit_peak(x, flat, label="flatty")
    y = lum.line_profile("gaussian", x, 100.0, 590.0, 3.0)
    y[10] = np.nan
    with pytest.raises(lum.PeakFitError, match=r"nanny: intensity: expected finite numbers, found 1 non-finite"):
        lum.fit_peak(x, y, label="nanny")
    with pytest.raises(lum.PeakFitError, match=r"axis: expected at least 10 points in the window"):
        lum.fit_peak(x, np.nan_to_num(y), window=(590.0, 590.5), label="narrow")


def test_energy_axis_spectrum_is_fitted_in_wavelength():
    x = np.arange(560.0, 620.0, 0.05)
    y = lum.line_profile("gaussian", x, 3000.0, 590.7, 3.0) + 10.0
    e, ye = units.spectrum_nm_to_ev(x, y)
    fitter = PeakFitter(models=["gaussian"])
    nm_row = fitter.featurize_one({"subject_id": "a", "axis": x, "intensity": y + 1e-4 * np.sin(x * 31),
                                   "axis_unit": "nm", "axis_quantity": "wavelength"})["pl_peak_fits"][0]
    ev_row = fitter.featurize_one({"subject_id": "b", "axis": e, "intensity": ye * (1 + 1e-7 * np.sin(e * 9e3)),
                                   "axis_unit": "eV", "axis_quantity": "energy"})["pl_peak_fits"][0]
    assert nm_row["center_nm"] == pytest.approx(590.7, abs=1e-3)
    assert ev_row["center_nm"] == pytest.approx(590.7, abs=1e-3)
    with pytest.raises(lum.PeakFitError, match="axis_unit: expected 'nm'"):
        fitter.featurize_one({"subject_id": "c", "axis": x, "intensity": y, "axis_unit": "cm-1",
                              "axis_quantity": "energy"})


# --------------------------------------------------------------------------- through the lake, via the CLI

@pytest.fixture(scope="module")
def emitter_lake(tmp_path_factory):
    """A lake with 48 generated emitters, fitted and summarised through ``matlake spectra ...``."""
    import matlake

    root = tmp_path_factory.mktemp("lum") / "lake"
    lk = matlake.init(root)
    png = root.parent / "png"
    cli = ["--lake", str(root)]
    assert main(["spectra", "generate-emitters", "--n", str(N_EMITTERS), "--seed", str(SEED),
                 "--noise", str(NOISE), *cli]) == 0
    assert main(["spectra", "fit-peaks", "--where", "source_kind = 'generated'", *cli]) == 0
    assert main(["spectra", "emitters", "--name", "hBN generated", *cli]) == 0
    yield lk, root, png
    lk.close()


def _fits_vs_planted(lake):
    return lake.sql(
        "select c.subject_id, c.model, c.center_nm, c.center_nm_stderr, c.fwhm_nm, c.fwhm_nm_stderr, "
        "c.reduced_chi_square, lc.value as planted_center, lw.value as planted_fwhm, ls.value_text as planted_shape "
        "from pl_peak_choice c "
        "join spectrum_labels lc on lc.subject_id = c.subject_id and lc.label = 'center_nm' "
        "join spectrum_labels lw on lw.subject_id = c.subject_id and lw.label = 'fwhm_nm' "
        "join spectrum_labels ls on ls.subject_id = c.subject_id and ls.label = 'line_shape' "
        "order by c.subject_id").df()


def test_fits_reproduce_the_planted_centre_and_fwhm_distribution(emitter_lake):
    lake, _, _ = emitter_lake
    df = _fits_vs_planted(lake)
    assert len(df) == N_EMITTERS
    stats = lake.sql("select * from emitter_statistics where name = 'hBN generated'").df().iloc[0]
    assert stats.n_emitters == N_EMITTERS
    assert stats.center_nm_mean == pytest.approx(df.planted_center.mean(), abs=0.3)
    assert stats.fwhm_nm_mean == pytest.approx(df.planted_fwhm.mean(), abs=0.3)
    assert stats.center_nm_sd == pytest.approx(df.planted_center.std(ddof=1), rel=0.2)
    assert stats.fwhm_nm_sd == pytest.approx(df.planted_fwhm.std(ddof=1), rel=0.2)
    # and the ensemble is the published one, within the sampling error of 48 emitters
    assert abs(stats.center_nm_mean - 590.7) < 3 * 2.7 / math.sqrt(N_EMITTERS)
    assert abs(stats.fwhm_nm_mean - 7.1) < 3 * 1.7 / math.sqrt(N_EMITTERS)
    # eV statistics are the nm ones through E = hc / lambda (to first order)
    assert stats.center_ev_mean == pytest.approx(units.HC_EV_NM / stats.center_nm_mean, rel=1e-4)
    assert stats.center_ev_sd == pytest.approx(units.HC_EV_NM * stats.center_nm_sd / stats.center_nm_mean**2,
                                               rel=0.02)
    assert sum(json.loads(stats.model_counts_json).values()) == N_EMITTERS
    # per emitter: fitted values near the planted ones; the fits describe the data to the noise
    assert np.max(np.abs(df.center_nm - df.planted_center)) < 0.1
    assert np.max(np.abs(df.fwhm_nm / df.planted_fwhm - 1)) < 0.03
    assert df.reduced_chi_square.between(0.7, 1.4).all()


def test_bic_picks_the_generating_line_shape(emitter_lake):
    lake, _, _ = emitter_lake
    df = _fits_vs_planted(lake)
    confusion = Counter(zip(df.planted_shape, df.model))
    table = "\n".join(f"  planted {p:<12} chosen {c:<12} {n}" for (p, c), n in sorted(confusion.items()))
    print(f"BIC confusion at noise {NOISE:g} x height, {N_EMITTERS} emitters:\n{table}")
    accuracy = float(np.mean(df.planted_shape == df.model))
    assert accuracy >= 0.9, table
    # every model was tried on every spectrum, one chosen per spectrum
    per = lake.sql("select subject_id, count(*), sum(chosen::int) from pl_peak_fits group by subject_id").fetchall()
    assert len(per) == N_EMITTERS and all(n == 4 and k == 1 for _, n, k in per)


def test_standard_errors_cover_the_planted_values(emitter_lake):
    lake, _, _ = emitter_lake
    df = _fits_vs_planted(lake)
    z_center = (df.center_nm - df.planted_center) / df.center_nm_stderr
    z_fwhm = (df.fwhm_nm - df.planted_fwhm) / df.fwhm_nm_stderr
    # +-2 sigma covers 95.4 % for a correct error; binomial SD for 48 is ~3 %
    assert 0.85 <= float(np.mean(np.abs(z_center) <= 2)) <= 1.0
    assert 0.80 <= float(np.mean(np.abs(z_fwhm) <= 2)) <= 1.0
    # the errors are not inflated either: the z-scores spread like a standard normal
    assert 0.6 < float(np.std(z_center, ddof=1)) < 1.5


def test_reruns_add_nothing_and_force_adds_versions(emitter_lake, capsys):
    lake, root, _ = emitter_lake
    cli = ["--lake", str(root)]
    before = lake.resolve_snapshot(None)
    capsys.readouterr()
    assert main(["spectra", "generate-emitters", "--n", str(N_EMITTERS), "--seed", str(SEED),
                 "--noise", str(NOISE), *cli]) == 0
    assert main(["spectra", "fit-peaks", "--where", "source_kind = 'generated'", *cli]) == 0
    assert main(["spectra", "emitters", "--name", "hBN generated", *cli]) == 0
    out = capsys.readouterr().out
    assert out.count("nothing new") == 3, out
    assert lake.resolve_snapshot(None) == before
    # a forced re-fit of some spectra adds versions; the statistics over them then change inputs -> a version
    rep = fit_peaks(lake, where="source_kind = 'generated' and subject_id < '4'", force=True)
    assert rep.n_subjects > 0 and not rep.errors
    stats = emitter_statistics(lake, name="hBN generated")
    assert not stats.already
    versions = lake.sql("select version from emitter_statistics where name = 'hBN generated'").fetchone()[0]
    assert versions == 2
    n_v2 = lake.sql("select count(*) from pl_peak_fits where version = 2").fetchone()[0]
    assert n_v2 == 4 * rep.n_subjects


def test_statistics_lineage_reaches_the_fits_and_the_generate_activity(emitter_lake):
    lake, _, _ = emitter_lake
    rid = lake.sql("select record_id from emitter_statistics where name = 'hBN generated'").fetchone()[0]
    g = lineage(lake, rid, direction="up", max_fanout=500)
    labels = [g.labels[n] for n in g.nodes()]
    acts = {lbl for lbl in labels if lbl.startswith("activity")}
    assert any(STATISTICS_NAME in a for a in acts)
    assert any(FITTER_NAME in a for a in acts)
    assert any(lum.GENERATOR_NAME in a for a in acts)
    records = {n[1] for n in g.reaches("record")}
    fit_ids = {r[0] for r in lake.sql("select unnest(fit_ids) from emitter_statistics "
                                      "where name = 'hBN generated'").fetchall()}
    assert fit_ids <= records
    spectra = {r[0] for r in lake.sql("select record_id from spectra").fetchall()}
    assert spectra <= records
    # the generate activity used nothing, and its parameters keep the seed
    params = lake.sql("select parameters_json from activities where kind = 'generate'").fetchone()[0]
    assert json.loads(params)["seed"] == SEED


def test_plot_writes_a_png_of_one_fit(emitter_lake, capsys):
    lake, root, png = emitter_lake
    sid = lake.sql("select subject_id from pl_peak_choice order by subject_id limit 1").fetchone()[0]
    assert main(["spectra", "fit-peaks", "--where", "source_kind = 'generated'", "--plot", sid[:10],
                 "--png", str(png), "--lake", str(root)]) == 0
    files = list(png.glob(f"*_{sid[:8]}_peakfit.png"))
    assert len(files) == 1 and files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files[0].stat().st_size > 10_000


# --------------------------------------------------------------------------- bad spectra in a batch

def test_a_bad_spectrum_fails_alone_while_the_others_fit(lake):
    generate_emitters(lake, 4, 5, sample="good")
    x = np.arange(550.0, 630.0, 0.1)
    rng = np.random.default_rng(3)
    bad = {"flat": 50.0 + rng.normal(0.0, 1.0, x.size), "nan": np.where(np.arange(x.size) == 400, np.nan, 50.0)}
    rows = [{"record_id": f"bad-{name}", "technique": "pl", "axis": list(x), "axis_unit": "nm",
             "axis_quantity": "wavelength", "intensity": list(y), "n_points": x.size, "source_kind": "generated",
             "sample": "bad", "source_name": f"{name}.csv"} for name, y in bad.items()]
    commit_derived(lake, kind="generate", name="test-bad-spectra", version="1", parameters={}, used={},
                   rows={"spectra": rows})
    rep = fit_peaks(lake)
    assert set(rep.errors) == {"bad-flat", "bad-nan"}
    assert "intensity: expected a line" in rep.errors["bad-flat"] and "(no peak)" in rep.errors["bad-flat"]
    assert "intensity: expected finite numbers, found 1 non-finite" in rep.errors["bad-nan"]
    assert "nan.csv" in rep.errors["bad-nan"]
    assert rep.n_subjects == 4 and rep.n_rows["pl_peak_fits"] == 16
    status = lake.sql("select status from activities where activity_id = ?", params=[rep.activity_id]).fetchone()[0]
    assert status == "partial"
    assert lake.sql("select count(distinct subject_id) from pl_peak_fits").fetchone()[0] == 4
    with pytest.raises(Exception, match="expected at least 2 chosen peak fits"):
        emitter_statistics(lake, "sample = 'bad'")


def test_generate_fit_and_statistics_are_idempotent_on_both_catalogs(lake):
    first = generate_emitters(lake, 3, 9, sample="small")
    assert generate_emitters(lake, 3, 9, sample="small").already
    fit_peaks(lake, models=["gaussian", "lorentzian"])
    assert fit_peaks(lake, models=["gaussian", "lorentzian"]).snapshot is None
    stats = emitter_statistics(lake, "sample = 'small'")
    again = emitter_statistics(lake, "sample = 'small'")
    assert again.already and again.activity_id == stats.activity_id
    assert again.row["n_emitters"] == 3 and sorted(again.row["spectrum_ids"]) == sorted(first.spectrum_ids)
    # a later run with one model replaces the choice of each spectrum; the statistics follow it
    fit_peaks(lake, models=["voigt"])
    assert {r[0] for r in lake.sql("select model from pl_peak_choice").fetchall()} == {"voigt"}
    assert emitter_statistics(lake, "sample = 'small'").row["models"] == ["voigt"]
