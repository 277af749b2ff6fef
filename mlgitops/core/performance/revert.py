"""A performance decision on the drift revert path (issue 20, item 5): pure.

`policy.decide` says revert, alert or keep from the labelled rows alone. Before the Monitor acts,
`gated` applies what the drift path applies to any automatic revert: none without a previous
version to return to (``blocked``), none within ``spec.drift.cooldownSeconds`` of the last
automatic revert, at most ``spec.drift.maxReverts`` per ``revertPeriodSeconds`` (a performance
revert and a drift revert count alike). the Monitor turns the result into the
`core.policy.Decision` the drift revert path executes (status, events, pending record,
cooldown history; `monitor_performance.as_drift_decision`), `commit` rewrites the revert commit's subject and body with the performance
numbers (the trailers and the quarantine entry stay the drift path's), and `evidence_table` is
what the decision page shows (both metric values, rows, p-value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from mlgitops.core import layout
from mlgitops.core.performance.policy import Decision


class Rules(Protocol):
    """What `gated` reads of ``spec.drift`` (`core.manifest.DriftPolicy`)."""

    @property
    def max_reverts(self) -> int: ...
    @property
    def revert_period_seconds(self) -> float: ...
    @property
    def cooldown_seconds(self) -> float: ...


class _Entry(Protocol):
    @property
    def digest(self) -> str: ...


class Plan(Protocol):
    """What `commit` reads of a `core.policy.RevertPlan` (a dataclass; its message replaced)."""

    @property
    def name(self) -> str: ...
    @property
    def reverted(self) -> str: ...
    @property
    def previous(self) -> str | None: ...
    @property
    def entry(self) -> _Entry: ...
    @property
    def trailers(self) -> Mapping[str, str]: ...


P = TypeVar("P", bound=Plan)


def gated(decision: Decision, *, blocked: str | None, reverts: tuple[float, ...],
          rules: Rules, now: float) -> Decision:
    """``decision``, a revert turned into an alert when the drift path's blockers, cooldown or
    cap forbid it (the reason says which)."""
    if decision.action != "revert":
        return decision
    why: str | None = None
    if blocked:
        why = blocked
    else:
        recent = [t for t in reverts if t > now - rules.revert_period_seconds]
        if len(recent) >= rules.max_reverts:
            why = (f"{len(recent)} automatic revert(s) already happened within "
                   f"{rules.revert_period_seconds:.0f}s (spec.drift.maxReverts "
                   f"{rules.max_reverts})")
        elif reverts and now - max(reverts) < rules.cooldown_seconds:
            why = ("the last automatic revert was less than spec.drift.cooldownSeconds "
                   f"({rules.cooldown_seconds:.0f}s) ago")
    if why is None:
        return decision
    return Decision("alert", f"{decision.reason}; not reverted: {why}",
                    {**decision.evidence, "whyNotReverted": why})


def why_not_reverted(decision: Decision) -> str | None:
    """For an alert: why no revert was made."""
    if decision.action != "alert":
        return None
    found = decision.evidence.get("whyNotReverted")
    if isinstance(found, str):
        return found
    if decision.evidence.get("attributable") is False:
        return ("the previous version is not measurably better on the same labelled rows: both "
                "versions degrade: the world changed")
    if decision.evidence.get("attributable") is True:
        return "spec.performance.action is alert: this model is never reverted automatically"
    return "there is no previous version scored on the same rows"


def numbers(decision: Decision) -> str:
    """The performance numbers of a decision, one line (the revert commit's ``Numbers:``)."""
    ev = decision.evidence
    return (f"metric={ev.get('metric')} rows={ev.get('rows')} new={_n(ev.get('new'))} "
            f"previous={_n(ev.get('previous'))} evaluation={_n(ev.get('evaluation'))} "
            f"pValue={_n(ev.get('pValue'))} method={ev.get('method') or '-'}")


def _n(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, int | float) else "-"


def commit(plan: P, decision: Decision) -> P:
    """``plan`` (the drift path's revert, same trailers and quarantine entry) with the subject
    and body of a performance revert."""
    name, short = plan.name, plan.reverted[:12]
    ev = decision.evidence
    back_to = f" to {plan.previous[:12]}" if plan.previous else ""
    subject = (f"Revert {name}{back_to}: {ev.get('metric')} of {short} is measurably worse "
               f"than the previous version on {ev.get('rows')} labelled rows")
    report = plan.trailers.get(layout.TRAILER_REPORT)
    body = "\n".join([
        subject, "",
        f"The mlgitops performance monitor returned {layout.model_path(name)}/ and "
        f"{layout.manifest_path(name)} to their content before {plan.reverted}.",
        f"Evidence: {decision.reason}.",
        f"Numbers: {numbers(decision)}.",
        *([f"Report: {report}"] if report else []),
        f"Digest {plan.entry.digest} is now listed in {layout.QUARANTINE}:",
        "the controller will not deploy it again until a person removes its entry",
        "(review the report first).",
    ])
    return replace(plan, message=body)  # type: ignore[type-var]


def evidence_table(decision: Decision) -> dict[str, Any]:
    """What the decision page's policy table shows: the policy and both versions' values."""
    ev = decision.evidence
    out: dict[str, Any] = {
        "metric": ev.get("metric"), "labelledRows": ev.get("rows"),
        "servingValue": ev.get("new"), "previousValue": ev.get("previous"),
        "evaluation": ev.get("evaluation"), "pValue": ev.get("pValue"),
        "method": ev.get("method"), "alpha": ev.get("alpha"), "minRows": ev.get("minRows"),
        "minimum": ev.get("minimum"), "maxDrop": ev.get("maxDrop")}
    return {k: v for k, v in out.items() if v is not None and v != ""}
