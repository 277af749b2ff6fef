"""The deployment gate: a candidate against the serving version on the same evaluation data.

The rules are MLflow's ``MetricThreshold`` (``mlflow.models.evaluation.validation``), applied to
metrics mlgitops recomputed itself (never to numbers a pusher wrote):

- ``threshold``: the candidate's value must be ``>=`` it (``<=`` when lower is better);
- ``min_absolute_change``: ``candidate >= serving + change`` (``<= serving - change``),
  compared as decimals as MLflow does;
- ``min_relative_change``: ``(candidate - serving) / |serving| >= change`` (the sign flipped
  when lower is better); a serving value of 0 falls back to "strictly better by 1e-10".

Where this differs from MLflow, on purpose: with no serving version (the model's first
version) only ``threshold`` applies; a metric the candidate lacks (``roc_auc`` of a model
without probabilities) fails, as in MLflow, and so does a comparison whose serving value is
missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from mlgitops.core.performance.spec import MetricThreshold


@dataclass(frozen=True)
class Check:
    """One metric's outcome; ``reasons`` is empty when it passed."""

    metric: str
    candidate: float | None
    serving: float | None
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "candidate": self.candidate, "serving": self.serving,
                "passed": self.passed, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [r for c in self.checks for r in c.reasons]


def _num(value: float) -> str:
    return f"{value:.6g}"


def check(t: MetricThreshold, candidate: float | None, serving: float | None, *,
          has_serving: bool) -> Check:
    """`t` applied to one metric's values (``has_serving``: a serving version exists)."""
    m = t.metric
    if candidate is None:
        return Check(m, None, serving, (
            f"{m}: the candidate has no value for it (roc_auc and log_loss need a model with "
            "predict_proba); use another metric or a model that gives probabilities",))
    reasons: list[str] = []
    better = t.greater_is_better
    if t.threshold is not None:
        ok = candidate >= t.threshold if better else candidate <= t.threshold
        if not ok:
            reasons.append(f"{m} is {_num(candidate)}, {'below' if better else 'above'} the "
                           f"threshold {_num(t.threshold)}")
    compares = t.min_absolute_change is not None or t.min_relative_change is not None
    if not compares or not has_serving:
        return Check(m, candidate, serving, tuple(reasons))
    if serving is None:
        reasons.append(f"{m}: the serving version has no value for it, so the candidate cannot "
                       "be compared; drop minAbsoluteChange/minRelativeChange for it")
        return Check(m, candidate, serving, tuple(reasons))
    if t.min_absolute_change is not None:
        change = t.min_absolute_change
        bound = serving + change if better else serving - change
        ok = Decimal(candidate) >= Decimal(bound) if better else Decimal(candidate) <= Decimal(bound)
        if not ok:
            reasons.append(
                f"{m} is {_num(candidate)} against the serving version's {_num(serving)}; "
                f"minAbsoluteChange {_num(change)} needs {'at least' if better else 'at most'} "
                f"{_num(bound)}")
    if t.min_relative_change is not None:
        want = t.min_relative_change
        if serving == 0:
            bound = serving + 1e-10 if better else serving - 1e-10
            ok = (Decimal(candidate) >= Decimal(bound) if better
                  else Decimal(candidate) <= Decimal(bound))
            relative = None
        else:
            diff = candidate - serving if better else serving - candidate
            relative = diff / abs(serving)
            ok = relative >= want
        if not ok:
            moved = "no change" if relative is None else f"a relative change of {relative:+.4%}"
            need = ("not worse" if want == 0 else f"at least {want:.4%} better")
            reasons.append(
                f"{m} is {_num(candidate)} against the serving version's {_num(serving)} "
                f"({moved}); minRelativeChange {_num(want)} needs {need}")
    return Check(m, candidate, serving, tuple(reasons))


def evaluate(thresholds: Sequence[MetricThreshold], candidate: Mapping[str, float],
             serving: Mapping[str, float] | None) -> Verdict:
    """Every threshold against the candidate's metrics and the serving version's (None: there
    is no serving version) on the same evaluation data."""
    return Verdict(tuple(
        check(t, candidate.get(t.metric), None if serving is None else serving.get(t.metric),
              has_serving=serving is not None)
        for t in thresholds))


def sentence(verdict: Verdict, *, model: str, data: str) -> str:
    """Why ``verdict`` holds the candidate, naming each failing metric, both values and what to do.

    ``data`` names the evaluation data (file and digest)."""
    return (f"{model}: the deployment gate (spec.performance.gate) holds this version on "
            f"{data}: " + "; ".join(verdict.failures()) +
            "; the serving version keeps serving: publish a better model, or change "
            "spec.performance.gate if the requirement is wrong")
