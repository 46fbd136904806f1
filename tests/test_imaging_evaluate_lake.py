"""Generated movies and ensemble evaluations through a lake: records, objects, lineage, skips, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matlake.models.imaging import calibration as cal
from matlake.models.imaging.evaluate_lake import evaluate, generate_movie_into, plot_evaluations
from matlake.models.imaging.evaluation import SmoothedThresholdEnsemble
from matlake.models.imaging.generator import MovieParameters, generate_movie
from matlake.models.imaging.uncertainty import uncertainty_maps

PARAMS = MovieParameters(seed=11, n_frames=12, height=40, width=48, dose=8.0, bad_frame_fraction=0.25,
                         bad_frame_dose_factor=0.15, drift_x=0.4)


def test_generated_movie_is_committed_as_frames_and_ground_truth(lake):
    out = generate_movie_into(lake, PARAMS)
    assert not out["skipped"]
    movie = generate_movie(PARAMS)  # the pure generator regenerates the same arrays from the parameters
    rows = lake.sql("select record_id, frame_index, n_frames, technique, pixel_size_x, pixel_unit_x, "
                    "pixel_size_nm_y, frame_time, array_sha256, metadata_json from micrographs "
                    "order by frame_index").fetchall()
    assert [r[1] for r in rows] == list(range(12)) and {r[2] for r in rows} == {12}
    assert {r[3] for r in rows} == {"generated"} and {(r[4], r[5], r[6]) for r in rows} == {(1.0, "nm", 1.0)}
    assert np.allclose([r[7] for r in rows], np.arange(12) / 400.0)
    assert len({r[8] for r in rows}) == 1  # one chunked object holds the whole stack
    meta = json.loads(rows[5][9])
    assert meta["generator"]["seed"] == 11 and meta["frame_dose_e_per_px"] == movie.frame_dose[5]
    for t in (0, 5, 11):
        img = lake.image(out["image_ids"][t])
        assert img.pixel_size == (1.0, 1.0) and img.pixel_unit == ("nm", "nm")
        assert np.asarray(img).tobytes() == movie.frames[t].tobytes()
        mask = lake.image(out["mask_ids"][t])
        assert np.array_equal(np.asarray(mask), movie.masks[t])
    # one frame is read without the rest of the stack
    img = lake.image(out["image_ids"][3])
    _ = img[0:10, 0:10]
    size = lake.sql(f"select size from objects where sha256 = '{rows[0][8]}'").fetchone()[0]
    assert 0 < img.array.bytes_read < size / 4
    seg = lake.sql("select count(*), min(mask_kind), max(mask_kind), min(image_version) from segmentations"
                   ).fetchone()
    assert seg == (12, "ground_truth", "ground_truth", 1)
    fr = lake.sql("select class_fractions[2] from segmentations s join micrographs m on m.record_id = s.image_id "
                  "order by m.frame_index").fetchall()
    assert np.allclose([f[0] for f in fr], movie.ice_fraction)
    # same parameters: skipped; force adds versions of the same records
    snap = lake.last_snapshot()
    again = generate_movie_into(lake, PARAMS)
    assert again["skipped"] and lake.last_snapshot() == snap and again["image_ids"] == out["image_ids"]
    generate_movie_into(lake, PARAMS, force=True)
    assert lake.sql("select max(version), min(version) from micrographs").fetchone() == (2, 2)
    assert lake.sql("select min(image_version) from segmentations").fetchone()[0] == 2


@pytest.mark.slow  # ~15 s on a busy 2-core machine: rendering 8 PNG figures and a lineage walk
def test_evaluation_records_match_the_pure_metrics(sqlite_lake, tmp_path):
    from matlake.platform.operations import doctor
    from matlake.platform.provenance import lineage

    lake = sqlite_lake
    gen = generate_movie_into(lake, PARAMS)
    models = [SmoothedThresholdEnsemble(), SmoothedThresholdEnsemble(sigmas=(0.5, 1.0), name="narrow")]
    out = evaluate(lake, models, where=f"sample = 'generated-ice-movie-{gen['digest']}'", evaluation="melt",
                   out_dir=tmp_path / "figs", batch=5)
    assert not out["skipped"] and len(out["evaluation_ids"]) == 2
    movie = generate_movie(PARAMS)
    maps = uncertainty_maps(models[0](movie.frames))
    ref = cal.segmentation_metrics(maps.mean, movie.masks)
    row = lake.sql("select * from segmentation_evaluations where model_name = 'smoothed-threshold'"
                   ).arrow().to_pylist()[0]
    for k in ("accuracy", "ece", "mce", "brier", "brier_binary", "nll", "mean_iou"):
        assert row[k] == pytest.approx(ref[k], abs=1e-12), k
    assert np.allclose(row["iou"], ref["iou"], atol=1e-12)
    assert row["n_members"] == 3 and row["n_images"] == 12 and row["n_pixels"] == 12 * 40 * 48
    assert row["class_names"] == ["water", "ice"] and row["image_ids"] == gen["image_ids"]
    assert row["mean_mutual_information"] == pytest.approx(float(maps.mutual_information.mean()), abs=1e-12)
    errors = (maps.predicted != movie.masks).reshape(12, -1).mean(axis=1)
    scores = maps.entropy.reshape(12, -1).mean(axis=1)
    thr = float(np.median(errors))
    assert row["error_threshold"] == pytest.approx(thr)
    assert row["quality_auroc"] == pytest.approx(cal.roc_auc(scores, errors > thr), abs=1e-12)
    assert row["aurc"] == pytest.approx(cal.risk_coverage(scores, errors).aurc, abs=1e-12)
    # the quality flag works on this movie: low-dose frames are the worse and the more uncertain ones
    low = movie.frame_dose < PARAMS.dose
    assert errors[low].mean() > errors[~low].mean() and scores[low].mean() > scores[~low].mean()
    assert row["quality_auroc"] > 0.7
    fr = lake.sql("select frame_index, fraction_mean, fraction_std, member_fractions, true_fraction, error_rate, "
                  "flagged from phase_fractions where model_name = 'smoothed-threshold' order by frame_index"
                  ).fetchall()
    assert len(fr) == 12
    assert np.allclose([f[4] for f in fr], movie.ice_fraction)
    assert np.allclose([f[5] for f in fr], errors, atol=1e-15)
    assert all(f[6] == (f[5] > thr) for f in fr)
    assert np.allclose([f[1] for f in fr], [np.mean(f[3]) for f in fr]) and all(len(f[3]) == 3 for f in fr)
    assert row["phase_fraction_mae"] == pytest.approx(np.mean([abs(f[1] - f[4]) for f in fr]), abs=1e-12)
    # figures: objects in the store (PNG) and files in the folder
    figs = json.loads(row["figures_json"])
    assert set(figs) == {"reliability", "risk_coverage", "phase_fraction", "panel"}
    for sha in figs.values():
        assert lake.objects.get(sha)[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(out["files"]) == 5 and all((tmp_path / "figs").joinpath(p.split("/")[-1]).exists()
                                          for p in out["files"])
    # lineage: the evaluation used the frames and masks, which the seeded generate activity made
    g = lineage(lake, out["evaluation_ids"][0], direction="up", max_fanout=100)
    acts = [g.labels[n] for n in g.reaches("activity")]
    assert any("generate matlake-ice-movie" in a for a in acts) and any("evaluate" in a for a in acts)
    used = {n[1] for n in g.reaches("record")}
    assert set(gen["image_ids"]) <= used and set(gen["mask_ids"]) <= used
    assert doctor(lake).ok
    # same evaluation again: skipped; plots redrawn from the stored rows
    snap = lake.last_snapshot()
    assert evaluate(lake, models, where=f"sample = 'generated-ice-movie-{gen['digest']}'",
                    evaluation="melt")["skipped"]
    paths = plot_evaluations(lake, out["evaluation_ids"], tmp_path / "replot")
    assert len(paths) == 5 and all(open(p, "rb").read(4) == b"\x89PNG" for p in paths)
    assert lake.last_snapshot() == snap


def test_evaluation_refuses_bad_selections(sqlite_lake):
    lake = sqlite_lake
    gen = generate_movie_into(lake, MovieParameters(seed=1, n_frames=3, height=16, width=16))
    ens = SmoothedThresholdEnsemble()
    with pytest.raises(ValueError, match="found none"):
        evaluate(lake, [ens], where="technique = 'TEM'")
    with pytest.raises(ValueError, match="phase: expected one of \\['water', 'ice'\\]"):
        evaluate(lake, [ens], image_ids=gen["image_ids"], phase="steam")
    with pytest.raises(ValueError, match="distinct model names"):
        evaluate(lake, [ens, ens], image_ids=gen["image_ids"])
    with pytest.raises(ValueError, match="found no"):
        evaluate(lake, [ens], image_ids=["nope"])
    assert lake.sql("select count(*) from snapshots").fetchone()[0] == 1  # nothing was committed


def test_cli_generate_evaluate_plot(tmp_path, capsys):
    from matlake.platform.cli import main

    root = str(tmp_path / "lake")
    assert main(["init", root]) == 0
    args = ["--lake", root, "--seed", "2", "--frames", "6", "--size", "24", "32", "--set", "drift_x=0.5"]
    assert main(["images", "generate", *args]) == 0
    assert main(["images", "generate", *args]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert main(["images", "evaluate", "--lake", root, "--where", "technique = 'generated'", "--baseline", "1,2",
                 "--predictor", "matlake.models.imaging.evaluation:SmoothedThresholdEnsemble",
                 "--param", "sigmas=[2,4]", "--param", "name=wide", "--name", "cli",
                 "--out", str(tmp_path / "figs")]) == 0
    text = capsys.readouterr().out
    assert "smoothed-threshold-1,2\t2\t" in text and "wide\t2\t" in text
    import matlake

    with matlake.open(root) as lk:
        ids = [r[0] for r in lk.sql("select record_id from segmentation_evaluations order by model_name").fetchall()]
    assert main(["images", "plot", "--lake", root, *ids, "--out", str(tmp_path / "plots")]) == 0
    assert len(list((tmp_path / "plots").glob("*.png"))) == 5


def test_images_without_ground_truth_give_phase_fractions_only(sqlite_lake):
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities

    lake = sqlite_lake
    movie = generate_movie(seed=9, n_frames=4, height=24, width=24)
    ref = lake.put_chunked(movie.frames)
    rows = [{"record_id": f"img{t}", "technique": "TEM", "height": 24, "width": 24, "dtype": "<f4", "frame_index": t,
             "n_frames": 4, "array_sha256": ref.sha256, "array_index_sha256": ref.index_sha256,
             "frame_time": t / 400.0} for t in range(4)]
    commit_activities(lake, kind="ingest", message="hand-made frames without masks",
                      activities=[ActivitySpec(name="test", version="1", parameters={}, rows={"micrographs": rows})],
                      objects=[ObjectSpec.stored(ref)])
    out = evaluate(lake, [SmoothedThresholdEnsemble()], where="technique = 'TEM'", evaluation="no-truth")
    row = lake.sql("select accuracy, ece, quality_auroc, n_images, figures_json, phase_fraction_mae "
                   "from segmentation_evaluations").fetchone()
    assert row[0] is None and row[1] is None and row[2] is None and row[3] == 4 and row[5] is None
    assert set(json.loads(row[4])) == {"phase_fraction", "panel"}
    fr = lake.sql("select fraction_mean, true_fraction, error_rate, flagged from phase_fractions "
                  "order by frame_index").fetchall()
    P = SmoothedThresholdEnsemble()(movie.frames)
    from matlake.models.imaging.uncertainty import phase_fractions

    assert np.allclose([f[0] for f in fr], phase_fractions(P, 1).mean)
    assert all(f[1] is None and f[2] is None and f[3] is None for f in fr)
    assert out["summary"][0]["accuracy"] is None


def test_a_movie_written_as_tiff_is_ingested_and_evaluated_like_a_real_file(sqlite_lake, tmp_path):
    """The generated movie goes through the micrograph reader (ImageJ TIFF: calibration, frame times)
    and its masks through the mask reader; the evaluation's lineage then reaches the raw TIFF bytes."""
    import hashlib

    from matlake.models.imaging.generator import write_imagej_tiff, write_mask_tiffs
    from matlake.platform.provenance import lineage

    lake = sqlite_lake
    movie = generate_movie(seed=12, n_frames=4, height=32, width=40, pixel_size_nm=0.8, dose=10.0)
    tif = write_imagej_tiff(movie, tmp_path / "melt.tif")
    report = lake.ingest([tif])
    assert report.failed == 0 and report.records == 4
    rows = lake.sql("select record_id, pixel_size_nm_x, pixel_unit_x, frame_time from micrographs "
                    "order by frame_index").fetchall()
    assert {(r[1], r[2]) for r in rows} == {(0.8, "nm")}
    assert np.allclose([r[3] for r in rows], movie.times)
    for (rid, *_), path in zip(rows, write_mask_tiffs(movie, tmp_path / "masks")):
        rep = lake.ingest([path], kind="mask", options={"for": rid, "classes": "water:0,ice:1",
                                                        "mask_kind": "ground_truth"})
        assert rep.failed == 0, rep.outcomes[0].message
    ens = SmoothedThresholdEnsemble()
    out = evaluate(lake, [ens], where="source_name = 'melt.tif'", evaluation="tiff")
    ref = cal.segmentation_metrics(uncertainty_maps(ens(movie.frames)).mean, movie.masks)
    row = lake.sql("select accuracy, ece, nll from segmentation_evaluations").fetchone()
    assert row == pytest.approx((ref["accuracy"], ref["ece"], ref["nll"]), abs=1e-12)
    g = lineage(lake, out["evaluation_ids"][0], direction="up", max_fanout=100)
    raw = {n[1] for n in g.reaches("object")}
    assert hashlib.sha256(tif.read_bytes()).hexdigest() in raw
