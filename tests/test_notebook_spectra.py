"""The spectra tour notebook is committed executed and runs top to bottom on samples/spectra.

The notebook asserts its own science as it goes (normalisation = xraylarch's, the fused
EELS model beats each edge, the emitter statistics match the planted and published
ensembles, the lineage reaches the generator and the model's snapshot): an assertion
that fails is an error output, which the execution test reports.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, sample

NOTEBOOK = ROOT / "notebooks" / "spectra_tour.ipynb"


def _outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _png_count(nb) -> int:
    return sum(1 for o in _outputs(nb) if "image/png" in o.get("data", {}))


@pytest.mark.slow
def test_spectra_tour_executes_and_traces_a_normalised_spectrum_to_the_raw_file():
    import nbformat
    from nbclient import NotebookClient

    for name in ("ni_metal_rt.xdi", "cu_metal_rt.xdi", "NMC_TM+O_EELS_Spectrum_Image.dm3"):
        sample("spectra", name)  # fails when a sample is missing
    committed = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=600,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    assert NOTEBOOK.read_bytes() == committed  # executed in memory: the committed file is left alone
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, [(e.ename, e.evalue) for e in errors]
    assert _png_count(nb) >= 3, "normalisation, shift-robustness and peak-fit plots are shown"
    lineage_out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" and "render_tree" in c.source
                          for o in c.outputs)
    assert "ni_metal_rt.xdi" in lineage_out and "used object" in lineage_out
    assert "generate matlake-spectra-generator" in lineage_out and "used snapshot" in lineage_out


def test_committed_spectra_tour_carries_its_outputs_and_plots():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not executed before commit"
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    assert sum(1 for c in code if c.outputs) >= len(code) // 2, "outputs were stripped"
    assert _png_count(nb) >= 3, "the plots are missing"
    # no machine-specific folder of the author in the outputs (temporary lake, repository checkout)
    texts = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in _outputs(nb))
    assert str(ROOT) not in texts and "/tmp/" not in texts
