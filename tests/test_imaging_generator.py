"""The two-phase melting movie generator: determinism, ground truth, melting, drift, dose statistics, TIFF."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matlake.models.imaging.generator import (
    GENERATOR_NAME,
    MovieParameters,
    generate_dose_series,
    generate_movie,
    parameters_from,
    write_imagej_tiff,
)

SMALL = dict(n_frames=12, height=48, width=56)


def test_same_parameters_give_bit_identical_movies():
    a = generate_movie(seed=5, bad_frame_fraction=0.25, drift_x=0.7, read_noise=0.5, **SMALL)
    b = generate_movie(MovieParameters(seed=5, bad_frame_fraction=0.25, drift_x=0.7, read_noise=0.5, **SMALL))
    assert a.frames.tobytes() == b.frames.tobytes() and a.masks.tobytes() == b.masks.tobytes()
    assert a.parameters == b.parameters and a.parameters["seed"] == 5
    assert a.parameters["generator"] == GENERATOR_NAME
    # every parameter is recorded: the record alone regenerates the movie
    rec = {k: v for k, v in a.parameters.items() if k not in ("generator", "generator_version")}
    c = generate_movie(MovieParameters(**rec))
    assert c.frames.tobytes() == a.frames.tobytes()
    d = generate_movie(seed=6, **SMALL)
    assert d.frames.tobytes() != a.frames.tobytes()
    assert a.frames.dtype == np.float32 and a.masks.dtype == np.uint8
    assert a.frames.shape == a.masks.shape == (12, 48, 56)


def test_ground_truth_follows_the_melting_curve():
    p = MovieParameters(seed=1, field_evolution=0.0, ice_fraction_start=0.8, ice_fraction_end=0.1, **SMALL)
    m = generate_movie(p)
    n = 48 * 56
    assert np.all(np.abs(m.ice_fraction - m.target_ice_fraction) <= 1.0 / n + 1e-12)
    assert m.target_ice_fraction[0] == pytest.approx(0.8) and m.target_ice_fraction[-1] == pytest.approx(0.1)
    assert np.allclose(np.diff(m.target_ice_fraction), (0.1 - 0.8) / 11)
    # on a fixed phase field with a rising threshold, ice only melts: every frame's ice lies inside the previous one
    for t in range(1, 12):
        assert not np.any(m.masks[t] & ~m.masks[t - 1])
    assert np.allclose(m.times, np.arange(12) / 400.0)
    s = generate_movie(p, melt_profile="sigmoid")
    assert s.target_ice_fraction[0] == pytest.approx(0.8) and s.target_ice_fraction[-1] == pytest.approx(0.1)
    mid = np.diff(s.target_ice_fraction)
    assert abs(mid[5]) > abs(mid[0])  # fastest in the middle


def test_phases_have_their_intensities_and_poisson_statistics():
    p = MovieParameters(seed=2, n_frames=4, height=96, width=96, psf_sigma=0.0, water_texture=0.0,
                        grain_contrast=0.0, dose=30.0, ice_fraction_start=0.5, ice_fraction_end=0.5)
    m = generate_movie(p)
    ice = m.masks.astype(bool)
    water_counts = m.frames[~ice].astype(float)
    ice_counts = m.frames[ice].astype(float)
    assert water_counts.mean() == pytest.approx(30.0 * 0.75, rel=0.02)
    assert ice_counts.mean() == pytest.approx(30.0 * 0.55, rel=0.02)
    # counting noise: variance = mean for Poisson counts, + read noise^2 with a Gaussian read-out
    assert water_counts.var() / water_counts.mean() == pytest.approx(1.0, abs=0.05)
    r = generate_movie(p, read_noise=3.0)
    w = r.frames[~ice].astype(float)
    assert w.var() == pytest.approx(w.mean() + 9.0, rel=0.06)
    assert np.array_equal(r.masks, m.masks)


def test_dose_levels_share_the_truth_and_bad_frames_get_less_dose():
    p = MovieParameters(seed=3, bad_frame_fraction=0.25, bad_frame_dose_factor=0.1, **SMALL)
    series = generate_dose_series(p, [2.0, 20.0])
    for movie, dose in zip(series, [2.0, 20.0]):
        alone = generate_movie(p, dose=dose)
        assert alone.frames.tobytes() == movie.frames.tobytes()
        assert movie.parameters["dose"] == dose
        assert np.array_equal(movie.masks, series[0].masks)
        bad = movie.frame_dose < dose
        assert int(bad.sum()) == 3 and np.allclose(movie.frame_dose[bad], 0.1 * dose)
    # relative counting noise falls as 1/sqrt(dose): std/mean of water counts on full-dose frames
    good = series[0].frame_dose == 2.0
    lo, hi = (s.frames[good][s.masks[good] == 0].astype(float) for s in series)
    assert (lo.std() / lo.mean()) / (hi.std() / hi.mean()) > 2.5  # sqrt(10) = 3.2 less the texture's share


def test_drift_moves_the_film():
    p = MovieParameters(seed=4, n_frames=6, height=64, width=64, drift_x=2.0, field_evolution=0.0,
                        ice_fraction_start=0.5, ice_fraction_end=0.5)
    m = generate_movie(p)
    for t in range(5):
        # content at x in frame t is at x + 2 in frame t + 1
        same = np.mean(m.masks[t + 1][:, 2:] == m.masks[t][:, :-2])
        assert same > 0.97
        assert np.mean(m.masks[t + 1] == m.masks[t]) < same


def test_uint16_frames_and_bad_parameters():
    m = generate_movie(seed=0, dtype="uint16", dose=50.0, **SMALL)
    assert m.frames.dtype == np.uint16 and m.frames.max() > 0
    with pytest.raises(ValueError, match="ice_fraction_start in \\[0, 1\\]"):
        MovieParameters(ice_fraction_start=1.5)
    with pytest.raises(ValueError, match="dose > 0"):
        generate_movie(dose=0.0)
    with pytest.raises(ValueError, match="unknown name"):
        parameters_from({"nonsense": 1})
    assert parameters_from({"n_frames": "7"}).n_frames == 7


def test_imagej_tiff_keeps_frames_and_calibration(tmp_path):
    import tifffile

    m = generate_movie(seed=8, pixel_size_nm=0.8, **SMALL)
    path = write_imagej_tiff(m, tmp_path / "movie.tif")
    with tifffile.TiffFile(path) as tf:
        assert tf.is_imagej
        data = tf.asarray()
        ij = tf.imagej_metadata
        xres = tf.pages[0].tags["XResolution"].value
    assert data.dtype == np.float32 and np.array_equal(data, m.frames)
    assert ij["unit"] == "nm" and ij["finterval"] == pytest.approx(1 / 400.0) and ij["frames"] == 12
    assert xres[1] / xres[0] == pytest.approx(0.8, rel=1e-6)  # pixels per nm -> nm per pixel
    assert json.loads(ij["Info"])["seed"] == 8
