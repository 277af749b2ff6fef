"""``mlgitops demo --labels`` end to end (real controller, servers, repository, remote and
hook, labels through ``mlgitops.feedback``), then the performance notebook run against what the
demo left behind."""

from __future__ import annotations

from pathlib import Path

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from support.net import free_port

from mlgitops import settings
from mlgitops.adapters import git, prediction_log, prediction_log_labels
from mlgitops.controller import performance
from mlgitops.core import layout
from mlgitops.demo import labels

pytestmark = pytest.mark.process

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "performance.ipynb"


@pytest.mark.timeout(1200)
def test_the_labels_demo_reverts_a_version_the_drift_checks_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = labels.run(workdir=tmp_path, port=free_port())
    v1, v2 = found["v1"], found["v2"]
    # the drift checks passed on v2: every window closed on it is ok
    assert found["driftWindowsOnV2"] and set(found["driftWindowsOnV2"]) == {"ok"}
    # labels came back for both versions' rows (a row its server had not written yet counts
    # as unknown, and joins once written)
    assert all(b["received"] > b.get("unknown", 0) for b in found["feedback"])
    assert found["failedRequests"] == 0
    # reverted for what it gets wrong, with the evidence on the page
    ev = found["evidence"]
    assert ev["metric"] == "accuracy" and ev["previous"] > ev["new"] + 0.1
    assert ev["pValue"] < 1e-6 and ev["evaluation"] > 0.95  # v2's own evaluation looked fine
    assert found["pageServed"] and found["page"].startswith("http")
    # the Performance condition follows the serving handle: Reverted, until v1's warm server
    # (the revert's content) is checked on its own labelled rows, within the policy
    cond = found["performanceCondition"]
    assert (cond["status"], cond["reason"]) in (("True", "Reverted"), ("False", "WithinPolicy"))
    assert cond["reason"] == "Reverted" or "within the policy" in cond["message"]
    remote = Path(found["remote"])
    entry = next(e for e in git.log(remote, layout.BRANCH, [], limit=5)
                 if e.commit == found["revert"])
    assert entry.trailers[layout.TRAILER_REVERTS] == v2
    assert git.tree_id(remote, entry.commit, "models/credit-risk") == git.tree_id(
        remote, v1, "models/credit-risk")
    # realized figures of both versions, and CBPE beside them (blind to the proxy label)
    f1, f2 = found["figures"][v1], found["figures"][v2]
    for figure, sent in ((f1, found["feedback"][0]), (f2, found["feedback"][1])):
        assert figure["labelled"] >= sent["received"] - sent.get("unknown", 0) > 0
    assert f1["realized"]["accuracy"] > f2["realized"]["accuracy"] + 0.1
    assert f2["estimated"]["accuracy"] > f2["realized"]["accuracy"] + 0.2
    assert abs(f1["estimated"]["accuracy"] - f1["realized"]["accuracy"]) < 0.05
    assert set(found["timings"]) >= {"v2 pushed → v2 answers", "labels sent → revert on the remote"}
    with pytest.raises(httpx.HTTPError):  # the demo left nothing running
        httpx.get(found["page"], timeout=2)

    # the notebook plots realized and estimated performance per version over time from what
    # the demo left on disk (the servers flushed their last rows as they stopped)
    state = settings.state_dir(Path(found["repo"]))
    left = {f.version: f for f in performance.measure(
        "credit-risk", prediction_log.Directory(state / performance.STATS),
        prediction_log_labels.Labels(state / performance.LABELS), window_seconds=None).overall}
    monkeypatch.setenv("MLGITOPS_NOTEBOOK_REPO", found["repo"])
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert f"versions: {v1[:12]}, {v2[:12]}" in outputs, outputs[-2000:]
    for v in (v1, v2):
        assert f"{v[:12]} realized accuracy {left[v].realized['accuracy']:.4f}" in outputs
        assert f"{v[:12]} estimated accuracy {left[v].estimated['accuracy']:.4f}" in outputs
    assert (tmp_path / "performance.png").stat().st_size > 0
