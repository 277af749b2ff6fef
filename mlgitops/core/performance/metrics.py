"""Realized performance: scikit-learn's own metrics on labelled rows, never NaN.

`classification` gives accuracy, F1, ROC AUC and log loss; `regression` gives MAE, RMSE and
R². Each value is exactly what the named `sklearn.metrics` function returns on the same rows
(the call is spelled out in each docstring). A metric that is undefined on the rows (one class
only, no probabilities, constant labels, fewer than two rows) is left out of the result, and
`Scores.omitted` says why, one sentence per metric. No result ever holds NaN or infinity.

F1 is *binary* for two classes (the positive class is the second class, the column
``predict_proba[:, 1]`` scores) and *macro* over the classes otherwise.

Pure: sklearn.metrics is imported lazily, inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CLASSIFICATION = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION = ("mae", "rmse", "r2")
_HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "roc_auc": True, "r2": True,
                     "log_loss": False, "mae": False, "rmse": False}


class Scores(dict[str, float]):
    """Metric name -> value (finite floats only); `omitted` says why each missing one is missing."""

    def __init__(self, values: Mapping[str, float] | None = None,
                 omitted: Mapping[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.omitted: dict[str, str] = dict(omitted or {})


def greater_is_better(metric: str) -> bool:
    """True when a larger value of `metric` is better (accuracy, f1, roc_auc, r2)."""
    try:
        return _HIGHER_IS_BETTER[metric]
    except KeyError:
        known = ", ".join(sorted(_HIGHER_IS_BETTER))
        raise ValueError(f"unknown metric {metric!r}: use one of {known}") from None


def f1_average(n_classes: int) -> str:
    """The F1 averaging used for `n_classes` classes: 'binary' for two, 'macro' otherwise."""
    return "binary" if n_classes == 2 else "macro"


def classification(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray,
                   proba: Sequence[Sequence[float]] | np.ndarray | None = None,
                   labels: Sequence[Any] | np.ndarray | None = None) -> Scores:
    """Accuracy, F1, ROC AUC and log loss of predictions `y_pred` against labels `y_true`.

    `labels` are the model's classes in the order of the columns of `proba` (the estimator's
    ``classes_``); without them, the sorted classes seen in `y_true` and `y_pred`.

    - accuracy: ``accuracy_score(y_true, y_pred)``
    - f1, two classes: ``f1_score(y_true, y_pred, labels=labels, pos_label=labels[1],
      average="binary", zero_division=0.0)``; otherwise the same with ``average="macro"``
    - roc_auc, two classes: ``roc_auc_score(y_true == labels[1], proba[:, 1])``; otherwise
      ``roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)``
    - log_loss: ``log_loss(y_true, proba, labels=labels)``
    """
    from sklearn import metrics as skm

    truth = np.asarray(y_true, dtype=object)
    predicted = np.asarray(y_pred, dtype=object)
    if truth.shape != predicted.shape or truth.ndim != 1:
        raise ValueError(f"labels and predictions must be two flat sequences of the same length "
                         f"(got shapes {truth.shape} and {predicted.shape})")
    if truth.size == 0:
        return Scores(omitted={m: "no labelled rows" for m in CLASSIFICATION})
    truth, predicted = _common_dtype(truth), _common_dtype(predicted)
    seen = _sorted_unique(np.concatenate([truth, predicted]))
    classes = list(labels) if labels is not None else seen
    unknown = [c for c in seen if c not in classes]
    values: dict[str, float] = {}
    omitted: dict[str, str] = {}
    values["accuracy"] = float(skm.accuracy_score(truth, predicted))
    f1_classes = classes + unknown
    if len(f1_classes) < 2:
        omitted["f1"] = f"only one class ({f1_classes[0]!r}) among labels and predictions"
    else:
        average = f1_average(len(f1_classes))
        values["f1"] = float(skm.f1_score(
            truth, predicted, labels=f1_classes, average=average, zero_division=0.0,
            **({"pos_label": f1_classes[1]} if average == "binary" else {})))
    reason = _proba_problem(proba, truth.size, classes, unknown)
    if reason is not None:
        omitted["roc_auc"] = omitted["log_loss"] = reason
        return _finite(values, omitted)
    scores = np.asarray(proba, dtype=np.float64)
    present = _sorted_unique(truth)
    if len(classes) == 2:
        if len(present) < 2:
            omitted["roc_auc"] = (f"only one class ({present[0]!r}) among the labels: "
                                  "ROC AUC needs both")
        else:
            values["roc_auc"] = float(skm.roc_auc_score(truth == classes[1], scores[:, 1]))
    else:
        missing = [c for c in classes if c not in present]
        if missing:
            omitted["roc_auc"] = (f"class {missing[0]!r} has no labelled row: one-vs-rest "
                                  "ROC AUC needs every class")
        else:
            values["roc_auc"] = float(skm.roc_auc_score(
                truth, scores, multi_class="ovr", average="macro", labels=classes))
    values["log_loss"] = float(skm.log_loss(truth, scores, labels=classes))
    return _finite(values, omitted)


def regression(y_true: Sequence[float] | np.ndarray,
               y_pred: Sequence[float] | np.ndarray) -> Scores:
    """MAE, RMSE and R² of predictions `y_pred` against labels `y_true`.

    - mae: ``mean_absolute_error(y_true, y_pred)``
    - rmse: ``root_mean_squared_error(y_true, y_pred)``
    - r2: ``r2_score(y_true, y_pred)``, left out for fewer than two rows or constant labels
    """
    from sklearn import metrics as skm

    truth = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(y_pred, dtype=np.float64)
    if truth.shape != predicted.shape or truth.ndim != 1:
        raise ValueError(f"labels and predictions must be two flat sequences of the same length "
                         f"(got shapes {truth.shape} and {predicted.shape})")
    if truth.size == 0:
        return Scores(omitted={m: "no labelled rows" for m in REGRESSION})
    bad = int(np.count_nonzero(~np.isfinite(truth) | ~np.isfinite(predicted)))
    if bad:
        return Scores(omitted={m: f"{bad} labels or predictions are not finite numbers"
                               for m in REGRESSION})
    values = {"mae": float(skm.mean_absolute_error(truth, predicted)),
              "rmse": float(skm.root_mean_squared_error(truth, predicted))}
    omitted: dict[str, str] = {}
    if truth.size < 2:
        omitted["r2"] = "one labelled row: R² needs at least two"
    elif np.all(truth == truth[0]):
        omitted["r2"] = "the labels are constant: R² is undefined"
    else:
        values["r2"] = float(skm.r2_score(truth, predicted))
    return _finite(values, omitted)


def _proba_problem(proba: Sequence[Sequence[float]] | np.ndarray | None, rows: int,
                   classes: list[Any], unknown: list[Any]) -> str | None:
    """Why ROC AUC and log loss cannot be computed from `proba`, or None when they can."""
    if proba is None:
        return "no class probabilities (the model has no predict_proba)"
    if unknown:
        return (f"labels or predictions outside the model's classes ({unknown[0]!r}): "
                "probabilities cannot score them")
    scores = np.asarray(proba, dtype=np.float64)
    if scores.shape != (rows, len(classes)):
        return (f"probabilities have shape {scores.shape}, expected ({rows}, {len(classes)}): "
                "one column per class")
    if len(classes) < 2:
        return f"only one class ({classes[0]!r}): probabilities score nothing"
    if not np.all(np.isfinite(scores)):
        return "some class probabilities are not finite numbers"
    return None


def _common_dtype(values: np.ndarray) -> np.ndarray:
    """Object array of labels as numpy would type them (ints stay ints, strings strings)."""
    typed = np.asarray(values.tolist())
    return typed if typed.dtype.kind in "biufU" else values


def _sorted_unique(values: np.ndarray) -> list[Any]:
    try:
        return sorted(set(values.tolist()))
    except TypeError:
        return sorted(set(values.tolist()), key=repr)


def _finite(values: dict[str, float], omitted: dict[str, str]) -> Scores:
    for name, value in list(values.items()):
        if not math.isfinite(value):
            del values[name]
            omitted[name] = f"{name} is not a finite number on these rows"
    return Scores(values, omitted)
