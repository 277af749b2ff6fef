"""CBPE (expected accuracy and ROC AUC from probabilities) and the per-version, per-window
figures: pure core, real scikit-learn estimators on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from mlgitops.core.performance import cbpe, realized

pytestmark = pytest.mark.fast

#: The stated tolerance: on 5000 rows of calibrated probabilities, CBPE's expected accuracy
#: and ROC AUC are within this of the realized figures (about 4 standard errors).
TOLERANCE = 0.03


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    p = 1.0 / (1.0 + np.exp(-(x @ np.array([1.2, -0.8, 0.5, 0.0]))))
    return x, (rng.random(n) < p).astype(int)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cbpe_is_within_tolerance_of_realized_on_calibrated_data(seed: int) -> None:
    x, y = _calibrated(20_000, 0)
    model = LogisticRegression().fit(x, y)  # a logistic model of logistic data: calibrated
    x_live, y_live = _calibrated(5_000, seed)
    proba, pred = model.predict_proba(x_live), model.predict(x_live)
    est = cbpe.estimate(proba, pred, list(model.classes_))
    assert abs(est["accuracy"] - skm.accuracy_score(y_live, pred)) <= TOLERANCE
    assert abs(est["roc_auc"] - skm.roc_auc_score(y_live, proba[:, 1])) <= TOLERANCE


def test_cbpe_is_wrong_when_probabilities_are_overconfident() -> None:
    x, y = _calibrated(20_000, 0)
    model = LogisticRegression().fit(x, y)
    x_live, y_live = _calibrated(5_000, 4)
    p = model.predict_proba(x_live)[:, 1]
    sharp = np.clip((p - 0.5) * 4 + 0.5, 0.0, 1.0)  # same ranking, overconfident
    est = cbpe.estimate(np.c_[1 - sharp, sharp], model.predict(x_live), [0, 1])
    assert est["accuracy"] - skm.accuracy_score(y_live, model.predict(x_live)) > 2 * TOLERANCE
    assert "calibrated" in cbpe.CAVEAT


def test_cbpe_multiclass_and_degenerate() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    est = cbpe.estimate(proba)
    assert est["accuracy"] == pytest.approx((0.7 + 0.8 + 0.6) / 3)
    assert 0.5 < est["roc_auc"] <= 1.0
    assert cbpe.estimate(np.empty((0, 2))).omitted["accuracy"] == "no scored rows with probabilities"
    sure = cbpe.estimate(np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert "roc_auc" not in sure and "no positive or no negative" in sure.omitted["roc_auc"]


def test_figures_per_version_and_window_equal_sklearn_on_their_rows() -> None:
    x, y = _calibrated(4_000, 5)
    model = LogisticRegression().fit(x[:2000], y[:2000])
    proba, pred = model.predict_proba(x[2000:]), model.predict(x[2000:])
    truth = y[2000:]
    version = np.where(np.arange(2000) < 1200, "v1", "v2")
    time = 3600.0 * 10 + np.arange(2000) * 4.0  # 8000 s: windows of 3600 s split both
    label = [int(t) if i % 3 else None for i, t in enumerate(truth)]  # a third unlabelled
    rows = realized.Rows(version=version.tolist(), time=time, prediction=pred.tolist(),
                         label=label, proba=proba, classes=[0, 1])
    figures = realized.evaluate(rows, task="classification", window_seconds=3600.0)
    assert [(f.version, f.start) for f in figures] == [
        ("v1", 36000.0), ("v1", 39600.0), ("v2", 39600.0), ("v2", 43200.0)]
    for f in figures:
        window = np.floor(time / 3600.0) * 3600.0 == f.start
        mask = (version == f.version) & window
        lab = mask & (np.arange(2000) % 3 != 0)
        assert (f.rows, f.labelled) == (mask.sum(), lab.sum())
        assert f.realized == {"accuracy": skm.accuracy_score(truth[lab], pred[lab]),
                              "f1": skm.f1_score(truth[lab], pred[lab]),
                              "roc_auc": skm.roc_auc_score(truth[lab], proba[lab, 1]),
                              "log_loss": skm.log_loss(truth[lab], proba[lab])}
        assert f.estimated == dict(cbpe.estimate(proba[mask], pred[mask], [0, 1]))
    whole = realized.evaluate(rows, task="regression", window_seconds=None)
    assert [f.version for f in whole] == ["v1", "v2"] and set(whole[0].realized) == {
        "mae", "rmse", "r2"}
