"""The walkthrough notebook executes end to end (real controller, drift and revert)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.process

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "drift-walkthrough.ipynb"


@pytest.mark.timeout(1200)  # a real loop, then the MLflow cell waits for the sinks
def test_drift_walkthrough_notebook_runs(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    )
    assert "v1's content serves again at" in outputs
    assert "exists: True" in outputs
    assert "Mlgitops-Reverts:" in outputs
    assert "the decision page names the reverted commit: True" in outputs
    assert "production is v1's content: True" in outputs
    assert "realized accuracy per version:" in outputs and "'unknown': 0" in outputs
