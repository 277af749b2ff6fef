"""Realized (and estimated) performance of each version, per window of prediction time.

`evaluate` takes the labelled rows (predictions joined with the labels that came back) and
the unlabelled ones, and gives one `Figure` per version and window: the realized metrics of
`metrics` on the labelled rows and, for classifiers with probabilities, the CBPE estimate of
`cbpe` on every scored row of the window (labelled or not). Windows are ``window_seconds``
long, aligned on multiples of it since the epoch (``window_seconds=None``: one window, all
rows), labelled by their start.

Pure: numpy arrays in, values out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.core.performance import cbpe, metrics

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Rows:
    """Scored rows of one model: version, prediction time, prediction, label (None where none
    came back), class probabilities (one column per class of ``classes``) when kept."""

    version: Sequence[str]
    time: npt.NDArray[np.float64]
    prediction: Sequence[Any]
    label: Sequence[Any]
    proba: npt.NDArray[np.float64] | None = None
    classes: Sequence[Any] = ()


@dataclass(frozen=True)
class Figure:
    """One version's performance in one window."""

    version: str
    start: float | None
    """The window's start (seconds since the epoch); None for all rows."""
    rows: int
    labelled: int
    realized: dict[str, float]
    omitted: dict[str, str] = field(default_factory=dict)
    estimated: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "windowStart": self.start, "rows": self.rows,
                "labelled": self.labelled, "realized": self.realized, "omitted": self.omitted,
                "estimated": self.estimated}


def evaluate(rows: Rows, *, task: str, window_seconds: float | None = None) -> list[Figure]:
    """One figure per version and window (in order of first prediction, then window start).

    ``task`` is ``classification`` or ``regression``."""
    if task not in ("classification", "regression"):
        raise ValueError(f"task {task!r} is not 'classification' or 'regression'")
    n = len(rows.time)
    versions = np.asarray(rows.version, dtype=object)
    labels = np.asarray(rows.label, dtype=object)
    predictions = np.asarray(rows.prediction, dtype=object)
    has_label = np.array([v is not None for v in labels.tolist()], dtype=bool)
    if window_seconds is None:
        starts = np.zeros(n)
    else:
        starts = np.floor(np.asarray(rows.time) / window_seconds) * window_seconds
    order: list[str] = []
    for v in versions.tolist():
        if v not in order:
            order.append(v)
    out = []
    for version in order:
        in_version = versions == version
        for start in sorted(set(starts[in_version].tolist())):
            mask = in_version & (starts == start)
            out.append(_figure(rows, version, None if window_seconds is None else start, mask,
                               mask & has_label, predictions, labels, task=task))
    return out


def _figure(rows: Rows, version: str, start: float | None, mask: Array, labelled: Array,
            predictions: Array, labels: Array, *, task: str) -> Figure:
    y_true, y_pred = labels[labelled], predictions[labelled]
    if task == "regression":
        realized = metrics.regression(y_true.astype(np.float64), y_pred.astype(np.float64))
        return Figure(version, start, int(mask.sum()), int(labelled.sum()), dict(realized),
                      dict(realized.omitted))
    proba = rows.proba
    classes = list(rows.classes) if proba is not None else None
    scored = proba is not None and np.all(np.isfinite(proba[mask]))
    realized = metrics.classification(
        _typed(y_true), _typed(y_pred),
        proba[labelled] if scored and proba is not None else None, classes)
    estimated: dict[str, float] = {}
    if scored and proba is not None:
        estimated = dict(cbpe.estimate(proba[mask], predictions[mask], classes))
    return Figure(version, start, int(mask.sum()), int(labelled.sum()), dict(realized),
                  dict(realized.omitted), estimated)


def _typed(values: Array) -> Array:
    """Labels as numpy types them (ints stay ints, strings strings)."""
    if len(values) == 0:
        return values
    typed = np.asarray(values.tolist())
    return typed if typed.dtype.kind in "biufU" else values
