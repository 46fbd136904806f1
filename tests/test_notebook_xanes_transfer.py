"""The XANES transfer notebook is committed executed and runs top to bottom on the shipped dataset."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, sample


def test_committed_xanes_transfer_notebook_carries_outputs_and_plots():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "xanes_transfer.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not executed before commit"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 2
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "ni_metal_rt.xdi" in text and "cdf" in text


@pytest.mark.slow
def test_xanes_transfer_notebook_executes_without_errors():
    import nbformat
    from nbclient import NotebookClient

    sample("computed", "ni_k_feff", "ni_k_feff.json.gz")
    path = ROOT / "notebooks" / "xanes_transfer.ipynb"
    committed = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(path.parent)}}).execute()
    assert path.read_bytes() == committed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
