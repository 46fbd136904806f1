"""U-net ensembles in the lake: train on ingested (micrograph, mask) pairs, predict maps as
chunked objects, lineage from a prediction to the raw micrograph bytes, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import sample

torch = pytest.importorskip("torch")

from matlake.models.imaging import segment_lake as sl  # noqa: E402
from matlake.models.imaging.ensemble import EnsembleSpec, choose_device  # noqa: E402
from matlake.models.imaging.sliding import sliding_window  # noqa: E402
from matlake.platform.modeling import list_models, load_model  # noqa: E402
from matlake.platform.provenance import lineage  # noqa: E402

SMALL = dict(depth=2, base=4, epochs=1, steps_per_epoch=3, batch=4, tile=32)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ingest_isbi(lake, tmp_path) -> tuple[str, str]:
    """The ISBI image (4 nm pixels) and its ground-truth mask, plus a 100 x 150 crop without mask."""
    from PIL import Image

    out = lake.ingest([sample("imaging", "isbi2012_train_image_0.png")], options={"pixel_size": 4}, progress=False)
    assert out.outcomes[0].status == "ok", out.outcomes[0].message
    rid = lake.sql("select record_id from micrographs").fetchone()[0]
    out = lake.ingest([sample("imaging", "isbi2012_train_label_0.png")], kind="mask", progress=False,
                      options={"for": rid, "classes": "membrane:0,cell:255", "mask_kind": "ground_truth"})
    assert out.outcomes[0].status == "ok", out.outcomes[0].message
    crop = tmp_path / "isbi_crop.png"
    Image.fromarray(np.asarray(Image.open(sample("imaging", "isbi2012_train_image_0.png")))[100:200, 50:200]).save(crop)
    assert lake.ingest([crop], options={"pixel_size": 4}, progress=False).outcomes[0].status == "ok"
    crop_id = lake.sql("select record_id from micrographs where source_name = 'isbi_crop.png'").fetchone()[0]
    return rid, crop_id


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(axis)


def test_train_predict_and_lineage_reach_the_raw_micrograph(lake, tmp_path):
    rid, crop_id = _ingest_isbi(lake, tmp_path)
    info = sl.train(lake, EnsembleSpec.ea(seed=4, **SMALL))
    # the model version records the spec (every seed), the device, and the used set of images
    assert info.params["spec"]["members"] == [["plain", 4], ["resnet", 5], ["mobilenet", 6]]
    assert info.params["spec"]["class_names"] == ["membrane", "cell"]  # taken from the mask
    assert info.params["trained_on"]["device"] == choose_device() and info.n_train == 1
    g = lineage(lake, info.model_id, direction="up", max_fanout=100)
    assert ("record", rid) in g.reaches("record")

    out = sl.predict(lake, info.model_id, where="source_name like 'isbi%'", tile=64, overlap=32)
    assert out["n"] == 2
    rows = {r["image_id"]: r for r in lake.sql("select * from segmentation_predictions").arrow().to_pylist()}
    assert set(rows) == {rid, crop_id}
    row = rows[crop_id]
    assert (row["height"], row["width"], row["image_version"], row["ensemble_kind"]) == (100, 150, 1, "EA")

    # the stored maps are what the artifact gives by sliding-window inference on the stored pixels
    _, _, net = load_model(lake, info.model_id)
    img = np.asarray(lake.image(crop_id))
    members = np.zeros((3, 2, 100, 150), np.float32)
    sliding_window(net, img, members, tile=64, overlap=32, members=True)
    mean = members.mean(0)

    def stored(name):
        return lake.chunked(row[f"{name}_sha256"], row[f"{name}_index_sha256"]).read()

    np.testing.assert_allclose(stored("probability"), mean, atol=1e-6)
    assert np.array_equal(stored("class_map"), mean.argmax(0))
    ent = _entropy(mean.astype(np.float64), 0)
    mi = ent - _entropy(members.astype(np.float64), 1).mean(0)
    np.testing.assert_allclose(stored("entropy"), ent, atol=1e-5)
    np.testing.assert_allclose(stored("mutual_information"), np.maximum(mi, 0), atol=1e-5)
    pred = mean.argmax(0)
    var_pred = np.take_along_axis(members.var(0), pred[None], 0)[0]
    np.testing.assert_allclose(stored("member_variance"), var_pred, atol=1e-6)
    assert row["uncertainty_score"] == pytest.approx(float(np.maximum(mi, 0).mean()), abs=1e-5)
    assert row["class_fractions"] == pytest.approx([(mean.argmax(0) == c).mean() for c in (0, 1)])
    member_fr = [[(members[m].argmax(0) == c).mean() for c in (0, 1)] for m in range(3)]
    assert row["class_fractions_std"] == pytest.approx(np.std(member_fr, axis=0).tolist())
    assert json.loads(row["inference_json"])["tile"] == 64

    # lineage: prediction -> predict activity -> micrograph (at its version) -> ingest -> raw bytes,
    # and -> model version -> train activity -> training snapshot
    g = lineage(lake, rows[rid]["record_id"], direction="up", max_fanout=100)
    raw = lake.sql("select source_sha256 from micrographs where record_id = ?", params=[rid]).fetchone()[0]
    assert ("object", raw) in g.reaches("object")
    assert ("model", info.model_id) in g.reaches("model")
    assert ("snapshot", str(info.snapshot_id)) in g.reaches("snapshot")
    # each map object was generated by the predict activity of its own image, which used that
    # micrograph and the model (the model's training image is reached only through the model)
    g = lineage(lake, row["probability_sha256"], direction="up")
    [(act, _)] = g.upstream(("object", row["probability_sha256"]))
    assert act[0] == "activity"
    assert sorted(n for n, _ in g.upstream(act)) == [("model", info.model_id), ("record", crop_id)]


def test_bad_requests_are_refused_and_nothing_is_committed(sqlite_lake, tmp_path):
    rid, _ = _ingest_isbi(sqlite_lake, tmp_path)
    with pytest.raises(ValueError, match="field class_names: expected the spec's classes"):
        sl.train(sqlite_lake, EnsembleSpec.er("plain", 1, class_names=["ice", "water"], **SMALL))
    assert list_models(sqlite_lake) == []
    info = sl.train(sqlite_lake, EnsembleSpec.er("plain", 2, **SMALL))
    before = sqlite_lake.last_snapshot()
    with pytest.raises(ValueError, match="no micrographs record 'nope'"):
        sl.predict(sqlite_lake, info.model_id, image_ids=[rid, "nope"])
    assert sqlite_lake.last_snapshot() == before


def test_cli_trains_from_a_toml_spec_and_predicts(sqlite_lake, tmp_path, capsys):
    from matlake.platform.cli import main

    rid, crop_id = _ingest_isbi(sqlite_lake, tmp_path)
    spec = tmp_path / "er.toml"
    spec.write_text('kind = "ER"\nmembers = [["resnet", 1], ["resnet", 2]]\ndepth = 2\nbase = 4\nepochs = 1\n'
                    'steps_per_epoch = 2\nbatch = 2\ntile = 32\n')
    lake_path = str(sqlite_lake.config.root)
    assert main(["images", "train", "--spec", str(spec), "--lake", lake_path]) == 0
    text = capsys.readouterr().out
    assert "trained unet_ensemble v1" in text and "resnet/seed 2" in text and f"on {choose_device()}" in text
    assert main(["images", "predict", "unet_ensemble", "--image", crop_id, "--tile", "64", "--overlap", "16",
                 "--lake", lake_path]) == 0
    text = capsys.readouterr().out
    assert crop_id in text and "1 segmentation_predictions rows" in text
    assert main(["images", "train", "--ensemble", "EA", "--encoders", "plain,plain,resnet", "--lake", lake_path]) != 0
    assert "at least 3 different encoder families" in capsys.readouterr().err


def test_a_stored_ensemble_is_a_member_predictor_for_the_evaluation(sqlite_lake, tmp_path):
    from matlake.models.imaging.evaluate_lake import evaluate

    rid, _ = _ingest_isbi(sqlite_lake, tmp_path)
    info = sl.train(sqlite_lake, EnsembleSpec.er("plain", 2, **SMALL))
    pred = sl.EnsemblePredictor(str(sqlite_lake.config.root), info.model_id, tile=128, overlap=32)
    img = np.asarray(sqlite_lake.image(rid))
    p = pred(img[None, :96, :80])
    assert p.shape == (2, 2, 1, 96, 80)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    out = evaluate(sqlite_lake, [pred], image_ids=[rid], phase="cell")
    [summary] = out["summary"]
    assert summary is not None and out["snapshot"] is not None
    row = sqlite_lake.sql("select * from segmentation_evaluations").arrow().to_pylist()[0]
    assert row["model_id"] == info.model_id
