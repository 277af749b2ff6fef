"""spec.performance: the schema's sentences, MLflow's MetricThreshold rules, and the pure
revert decision with its attribution tests (McNemar, paired bootstrap)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import mean_absolute_error, roc_auc_score

from mlgitops import errors
from mlgitops.core import manifest
from mlgitops.core.performance import gate, policy
from mlgitops.core.performance.spec import MetricThreshold, PerformancePolicy

pytestmark = pytest.mark.fast

DIGEST = "sha256:" + "a" * 64


def doc(performance: Any) -> dict[str, Any]:
    return {"apiVersion": manifest.API_VERSION, "kind": "ModelDeployment",
            "metadata": {"name": "credit"},
            "spec": {"model": {"path": "models/credit", "digest": DIGEST},
                     "performance": performance}}


def parse(performance: Any) -> manifest.ModelDeployment:
    return manifest.parse(doc(performance), source="manifests/credit.yaml")


# the manifest block -----------------------------------------------------------------------


def test_the_block_round_trips_and_defaults_greater_is_better_from_the_metric() -> None:
    dep = parse({"metric": "accuracy", "minimum": 0.8, "maxDrop": 0.05, "minRows": 50,
                 "action": "alert", "gate": [{"metric": "log_loss", "minRelativeChange": 0},
                                             {"metric": "accuracy", "threshold": 0.7}]})
    p = dep.performance
    assert (p.metric, p.minimum, p.max_drop, p.min_rows, p.action) == ("accuracy", 0.8, 0.05, 50,
                                                                        "alert")
    assert p.gate[0] == MetricThreshold("log_loss", min_relative_change=0.0,
                                        greater_is_better=False)
    assert p.gate[1].greater_is_better is True
    assert manifest.parse(dep.to_dict(), source="x") == dep
    assert "performance" not in manifest.parse(doc({}), source="x").to_dict()["spec"]


@pytest.mark.parametrize(("performance", "words"), [
    ({"metric": "acc"}, "'acc' is not a metric mlgitops computes; use one of accuracy"),
    ({"gate": [{"metric": "precision", "threshold": 1}]}, "spec.performance.gate[0].metric"),
    ({"metric": "accuracy", "gate": [{"metric": "mae", "minRelativeChange": 0}]},
     "names classifier metrics (accuracy) and regressor metrics (mae); a model is one"),
    ({"gate": [{"metric": "accuracy"}]}, "give at least one (minRelativeChange: 0 means not"),
    ({"gate": [{"metric": "r2", "threshold": 0}, {"metric": "r2", "threshold": 1}]},
     "r2 is listed twice"),
    ({"minimum": 0.5}, "spec.performance.minimum: is set but spec.performance.metric is not"),
    ({"metric": "accuracy", "minimum": 80}, "80 is outside [0, 1], where accuracy lies"),
    ({"gate": [{"metric": "f1", "minAbsoluteChange": 0}]}, "minAbsoluteChange"),
    ({"gate": [{"metric": "f1", "minRelativeChange": 1.5}]}, "minRelativeChange"),
    ({"action": "rollback"}, "spec.performance.action"),
])
def test_bad_blocks_are_refused_with_a_sentence(performance: Any, words: str) -> None:
    with pytest.raises(errors.ManifestError) as exc:
        parse(performance)
    assert words in str(exc.value)
    assert str(exc.value).startswith("manifests/credit.yaml: field spec.performance")


# the gate: MLflow's MetricThreshold --------------------------------------------------------


def verdict(t: MetricThreshold, cand: float, serving: float | None) -> gate.Check:
    return gate.evaluate([t], {t.metric: cand}, None if serving is None else {t.metric: serving}
                         ).checks[0]


@pytest.mark.parametrize(("t", "cand", "serving", "passed"), [
    (MetricThreshold("accuracy", threshold=0.8), 0.8, 0.9, True),
    (MetricThreshold("accuracy", threshold=0.8), 0.79, 0.5, False),
    (MetricThreshold("log_loss", threshold=0.5, greater_is_better=False), 0.51, None, False),
    (MetricThreshold("accuracy", min_relative_change=0.0), 0.9, 0.9, True),   # not worse
    (MetricThreshold("accuracy", min_relative_change=0.0), 0.8999, 0.9, False),
    (MetricThreshold("accuracy", min_absolute_change=0.05), 0.96, 0.9, True),
    (MetricThreshold("accuracy", min_absolute_change=0.05), 0.949, 0.9, False),
    (MetricThreshold("mae", min_relative_change=0.1, greater_is_better=False), 0.89, 1.0, True),
    (MetricThreshold("mae", min_relative_change=0.1, greater_is_better=False), 0.95, 1.0, False),
    (MetricThreshold("r2", min_relative_change=0.5), -0.4, -1.0, True),  # |baseline|: sign kept
    (MetricThreshold("r2", min_relative_change=0.5), 0.0, 0.0, False),   # 0: strictly better
    (MetricThreshold("accuracy", min_relative_change=0.0), 0.1, None, True),  # no serving version
])
def test_mlflow_metric_threshold_semantics(t: MetricThreshold, cand: float,
                                           serving: float | None, passed: bool) -> None:
    assert verdict(t, cand, serving).passed is passed


def test_a_failing_gate_names_the_metric_both_values_and_what_to_do() -> None:
    v = gate.evaluate([MetricThreshold("accuracy", min_relative_change=0.0)],
                      {"accuracy": 0.71}, {"accuracy": 0.86})
    text = gate.sentence(v, model="credit", data="models/credit/evaluation.parquet")
    assert "accuracy is 0.71 against the serving version's 0.86" in text
    assert "needs not worse" in text and "publish a better model" in text
    missing = gate.evaluate([MetricThreshold("roc_auc", threshold=0.5)], {}, {"roc_auc": 0.9})
    assert "predict_proba" in missing.failures()[0]


# attribution ----------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_tail_on_discordant_rows() -> None:
    rng = np.random.default_rng(1)
    prev = rng.random(500) < 0.85
    new = rng.random(500) < 0.75
    b = int(np.sum(prev & ~new))
    c = int(np.sum(new & ~prev))
    expected = scipy_stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue
    assert policy.mcnemar_p(new, prev) == pytest.approx(expected, rel=1e-12)
    assert policy.mcnemar_p(prev, prev) == 1.0
    assert policy.mcnemar_p(prev, new) > 0.5


def test_paired_bootstrap_finds_a_real_difference_and_not_a_shared_one() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=400)
    good = y + rng.normal(scale=0.5, size=400)
    bad = y + rng.normal(scale=1.0, size=400)
    p = policy.paired_bootstrap_p(mean_absolute_error, y, bad, good, greater_is_better=False,
                                  resamples=100)
    assert p < 0.01
    same = policy.paired_bootstrap_p(mean_absolute_error, y, good, good.copy(),
                                     greater_is_better=False, resamples=100)
    assert same == 1.0  # ties count against the previous version
    labels = (y > 0).astype(int)
    p_auc = policy.paired_bootstrap_p(roc_auc_score, labels, bad, good, greater_is_better=True,
                                      resamples=100)
    assert p_auc < 0.05


# the decision -----------------------------------------------------------------------------

POLICY = PerformancePolicy(metric="accuracy", minimum=0.8, max_drop=0.05, min_rows=100)


@pytest.mark.parametrize(("obs", "action", "words"), [
    (policy.Observation(rows=50, new=0.5, previous=0.9, evaluation=0.9, p_value=0.0), "keep",
     "50 of the 100 labelled rows"),
    (policy.Observation(rows=500, new=0.87, previous=0.9, evaluation=0.9, p_value=0.2), "keep",
     "within the policy"),
    (policy.Observation(rows=500, new=0.84, previous=0.93, evaluation=0.9, p_value=0.001,
                        method="mcnemar"), "revert", "0.06 worse than the version's own"),
    (policy.Observation(rows=500, new=0.7, previous=0.71, evaluation=0.9, p_value=0.4,
                        method="mcnemar"), "alert", "both versions degrade: the world changed"),
    (policy.Observation(rows=500, new=0.7, previous=None, evaluation=None), "alert",
     "nothing to revert to"),
])
def test_decide(obs: policy.Observation, action: str, words: str) -> None:
    d = policy.decide(POLICY, obs)
    assert d.action == action and words in d.reason, d.reason
    assert d.evidence["rows"] == obs.rows and d.evidence["new"] == obs.new


def test_alert_action_never_reverts_and_lower_is_better_metrics_flip() -> None:
    obs = policy.Observation(rows=500, new=0.5, previous=0.95, evaluation=0.9, p_value=0.0)
    from dataclasses import replace
    assert policy.decide(replace(POLICY, action="alert"), obs).action == "alert"
    mae = PerformancePolicy(metric="mae", minimum=2.0, min_rows=10)
    assert policy.decide(mae, policy.Observation(rows=20, new=1.5, previous=1.0,
                                                 evaluation=None, p_value=0.0)).action == "keep"
    assert policy.decide(mae, policy.Observation(rows=20, new=2.5, previous=1.0,
                                                 evaluation=None, p_value=0.0)).action == "revert"


def test_the_light_metric_names_agree_with_the_computation() -> None:
    from mlgitops.core.performance import metrics, names

    assert list(names.METRICS) == [*metrics.CLASSIFICATION, *metrics.REGRESSION]
    assert all(names.greater_is_better(m) == metrics.greater_is_better(m) for m in names.METRICS)


def test_observe_scores_both_versions_with_sklearn_and_attributes_the_drop() -> None:
    from sklearn.metrics import accuracy_score, log_loss

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=600)
    good = np.where(rng.random(600) < 0.9, y, 1 - y)
    bad = np.where(rng.random(600) < 0.7, y, 1 - y)
    pol = PerformancePolicy(metric="accuracy", minimum=0.8, min_rows=100)
    obs = policy.observe(pol, y=y, new=policy.Outputs(bad), previous=policy.Outputs(good),
                         evaluation=0.9)
    assert obs.new == accuracy_score(y, bad) and obs.previous == accuracy_score(y, good)
    assert obs.method == "exact McNemar" and obs.p_value is not None and obs.p_value < 1e-6
    assert policy.decide(pol, obs).action == "revert"
    # the same drop in both versions (the world changed): alert, never revert
    shared = policy.observe(pol, y=y, new=policy.Outputs(bad), previous=policy.Outputs(bad.copy()))
    assert policy.decide(pol, shared).action == "alert"

    def proba(pred: np.ndarray) -> np.ndarray:
        p1 = np.where(pred == 1, 0.8, 0.2)
        return np.column_stack([1 - p1, p1])

    ll = PerformancePolicy(metric="log_loss", minimum=0.3, min_rows=100)
    obs = policy.observe(ll, y=y, new=policy.Outputs(bad, proba(bad)),
                         previous=policy.Outputs(good, proba(good)), classes=[0, 1],
                         resamples=60)
    assert obs.new == log_loss(y, proba(bad), labels=[0, 1])
    assert obs.method.startswith("paired bootstrap") and obs.p_value is not None
    assert obs.p_value < 0.05 and policy.decide(ll, obs).action == "revert"
