"""Realized performance of each version: the prediction log joined with the labels.

The join is by row id (`server.predictions.row_ids`): a prediction with a label is a
labelled row of its version; a label with no kept prediction counts as unknown (it is kept:
its prediction may be written later by a server that has not flushed yet). Sources are
ports, so the same join runs on both runtimes: a `PredictionSource` (the embedded runtime's
files, `adapters.prediction_log.Directory`; on Kubernetes a route on each pod, like the live
statistics) and a `LabelSource` (`adapters.prediction_log_labels.Labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlgitops.adapters import prediction_log
from mlgitops.controller import ports
from mlgitops.core.performance import realized

#: Where the embedded runtime keeps them, under its state directory.
STATS = "stats"
LABELS = "labels"
#: Default window of the per-window figures: one hour of prediction time.
WINDOW_SECONDS = 3600.0


PredictionSource = ports.PredictionSource
LabelSource = ports.LabelSource


@dataclass(frozen=True)
class Performance:
    """A model's figures: all rows per version, and per window."""

    name: str
    task: str
    overall: list[realized.Figure]
    windows: list[realized.Figure]
    labels: int
    """Labels kept for the model (one per id)."""
    unmatched: int
    """Labels whose id matches no kept prediction."""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "task": self.task, "labels": self.labels,
                "unmatched": self.unmatched,
                "versions": [f.to_dict() for f in self.overall],
                "windows": [f.to_dict() for f in self.windows]}


def task_of(predictions: pd.DataFrame) -> str:
    """``classification`` when the log keeps class probabilities or the predictions are not
    floating point numbers; ``regression`` otherwise."""
    if prediction_log.classes_of(predictions):
        return "classification"
    column = predictions.get("prediction")
    if column is not None and pd.api.types.is_float_dtype(column.dtype):
        return "regression"
    return "classification"


def join(predictions: pd.DataFrame, labels: pd.DataFrame) -> realized.Rows:
    """The scored rows with their label (None where none came back)."""
    by_id = dict(zip(labels["id"].tolist(), labels["label"].tolist(), strict=True))
    classes = prediction_log.classes_of(predictions)
    proba = None
    if classes:
        proba = predictions[[prediction_log.proba_column(c) for c in classes]].to_numpy(
            dtype=np.float64)
    preds = predictions["prediction"].tolist() if "prediction" in predictions else []
    return realized.Rows(
        version=predictions["version"].astype(str).tolist(),
        time=predictions["time"].to_numpy(dtype=np.float64),
        prediction=preds,
        label=[_like(by_id.get(i), p) for i, p in zip(predictions["id"].tolist(), preds,
                                                       strict=True)],
        proba=proba,
        classes=classes,
    )


def measure(name: str, source: PredictionSource, labels: LabelSource, *,
            window_seconds: float | None = WINDOW_SECONDS) -> Performance:
    """Model ``name``'s realized (and estimated) performance from what is kept now."""
    predictions = source.read(name)
    kept = labels.read(name)
    known = set(predictions["id"].tolist()) if len(predictions) else set()
    unmatched = int((~kept["id"].isin(known)).sum()) if len(kept) else 0
    task = task_of(predictions)
    if len(predictions) == 0 or "prediction" not in predictions:
        return Performance(name, task, [], [], len(kept), unmatched)
    rows = join(predictions, kept)
    return Performance(
        name, task,
        overall=realized.evaluate(rows, task=task, window_seconds=None),
        windows=realized.evaluate(rows, task=task, window_seconds=window_seconds)
        if window_seconds else [],
        labels=len(kept), unmatched=unmatched)


def like(label: Any, prediction: Any) -> Any:
    """``label`` in the type of ``prediction`` (see `_like`)."""
    return _like(label, prediction)


def _like(label: Any, prediction: Any) -> Any:
    """``label`` in the type of the predictions (1.0 for a class 1 is 1; a class "1" of
    string predictions is "1"), so that labels sent as JSON compare with predictions."""
    if label is None:
        return None
    try:
        if isinstance(prediction, bool | np.bool_):
            return bool(label)
        if isinstance(prediction, int | np.integer) and float(label).is_integer():
            return int(label)
        if isinstance(prediction, float | np.floating):
            return float(label)
    except (TypeError, ValueError):
        return label
    if isinstance(prediction, str):
        return str(label)
    return label


def labelled_frame(source: PredictionSource, labels: LabelSource, name: str,
                   version: str) -> tuple[str, pd.DataFrame, list[Any]] | None:
    """Version ``version``'s labelled rows as ``target``, ``prediction`` and one probability
    column per class (what an Evidently performance snapshot reads), with the task and the
    classes; None when none of its kept rows has a label."""
    predictions = source.read(name)
    if len(predictions) == 0 or "prediction" not in predictions:
        return None
    predictions = predictions[predictions["version"] == version]
    rows = join(predictions, labels.read(name))
    has = np.array([v is not None for v in rows.label], dtype=bool)
    if not has.any():
        return None
    task = task_of(predictions)
    frame = pd.DataFrame({"target": np.asarray(rows.label, dtype=object)[has],
                          "prediction": np.asarray(rows.prediction, dtype=object)[has]})
    frame = frame.astype(np.float64) if task == "regression" else frame.infer_objects()
    if rows.proba is not None:
        for j, _ in enumerate(rows.classes):
            frame[f"proba_{j}"] = rows.proba[has, j]
    return task, frame, list(rows.classes)


@dataclass(frozen=True)
class Labelled:
    """One version's labelled rows from the prediction log: what it was asked (``inputs``, the
    log's ``input.<column>`` columns under their own names), what it answered, the labels."""

    ids: list[str]
    inputs: pd.DataFrame
    y: np.ndarray
    prediction: np.ndarray
    proba: np.ndarray | None
    classes: list[Any]
    task: str


def labelled(source: PredictionSource, labels: LabelSource, name: str,
             version: str) -> Labelled | None:
    """Version ``version``'s kept rows of ``name`` that have a label (None: none has)."""
    predictions = source.read(name)
    if len(predictions) == 0 or "prediction" not in predictions:
        return None
    predictions = predictions[predictions["version"] == version].reset_index(drop=True)
    if len(predictions) == 0:
        return None
    rows = join(predictions, labels.read(name))
    has = np.array([v is not None for v in rows.label], dtype=bool)
    if not has.any():
        return None
    task = task_of(predictions)
    kept = predictions[has].reset_index(drop=True)
    columns = [c for c in kept.columns if str(c).startswith(prediction_log.INPUT)]
    inputs = kept[columns].rename(columns=lambda c: str(c)[len(prediction_log.INPUT):])
    y = np.asarray(rows.label, dtype=object)[has]
    pred = np.asarray(rows.prediction, dtype=object)[has]
    if task == "regression":
        y, pred = y.astype(np.float64), pred.astype(np.float64)
    return Labelled(ids=[str(i) for i in kept["id"].tolist()], inputs=inputs, y=y,
                    prediction=pred, proba=None if rows.proba is None else rows.proba[has],
                    classes=list(rows.classes), task=task)
