"""The EIS tour notebook runs from top to bottom on the real sample files."""

from __future__ import annotations

from conftest import ROOT, shared


def test_eis_tour_notebook_executes_without_errors():
    import nbformat
    from nbclient import NotebookClient

    shared("eis", "impedancepy_exampleData.csv")  # skip when the sample data are absent
    path = ROOT / "notebooks" / "eis_tour.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    # the lineage cell printed a tree that ends at the raw file
    lineage_out = "".join(o.get("text", "") for c in nb.cells if "render_tree" in c.source for o in c.outputs)
    assert "impedancepy_exampleData.csv" in lineage_out and "object" in lineage_out
