"""bench/cuda_check.py trains and infers every torch model for a few steps; here on CPU with tiny sizes.

On a CUDA machine the same script (without ``--device cpu``) is the GPU check of issue #12.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
from conftest import ROOT

pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")


def _module():
    spec = importlib.util.spec_from_file_location("cuda_check", ROOT / "bench" / "cuda_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cuda_check_trains_and_infers_every_model_on_cpu(one_thread, capsys):
    mod = _module()
    assert mod.main(["--device", "cpu", "--tiny", "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device cpu")
    for name in ("speckle", "node", "spectra-mlp", "spectra-cnn"):
        line = next(ln for ln in out.splitlines() if ln.split()[1:2] == [name])
        assert line.startswith("ok") and "on cpu" in line, line
    for name in ("unet", "ptycho"):  # ran and passed, or said why it was skipped (not importable)
        line = next(ln for ln in out.splitlines() if ln.split()[1:2] == [name])
        assert line.startswith(("ok", "SKIP")), line


def test_a_check_that_does_not_learn_fails(one_thread, monkeypatch):
    mod = _module()
    results = mod.run("cpu", 8, True, only=["spectra-mlp"])
    assert results[0]["ok"] and results[0]["loss_after"] < results[0]["loss_before"]
    # a loss that does not go down, a NaN and an exception each fail the check and the exit status
    monkeypatch.setitem(mod.CHECKS, "spectra-mlp", lambda d, s, t: {"loss_before": 1.0, "loss_after": 1.0,
                                                                      "on_device": True, "detail": ""})
    assert not mod.run("cpu", 8, True, only=["spectra-mlp"])[0]["ok"]
    monkeypatch.setitem(mod.CHECKS, "spectra-mlp", lambda d, s, t: {"loss_before": 1.0, "loss_after": math.nan,
                                                                      "on_device": True, "detail": ""})
    assert not mod.run("cpu", 8, True, only=["spectra-mlp"])[0]["ok"]

    def boom(d, s, t):
        raise RuntimeError("device-side assert")

    monkeypatch.setitem(mod.CHECKS, "spectra-mlp", boom)
    res = mod.run("cpu", 8, True, only=["spectra-mlp"])[0]
    assert not res["ok"] and "device-side assert" in res["error"]
    assert mod.main(["--device", "cpu", "--tiny", "--only", "spectra-mlp"]) == 1


def test_cuda_requested_runs_on_a_gpu_and_fails_without_one(one_thread):
    import torch

    status = _module().main(["--device", "cuda", "--tiny", "--only", "spectra-mlp"])
    assert status == (0 if torch.cuda.is_available() else 1)
