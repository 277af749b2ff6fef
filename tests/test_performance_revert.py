"""The performance revert's pure parts (issue 20, item 5): blockers, cooldown and cap; the
revert commit's message with the drift path's trailers; the page's evidence; the previous
version's answers aligned with the serving version's. No fakes, no processes."""

from __future__ import annotations

import numpy as np
import pytest

from mlgitops.controller import monitor_performance as mp
from mlgitops.core import layout, policy
from mlgitops.core.manifest import DriftPolicy
from mlgitops.core.performance import policy as perf
from mlgitops.core.performance import revert
from mlgitops.core.performance.spec import PerformancePolicy

pytestmark = pytest.mark.fast

POLICY = PerformancePolicy(metric="accuracy", minimum=0.8, min_rows=50)
RULES = DriftPolicy(cooldown_seconds=600.0, max_reverts=2, revert_period_seconds=3600.0)


def observed(new_right: int, prev_right: int, n: int = 100) -> perf.Observation:
    """Accuracy of ``n`` rows: the new version right on the first ``new_right``, the previous
    one on the first ``prev_right``."""
    y = np.ones(n, dtype=int)
    new = np.where(np.arange(n) < new_right, 1, 0)
    prev = np.where(np.arange(n) < prev_right, 1, 0)
    return perf.observe(POLICY, y=y, new=perf.Outputs(new), previous=perf.Outputs(prev))


def test_a_version_worse_than_its_predecessor_on_the_same_rows_reverts() -> None:
    obs = observed(60, 95)
    d = perf.decide(POLICY, obs)
    assert d.action == "revert"
    assert revert.gated(d, blocked=None, reverts=(), rules=RULES, now=10_000.0) == d
    assert obs.new == pytest.approx(0.60) and obs.previous == pytest.approx(0.95)
    assert obs.p_value is not None and obs.p_value < 1e-6


def test_a_drop_both_versions_share_only_alerts_and_says_why() -> None:
    d = perf.decide(POLICY, observed(60, 61))
    assert d.action == "alert"
    assert "the world changed" in d.reason
    assert "both versions degrade" in (revert.why_not_reverted(d) or "")


@pytest.mark.parametrize(("blocked", "reverts", "says"), [
    ("there is no previous version to return to", (), "no previous version"),
    (None, (9_000.0, 9_500.0), "spec.drift.maxReverts 2"),
    (None, (9_900.0,), "spec.drift.cooldownSeconds"),
])
def test_blockers_cooldown_and_cap_turn_a_revert_into_an_alert(
        blocked: str | None, reverts: tuple[float, ...], says: str) -> None:
    d = revert.gated(perf.decide(POLICY, observed(60, 95)), blocked=blocked, reverts=reverts,
                     rules=RULES, now=10_000.0)
    assert d.action == "alert"
    assert says in d.reason and says in (revert.why_not_reverted(d) or "")


def test_reverts_outside_the_period_and_cooldown_do_not_block() -> None:
    d = perf.decide(POLICY, observed(60, 95))
    assert revert.gated(d, blocked=None, reverts=(1_000.0, 2_000.0), rules=RULES,
                        now=10_000.0).action == "revert"


def test_the_revert_commit_keeps_the_drift_paths_trailers_and_carries_the_numbers() -> None:
    obs = observed(60, 95)
    d = perf.decide(POLICY, obs)
    drift = mp.as_drift_decision(d, obs, history=policy.History(), rules=RULES, now=10_000.0)
    assert drift.verdict is policy.Verdict.REVERT and drift.evidence.rows == 100
    assert drift.history_until_landed.reverts == ()  # counts once it landed, like drift's
    base = policy.revert_plan(drift, name="credit", reverted="a" * 40, digest="sha256:" + "d" * 64,
                              previous="b" * 40, report="reports/credit/x.html",
                              at="2026-12-07T00:00:00Z", report_id="credit-x")
    plan = revert.commit(base, d)
    assert plan.trailers == base.trailers and plan.entry == base.entry
    assert plan.trailers[layout.TRAILER_REVERTS] == "a" * 40
    subject = plan.message.splitlines()[0]
    assert subject.startswith(f"Revert credit to {'b' * 12}: accuracy of {'a' * 12}")
    assert "new=0.6 previous=0.95" in plan.message and "rows=100" in plan.message
    assert "pValue=" in plan.message and "exact McNemar" in plan.message
    assert "Report: reports/credit/x.html" in plan.message


def test_the_page_shows_both_values_the_rows_and_the_p_value() -> None:
    obs = observed(60, 95)
    table = revert.evidence_table(perf.decide(POLICY, obs))
    assert table["servingValue"] == pytest.approx(0.6)
    assert table["previousValue"] == pytest.approx(0.95)
    assert table["labelledRows"] == 100 and table["pValue"] == obs.p_value
    assert table["metric"] == "accuracy" and table["minimum"] == 0.8


def test_the_previous_versions_answers_are_aligned_with_the_serving_ones() -> None:
    scored = mp.Scored(np.asarray([1, 0], dtype=object),
                       np.asarray([[0.1, 0.9], [0.8, 0.2]]), classes=(0, 1))
    out = mp.aligned(scored, [1, 0], np.asarray([0, 1]))
    assert out.prediction.tolist() == [1, 0]
    assert out.proba is not None and out.proba.tolist() == [[0.9, 0.1], [0.2, 0.8]]
    assert mp.aligned(scored, [1, 2], np.asarray([0, 1])).proba is None  # class 2 unknown
    reg = mp.aligned(mp.Scored(np.asarray([1.5, 2.0], dtype=object)), [], np.asarray([1.0]))
    assert reg.prediction.dtype == np.float64 and reg.proba is None


def test_a_versions_labelled_rows_come_with_their_inputs_answers_and_labels() -> None:
    import pandas as pd

    from mlgitops.adapters import prediction_log
    from mlgitops.controller import fakes, performance

    preds, labels = fakes.FakePredictions(), fakes.FakeLabels()
    preds.add("m", pd.DataFrame({
        "id": ["a", "b", "c", "d"], "version": ["v2", "v2", "v2", "v1"],
        "time": [1.0, 2.0, 3.0, 0.5], f"{prediction_log.INPUT}x": [0.1, 0.2, 0.3, 0.4],
        "prediction": [1, 0, 1, 1], prediction_log.proba_column(0): [0.2, 0.7, 0.4, 0.1],
        prediction_log.proba_column(1): [0.8, 0.3, 0.6, 0.9]}))
    assert performance.labelled(preds, labels, "m", "v2") is None  # no label yet
    labels.add("m", ["c", "a", "d", "zz"], [0.0, 1.0, 1, 1])  # labels sent as JSON numbers
    got = performance.labelled(preds, labels, "m", "v2")
    assert got is not None and got.ids == ["a", "c"] and got.task == "classification"
    assert got.inputs.columns.tolist() == ["x"] and got.inputs["x"].tolist() == [0.1, 0.3]
    assert got.y.tolist() == [1, 0] and got.prediction.tolist() == [1, 1]
    assert got.classes == [0, 1] and got.proba is not None
    assert got.proba.tolist() == [[0.2, 0.8], [0.4, 0.6]]
