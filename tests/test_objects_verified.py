"""Objects are checked before they are trusted: every read that parses or
deserialises an object verifies its sha256, and model artifacts are stored in
formats whose loading cannot run code (skops for scikit-learn, state dicts for
torch); pickle artifacts of older lakes load only on an explicit opt-in."""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import torch
from conftest import sample

from matlake.models.base import (
    TorchModelModule,
    UnsafeArtifact,
    artifact_format,
    load_artifact,
    torch_state_dumps,
    torch_state_loads,
)
from matlake.models.dft.composition import CompositionRegressor, composition_features, feature_names
from matlake.platform.cli import main
from matlake.platform.ingestion import SourceItem, process_source
from matlake.platform.modeling import load_model, read_view
from matlake.platform.objects import ObjectCorrupted, ObjectStore, sha256_bytes
from matlake.platform.operations import doctor, retry


def tamper(store: ObjectStore, sha: str, at: int = 100) -> str:
    """Flip one byte of an object's file in place; returns the hash the file has now."""
    path = store.path(sha)
    data = bytearray(path.read_bytes())
    data[min(at, len(data) - 1)] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    return sha256_bytes(bytes(data))


def assert_names_the_corruption(exc: ObjectCorrupted, store: ObjectStore, sha: str, found: str) -> None:
    msg = str(exc)
    assert exc.sha == sha and exc.found == found and exc.path == str(store.path(sha))
    assert f"expected sha256 {sha}" in msg and f"found {found}" in msg and str(store.path(sha)) in msg


@pytest.fixture
def dft_lake(sqlite_lake):
    """Ten Materials Project calculations to train on and one CIF structure."""
    sqlite_lake.ingest([sample("dft", "MP_stable_entries_Mg_Ga_N.json"),
                        sample("dft", "MAPbI3_mp-977013_symmetrized.cif")], progress=False)
    return sqlite_lake


# --------------------------------------------------------------------------- the object store


def test_get_refuses_a_tampered_object_and_verify_false_reads_it_unchecked(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    sha = store.put(b"x" * 1000)
    assert store.get(sha) == b"x" * 1000 and store.verify(sha)
    found = tamper(store, sha)
    with pytest.raises(ObjectCorrupted) as info:
        store.get(sha)
    assert_names_the_corruption(info.value, store, sha, found)
    with pytest.raises(ObjectCorrupted):
        store.check(sha)
    assert not store.verify(sha)
    assert store.get(sha, verify=False) != b"x" * 1000  # the named fast path does not hash


def test_object_corrupted_survives_a_trip_to_a_worker_process(tmp_path):
    exc = ObjectCorrupted("a" * 64, "b" * 64, tmp_path / "objects" / "aa" / ("a" * 62))
    back = pickle.loads(pickle.dumps(exc))
    assert (back.sha, back.found, back.path, str(back)) == (exc.sha, exc.found, exc.path, str(exc))


def test_doctor_deep_reports_a_tampered_object_with_the_same_message(dft_lake):
    sha = dft_lake.sql("select sha256 from ledger where source_path like '%.cif'").fetchone()[0]
    assert doctor(dft_lake, deep=True).ok
    found = tamper(dft_lake.objects, sha)
    assert doctor(dft_lake).ok  # same size: only the deep check reads the bytes
    problems = doctor(dft_lake, deep=True).problems
    assert problems == [str(ObjectCorrupted(sha, found, dft_lake.objects.path(sha)))]


# --------------------------------------------------------------------------- tampered objects are refused


def test_tampered_model_artifact_is_refused_on_predict(dft_lake, capsys, monkeypatch):
    info = dft_lake.train(CompositionRegressor(n_estimators=10))
    found = tamper(dft_lake.objects, info.artifact_sha256, at=2000)
    before = dft_lake.resolve_snapshot(None)
    with pytest.raises(ObjectCorrupted) as exc:
        dft_lake.predict(info.model_id)
    assert_names_the_corruption(exc.value, dft_lake.objects, info.artifact_sha256, found)
    assert dft_lake.resolve_snapshot(None) == before  # nothing committed

    monkeypatch.delenv("MATLAKE_DEBUG", raising=False)
    assert main(["predict", info.name, "--lake", str(dft_lake.root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("matlake: error: object ") and f"found {found}" in err[0]


def test_tampered_volumetric_grid_is_refused(sqlite_lake):
    sqlite_lake.ingest([sample("dft", "Si_static_CHGCAR.gz")], progress=False)
    rid, sha = sqlite_lake.sql("select record_id, array_sha256 from volumetric").fetchone()
    grid = sqlite_lake.volumetric(rid)
    assert grid.data.ndim == 3 and np.isfinite(grid.data).all()
    found = tamper(sqlite_lake.objects, sha, at=len(sqlite_lake.objects.get(sha)) // 2)
    with pytest.raises(ObjectCorrupted) as exc:
        sqlite_lake.volumetric(rid)
    assert_names_the_corruption(exc.value, sqlite_lake.objects, sha, found)


def test_retry_reports_a_tampered_raw_object_and_reparses_the_others(sqlite_lake, tmp_path, capsys, monkeypatch):
    bad = [tmp_path / "first.dat", tmp_path / "second.dat"]
    for i, p in enumerate(bad):
        p.write_bytes(f"no materials file here {i}\n".encode() * 20)
    rep = sqlite_lake.ingest(bad, progress=False)
    assert rep.failed == 2
    shas = dict(sqlite_lake.sql("select source_path, sha256 from ledger").fetchall())
    tampered = shas[str(bad[0].resolve())]
    found = tamper(sqlite_lake.objects, tampered, at=5)

    res = retry(sqlite_lake)
    assert res.candidates == 1  # only the intact one was re-read
    assert len(res.corrupted_objects) == 1
    msg = res.corrupted_objects[0]
    assert msg.startswith(str(bad[0].resolve())) and f"expected sha256 {tampered}" in msg and f"found {found}" in msg

    # A worker handed the tampered object directly refuses it too: a failed outcome saying why
    # (workers report what they cannot read rather than raise, so the batch goes on).
    out = process_source(SourceItem(str(bad[0]), object_sha=tampered), str(sqlite_lake.objects.root), {})
    assert out.status == "failed" and out.tables == {}
    assert f"expected sha256 {tampered}" in out.message and f"found {found}" in out.message

    monkeypatch.delenv("MATLAKE_DEBUG", raising=False)
    assert main(["retry", "--lake", str(sqlite_lake.root)]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPTED {msg}" in out.splitlines()


# --------------------------------------------------------------------------- skops artifacts


def test_composition_artifact_is_a_skops_zip_and_reloaded_predictions_equal_the_in_memory_model(dft_lake):
    module = CompositionRegressor(n_estimators=10)
    _, _, frame = read_view(dft_lake, module.train_sql, None)
    model, _ = module.fit(frame)
    _, _, pframe = read_view(dft_lake, module.predict_sql, None)
    sha = dft_lake.put_object(module.dumps(model))
    reloaded = load_artifact(module, dft_lake.objects.get(sha))
    a, b = module.predict(model, pframe), module.predict(reloaded, pframe)
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(b["uncertainty"], a["uncertainty"], rtol=1e-12, atol=1e-15)

    info = dft_lake.train(module)
    blob = dft_lake.objects.get(info.artifact_sha256)
    assert artifact_format(blob) == "skops"
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert "schema.json" in zf.namelist()
    assert sio.get_untrusted_types(data=blob) == ["sklearn.tree._tree.Tree"]
    params = json.loads(dft_lake.sql("select parameters_json from activities where activity_id = ?",
                                     params=[info.activity_id]).fetchone()[0])
    assert params["artifact_format"] == "skops"
    out = dft_lake.predict(info.model_id)
    committed = dft_lake.sql("select subject_id, value from predictions order by subject_id").df()
    _, mod, artifact = load_model(dft_lake, info.model_id)
    again = mod.predict(artifact, pframe).sort_values("subject_id")
    assert out["n"] == len(committed) == len(again)
    np.testing.assert_allclose(committed["value"], again["value"], rtol=1e-12, atol=0)


class UntrustingRegressor(CompositionRegressor):
    trusted_types = ()


def test_a_skops_artifact_with_types_the_module_does_not_list_is_refused(dft_lake):
    trusting = CompositionRegressor(n_estimators=3)
    _, _, frame = read_view(dft_lake, trusting.train_sql, None)
    model, _ = trusting.fit(frame)
    listed = r"UntrustingRegressor\.trusted_types: \['sklearn\.tree\._tree\.Tree'\]"
    with pytest.raises(UnsafeArtifact, match="cannot store.*" + listed):
        UntrustingRegressor().dumps(model)
    with pytest.raises(UnsafeArtifact, match=r"refuses to load.*'sklearn\.tree\._tree\.Tree'"):
        UntrustingRegressor().loads(trusting.dumps(model))
    with pytest.raises(UnsafeArtifact, match="expected a skops artifact, found pickle"):
        trusting.loads(pickle.dumps(model, protocol=5))


# --------------------------------------------------------------------------- pickle artifacts of older lakes


class LegacyPickleRegressor(CompositionRegressor):
    """Writes its artifact as matlake did before skops artifacts."""

    name = "legacy-pickle-regressor"

    def dumps(self, artifact):
        return pickle.dumps(artifact, protocol=5)


def test_pickle_artifact_is_refused_without_the_opt_in_and_loads_with_it(dft_lake, capsys, monkeypatch):
    info = dft_lake.train(LegacyPickleRegressor(n_estimators=5))
    assert artifact_format(dft_lake.objects.get(info.artifact_sha256)) == "pickle"
    before = dft_lake.resolve_snapshot(None)
    with pytest.raises(UnsafeArtifact) as exc:
        dft_lake.predict(info.model_id)
    msg = str(exc.value)
    assert info.model_id in msg and info.artifact_sha256 in msg and "pickle" in msg
    assert "allow_pickle=True" in msg and "--allow-pickle" in msg
    assert dft_lake.resolve_snapshot(None) == before

    monkeypatch.delenv("MATLAKE_DEBUG", raising=False)
    assert main(["predict", info.name, "--lake", str(dft_lake.root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-pickle" in err[0]

    out = dft_lake.predict(info.model_id, allow_pickle=True)
    assert out["n"] == dft_lake.sql("select count(*) from structures").fetchone()[0] > 0
    assert main(["predict", info.name, "--lake", str(dft_lake.root), "--allow-pickle"]) == 0
    assert "predictions by" in capsys.readouterr().out


# --------------------------------------------------------------------------- torch state dicts


class _ScaledMLP(torch.nn.Module):
    """A two-layer perceptron whose feature scaling is kept as buffers (saved with the weights)."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("scale", torch.ones(n_in))
        self.body = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.scale).squeeze(-1)


class TinyTorchRegressor(TorchModelModule):
    """Energy per atom from composition features with a tiny torch network."""

    name = "tiny-torch-regressor"
    version = "1"
    target = "energy_per_atom"
    unit = "eV/atom"
    subject_table = "calculations"
    train_sql = CompositionRegressor.train_sql
    predict_subject_table = "structures"
    predict_sql = CompositionRegressor.predict_sql

    def build_network(self) -> torch.nn.Module:
        return _ScaledMLP(len(feature_names()), int(self.params.get("hidden", 8)))

    def _x(self, frame: pd.DataFrame) -> torch.Tensor:
        x = np.vstack([composition_features(f) for f in frame["reduced_formula"]])
        return torch.tensor(np.nan_to_num(x, nan=0.0), dtype=torch.float32)

    def fit(self, frame: pd.DataFrame):
        torch.manual_seed(0)
        x, y = self._x(frame), torch.tensor(frame["y"].to_numpy(float), dtype=torch.float32)
        net = self.build_network()
        net.mean.copy_(x.mean(0))
        net.scale.copy_(x.std(0).clamp_min(1e-6))
        start = float((y - y.mean()).abs().mean())
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        for _ in range(300):
            opt.zero_grad()
            loss = ((net(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            mae = float((net(x) - y).abs().mean())
        return net, {"train_mae": mae, "baseline_mae": start}

    def predict(self, artifact: torch.nn.Module, frame: pd.DataFrame) -> pd.DataFrame:
        with torch.no_grad():
            value = artifact(self._x(frame)).numpy().astype(float)
        return pd.DataFrame({"subject_id": frame["subject_id"].to_numpy(), "value": value,
                             "uncertainty": np.nan})


def test_torch_module_trains_and_predicts_through_a_safetensors_state_dict(dft_lake):
    module = TinyTorchRegressor(hidden=8)
    info = dft_lake.train(module)
    assert info.metrics["train_mae"] < info.metrics["baseline_mae"]  # it learned something
    blob = dft_lake.objects.get(info.artifact_sha256)
    assert artifact_format(blob) == "safetensors"
    out = dft_lake.predict(info.model_id)
    assert out["n"] > 0

    _, _, frame = read_view(dft_lake, module.train_sql, None)
    net, _ = module.fit(frame)  # the same seed and rows: the same network, in memory
    _, _, pframe = read_view(dft_lake, module.predict_sql, None)
    reloaded = torch_state_loads(torch_state_dumps(net), module.build_network())
    np.testing.assert_allclose(module.predict(reloaded, pframe)["value"], module.predict(net, pframe)["value"],
                               rtol=0, atol=1e-7)
    _, _, from_lake = load_model(dft_lake, info.model_id)
    for key, tensor in net.state_dict().items():
        torch.testing.assert_close(from_lake.state_dict()[key], tensor, rtol=1e-6, atol=1e-7)


def test_torch_state_dict_falls_back_to_torch_save_read_with_weights_only(monkeypatch):
    torch.manual_seed(1)
    net = _ScaledMLP(4, 3)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # as if safetensors were not installed
    blob = torch_state_dumps(net)
    assert artifact_format(blob) == "torch"
    back = torch_state_loads(blob, _ScaledMLP(4, 3))
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)
    with pytest.raises(UnsafeArtifact, match="found pickle"):
        torch_state_loads(pickle.dumps(net.state_dict()), _ScaledMLP(4, 3))
    whole = io.BytesIO()
    torch.save(net, whole)  # a whole module (its class pickled), not a state dict: weights_only refuses it
    with pytest.raises(pickle.UnpicklingError):
        torch_state_loads(whole.getvalue(), _ScaledMLP(4, 3))
