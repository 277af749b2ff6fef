"""The rollout policy (``spec.rollout``) and its pure state machine (`core.rollout`), by table."""

from __future__ import annotations

from typing import Any

import pytest

from mlgitops import errors
from mlgitops.core import manifest, plan, rollout

pytestmark = pytest.mark.fast

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _doc(ro: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"path": "models/credit", "digest": DIGEST}}
    if ro is not None:
        spec["rollout"] = ro
    return {"apiVersion": manifest.API_VERSION, "kind": manifest.KIND,
            "metadata": {"name": "credit"}, "spec": spec}


def _policy(ro: dict[str, Any]) -> manifest.Rollout:
    return manifest.parse(_doc(ro), source="m.yaml").rollout


def test_the_default_is_direct_and_round_trips() -> None:
    dep = manifest.parse(_doc(), source="m.yaml")
    assert dep.rollout.strategy == "direct" and not dep.rollout.progressive
    assert rollout.stages(dep.rollout) == ()
    again = manifest.parse(dep.to_dict(), source="m.yaml")
    assert again == dep


def test_shadow_then_canary_is_parsed_into_steps_and_round_trips() -> None:
    ro = {"strategy": "shadow-canary", "shadow": {"rows": 300, "seconds": 60},
          "canary": {"steps": [{"weight": 10, "rows": 200}, {"weight": 50, "seconds": 30}],
                     "key": "x-user-id"},
          "analysis": {"minRows": 50, "minAgreement": 0.95, "maxLatencyRatio": 2}}
    dep = manifest.parse(_doc(ro), source="m.yaml")
    steps = rollout.stages(dep.rollout)
    assert [(s.mode, s.weight, s.hold.rows, s.hold.seconds) for s in steps] == [
        ("shadow", 0, 300, 60.0), ("canary", 10, 200, None), ("canary", 50, None, 30.0)]
    assert dep.rollout.key == "x-user-id" and dep.rollout.analysis.min_agreement == 0.95
    assert manifest.parse(dep.to_dict(), source="m.yaml") == dep


@pytest.mark.parametrize(("ro", "says"), [
    ({"strategy": "blue-green"}, "spec.rollout.strategy"),
    ({"strategy": "canary", "canary": {"steps": [{"weight": 50}]}}, "neither rows nor seconds"),
    ({"strategy": "canary", "canary": {"steps": [{"weight": 50, "rows": 9},
                                                 {"weight": 10, "rows": 9}]}},
     "do not increase"),
    ({"strategy": "canary", "canary": {"steps": [{"weight": 0, "rows": 9}]}}, "weight"),
    ({"analysis": {"minAgreement": 2}}, "minAgreement"),
    ({"canary": {"key": "not a header"}}, "key"),
])
def test_a_bad_rollout_policy_is_refused_with_the_field_named(ro: dict[str, Any],
                                                              says: str) -> None:
    with pytest.raises(errors.ManifestError, match=says):
        manifest.parse(_doc(ro), source="m.yaml")


SHADOW = _policy({"strategy": "shadow", "shadow": {"rows": 200},
                  "analysis": {"minRows": 100}})
CANARY = _policy({"strategy": "shadow-canary", "shadow": {"rows": 200},
                  "canary": {"steps": [{"weight": 10, "rows": 200}, {"weight": 50, "rows": 200}]},
                  "analysis": {"minRows": 100}})


def _state(step: int = 0) -> rollout.State:
    return rollout.State("v2", OTHER, "v1", DIGEST, step, started_at=1000.0)


def _counters(rows: int, *, agreed: float = 1.0, errors_: int = 0,
              latency: float = 0.01) -> rollout.Counters:
    return rollout.Counters(rows=rows, requests=rows, errors=errors_, stable_requests=rows,
                            stable_errors=0, compared=rows, agreed=int(rows * agreed),
                            labels=rows, latency_p95=latency, stable_latency_p95=0.01)


GOOD = rollout.DriftCheck(breached=False, attributable=False, reason="no drift")


@pytest.mark.parametrize(("policy", "state", "counters", "drift", "action", "says"), [
    (SHADOW, _state(), _counters(50), GOOD, "hold", "50 rows"),
    (SHADOW, _state(), _counters(150), GOOD, "hold", "step 1: shadow"),
    (SHADOW, _state(), _counters(200), GOOD, "promote", "takes all traffic"),
    (CANARY, _state(), _counters(200), GOOD, "next", "canary 10%"),
    (CANARY, _state(1), _counters(200), GOOD, "next", "canary 50%"),
    (CANARY, _state(2), _counters(250), GOOD, "promote", "takes all traffic"),
    # a failed check aborts at once, before the step's end
    (SHADOW, _state(), _counters(120, agreed=0.5), GOOD, "abort", "same label on 50.0%"),
    (SHADOW, _state(), _counters(120, errors_=30), GOOD, "abort", "requests failed"),
    (SHADOW, _state(), _counters(120, latency=0.5), GOOD, "abort", "p95 latency"),
    # drift is judged at the step's end, on the step's rows
    (SHADOW, _state(), _counters(120),
     rollout.DriftCheck(breached=True, attributable=True, reason="fits v1 better"),
     "hold", "3 check(s) passing"),
    (SHADOW, _state(), _counters(200),
     rollout.DriftCheck(breached=True, attributable=True, reason="fits v1 better"),
     "abort", "fits v1 better"),
    # drift the candidate is not to blame for does not abort
    (SHADOW, _state(), _counters(200),
     rollout.DriftCheck(breached=True, attributable=False, reason="moved from both"),
     "promote", "drift"),
    # a step that ended before the drift policy's window was scored goes on, whatever the rest
    (SHADOW, _state(), _counters(200),
     rollout.DriftCheck(breached=False, attributable=False, judged=False,
                        reason="the candidate has scored 1000 rows (200 so far)"),
     "hold", "goes on until the candidate has scored 1000 rows"),
    (SHADOW, _state(), _counters(200, agreed=0.5),
     rollout.DriftCheck(breached=False, attributable=False, judged=False, reason="waits"),
     "abort", "same label on 50.0%"),
    # too little evidence never fails a check
    (SHADOW, _state(), _counters(99, agreed=0.0, errors_=99), None, "hold", "0 check(s)"),
])
def test_judge(policy: manifest.Rollout, state: rollout.State, counters: rollout.Counters,
               drift: rollout.DriftCheck | None, action: str, says: str) -> None:
    verdict = rollout.judge(policy, state, counters, drift, now=1010.0)
    assert verdict.action == action, verdict.reason
    assert says in verdict.reason
    if action == "next":
        assert verdict.state.step == state.step + 1 and verdict.state.started_at == 1010.0
        assert verdict.state.history[-1]["verdict"] == "pass"
    if action == "abort":
        assert verdict.state.phase == "aborted"
    if action == "promote":
        assert verdict.state.phase == "promoted"


def test_a_step_that_ends_by_time_with_too_few_rows_is_extended_not_passed() -> None:
    policy = _policy({"strategy": "shadow", "shadow": {"seconds": 5},
                      "analysis": {"minRows": 100}})
    verdict = rollout.judge(policy, _state(), _counters(10), GOOD, now=1006.0)
    assert verdict.action == "hold" and "goes on" in verdict.reason
    verdict = rollout.judge(policy, _state(), _counters(100), GOOD, now=1006.0)
    assert verdict.action == "promote"


def test_a_regressor_is_judged_by_relative_error() -> None:
    c = rollout.compare([1.5, 2.5, 10.25], [1.5, 2.0, 10.0])
    assert c.labels == 0 and c.compared == 3
    assert c.relative_error_sum == pytest.approx(0.25 + 0.025)
    far = rollout.Counters(rows=150, compared=150, relative_error_sum=150 * 0.3)
    verdict = rollout.judge(SHADOW, _state(), far, None, now=1001.0)
    assert verdict.action == "abort" and "differ by 30.0%" in verdict.reason


def test_labels_compare_by_equality_and_answers_are_read_from_both_protocols() -> None:
    assert rollout.predictions({"predictions": [0, 1, 1]}) == [0, 1, 1]
    assert rollout.predictions({"outputs": [{"name": "p", "data": [1, 0]}]}) == [1, 0]
    assert rollout.predictions({"error": "x"}) is None
    c = rollout.compare([0, 1, 1, 0], [0, 1, 0, 0])
    assert (c.compared, c.labels, c.agreed) == (4, 4, 3)
    assert rollout.compare([1], [1, 2]).compared == 0  # unlike shapes compare nothing


def test_a_state_survives_a_restart_and_restarts_its_current_step() -> None:
    state = rollout.judge(CANARY, _state(), _counters(200), GOOD, now=1010.0).state
    back = rollout.State.from_dict(state.to_dict())
    assert back == state
    again = back.restarted(2000.0)
    assert again.step == 1 and again.started_at == 2000.0 and again.history == state.history


def _desired(version: str, digest: str, strategy: str = "shadow") -> plan.Desired:
    dep = manifest.parse(_doc({"strategy": strategy}), source="m.yaml")
    dep = manifest.ModelDeployment(dep.name, dep.model_path, manifest.Digest(digest),
                                   rollout=dep.rollout)
    return plan.Desired("credit", version, dep)


@pytest.mark.parametrize(("desired", "live", "candidate", "action", "drops"), [
    # a progressive version starts beside what serves
    (_desired("v2", OTHER), plan.Live("credit", "v1", DIGEST, True), None,
     plan.Action.CANDIDATE, False),
    # direct: replaces it
    (_desired("v2", OTHER, "direct"), plan.Live("credit", "v1", DIGEST, True), None,
     plan.Action.DEPLOY, False),
    # nothing serves: there is nothing to compare with, it deploys
    (_desired("v2", OTHER), None, None, plan.Action.DEPLOY, False),
    # the candidate Git names: under analysis
    (_desired("v2", OTHER), plan.Live("credit", "v1", DIGEST, True),
     plan.Live("credit", "v2", OTHER, True), plan.Action.PROGRESS, False),
    # Git reverted it: the stable content at the revert commit, the candidate is dropped
    (_desired("r1", DIGEST), plan.Live("credit", "v1", DIGEST, True),
     plan.Live("credit", "v2", OTHER, True), plan.Action.DEPLOY, True),
])
def test_plan_with_a_candidate(desired: plan.Desired, live: plan.Live | None,
                               candidate: plan.Live | None, action: plan.Action,
                               drops: bool) -> None:
    step = plan.step("credit", desired, live, None, candidate)
    assert step.action is action, step.reason
    assert (step.candidate is not None and step.action is not plan.Action.PROGRESS) == drops


@pytest.mark.parametrize("strategy", ["canary", "shadow-canary"])
def test_each_step_is_numbered_in_order_and_every_one_is_judged(strategy: str) -> None:
    policy = _policy({"strategy": strategy, "shadow": {"rows": 200},
                      "canary": {"steps": [{"weight": w, "rows": 200} for w in (5, 10, 25, 50)]},
                      "analysis": {"minRows": 100}})
    steps = rollout.stages(policy)
    assert [s.index for s in steps] == list(range(len(steps)))
    # every step passes in turn: each one is judged once, none skipped
    state, now, judged = _state(), 1000.0, []
    while state.phase == "running":
        verdict = rollout.judge(policy, state, _counters(200), None, now=now)
        judged.append(verdict.state.history[-1]["step"])
        state, now = verdict.state, now + 1
    assert judged == list(range(1, len(steps) + 1)) and state.phase == "promoted"
