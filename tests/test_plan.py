"""plan(): desired against live, table-driven, no fakes (it is pure)."""

from __future__ import annotations

import pytest

from mlgitops.core import plan
from mlgitops.core.manifest import Digest, ModelDeployment, ModelName

pytestmark = pytest.mark.fast

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def want(name: str, digest: str, version: str = "c1", error: str | None = None) -> plan.Desired:
    dep = ModelDeployment(name=ModelName(name), model_path=f"models/{name}", digest=Digest(digest))
    return plan.Desired(name, version, dep, error)


def live(name: str, digest: str, alive: bool = True, version: str = "c1") -> plan.Live:
    return plan.Live(name, version, digest, alive)


@pytest.mark.parametrize(
    ("desired", "lives", "failures", "expected"),
    [
        ({"m": want("m", A)}, {}, {}, plan.Action.DEPLOY),
        ({"m": want("m", B)}, {"m": live("m", A)}, {}, plan.Action.DEPLOY),
        ({"m": want("m", A)}, {"m": live("m", A)}, {}, plan.Action.KEEP),
        ({"m": want("m", A)}, {"m": live("m", A, alive=False)}, {}, plan.Action.RESTART),
        ({}, {"m": live("m", A)}, {}, plan.Action.RETIRE),
        ({"m": plan.Desired("m", "c1", None, "bad field")}, {"m": live("m", A)}, {}, plan.Action.HOLD),
        ({"m": want("m", B, error="quarantined")}, {"m": live("m", A)}, {}, plan.Action.HOLD),
        ({"m": want("m", B)}, {"m": live("m", A)}, {"m": plan.Failure(B, "c1", "no load")}, plan.Action.HOLD),
        # same model content, newer manifest (serving settings): redeploy with the new settings
        ({"m": want("m", A, "c2")}, {"m": live("m", A)}, {}, plan.Action.DEPLOY),
        # a failure of another version does not hold a new one
        ({"m": want("m", B, "c2")}, {"m": live("m", A)}, {"m": plan.Failure(B, "c1", "x")}, plan.Action.DEPLOY),
    ],
)
def test_one_step_per_model(
    desired: dict[str, plan.Desired],
    lives: dict[str, plan.Live],
    failures: dict[str, plan.Failure],
    expected: plan.Action,
) -> None:
    (step,) = plan.plan(desired, lives, failures)
    assert step.action is expected
    assert step.reason


def test_models_are_planned_independently_and_sorted() -> None:
    steps = plan.plan({"b": want("b", A), "a": want("a", A)}, {"a": live("a", A), "z": live("z", B)})
    assert [(s.name, s.action) for s in steps] == [
        ("a", plan.Action.KEEP), ("b", plan.Action.DEPLOY), ("z", plan.Action.RETIRE)]


def test_status_transitions_are_functions_of_the_previous_status() -> None:
    from mlgitops.core import status
    from mlgitops.core.status import ConditionType, Health

    st = status.ModelStatus(name="m")
    st = status.deploying(st, version="a" * 40, reason="new", serving_now=False, now="t1")
    assert st.health is Health.MISSING and st.last_attempted_commit == "a" * 40
    reconciling = st.condition(ConditionType.RECONCILING)
    assert reconciling is not None and reconciling.status
    st = status.serving(st, version="a" * 40, digest="sha256:x", endpoint="e", now="t2", applied=True)
    ready = st.condition(ConditionType.READY)
    assert ready is not None and ready.status and ready.last_transition == "t2"
    assert st.last_applied_commit == "a" * 40 and st.health is Health.HEALTHY
    st, new = status.held(st, version="b" * 40, reason="bad", quarantined=True,
                          serving_version="a" * 40, now="t3")
    stalled = st.condition(ConditionType.STALLED)
    assert new and stalled is not None and stalled.reason == "Quarantined"
    ready = st.condition(ConditionType.READY)
    assert ready is not None and ready.status and ready.last_transition == "t2"  # no flip
    assert st.health is Health.DEGRADED
    st, again = status.held(st, version="b" * 40, reason="bad", quarantined=True,
                            serving_version="a" * 40, now="t4")
    assert not again  # the same hold: no new event
