"""torch is optional: matlake imports and works without it, model code that needs it
says which extra to install, and the Makefile's exact CPU wheel satisfies that extra
so the editable install keeps it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import types

import pytest
from conftest import ROOT
from packaging.requirements import Requirement

from matlake import optional


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    """Python code run with ``import torch`` failing, as on an install without the extra."""
    prelude = ("import importlib.abc, sys\n"
               "class NoTorch(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'torch':\n"
               "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
               "sys.meta_path.insert(0, NoTorch())\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=600)


def test_every_matlake_module_imports_without_torch_and_a_lake_works():
    proc = _run_without_torch(
        "import importlib, pkgutil, tempfile, pathlib\n"
        "import matlake\n"
        "for m in pkgutil.walk_packages(matlake.__path__, 'matlake.'):\n"
        "    if '.migrations.versions' in m.name or m.name == 'matlake.migrations.env':\n"
        "        continue  # run by Alembic, not imported\n"
        "    importlib.import_module(m.name)\n"
        "lake = matlake.init(pathlib.Path(tempfile.mkdtemp()) / 'lake')\n"
        "print(lake.sql('select count(*) from structures').fetchone()[0])\n"
        "assert 'torch' not in sys.modules\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_require_torch_without_torch_names_the_ml_extra():
    proc = _run_without_torch(
        "from matlake.optional import require_torch, MissingDependency\n"
        "try:\n"
        "    require_torch('the MLP regressor')\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ('the MLP regressor needs torch >= 2.2, which is not installed: '
                                   'pip install "matlake[ml]" (or install torch yourself)')


def test_require_torch_refuses_a_torch_older_than_the_extra_allows(monkeypatch):
    old = types.ModuleType("torch")
    old.__version__ = "1.13.1+cu117"
    monkeypatch.setitem(sys.modules, "torch", old)
    with pytest.raises(optional.MissingDependency, match=r"needs torch >= 2.2, found torch 1.13.1\+cu117: "
                                                         r"pip install --upgrade \"matlake\[ml\]\""):
        optional.require_torch()


@pytest.mark.parametrize(("version", "release"), [("2.13.0+cpu", (2, 13, 0)), ("2.4.0a0+git1234", (2, 4, 0)),
                                                  ("2.2", (2, 2)), ("10.0.1", (10, 0, 1))])
def test_release_numbers_compare_numerically(version, release):
    assert optional._release(version) == release
    assert (optional._release(version) >= optional.TORCH_MIN) is True


def test_require_torch_returns_the_installed_torch():
    torch = pytest.importorskip("torch", reason="the ml extra is not installed here")  # noqa: F841
    assert optional.require_torch() is sys.modules["torch"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_is_only_in_the_ml_extra_with_the_range_require_torch_checks():
    project = _pyproject()["project"]
    assert not [d for d in project["dependencies"] if Requirement(d).name == "torch"]
    (ml,) = [Requirement(d) for d in project["optional-dependencies"]["ml"] if Requirement(d).name == "torch"]
    assert str(ml.specifier) == ">=" + ".".join(map(str, optional.TORCH_MIN))


def test_makefile_installs_the_exact_cpu_wheel_first_and_the_ml_extra_accepts_it():
    make = (ROOT / "Makefile").read_text()
    pinned = re.search(r"pip install -q torch==([0-9.]+)\n", make)
    editable = re.search(r'pip install -q -e "\.\[([a-z,]+)\]"', make)
    assert pinned and editable and pinned.start() < editable.start()
    assert "ml" in editable.group(1).split(",")
    (ml,) = [r for r in map(Requirement, _pyproject()["project"]["optional-dependencies"]["ml"]) if r.name == "torch"]
    assert pinned.group(1) in ml.specifier  # so the editable install keeps the CPU wheel


def test_state_dict_bytes_are_deterministic_across_calls():
    """The same weights must give the same artifact bytes (and so the same object id)."""
    import torch

    from matlake.models.base import torch_state_dumps

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    blobs = {torch_state_dumps(net) for _ in range(20)}
    assert len(blobs) == 1
