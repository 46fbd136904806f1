"""notebooks/quickstart.ipynb runs top to bottom without an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import sample

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_quickstart_notebook_executes():
    import nbformat
    from nbclient import NotebookClient

    sample("dft")
    path = NOTEBOOKS / "quickstart.ipynb"
    committed = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert path.read_bytes() == committed  # executed in memory: the committed, executed file is left alone
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "used object" in text  # the lineage reached raw bytes
