"""Realized performance in MLflow (metrics on the version's decision runs) and in the Evidently
workspace (a classification snapshot): real MLflow (SQLite), a real Evidently workspace, the
prediction log and label store on disk, a real scikit-learn estimator's predictions."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from mlgitops.adapters import evidently_performance, mlflow_tracking, prediction_log
from mlgitops.adapters import prediction_log_labels as labels_mod
from mlgitops.controller import feedback, reports, tracking
from mlgitops.core import decisions

pytestmark = pytest.mark.process

NAME = "credit"
V1 = "a" * 40


def _state(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + rng.normal(scale=0.8, size=400) > 0).astype(int)
    model = LogisticRegression().fit(x[:200], y[:200])
    live, truth = x[200:], y[200:]
    pred, proba = model.predict(live), model.predict_proba(live)
    state = tmp_path / "state"
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "version": V1,
                          "time": time.time() - 60.0,
                          **{f"{prediction_log.INPUT}x{j}": live[:, j] for j in range(3)},
                          "prediction": pred, prediction_log.proba_column(0): proba[:, 0],
                          prediction_log.proba_column(1): proba[:, 1]})
    prediction_log.Writer(prediction_log.directory(state / "stats" / NAME / V1), worker_id="w0",
                          max_rows=1000, max_age_seconds=3600).append(frame)
    labels_mod.Labels(state / feedback.LABELS).add(NAME, [f"r{i}" for i in range(150)],
                                                    truth[:150].tolist())
    return state, truth[:150], pred[:150], proba[:150]


def test_mlflow_runs_of_the_version_carry_its_realized_performance(tmp_path: Path) -> None:
    state, truth, pred, proba = _state(tmp_path)
    tracker = mlflow_tracking.Tracker(mlflow_tracking.default_uri(state),
                                      artifact_root=tracking.artifact_root(state))
    at = time.time()
    decision = decisions.Decision(
        id=decisions.make_id(model=NAME, kind=decisions.Kind.PASS, at=at, version=V1),
        model=NAME, kind=decisions.Kind.PASS, at=at, version=V1, previous_version=None,
        verdict="no drift", window=1, rows=200)
    tracking.record_mlflow(state, tmp_path, tracker, decision)
    (run,) = tracker.runs(NAME)
    m = run["metrics"]
    assert m["performance.labelled"] == 150
    assert m["performance.realized.accuracy"] == skm.accuracy_score(truth, pred)
    assert m["performance.realized.f1"] == skm.f1_score(truth, pred)
    assert m["performance.realized.roc_auc"] == skm.roc_auc_score(truth, proba[:, 1])
    assert m["performance.realized.log_loss"] == skm.log_loss(truth, proba)
    assert 0.5 < m["performance.estimated.accuracy"] <= 1.0


def test_an_evidently_classification_snapshot_of_the_labelled_rows(tmp_path: Path) -> None:
    state, truth, pred, _ = _state(tmp_path)
    task, rows, classes = feedback.version_rows(state, NAME, V1) or ("", pd.DataFrame(), [])
    assert task == "classification" and len(rows) == 150 and classes == [0, 1]
    workspace = reports.workspace_dir(state)
    run_id = evidently_performance.add_performance(workspace, model=NAME, version=V1, task=task,
                                                   rows=rows, classes=classes, at=time.time())
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))
    (project,) = [p for p in ws.search_project(NAME) if p.name == NAME]
    stored = ws.get_run(project.id, run_id)
    assert evidently_performance.PERFORMANCE_TAG in stored.tags
    assert stored.metadata["version"] == V1
    accuracy = [r["value"] for r in stored.dict()["metric_results"].values()
                if r["metric_value_location"]["metric"]["params"].get("type", "").endswith(
                    "Accuracy")]
    # Evidently's own accuracy on the same rows agrees with sklearn's
    assert accuracy and abs(float(accuracy[0]) - skm.accuracy_score(truth, pred)) < 1e-12
