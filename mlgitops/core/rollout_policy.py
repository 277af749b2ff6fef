"""``spec.rollout``: how a new version takes over (direct, shadow, canary, shadow-canary), its
steps and its analysis. Part of the one ModelDeployment schema (`core.manifest` embeds
`SCHEMA` and re-exports the dataclasses); `core.rollout` runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlgitops import errors

#: The largest number of seconds a manifest may give (a cooldown, a revert period).
YEAR_SECONDS = 366 * 86400

Strategy = Literal["direct", "shadow", "canary", "shadow-canary"]
STRATEGIES: tuple[Strategy, ...] = ("direct", "shadow", "canary", "shadow-canary")

#: How long a rollout step (the shadow, a canary step) lasts: rows the new version scored,
#: seconds, or both (whichever comes first).
_HOLD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rows": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
        "seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": YEAR_SECONDS},
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "strategy": {"type": "string", "enum": list(STRATEGIES)},
        "scaleDownDelaySeconds": {"type": "number", "minimum": 0,
                                  "maximum": YEAR_SECONDS},
        "shadow": _HOLD_SCHEMA,
        "canary": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "steps": {"type": "array", "minItems": 1, "maxItems": 20,
                          "items": {**_HOLD_SCHEMA, "required": ["weight"],
                                    "properties": {
                                        **_HOLD_SCHEMA["properties"],
                                        "weight": {"type": "integer", "minimum": 1,
                                                   "maximum": 100}}}},
                "key": {"type": "string", "pattern": r"^[A-Za-z0-9-]{1,100}$"},
            },
        },
        "analysis": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "minRows": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
                "drift": {"type": "boolean"},
                "minAgreement": {"type": "number", "minimum": 0, "maximum": 1},
                "maxRelativeError": {"type": "number", "minimum": 0, "maximum": 1000},
                "maxErrorRate": {"type": "number", "minimum": 0, "maximum": 1},
                "maxLatencyRatio": {"type": "number", "minimum": 1, "maximum": 1000},
            },
        },
    },
}
"""The schema of ``spec.rollout`` (embedded in `core.manifest.SCHEMA`)."""


@dataclass(frozen=True)
class Hold:
    """How long one rollout step lasts: ``rows`` scored by the new version or ``seconds``,
    whichever comes first (at least one is set)."""

    rows: int | None = 500
    seconds: float | None = None


@dataclass(frozen=True)
class CanaryStep:
    weight: int
    """Percent of user requests the new version answers during the step."""
    hold: Hold = field(default_factory=Hold)


@dataclass(frozen=True)
class Analysis:
    """What each rollout step is judged on (``spec.rollout.analysis``), on its own rows."""

    min_rows: int = 100
    """Rows (or compared answers) a check needs before it can fail or a step can pass."""
    drift: bool = True
    """Judge the step's live rows with the drift policy (``spec.drift``) and its attribution."""
    min_agreement: float = 0.9
    """Classifiers: the least share of rows on which both versions give the same label."""
    max_relative_error: float = 0.1
    """Regressors: the largest mean relative difference between the two versions' answers."""
    max_error_rate: float = 0.01
    """The largest share of failed requests above the stable version's own."""
    max_latency_ratio: float = 3.0
    """The largest ratio of the new version's p95 latency to the stable version's."""


DEFAULT_CANARY = (CanaryStep(10), CanaryStep(50))


@dataclass(frozen=True)
class Rollout:
    """How a new version takes over from the one serving (``spec.rollout``).

    ``direct``: the new version takes all traffic once ready. ``shadow``: it first gets a copy
    of live traffic (its answers are recorded, never returned) for ``shadow``; ``canary``: it
    answers a growing share of requests (``canary_steps``; ``key`` names the request header that
    keeps one client on one version); ``shadow-canary``: both, in that order. Each step is
    judged by ``analysis``; a failed step is reverted in Git. The replaced version stays warm
    for ``scale_down_delay_seconds`` (as Argo Rollouts' ``scaleDownDelaySeconds``), so that a
    revert switches traffic to something already ready.
    """

    strategy: Strategy = "direct"
    scale_down_delay_seconds: float = 600.0
    shadow: Hold = field(default_factory=Hold)
    canary_steps: tuple[CanaryStep, ...] = DEFAULT_CANARY
    key: str | None = None
    analysis: Analysis = field(default_factory=Analysis)

    @property
    def progressive(self) -> bool:
        """True when a new version is judged beside the stable one before it takes over."""
        return self.strategy != "direct"

    def to_dict(self) -> dict[str, Any]:
        a = self.analysis
        return {
            "strategy": self.strategy,
            "scaleDownDelaySeconds": self.scale_down_delay_seconds,
            "shadow": _hold_dict(self.shadow),
            "canary": {"steps": [{"weight": s.weight, **_hold_dict(s.hold)}
                                 for s in self.canary_steps],
                       **({"key": self.key} if self.key else {})},
            "analysis": {"minRows": a.min_rows, "drift": a.drift,
                         "minAgreement": a.min_agreement,
                         "maxRelativeError": a.max_relative_error,
                         "maxErrorRate": a.max_error_rate,
                         "maxLatencyRatio": a.max_latency_ratio},
        }


def _hold_dict(hold: Hold) -> dict[str, Any]:
    return {**({"rows": hold.rows} if hold.rows is not None else {}),
            **({"seconds": hold.seconds} if hold.seconds is not None else {})}


def _hold(raw: Mapping[str, Any], *, where: str, source: str) -> Hold:
    if "rows" not in raw and "seconds" not in raw:
        if where.endswith("shadow"):
            return Hold()
        raise errors.ManifestError(
            f"{source}: field {where}: gives neither rows nor seconds; say how long the step "
            "lasts (e.g. rows: 500) and commit again")
    seconds = raw.get("seconds")
    return Hold(rows=int(raw["rows"]) if "rows" in raw else None,
                seconds=float(seconds) if seconds is not None else None)


def parse(ro: Mapping[str, Any], *, source: str = "manifest") -> Rollout:
    """``spec.rollout`` of a manifest already validated against the schema."""
    defaults = Rollout()
    can = ro.get("canary", {})
    steps = defaults.canary_steps
    if "steps" in can:
        steps = tuple(
            CanaryStep(weight=int(s["weight"]),
                       hold=_hold(s, where=f"spec.rollout.canary.steps[{i}]", source=source))
            for i, s in enumerate(can["steps"]))
        weights = [s.weight for s in steps]
        if weights != sorted(set(weights)):
            raise errors.ManifestError(
                f"{source}: field spec.rollout.canary.steps: weights {weights} do not increase "
                "step by step; list each step's percent once, smallest first, and commit again")
    an = ro.get("analysis", {})
    da = Analysis()
    return Rollout(
        strategy=ro.get("strategy", defaults.strategy),
        scale_down_delay_seconds=float(
            ro.get("scaleDownDelaySeconds", defaults.scale_down_delay_seconds)),
        shadow=_hold(ro.get("shadow", {}), where="spec.rollout.shadow", source=source),
        canary_steps=steps,
        key=can.get("key"),
        analysis=Analysis(
            min_rows=int(an.get("minRows", da.min_rows)),
            drift=bool(an.get("drift", da.drift)),
            min_agreement=float(an.get("minAgreement", da.min_agreement)),
            max_relative_error=float(an.get("maxRelativeError", da.max_relative_error)),
            max_error_rate=float(an.get("maxErrorRate", da.max_error_rate)),
            max_latency_ratio=float(an.get("maxLatencyRatio", da.max_latency_ratio)),
        ),
    )
