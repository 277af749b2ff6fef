"""The drift policy: decide() on windows, table-driven, no fakes (pure core)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mlgitops.core import drift, layout, policy, stats
from mlgitops.core.manifest import DriftPolicy
from mlgitops.core.policy import Evidence, History, Verdict

pytestmark = pytest.mark.fast

RULES = DriftPolicy(window_rows=200, min_rows=100, dataset_share=0.5, consecutive_windows=2,
                    cooldown_seconds=60, max_reverts=2, revert_period_seconds=3600)

# windows: the new version's fault (live fits the previous baseline), input drift (fits neither)
NEW_VERSION_FAULT = Evidence(rows=200, share=0.8, drifted_columns=("f0", "f1", "f2", "f3"),
                             fit_current=0.8, fit_previous=0.0)
INPUT_DRIFT = Evidence(rows=200, share=1.0, drifted_columns=("f0", "f1", "f2", "f3", "f4"),
                       fit_current=1.0, fit_previous=1.0)
CALM = Evidence(rows=200, share=0.2, drifted_columns=("f3",), fit_current=0.2, fit_previous=0.2)
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
        pytest.param([replace(PREDICTIONS_ONLY, share=1.0, fit_current=1.0,
                              fit_previous=1.0)],
                     replace(RULES, consecutive_windows=1), ["alert"],
                     id="prediction-drift-caused-by-input-drift-alerts"),
        pytest.param([replace(NEW_VERSION_FAULT, fit_previous=0.6)],
                     replace(RULES, consecutive_windows=1), ["alert"],
                     id="previous-baseline-breached-too"),
        pytest.param([replace(NEW_VERSION_FAULT, fit_current=0.6, fit_previous=0.45)],
                     replace(RULES, consecutive_windows=1), ["alert"],
                     id="previous-only-slightly-better"),
        pytest.param([replace(NEW_VERSION_FAULT, revert_blocked="there is no previous version")],
                     replace(RULES, consecutive_windows=1), ["alert"], id="blocked"),
        pytest.param([replace(NEW_VERSION_FAULT, fit_previous=None)],
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
    assert (d["rows"], d["share"], d["fitCurrent"], d["fitPrevious"]) == (200, 0.8, 0.8, 0.0)
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


def baselines() -> tuple[stats.Baseline, stats.Baseline, np.random.Generator]:
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(5)]
    old = {n: rng.normal(0, 1, 1500) for n in names}
    new = {n: rng.normal(1.5, 1, 1500) for n in names}
    old["kind"] = rng.choice(["a", "b", "c"], 1500)
    new["kind"] = rng.choice(["b", "c", "d"], 1500)
    preds = rng.integers(0, 2, 1500)
    return (stats.build_baseline(old, predictions=preds), stats.build_baseline(new, predictions=preds),
            rng)


def window_of(baseline: stats.Baseline, rng: np.random.Generator, *, loc: float, n: int = 500,
              kinds: tuple[str, ...] = ("a", "b", "c")) -> stats.LiveStats:
    live = stats.LiveStats.empty(baseline)
    cols: dict[str, np.ndarray] = {f"f{i}": rng.normal(loc, 1, n) for i in range(5)}
    cols["kind"] = rng.choice(list(kinds), n)
    live.update(cols, rng.integers(0, 2, n))
    return live


def test_fit_share_compares_one_window_with_two_references() -> None:
    previous, current, rng = baselines()
    like_previous = window_of(current, rng, loc=0.0)  # laid on the current version's bins
    assert policy.fit_share(current, current, like_previous) == 1.0
    fit = policy.fit_share(previous, current, like_previous)
    assert fit is not None and fit <= 1 / 6
    # the current reference re-laid through its own sample agrees with the exact comparison
    like_current = window_of(current, rng, loc=1.5, kinds=("b", "c", "d"))
    exact = drift.compare_stats(current, like_current).share
    relaid = policy.fit_share(current, current, like_current)
    assert relaid is not None and abs(relaid - exact) <= 1 / 6
    # far away from both
    far = window_of(current, rng, loc=5.0, kinds=("z",))
    assert policy.fit_share(previous, current, far) == 1.0
    # other features: not comparable
    other = stats.build_baseline({"x": rng.normal(0, 1, 100)}, predictions=None)
    assert policy.fit_share(other, current, like_previous) is None


def test_laid_on_keeps_the_reference_count_on_the_new_edges() -> None:
    previous, current, _ = baselines()
    laid = policy.laid_on(previous.column("f0"), current.column("f0"))
    assert laid is not None and laid.edges == current.column("f0").edges
    assert sum(laid.counts) == previous.column("f0").count and not laid.exact_edges
    assert policy.laid_on(previous.column("kind"), current.column("kind")) is None


def test_evidence_from_real_drift_reports() -> None:
    """Numbers flow from core.drift: a window that fits the previous baseline, not the new one."""
    previous, current, rng = baselines()
    live = window_of(current, rng, loc=0.0)
    window = drift.compare_stats(current, live)
    ev = Evidence.from_reports(window, fit_current=policy.fit_share(current, current, live),
                               fit_previous=policy.fit_share(previous, current, live))
    assert ev.rows == 500 and ev.share == 1.0 and ev.fit_current == 1.0
    assert ev.fit_previous is not None and ev.fit_previous <= 1 / 6
    assert ev.prediction_method is not None and not ev.prediction_drifted
    d = policy.decide(ev, History(), replace(RULES, consecutive_windows=1), now=0.0)
    assert d.verdict is Verdict.REVERT
