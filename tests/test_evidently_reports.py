"""Evidently reports: files written, workspace project listing the run, errors translated."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlgitops.adapters import evidently_reports
from mlgitops.errors import ReportError

pytestmark = pytest.mark.fast

os.environ.setdefault("DO_NOT_TRACK", "true")


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"age": rng.normal(40, 10, 400), "plan": rng.choice(["basic", "pro"], 400)})
    current = pd.DataFrame({"age": rng.normal(48, 10, 300), "plan": rng.choice(["basic", "pro"], 300)})
    return reference, current


def test_report_files_and_workspace_run(tmp_path: Path) -> None:
    reference, current = frames()
    paths = evidently_reports.write_report(
        reference, current, out_dir=tmp_path / "reports", title="credit-risk abc123", tags={"model": "credit-risk"}
    )
    assert paths.html.name == "credit-risk-abc123.html"
    assert "<html" in paths.html.read_text(encoding="utf-8")[:2000].lower()
    summary = json.loads(paths.summary.read_text(encoding="utf-8"))
    assert any(m["config"]["type"].endswith("ValueDrift") for m in summary["metrics"])

    workspace = tmp_path / "workspace"
    assert evidently_reports.list_runs(workspace, project="credit-risk") == []
    first = evidently_reports.add_to_workspace(workspace, project="credit-risk", snapshot_path=paths.snapshot)
    second = evidently_reports.add_to_workspace(workspace, project="credit-risk", snapshot_path=paths.snapshot)
    assert sorted(evidently_reports.list_runs(workspace, project="credit-risk")) == sorted([first, second])


def test_verdicts_come_from_evidently_with_mlgitops_method_names() -> None:
    reference, current = frames()
    report = evidently_reports.evidently_verdicts(reference, current)
    assert report.column("age").method == "ks" and report.column("age").drifted
    assert report.column("plan").method == "z"
    assert report.share == 0.5 and report.drifted  # 1 of 2 columns, share threshold 0.5


def test_evidently_failures_become_report_errors(tmp_path: Path) -> None:
    reference, _ = frames()
    with pytest.raises(ReportError, match="the drift verdict is unaffected"):
        evidently_reports.evidently_verdicts(reference, pd.DataFrame())
    with pytest.raises(ReportError):
        evidently_reports.add_to_workspace(tmp_path / "ws", project="p", snapshot_path=tmp_path / "missing.json")
