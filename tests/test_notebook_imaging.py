"""The imaging tour notebook is committed executed and runs top to bottom on samples/imaging.

The notebook asserts its own science as it goes (MRC voxel size = mrcfile's, a tile read
touches under a tenth of the object, the ensemble beats Otsu's threshold on the held-out
ISBI half, entropy is higher on wrong pixels, EA and ER beat a plain threshold on the
generated movie, the lineage reaches the raw micrograph): an assertion that fails is an
error output, which the execution test reports.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, sample

NOTEBOOK = ROOT / "notebooks" / "imaging_tour.ipynb"


def _outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _png_count(nb) -> int:
    return sum(1 for o in _outputs(nb) if "image/png" in o.get("data", {}))


@pytest.mark.slow  # ~2-3 min on a busy 2-core machine: four small ensembles are trained
def test_imaging_tour_executes_and_traces_a_prediction_map_to_the_raw_micrograph():
    pytest.importorskip("torch")
    import nbformat
    from nbclient import NotebookClient

    for name in ("isbi2012_train_image_0.png", "isbi2012_train_label_0.png", "EMD-3197.map"):
        sample("imaging", name)  # fails when a sample is missing
    committed = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=900,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    assert NOTEBOOK.read_bytes() == committed  # executed in memory: the committed file is left alone
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, [(e.ename, e.evalue) for e in errors]
    assert _png_count(nb) >= 4, "uncertainty maps, reliability, risk-coverage and phase-fraction plots are shown"
    lineage_out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" and "render_tree" in c.source
                          for o in c.outputs)
    assert "isbi_right.png" in lineage_out and "used object" in lineage_out
    assert "train unet_ensemble" in lineage_out and "used snapshot" in lineage_out
    assert "raw bytes of the right half reached: True" in lineage_out


def test_committed_imaging_tour_carries_its_outputs_and_plots():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not executed before commit"
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    assert sum(1 for c in code if c.outputs) >= len(code) // 2, "outputs were stripped"
    assert _png_count(nb) >= 4, "the plots are missing"
    texts = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in _outputs(nb))
    assert "EA U-net ensemble" in texts and "otsu-threshold" in texts and "mrcfile says 11.400" in texts
    # no machine-specific folder of the author in the outputs (temporary lake, repository checkout)
    assert str(ROOT) not in texts and "/tmp/" not in texts
