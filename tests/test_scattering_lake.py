"""Simulated speckle series in the lake, the classifier trained on a view of them, evaluations, CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from matlake.models.scattering.classify_lake import evaluate_classifier, train_classifier
from matlake.models.scattering.simulate import PatternParams, SpeckleSpec, simulate_pattern
from matlake.models.scattering.simulate_lake import simulate_into
from matlake.platform.modeling import model_info
from matlake.platform.provenance import lineage

TRAIN = SpeckleSpec(number_densities=(0.008, 0.032), n_per_class=16, seed=1)
TEST = SpeckleSpec(number_densities=(0.008, 0.032), n_per_class=8, seed=2)


def test_simulate_into_commits_series_that_regenerate_exactly(lake):
    out = simulate_into(lake, TRAIN, "train")
    assert not out["skipped"] and len(out["series"]) == 2 and out["n_patterns"] == 32
    rows = lake.sql("select * from scattering_series order by record_id").arrow().to_pylist()
    assert {r["record_id"] for r in rows} == set(out["series"])
    for r in rows:
        assert r["source_kind"] == "simulated" and r["system"] == "disks" and r["file_format"] == "generated"
        assert (r["n_frames"], r["height"], r["width"], r["dtype"]) == (16, 64, 64, "float32")
        assert r["q_per_pixel"] == pytest.approx(2 * np.pi / (64 * 1e-8))
        assert r["total_counts_mean"] == pytest.approx(1e5, rel=0.01)
        label, gen = json.loads(r["label_json"]), json.loads(r["generator_json"])
        k = label["class_index"]
        assert label["number_density"] == TRAIN.number_densities[k] and label["dataset"] == "train"
        assert gen["spec"]["seed"] == 1 and gen["class_index"] == k and len(gen["frame_seeds"]) == 16
        # frame 5 read alone from the chunked object = the pattern regenerated from the recorded parameters
        frame = lake.frames(r["record_id"], 5, 6)[0]
        spec = SpeckleSpec.from_dict(gen["spec"])
        again = simulate_pattern(spec.pattern_params(k, 5)).intensity.astype(np.float32)
        np.testing.assert_array_equal(frame, again)
        assert gen["frame_seeds"][5] == [spec.pattern_params(k, 5).disks.seed, spec.pattern_params(k, 5).noise_seed]
        mask = lake.chunked(r["mask_sha256"], r["mask_index_sha256"]).read()
        assert mask.shape == (64, 64) and mask[32, 32] == 0 and mask.sum() > 4000
        assert np.all(frame[mask == 0] == 0)
    objs = {o for (o,) in lake.sql("select sha256 from objects").fetchall()}
    assert {r["frames_sha256"] for r in rows} | {rows[0]["mask_sha256"]} <= objs
    act = lake.sql("select kind, name from activities where activity_id = ?", params=[out["activity_id"]]).fetchone()
    assert act == ("simulate", "matlake-speckle")
    # the same data set again: skipped, nothing committed
    n_snap = lake.last_snapshot()
    again = simulate_into(lake, TRAIN, "train")
    assert again["skipped"] and again["activity_id"] == out["activity_id"] and lake.last_snapshot() == n_snap
    # other parameters: a new data set; the same name with other parameters: new versions of its series
    assert not simulate_into(lake, TRAIN.with_(seed=5), "train-b")["skipped"]
    assert not simulate_into(lake, TRAIN.with_(seed=9), "train")["skipped"]
    live = lake.sql("select record_id, version, generator_json from scattering_series where sample = 'train'").fetchall()
    assert {r[0] for r in live} == set(out["series"]) and {r[1] for r in live} == {2}
    assert all(json.loads(r[2])["spec"]["seed"] == 9 for r in live)


def test_train_and_evaluate_through_the_lake(sqlite_lake):
    lake = sqlite_lake
    simulate_into(lake, TRAIN, "train")
    simulate_into(lake, TEST, "test-mono")
    simulate_into(lake, TEST.with_(polydispersity=0.2), "test-poly")
    simulate_into(lake, TEST.with_(counts=300.0), "test-low")
    info = train_classifier(lake, "train", epochs=10, seed=0, threads=1)
    stored = model_info(lake, info.model_id)
    assert "json_extract_string(label_json, '$.dataset') = 'train'" in stored.view_sql
    assert stored.snapshot_id == 4 and stored.n_train == 2 and stored.params["n_classes"] == 2
    assert stored.metrics["chance"] == 0.5 and stored.metrics["n_patterns"] == 32
    conditions = {"mono": "test-mono", "poly-0.2": "test-poly", "counts-300": "test-low"}
    out = evaluate_classifier(lake, info.model_id, conditions)
    rows = {r["condition"]: r for r in lake.sql("select * from speckle_evaluations").arrow().to_pylist()}
    assert set(rows) == set(conditions)
    mono = rows["mono"]
    assert mono["chance"] == 0.5 and mono["n"] == 16 and mono["n_series"] == 2
    assert mono["accuracy"] >= 0.85, mono  # the two densities differ four-fold
    cm = np.array(json.loads(mono["confusion_json"]))
    assert cm.sum() == 16 and np.trace(cm) / 16 == pytest.approx(mono["accuracy"])
    for cond, r in rows.items():
        assert r["accuracy_drop"] == pytest.approx(mono["accuracy"] - r["accuracy"])
        assert r["reference_condition"] == "mono" and r["model_id"] == info.model_id
        png = lake.objects.get(r["confusion_png_sha256"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert rows["poly-0.2"]["polydispersity"] == 0.2 and rows["counts-300"]["counts"] == 300.0
    # the evaluation used the model and each test series at its version
    g = lineage(lake, mono["record_id"], direction="up", max_fanout=100)
    assert ("model", info.model_id) in g.reaches("model")
    reached = " ".join(n[1] for n in g.reaches("record"))
    series = [s for (s,) in lake.sql("select record_id from scattering_series where sample like 'test-%'").fetchall()]
    assert len(series) == 6 and all(s in reached for s in series), (series, reached)
    # a repeat is skipped
    n_snap = lake.last_snapshot()
    rep = evaluate_classifier(lake, info.model_id, conditions)
    assert rep["skipped"] and rep["activity_id"] == out["activity_id"] and lake.last_snapshot() == n_snap


def test_cli_simulate_train_evaluate(tmp_path, capsys, monkeypatch):
    from matlake.platform.cli import main

    monkeypatch.delenv("MATLAKE_DEBUG", raising=False)

    def _matlake(*args: str) -> SimpleNamespace:
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    lake = str(tmp_path / "lake")
    assert _matlake("init", lake).returncode == 0
    spec = tmp_path / "spec.toml"
    spec.write_text('[defaults]\nnumber_densities = [0.008, 0.032]\nn_grid = 32\nbox = 32.0\n'
                    '[[dataset]]\nname = "train"\nn_per_class = 6\nseed = 1\n'
                    '[[dataset]]\nname = "test-mono"\nn_per_class = 3\nseed = 2\ncounts = "none"\n')
    p = _matlake("scattering", "simulate", str(spec), "--lake", lake)
    assert p.returncode == 0, p.stderr
    assert "train: snapshot 1" in p.stdout and "test-mono: snapshot 2" in p.stdout
    p = _matlake("scattering", "simulate", str(spec), "--lake", lake, "--examples-png", str(tmp_path / "ex.png"))
    assert p.stdout.count("already simulated") == 2, p.stderr
    assert (tmp_path / "ex.png").read_bytes()[:4] == b"\x89PNG"
    p = _matlake("scattering", "classify", "train", "--lake", lake, "--param", "epochs=2", "--param", "threads=1")
    assert p.returncode == 0 and "trained speckle-density-cnn v1" in p.stdout, p.stderr
    p = _matlake("scattering", "classify", "evaluate", "speckle-density-cnn", "--lake", lake,
                 "--condition", "mono=test-mono", "--png-dir", str(tmp_path / "png"))
    assert p.returncode == 0, p.stderr
    assert "speckle_evaluations rows" in p.stdout and len(list((tmp_path / "png").glob("*.png"))) == 1
    # bad spec: the message names the file, the field, what was expected and what was found
    bad = tmp_path / "bad.toml"
    bad.write_text('[[dataset]]\nname = "x"\nradius_px = 3\n')
    p = _matlake("scattering", "simulate", str(bad), "--lake", lake)
    assert p.returncode != 0 and "bad.toml" in p.stderr and "radius_px" in p.stderr and "expected" in p.stderr
    bad.write_text('[[dataset]]\nname = "x"\ncounts = "lots"\n')
    p = _matlake("scattering", "simulate", str(bad), "--lake", lake)
    assert p.returncode != 0 and "counts" in p.stderr and "'lots'" in p.stderr
