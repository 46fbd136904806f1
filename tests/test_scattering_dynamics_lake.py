"""Simulated dynamics series in the lake, a neural ODE trained on it, evaluations and lineage."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

from matlake.models.scattering import dynamics_lake as D  # noqa: E402
from matlake.models.scattering import neural_ode as N  # noqa: E402
from matlake.models.scattering import systems as S  # noqa: E402
from matlake.platform.provenance import lineage  # noqa: E402


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SYSTEM = S.KuramotoParams(size=8, n_frames=24, seed=3)
SCATTER = S.ScatterParams(total_counts=1e6, noise_seed=2)


def test_simulate_commit_is_idempotent_and_reproducible(sqlite_lake):
    sid, created = D.simulate_dynamics_into(sqlite_lake, SYSTEM, SCATTER)
    assert created
    again, created2 = D.simulate_dynamics_into(sqlite_lake, SYSTEM, SCATTER)
    assert again == sid and not created2
    assert sqlite_lake.sql("select count(*) from scattering_series").fetchone()[0] == 1
    row = sqlite_lake.series(sid)
    assert row["source_kind"] == "simulated" and row["system"] == "kuramoto" and row["n_frames"] == 24
    assert row["times"] == pytest.approx(list(np.arange(24) * 0.1))
    gen = json.loads(row["generator_json"])
    # every parameter recorded: the series is regenerated exactly from generator_json alone
    system = S.params_from_dict(gen["system"])
    traj = S.simulate(system)
    frames, _ = S.diffraction(S.density(system, traj.states), S.ScatterParams(**gen["scatter"]))
    np.testing.assert_array_equal(sqlite_lake.frames(sid), frames.astype(np.float32))
    np.testing.assert_array_equal(sqlite_lake.frames(sid, 5, 8), frames[5:8].astype(np.float32))
    truth = json.loads(row["metadata_json"])["ground_truth"]
    with sqlite_lake.chunked(truth["sha256"], truth["index_sha256"]) as arr:
        np.testing.assert_array_equal(arr[3], traj.states[3])


def test_train_writes_model_evaluations_and_lineage(lake, one_thread, tmp_path):
    sid, _ = D.simulate_dynamics_into(lake, SYSTEM, SCATTER)
    params = N.NodeParams(n_train=16, iters=25, sub_len=4, batch=4, seed=1)
    out = D.train(lake, sid, params)
    ev = lake.sql("select * from dynamics_evaluations where model_id = ? order by horizon_frames",
                  params=[out["model_id"]]).df()
    assert ev["horizon_frames"].tolist() == list(range(1, 9))
    assert ev["horizon_s"].to_numpy() == pytest.approx(np.arange(1, 9) * 0.1)
    assert (ev["series_id"] == sid).all() and (ev["real_error_kind"] == "1-cos").all()
    for col in ("reciprocal_error", "constant_reciprocal_error", "linear_reciprocal_error", "real_error"):
        assert np.all(np.isfinite(ev[col].to_numpy()))
    assert out["summary"]["heldout_recip_mean"] == pytest.approx(ev["reciprocal_error"].mean())
    # trajectories and the PNG are verified objects
    with lake.chunked(ev["extrapolated_sha256"][0], ev["extrapolated_index_sha256"][0]) as arr:
        assert arr.shape == (8, 8, 8)
    assert lake.objects.get(ev["plot_sha256"][0])[:8] == b"\x89PNG\r\n\x1a\n"
    mv = lake.sql("select name, version, view_sql, snapshot_id from model_versions where model_id = ?",
                  params=[out["model_id"]]).fetchone()
    assert mv[0] == "scattering-node-kuramoto" and mv[1] == 1 and sid in mv[2]
    g = lineage(lake, ev["record_id"][0], direction="up", max_fanout=100)
    assert ("model", out["model_id"]) in g.reaches("model")
    acts = {n[1] for n in g.reaches("activity")}
    sim_act = lake.sql("select activity_id from scattering_series where record_id = ?", params=[sid]).fetchone()[0]
    assert sim_act in acts  # the evaluation reaches the simulation that made its series
    # the stored weights reproduce the evaluation; extrapolate goes beyond the series end
    ext = D.extrapolate(lake, out["model_id"], sid, 3)
    assert ext["states"].shape == (3, 8, 8) and ext["frames"].shape == (3, 16, 16)
    assert np.all(ext["frames"][:, ext["mask"] == 0] == 0)
    png = D.plot(lake, out["model_id"], str(tmp_path / "h.png"))
    assert open(png, "rb").read(4) == b"\x89PNG"


def test_train_on_an_unknown_series_is_an_error(sqlite_lake):
    from matlake.platform.lake import LakeError

    with pytest.raises(LakeError, match="no-such-series"):
        D.train(sqlite_lake, "no-such-series")


@pytest.mark.slow
def test_cli_simulate_train_extrapolate_plot(tmp_path, one_thread, capsys):
    import matlake
    from matlake.platform.cli import main

    root = tmp_path / "lake"
    matlake.init(root).close()
    lk = ["--lake", str(root)]
    sets = ["--set", "size=6", "--set", "n_frames=10", "--set", "seed=4"]
    assert main(["scattering", "dynamics", "simulate", "kuramoto", *sets, "--scatter", "total_counts=null", *lk]) == 0
    assert main(["scattering", "dynamics", "simulate", "kuramoto", *sets, "--scatter", "total_counts=null", *lk]) == 0
    out = capsys.readouterr().out
    assert "committed: series dyn-kuramoto-" in out and "already in the lake" in out
    sid = out.split("series ")[1].split()[0]
    assert main(["scattering", "dynamics", "train", sid, "--set", "n_train=7", "--set", "iters=3", "--set", "sub_len=3",
                 "--set", "batch=2", *lk]) == 0
    out = capsys.readouterr().out
    assert "held-out reciprocal error" in out and "horizon_frames" in out
    mid = out.split("model ")[1].split()[0]
    png = tmp_path / "h.png"
    assert main(["scattering", "dynamics", "plot", mid, "--out", str(png), *lk]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    npz = tmp_path / "x.npz"
    assert main(["scattering", "dynamics", "extrapolate", mid, sid, "--frames", "2", "--out", str(npz), *lk]) == 0
    assert np.load(npz)["states"].shape == (2, 6, 6)
    assert main(["scattering", "dynamics", "train", sid, "--set", "bogus=1", *lk]) != 0
