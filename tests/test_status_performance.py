"""The Performance condition (`core.status.performance_check`): pure, by table."""

from __future__ import annotations

import pytest

from mlgitops.core import status

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(("action", "reason", "true"), [
    ("keep", "WithinPolicy", False), ("alert", "PerformanceAlert", True),
    ("revert", "Reverting", True)])
def test_each_decision_sets_the_performance_condition(action: str, reason: str,
                                                      true: bool) -> None:
    st = status.performance_check(status.ModelStatus("m"), action=action, message="why",
                                  now="t1")
    cond = st.condition(status.ConditionType.PERFORMANCE)
    assert cond is not None and (cond.status, cond.reason, cond.message) == (true, reason, "why")
    assert st.condition(status.ConditionType.DRIFT) is None
    again = status.ModelStatus.from_dict(st.to_dict())
    assert again.condition(status.ConditionType.PERFORMANCE) == cond


def test_the_transition_time_moves_only_when_the_status_flips() -> None:
    st = status.performance_check(status.ModelStatus("m"), action="alert", message="a", now="t1")
    st = status.performance_check(st, action="revert", message="b", now="t2", reason="Reverted")
    cond = st.condition(status.ConditionType.PERFORMANCE)
    assert cond is not None and (cond.reason, cond.last_transition) == ("Reverted", "t1")
    st = status.performance_check(st, action="keep", message="c", now="t3")
    cond = st.condition(status.ConditionType.PERFORMANCE)
    assert cond is not None and (cond.status, cond.last_transition) == (False, "t3")
