"""Per-model status: Flux-style conditions and the commits that were applied or attempted.

The JSON shape of ``ModelStatus.to_dict`` is what ``mlgitops status --json`` prints (stable):

    {"name", "desiredCommit", "servedCommit", "servedDigest", "lastAppliedCommit",
     "lastAttemptedCommit", "health", "endpoint", "conditions": [{"type", "status",
     "reason", "message", "lastTransitionTime"}], "drift": {...} | null,
     "rollout": {...} | null}

``rollout`` is a progressive rollout under way (or the last one's end): its candidate, step,
weights and analysis so far (`core.rollout.State.to_dict` plus the step's mode and weight).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any


class Health(enum.Enum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"  # the desired version failed; an older one still answers
    MISSING = "Missing"  # nothing answers

    def is_worse_than(self, other: Health) -> bool:
        order = [Health.HEALTHY, Health.PROGRESSING, Health.DEGRADED, Health.MISSING]
        return order.index(self) > order.index(other)


class ConditionType(enum.Enum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    DRIFT = "Drift"
    PERFORMANCE = "Performance"


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: bool
    reason: str
    message: str
    last_transition: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Condition:
        return cls(
            type=ConditionType(data["type"]),
            status=data["status"] == "True",
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            last_transition=str(data.get("lastTransitionTime", "")),
        )


@dataclass(frozen=True)
class ModelStatus:
    name: str
    desired_commit: str | None = None
    served_commit: str | None = None
    served_digest: str | None = None
    last_applied_commit: str | None = None
    last_attempted_commit: str | None = None
    health: Health = Health.MISSING
    endpoint: str | None = None
    conditions: tuple[Condition, ...] = field(default=())
    drift: dict[str, Any] | None = None
    rollout: dict[str, Any] | None = None

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def with_condition(
        self, kind: ConditionType, *, status: bool, reason: str, message: str, now: str
    ) -> ModelStatus:
        """Set a condition; its transition time changes only when its status flips."""
        old = self.condition(kind)
        when = old.last_transition if old is not None and old.status == status else now
        cond = Condition(kind, status, reason, message, when)
        rest = tuple(c for c in self.conditions if c.type != kind)
        return replace(self, conditions=tuple(sorted((*rest, cond), key=lambda c: c.type.value)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "desiredCommit": self.desired_commit,
            "servedCommit": self.served_commit,
            "servedDigest": self.served_digest,
            "lastAppliedCommit": self.last_applied_commit,
            "lastAttemptedCommit": self.last_attempted_commit,
            "health": self.health.value,
            "endpoint": self.endpoint,
            "conditions": [c.to_dict() for c in self.conditions],
            "drift": self.drift,
            "rollout": self.rollout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelStatus:
        return cls(
            name=str(data["name"]),
            desired_commit=data.get("desiredCommit"),
            served_commit=data.get("servedCommit"),
            served_digest=data.get("servedDigest"),
            last_applied_commit=data.get("lastAppliedCommit"),
            last_attempted_commit=data.get("lastAttemptedCommit"),
            health=Health(data.get("health", Health.MISSING.value)),
            endpoint=data.get("endpoint"),
            conditions=tuple(Condition.from_dict(c) for c in data.get("conditions", [])),
            drift=data.get("drift"),
            rollout=data.get("rollout"),
        )


# Condition transitions: functions of (previous status, outcome of one step), shared by the
# local reconciler and the Kubernetes operator. Each says what the conditions become.


def serving(st: ModelStatus, *, version: str, digest: str, endpoint: str | None, now: str,
            applied: bool = False) -> ModelStatus:
    """``version`` answers: Ready, not Reconciling, not Stalled."""
    st = replace(st, served_commit=version, served_digest=digest, health=Health.HEALTHY,
                 endpoint=endpoint,
                 last_applied_commit=version if applied else st.last_applied_commit)
    st = st.with_condition(ConditionType.READY, status=True, reason="Serving",
                           message=f"serving {version[:12]}", now=now)
    st = st.with_condition(ConditionType.RECONCILING, status=False, reason="Synced",
                           message="live matches Git", now=now)
    return st.with_condition(ConditionType.STALLED, status=False, reason="Synced", message="",
                             now=now)


def deploying(st: ModelStatus, *, version: str, reason: str, serving_now: bool, now: str) -> ModelStatus:
    """A rollout of ``version`` started (an older version may still serve)."""
    st = replace(st, last_attempted_commit=version,
                 health=Health.PROGRESSING if serving_now else Health.MISSING)
    return st.with_condition(ConditionType.RECONCILING, status=True, reason="Deploying",
                             message=reason, now=now)


def held(st: ModelStatus, *, version: str | None, reason: str, quarantined: bool,
         serving_version: str | None, now: str) -> tuple[ModelStatus, bool]:
    """``version`` cannot deploy (invalid, refused, quarantined): Stalled; the older one serves.

    Returns the new status and whether this is a new hold (an event is due).
    """
    st = replace(st, health=Health.DEGRADED if serving_version else Health.MISSING)
    st = st.with_condition(ConditionType.STALLED, status=True,
                           reason="Quarantined" if quarantined else "InvalidVersion",
                           message=reason, now=now)
    st = st.with_condition(
        ConditionType.READY, status=serving_version is not None,
        reason="OlderVersionServing" if serving_version else "NothingServing",
        message=(f"still serving {serving_version[:12]}" if serving_version
                 else "no version of this model serves"), now=now)
    reconciling = st.condition(ConditionType.RECONCILING)
    if reconciling is not None and reconciling.status:  # the attempt ended: it is held
        st = st.with_condition(ConditionType.RECONCILING, status=False, reason="Stalled",
                               message=reason, now=now)
    new = st.last_attempted_commit != version
    if version is not None:
        st = replace(st, last_attempted_commit=version)
    return st, new


def retry_pending(st: ModelStatus, *, message: str, serving_now: bool, now: str) -> ModelStatus:
    """A transient failure: the loop retries with back-off."""
    return st.with_condition(ConditionType.READY, status=serving_now, reason="RetryPending",
                             message=message, now=now)


DRIFT_REASONS = {"inconclusive": "Inconclusive", "ok": "NoDrift", "breach": "Breached",
                 "alert": "DriftAlert", "revert": "Reverting"}
"""The Drift condition's reason per window verdict (`policy.Verdict` value)."""


def drift_window(st: ModelStatus, *, verdict: str, message: str, now: str,
                 reason: str | None = None) -> ModelStatus:
    """A closed drift window with ``verdict`` (a `policy.Verdict` value): the Drift condition.

    Drift is True when the window breached (breach, alert, revert), False when it did not (ok).
    An inconclusive window (too few rows) says nothing about drift: after a breach the condition
    stays as that breach left it (never ``True Inconclusive``); otherwise it is
    ``False Inconclusive``. ``reason`` overrides the verdict's (e.g. ``Reverted``).
    """
    old = st.condition(ConditionType.DRIFT)
    if verdict == "inconclusive":
        if old is not None and old.status:
            return st
        return st.with_condition(ConditionType.DRIFT, status=False,
                                 reason=reason or DRIFT_REASONS[verdict], message=message, now=now)
    breached = verdict in ("breach", "alert", "revert")
    return st.with_condition(ConditionType.DRIFT, status=breached,
                             reason=reason or DRIFT_REASONS[verdict], message=message, now=now)


PERFORMANCE_REASONS = {"keep": "WithinPolicy", "alert": "PerformanceAlert",
                       "revert": "Reverting"}
"""The Performance condition's reason per decision (`core.performance.policy.Action`)."""


def performance_check(st: ModelStatus, *, action: str, message: str, now: str,
                      reason: str | None = None) -> ModelStatus:
    """A decision on the labelled rows (``keep``, ``alert`` or ``revert``): the Performance
    condition, True when the realized metric breaks ``spec.performance`` (alert, revert),
    False when it is within it. ``reason`` overrides the action's (e.g. ``Reverted``)."""
    return st.with_condition(ConditionType.PERFORMANCE, status=action in ("alert", "revert"),
                             reason=reason or PERFORMANCE_REASONS[action], message=message,
                             now=now)
