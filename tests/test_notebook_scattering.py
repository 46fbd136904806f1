"""The scattering tour notebook is committed executed and runs top to bottom in a temporary lake.

The notebook asserts its science as it goes (held-out accuracy well above chance and a drop under
polydispersity, the neural ODE below the constant and linear baselines, the ptychographic RMSE going
down, lineage reaching the simulation): an assertion that fails is an error output, which the
execution test reports.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, sample

NOTEBOOK = ROOT / "notebooks" / "scattering_tour.ipynb"


def _outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _png_count(nb) -> int:
    return sum(1 for o in _outputs(nb) if "image/png" in o.get("data", {}))


def _text(nb, needle: str) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" and needle in c.source
                   for o in c.outputs)


@pytest.mark.slow
def test_scattering_tour_executes_and_traces_an_evaluation_to_the_simulation():
    pytest.importorskip("torch")
    pytest.importorskip("torchdiffeq")
    import nbformat
    from nbclient import NotebookClient

    committed = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    sample("imaging", "siemens_star_ptycho_subset.npz")  # fails when the sample is missing
    NotebookClient(nb, kernel_name="python3", timeout=900,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    assert NOTEBOOK.read_bytes() == committed  # executed in memory: the committed file is left alone
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, [(e.ename, e.evalue) for e in errors]
    assert _png_count(nb) >= 4, "examples, two confusion matrices and the horizon plot are shown"
    tree = _text(nb, "render_tree(")
    assert "simulate matlake-speckle" in tree and "simulate scattering-dynamics-simulate" in tree
    assert "evaluate speckle-evaluation" in tree and "scattering-node" in tree
    # the recovered scan position goes back through the ingest activity to the raw .npz bytes
    assert "ingest scattering-npz" in tree and "used object" in tree and "siemens_star_ptycho_subset.npz" in tree
    assert "position RMSE" in _text(nb, "recover_series(")


def test_committed_scattering_tour_carries_its_outputs_and_plots():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not executed before commit"
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    assert all(c.outputs for c in code if "display(" in c.source or "print(" in c.source), "outputs were stripped"
    assert _png_count(nb) >= 4, "the plots are missing"
    texts = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in _outputs(nb))
    assert str(ROOT) not in texts and "/tmp/" not in texts  # no machine-specific folder in the outputs
    assert "speckle_evaluations" in "".join(c.source for c in code) and "dynamics_evaluations" in texts + "".join(
        c.source for c in code)
