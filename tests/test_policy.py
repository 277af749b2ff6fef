"""The drift policy: decide() on windows, table-driven, no fakes (pure core)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mlgitops.core import drift, layout, policy, stats
from mlgitops.core.manifest import DriftPolicy
from mlgitops.core.policy import Evidence, History, Verdict

RULES = DriftPolicy(window_rows=200, min_rows=100, dataset_share=0.5, consecutive_windows=2,
                    cooldown_seconds=60, max_reverts=2, revert_period_seconds=3600)

# windows: the new version's fault (live fits the previous baseline), input drift (fits neither)
NEW_VERSION_FAULT = Evidence(rows=200, share=0.8, drifted_columns=("f0", "f1", "f2", "f3"),
                             sample_rows=400, sample_share_current=0.8, sample_share_previous=0.0)
INPUT_DRIFT = Evidence(rows=200, share=1.0, drifted_columns=("f0", "f1", "f2", "f3", "f4"),
                       sample_rows=400, sample_share_current=1.0, sample_share_previous=1.0)
CALM = Evidence(rows=200, share=0.2, drifted_columns=("f3",), sample_rows=400,
                sample_share_current=0.2, sample_share_previous=0.2)
PREDICTIONS_ONLY = Evidence(rows=200, share=0.2, prediction_method="jensenshannon",
                            prediction_score=0.31, prediction_threshold=0.1, prediction_drifted=True)


def run(windows: list[Evidence], rules: DriftPolicy = RULES, *, start: float = 1000.0,
        step: float = 1.0, history: History | None = None) -> list[policy.Decision]:
    out = []
    h = history or History()
    for i, ev in enumerate(windows):
        d = policy.decide(ev, h, rules, now=start + i * step)
        h = d.history
        out.append(d)
    return out


def verdicts(decisions: list[policy.Decision]) -> list[str]:
    return [d.verdict.value for d in decisions]


@pytest.mark.parametrize(
    ("windows", "rules", "expected"),
    [
        pytest.param([CALM, CALM], RULES, ["ok", "ok"], id="calm"),
        pytest.param([NEW_VERSION_FAULT, NEW_VERSION_FAULT], RULES, ["breach", "revert"],
                     id="two-breaches-revert"),
        pytest.param([NEW_VERSION_FAULT, CALM, NEW_VERSION_FAULT], RULES, ["breach", "ok", "breach"],
                     id="calm-window-resets-the-streak"),
        pytest.param([NEW_VERSION_FAULT, replace(NEW_VERSION_FAULT, rows=99), NEW_VERSION_FAULT],
                     RULES, ["breach", "inconclusive", "revert"],
                     id="inconclusive-keeps-the-streak"),
        pytest.param([replace(NEW_VERSION_FAULT, rows=99)] * 5, replace(RULES, consecutive_windows=1),
                     ["inconclusive"] * 5, id="too-few-rows-never-reverts"),
        pytest.param([INPUT_DRIFT] * 4, RULES, ["breach", "alert", "breach", "alert"],
                     id="input-drift-alerts-only"),
        pytest.param([INPUT_DRIFT], replace(RULES, consecutive_windows=1, attribution="none"),
                     ["revert"], id="attribution-off-reverts-any-breach"),
        pytest.param([NEW_VERSION_FAULT], replace(RULES, consecutive_windows=1, action="alert"),
                     ["alert"], id="action-alert"),
        pytest.param([NEW_VERSION_FAULT] * 2, replace(RULES, consecutive_windows=1, action="none"),
                     ["breach", "breach"], id="action-none"),
        pytest.param([PREDICTIONS_ONLY], replace(RULES, consecutive_windows=1), ["revert"],
                     id="prediction-drift-on-fitting-inputs-is-the-models-fault"),
        pytest.param([replace(PREDICTIONS_ONLY, share=1.0, sample_share_current=1.0,
                              sample_share_previous=1.0)],
                     replace(RULES, consecutive_windows=1), ["alert"],
                     id="prediction-drift-caused-by-input-drift-alerts"),
        pytest.param([replace(NEW_VERSION_FAULT, sample_share_previous=0.6)],
                     replace(RULES, consecutive_windows=1), ["alert"],
                     id="previous-baseline-breached-too"),
        pytest.param([replace(NEW_VERSION_FAULT, sample_share_current=0.6, sample_share_previous=0.45)],
                     replace(RULES, consecutive_windows=1), ["alert"],
                     id="previous-only-slightly-better"),
        pytest.param([replace(NEW_VERSION_FAULT, revert_blocked="there is no previous version")],
                     replace(RULES, consecutive_windows=1), ["alert"], id="blocked"),
        pytest.param([replace(NEW_VERSION_FAULT, sample_share_previous=None)],
                     replace(RULES, consecutive_windows=1), ["alert"], id="no-previous-baseline"),
    ],
)
def test_decide_table(windows: list[Evidence], rules: DriftPolicy, expected: list[str]) -> None:
    assert verdicts(run(windows, rules)) == expected


def test_every_decision_carries_its_numbers_and_a_sentence() -> None:
    first, second = run([NEW_VERSION_FAULT, NEW_VERSION_FAULT])
    assert "window 1 of 2" in first.reason
    d = second.to_dict()
    assert d["verdict"] == "revert" and d["attributable"] is True
    assert (d["rows"], d["share"], d["sampleShareCurrent"], d["sampleSharePrevious"]) == (200, 0.8, 0.8, 0.0)
    assert d["streak"] == 2 and d["needed"] == 2 and d["closedAt"] == 1001.0
    assert "fits the previous version's baseline clearly better (0% of features drift against it vs 80%" in second.reason
    alert = run([INPUT_DRIFT], replace(RULES, consecutive_windows=1))[0]
    assert "a revert cannot cure input drift" in alert.reason and alert.attributable is False
    few = run([replace(CALM, rows=12)])[0]
    assert few.reason.startswith("only 12 live rows") and "minRows" in few.reason


def test_cooldown_then_cap() -> None:
    rules = replace(RULES, consecutive_windows=1, cooldown_seconds=60, max_reverts=2,
                    revert_period_seconds=3600)
    # windows 30 s apart: revert, cooldown, revert, then the cap holds for the rest of the hour
    ds = run([NEW_VERSION_FAULT] * 6, rules, step=30.0)
    assert verdicts(ds) == ["revert", "alert", "revert", "alert", "alert", "alert"]
    assert "cooldownSeconds" in ds[1].reason
    assert "maxReverts 2" in ds[3].reason and ds[3].reverts_in_period == 2
    # an hour later the oldest revert left the period: one more is allowed
    later = policy.decide(NEW_VERSION_FAULT, ds[-1].history, rules, now=1000.0 + 3600 + 1)
    assert later.verdict is Verdict.REVERT
    assert later.history.reverts == (1060.0, 4601.0)


def test_cap_zero_never_reverts() -> None:
    ds = run([NEW_VERSION_FAULT] * 3, replace(RULES, consecutive_windows=1, max_reverts=0))
    assert verdicts(ds) == ["alert"] * 3


def test_history_round_trips_and_new_version_keeps_reverts() -> None:
    h = History(streak=3, reverts=(5.0, 7.0))
    assert History.from_dict(h.to_dict()) == h
    assert History.from_dict(None) == History()
    assert h.for_new_version() == History(streak=0, reverts=(5.0, 7.0))


def test_revert_plan_names_model_commit_evidence_and_quarantines() -> None:
    (d,) = run([NEW_VERSION_FAULT], replace(RULES, consecutive_windows=1))
    bad, prev = "b" * 40, "a" * 40
    digest = "sha256:" + "c" * 64
    plan = policy.revert_plan(d, name="credit", reverted=bad, digest=digest, previous=prev,
                              report=".mlgitops/reports/credit/x.html", at="2025-01-01T00:00:00Z")
    assert plan.paths == ("models/credit", "manifests/credit.yaml")
    assert plan.commit_paths[-1] == layout.QUARANTINE
    assert plan.restore_from == f"{bad}^"
    subject = plan.message.splitlines()[0]
    assert subject == f"Revert credit to {prev[:12]}: live data drifted from {bad[:12]}"
    assert bad in plan.message and "Evidence: " in plan.message and "rows=200" in plan.message
    assert plan.trailers[layout.TRAILER_REVERTS] == bad
    assert plan.trailers[layout.TRAILER_DIGEST] == digest
    assert plan.trailers[layout.TRAILER_REPORT] == ".mlgitops/reports/credit/x.html"
    assert plan.trailers[layout.TRAILER_MODEL] == "credit"
    assert (plan.entry.model, plan.entry.digest, plan.entry.commit) == ("credit", digest, bad)


def test_only_a_revert_decision_plans_a_revert() -> None:
    (d,) = run([CALM])
    with pytest.raises(ValueError, match="ok decision"):
        policy.revert_plan(d, name="credit", reverted="b" * 40, digest="sha256:" + "c" * 64,
                           previous=None, report=None, at="2025-01-01T00:00:00Z")


def test_evidence_from_real_drift_reports() -> None:
    """Numbers flow from core.drift: live rows that fit the previous baseline, not the new one."""
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(5)]
    old = {n: rng.normal(0, 1, 1500) for n in names}
    new = {n: rng.normal(1.5, 1, 1500) for n in names}
    preds = rng.integers(0, 2, 1500)
    current = stats.build_baseline(new, predictions=preds)
    previous = stats.build_baseline(old, predictions=preds)
    live_rows = {n: rng.normal(0, 1, 300) for n in names}

    def laid_on(baseline: stats.Baseline) -> stats.LiveStats:
        live = stats.LiveStats.empty(baseline)
        live.update(live_rows, rng.integers(0, 2, 300))
        return live

    window = drift.compare_stats(current, laid_on(current))
    ev = Evidence.from_reports(window, current_sample=window,
                               previous_sample=drift.compare_stats(previous, laid_on(previous)))
    assert ev.rows == 300 and ev.share == 1.0
    assert ev.sample_share_previous is not None and ev.sample_share_previous <= 0.2
    assert ev.prediction_method is not None and not ev.prediction_drifted
    d = policy.decide(ev, History(), replace(RULES, consecutive_windows=1), now=0.0)
    assert d.verdict is Verdict.REVERT
