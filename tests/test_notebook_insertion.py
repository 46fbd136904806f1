"""The insertion tour notebook runs from top to bottom on the repository's samples."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_insertion_tour_notebook_executes_and_traces_a_placement_to_the_raw_grids():
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / "insertion_tour.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert pngs, "the slice figure is shown"
    lineage_out = "".join(o.get("text", "") for c in nb.cells if "render_tree" in c.source for o in c.outputs)
    assert "YPO4_static_AECCAR0.gz" in lineage_out and "YPO4_static_AECCAR2.gz" in lineage_out
