"""Per-model status: Flux-style conditions and the commits that were applied or attempted.

The JSON shape of ``ModelStatus.to_dict`` is what ``mlgitops status --json`` prints (stable):

    {"name", "desiredCommit", "servedCommit", "servedDigest", "lastAppliedCommit",
     "lastAttemptedCommit", "health", "endpoint", "conditions": [{"type", "status",
     "reason", "message", "lastTransitionTime"}], "drift": {...} | null}
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
        )
