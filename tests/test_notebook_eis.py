"""The notebooks are committed executed (outputs and plots), and the EIS tour runs top to bottom on samples/."""

from __future__ import annotations

from conftest import ROOT, sample


def test_eis_tour_notebook_executes_without_errors():
    import nbformat
    from nbclient import NotebookClient

    sample("eis", "impedancepy_exampleData.csv")  # fails when the sample is missing
    path = ROOT / "notebooks" / "eis_tour.ipynb"
    committed = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    assert path.read_bytes() == committed  # executed in memory: the committed, executed file is left alone
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    # the lineage cell printed a tree that ends at the raw file
    lineage_out = "".join(o.get("text", "") for c in nb.cells if "render_tree" in c.source for o in c.outputs)
    assert "impedancepy_exampleData.csv" in lineage_out and "object" in lineage_out


def test_committed_notebooks_carry_their_outputs_and_plots():
    import nbformat

    for name, needs_image in (("quickstart.ipynb", False), ("eis_tour.ipynb", True)):
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.execution_count is not None for c in code), f"{name}: not executed before commit"
        outputs = [o for c in code for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert sum(1 for c in code if c.outputs) >= len(code) // 2, f"{name}: outputs were stripped"
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(images) >= (2 if needs_image else 0), f"{name}: the plots are missing"
