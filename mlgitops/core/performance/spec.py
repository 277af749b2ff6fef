"""``spec.performance`` of a ModelDeployment: its schema, its types and its parsing.

Kept out of ``core.manifest`` (which embeds `SCHEMA` and calls `parse`) so that each stays short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlgitops import errors
from mlgitops.core.performance import names as metric_names

Action = Literal["revert", "alert", "none"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "metric": {"type": "string", "enum": list(metric_names.METRICS)},
        "minimum": {"type": "number"},
        "maxDrop": {"type": "number", "minimum": 0},
        "minRows": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        "action": {"type": "string", "enum": ["revert", "alert", "none"]},
        "gate": {
            "type": "array",
            "maxItems": len(metric_names.METRICS),
            "items": {
                "type": "object",
                "required": ["metric"],
                "additionalProperties": False,
                "properties": {
                    "metric": {"type": "string", "enum": list(metric_names.METRICS)},
                    "threshold": {"type": "number"},
                    "minAbsoluteChange": {"type": "number", "exclusiveMinimum": 0},
                    "minRelativeChange": {"type": "number", "minimum": 0, "maximum": 1},
                    "greaterIsBetter": {"type": "boolean"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class MetricThreshold:
    """One metric of the deployment gate, with MLflow's ``MetricThreshold`` semantics.

    ``threshold``: the candidate's value must be at least (at most, when lower is better) this.
    ``min_absolute_change`` (> 0): it must beat the serving version's value by at least this.
    ``min_relative_change`` (0 to 1): by at least this share of the serving value's magnitude;
    ``0`` means "not worse than the serving version".
    """

    metric: str
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool = True


@dataclass(frozen=True)
class PerformancePolicy:
    """``spec.performance``: the revert policy on realized metrics and the deployment gate.

    The policy is on when ``metric`` is set: it breaches when the realized value, over at least
    ``min_rows`` labelled rows, is below ``minimum`` or more than ``max_drop`` (in the metric's
    units) worse than the version's own evaluation (``evaluation.json``).
    """

    metric: str | None = None
    minimum: float | None = None
    max_drop: float | None = None
    min_rows: int = 200
    action: Action = "revert"
    gate: tuple[MetricThreshold, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.metric is not None:
            out["metric"] = self.metric
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.max_drop is not None:
            out["maxDrop"] = self.max_drop
        out["minRows"] = self.min_rows
        out["action"] = self.action
        if self.gate:
            out["gate"] = [_threshold_dict(t) for t in self.gate]
        return out


def _threshold_dict(t: MetricThreshold) -> dict[str, Any]:
    out: dict[str, Any] = {"metric": t.metric}
    if t.threshold is not None:
        out["threshold"] = t.threshold
    if t.min_absolute_change is not None:
        out["minAbsoluteChange"] = t.min_absolute_change
    if t.min_relative_change is not None:
        out["minRelativeChange"] = t.min_relative_change
    out["greaterIsBetter"] = t.greater_is_better
    return out


def check_metric_names(document: Mapping[str, Any], *, source: str) -> None:
    """An unknown metric name in spec.performance, as a sentence listing the known ones."""
    spec = document.get("spec")
    perf = spec.get("performance") if isinstance(spec, Mapping) else None
    if not isinstance(perf, Mapping):
        return
    named: list[tuple[str, Any]] = [("spec.performance.metric", perf.get("metric"))]
    gate = perf.get("gate")
    if isinstance(gate, list):
        named += [(f"spec.performance.gate[{i}].metric", g.get("metric"))
                  for i, g in enumerate(gate) if isinstance(g, Mapping)]
    for where, value in named:
        if value is not None and value not in metric_names.METRICS:
            raise errors.ManifestError(
                f"{source}: field {where}: {value!r} is not a metric mlgitops computes; use one "
                f"of {metric_names.spelled()}")


def parse(pf: Mapping[str, Any], *, source: str) -> PerformancePolicy:
    """``spec.performance`` (schema-checked already), with the rules a schema cannot say."""
    defaults = PerformancePolicy()
    where = f"{source}: field spec.performance"
    metric = pf.get("metric")
    for key in ("minimum", "maxDrop"):
        if key in pf and metric is None:
            raise errors.ManifestError(
                f"{where}.{key}: is set but spec.performance.metric is not; name the metric "
                "it applies to")
    gate: list[MetricThreshold] = []
    for i, g in enumerate(pf.get("gate", ())):
        m = g["metric"]
        if not any(k in g for k in ("threshold", "minAbsoluteChange", "minRelativeChange")):
            raise errors.ManifestError(
                f"{where}.gate[{i}]: {m} has no threshold, minAbsoluteChange or "
                "minRelativeChange; give at least one (minRelativeChange: 0 means not worse "
                "than the serving version)")
        if any(t.metric == m for t in gate):
            raise errors.ManifestError(
                f"{where}.gate[{i}]: {m} is listed twice; merge the two entries")
        gate.append(MetricThreshold(
            metric=m,
            threshold=_float(g.get("threshold")),
            min_absolute_change=_float(g.get("minAbsoluteChange")),
            min_relative_change=_float(g.get("minRelativeChange")),
            greater_is_better=bool(g.get("greaterIsBetter",
                                         metric_names.greater_is_better(m)))))
    used = ([metric] if metric else []) + [t.metric for t in gate]
    kinds = {metric_names.kind(m) for m in used}
    if len(kinds) > 1:
        cls = [m for m in used if metric_names.kind(m) == "classifier"]
        reg = [m for m in used if metric_names.kind(m) == "regressor"]
        raise errors.ManifestError(
            f"{where}: names classifier metrics ({', '.join(cls)}) and regressor metrics "
            f"({', '.join(reg)}); a model is one or the other: keep the metrics of its kind")
    bounded = [("minimum", metric, pf.get("minimum"))] + [
        (f"gate[{i}].threshold", t.metric, t.threshold) for i, t in enumerate(gate)]
    for key, m, value in bounded:
        if m in metric_names.UNIT_INTERVAL and value is not None and not 0 <= value <= 1:
            raise errors.ManifestError(
                f"{where}.{key}: {value} is outside [0, 1], where {m} lies; give a value "
                "between 0 and 1")
    return PerformancePolicy(
        metric=metric,
        minimum=_float(pf.get("minimum")),
        max_drop=_float(pf.get("maxDrop")),
        min_rows=int(pf.get("minRows", defaults.min_rows)),
        action=pf.get("action", defaults.action),
        gate=tuple(gate),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


