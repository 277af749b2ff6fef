"""Realized performance metrics: exactly sklearn.metrics on the same rows, never NaN (pure core)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlgitops.core.performance import metrics

pytestmark = pytest.mark.fast


def _fitted(n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[object]]:
    x, y = make_classification(n_samples=600, n_features=6, n_informative=4,
                               n_classes=n_classes, random_state=seed)
    model = LogisticRegression(max_iter=500).fit(x[:300], y[:300])
    return y[300:], model.predict(x[300:]), model.predict_proba(x[300:]), list(model.classes_)


def test_binary_equals_sklearn_exactly() -> None:
    y, pred, proba, classes = _fitted(2, 0)
    got = metrics.classification(y, pred, proba, classes)
    assert got == {
        "accuracy": skm.accuracy_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, proba[:, 1]),
        "log_loss": skm.log_loss(y, proba),
    }
    assert got.omitted == {}


def test_multiclass_equals_sklearn_exactly() -> None:
    y, pred, proba, classes = _fitted(3, 1)
    got = metrics.classification(y, pred, proba, classes)
    assert got == {
        "accuracy": skm.accuracy_score(y, pred),
        "f1": skm.f1_score(y, pred, average="macro"),
        "roc_auc": skm.roc_auc_score(y, proba, multi_class="ovr"),
        "log_loss": skm.log_loss(y, proba),
    }


def test_string_classes_use_the_second_class_as_positive() -> None:
    y, pred, proba, _ = _fitted(2, 2)
    names = np.array(["no", "yes"])
    got = metrics.classification(names[y], names[pred], proba, ["no", "yes"])
    assert got["f1"] == skm.f1_score(names[y], names[pred], pos_label="yes")
    assert got["roc_auc"] == skm.roc_auc_score(y, proba[:, 1])
    assert got["log_loss"] == skm.log_loss(names[y], proba, labels=["no", "yes"])


def test_one_class_only_leaves_roc_auc_out_with_the_reason() -> None:
    y, pred, proba, classes = _fitted(2, 3)
    ones = y == 1
    got = metrics.classification(y[ones], pred[ones], proba[ones], classes)
    assert "roc_auc" not in got
    assert "only one class" in got.omitted["roc_auc"]
    assert got["log_loss"] == skm.log_loss(y[ones], proba[ones], labels=classes)
    assert got["accuracy"] == skm.accuracy_score(y[ones], pred[ones])
    assert all(math.isfinite(v) for v in got.values())


def test_multiclass_missing_class_and_no_probabilities() -> None:
    y, pred, proba, classes = _fitted(3, 4)
    keep = y != 2
    got = metrics.classification(y[keep], pred[keep], proba[keep], classes)
    assert "has no labelled row" in got.omitted["roc_auc"] and "log_loss" in got
    bare = metrics.classification(y, pred)
    assert set(bare) == {"accuracy", "f1"}
    assert "predict_proba" in bare.omitted["log_loss"]


def test_unknown_label_and_empty_rows() -> None:
    got = metrics.classification([0, 1, 7], [0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], [0, 1])
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert "outside the model's classes" in got.omitted["roc_auc"]
    empty = metrics.classification([], [])
    assert dict(empty) == {} and set(empty.omitted) == set(metrics.CLASSIFICATION)
    with pytest.raises(ValueError, match="same length"):
        metrics.classification([0, 1], [0])


def test_regression_equals_sklearn_exactly() -> None:
    x, y = make_regression(n_samples=400, n_features=5, noise=10.0, random_state=5)
    pred = LinearRegression().fit(x[:200], y[:200]).predict(x[200:])
    got = metrics.regression(y[200:], pred)
    assert got == {"mae": skm.mean_absolute_error(y[200:], pred),
                   "rmse": skm.root_mean_squared_error(y[200:], pred),
                   "r2": skm.r2_score(y[200:], pred)}


def test_regression_degenerate_cases() -> None:
    one = metrics.regression([1.0], [2.0])
    assert one == {"mae": 1.0, "rmse": 1.0} and "two" in one.omitted["r2"]
    constant = metrics.regression([3.0, 3.0, 3.0], [3.0, 2.0, 4.0])
    assert "r2" not in constant and "constant" in constant.omitted["r2"]
    nan = metrics.regression([1.0, float("nan")], [1.0, 2.0])
    assert dict(nan) == {} and "not finite" in nan.omitted["mae"]


def test_greater_is_better() -> None:
    assert [metrics.greater_is_better(m) for m in metrics.CLASSIFICATION] == [True, True, True, False]
    assert [metrics.greater_is_better(m) for m in metrics.REGRESSION] == [False, False, True]
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        metrics.greater_is_better("auc")
