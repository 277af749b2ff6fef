"""Realized performance as Evidently snapshots: one ClassificationPreset or RegressionPreset
snapshot of a version's labelled rows, in the model's project of the Evidently workspace.

The rows are the prediction log joined with the labels (`controller.performance`): columns
``target``, ``prediction`` and, for classifiers with probabilities, one column per class.
Tagged ``mlgitops:performance``, ``model=…``, ``version=<12 hex>``. Evidently computes its own
figures; the numbers mlgitops acts on are scikit-learn's (`core.performance.metrics`).
Evidently errors become `ReportError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlgitops.adapters import evidently_reports
from mlgitops.errors import ReportError

PERFORMANCE_TAG = "mlgitops:performance"


def add_performance(workspace_dir: Path, *, model: str, version: str, task: str,
                    rows: pd.DataFrame, classes: Sequence[Any] = (), at: float,
                    metadata: Mapping[str, str] | None = None) -> str:
    """Store one performance snapshot of ``rows``; its run id in the workspace."""
    if rows.empty:
        raise ReportError(f"no labelled row of {model} at {version[:12]}: no performance "
                          "snapshot")
    with evidently_reports.translated(f"Adding the performance of {model} to the Evidently "
                                      f"workspace {workspace_dir}"):
        from evidently import (
            BinaryClassification,
            DataDefinition,
            Dataset,
            MulticlassClassification,
            Regression,
            Report,
        )
        from evidently.presets import ClassificationPreset, RegressionPreset
        from evidently.ui.workspace import Workspace

        frame = rows.reset_index(drop=True).copy()
        if task == "regression":
            definition = DataDefinition(regression=[Regression(target="target",
                                                               prediction="prediction")])
            preset: Any = RegressionPreset()
        else:
            names = [f"proba_{i}" for i in range(len(classes))]
            frame = frame.rename(columns=dict(zip(frame.columns[2:], names, strict=False)))
            if len(classes) == 2:
                spec: Any = BinaryClassification(target="target", prediction_labels="prediction",
                                                 prediction_probas=names[1],
                                                 pos_label=classes[1])
            elif len(classes) > 2:
                frame = frame.rename(columns=dict(zip(names, map(str, classes), strict=True)))
                spec = MulticlassClassification(target="target", prediction_labels="prediction",
                                                prediction_probas=[str(c) for c in classes])
            else:
                spec = BinaryClassification(target="target", prediction_labels="prediction")
            definition = DataDefinition(classification=[spec])
            preset = ClassificationPreset()
        snapshot = Report([preset]).run(
            Dataset.from_pandas(frame, data_definition=definition), None,
            name=f"{model} {version[:12]} performance",
            tags=[PERFORMANCE_TAG, f"model={model}", f"version={version[:12]}"],
            metadata={"model": model, "version": version, **(metadata or {})},
            timestamp=dt.datetime.fromtimestamp(at, dt.UTC).replace(tzinfo=None))
        with evidently_reports.workspace_lock(workspace_dir):
            workspace = Workspace(str(workspace_dir))
            found = [p for p in workspace.search_project(model) if p.name == model]
            project = found[0] if found else workspace.create_project(
                model, description=f"mlgitops drift windows, reports and reverts of model {model}")
            return str(workspace.add_run(project.id, snapshot).id)
