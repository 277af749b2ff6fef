"""The drift policy's rules: one closed window's `Evidence` -> a `Decision` (see the package
docstring for the rules, in order)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mlgitops.core.drift import DriftReport
from mlgitops.core.manifest import DriftPolicy

ATTRIBUTION_MARGIN = 0.2
"""How much lower the drifted share against the previous baseline must be ("clearly better")."""


class Verdict(enum.Enum):
    INCONCLUSIVE = "inconclusive"  # too few rows to say anything; never acts
    OK = "ok"  # no breach; the streak resets
    BREACH = "breach"  # breached, but no action (yet): streak too short, or action none
    ALERT = "alert"  # act by alerting a person; nothing changes in Git
    REVERT = "revert"  # revert the version in Git

    @property
    def acts(self) -> bool:
        return self in (Verdict.ALERT, Verdict.REVERT)

    @property
    def breached(self) -> bool:
        return self in (Verdict.BREACH, Verdict.ALERT, Verdict.REVERT)


@dataclass(frozen=True)
class Evidence:
    """What one closed window measured (all numbers the decision and its event carry)."""

    rows: int
    """Live rows in the window."""
    share: float
    """Share of drifted features in the window against the serving version's baseline."""
    drifted_columns: tuple[str, ...] = ()
    prediction_method: str | None = None
    prediction_score: float | None = None
    prediction_threshold: float | None = None
    prediction_drifted: bool = False
    fit_current: float | None = None
    """Drifted share of the window against the serving version's reference, measured as
    `fit_previous` is (`fit_share`), so the two compare like with like."""
    fit_previous: float | None = None
    """Drifted share of the window against the previous version's reference (None: none)."""
    revert_blocked: str | None = None
    """Why no revert is possible whatever the numbers (no previous version, quarantined, …)."""
    columns: tuple[tuple[str, str, float, float, bool], ...] = ()
    """Per feature of the window: (column, method, score, threshold, drifted)."""

    @classmethod
    def from_reports(
        cls,
        window: DriftReport,
        *,
        fit_current: float | None = None,
        fit_previous: float | None = None,
        revert_blocked: str | None = None,
    ) -> Evidence:
        """Evidence from the window's report and (optionally) its fit to both references."""
        pred = window.prediction
        score = None if pred is None or math.isnan(pred.score) else pred.score
        return cls(
            rows=window.rows,
            share=window.share,
            drifted_columns=window.drifted_columns,
            prediction_method=None if pred is None else pred.method,
            prediction_score=score,
            prediction_threshold=None if pred is None else pred.threshold,
            prediction_drifted=bool(pred is not None and pred.drifted),
            fit_current=fit_current,
            fit_previous=fit_previous,
            revert_blocked=revert_blocked,
            columns=tuple(
                (c.column, c.method, c.score, c.threshold, c.drifted) for c in window.columns
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "share": round(self.share, 4),
            "driftedColumns": list(self.drifted_columns),
            "predictionMethod": self.prediction_method,
            "predictionScore": _round(self.prediction_score),
            "predictionThreshold": self.prediction_threshold,
            "predictionDrifted": self.prediction_drifted,
            "fitCurrent": _round(self.fit_current),
            "fitPrevious": _round(self.fit_previous),
            "revertBlocked": self.revert_blocked,
            "columns": [
                {"column": c, "method": m, "score": None if math.isnan(sc) else round(sc, 4),
                 "threshold": t, "drifted": d}
                for c, m, sc, t, d in self.columns
            ],
        }


@dataclass(frozen=True)
class History:
    """What the policy remembers about one model between windows."""

    streak: int = 0
    """Breached windows in a row (of the serving version) since the last action."""
    reverts: tuple[float, ...] = ()
    """Times of automatic reverts of this model (any version), oldest first."""

    def reverts_since(self, since: float) -> tuple[float, ...]:
        return tuple(t for t in self.reverts if t > since)

    def for_new_version(self) -> History:
        """A new version serves: the streak starts again; reverts still count."""
        return replace(self, streak=0)

    def with_revert(self, at: float) -> History:
        """This history once a revert decided at ``at`` landed (counted once)."""
        if at in self.reverts:
            return self
        return replace(self, reverts=tuple(sorted((*self.reverts, at))))

    def without_revert(self, at: float) -> History:
        """This history without the revert decided at ``at`` (it did not land)."""
        return replace(self, reverts=tuple(t for t in self.reverts if t != at))

    def to_dict(self) -> dict[str, Any]:
        return {"streak": self.streak, "reverts": list(self.reverts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> History:
        if not data:
            return cls()
        reverts = tuple(sorted(float(t) for t in data.get("reverts", ()) or ()))
        return cls(streak=int(data.get("streak", 0) or 0), reverts=reverts)


@dataclass(frozen=True)
class Decision:
    """The outcome of one window, the numbers behind it, and the history to keep."""

    verdict: Verdict
    reason: str
    evidence: Evidence
    streak: int
    """Breached windows in a row including this one (0 when it did not breach)."""
    needed: int
    """``consecutiveWindows`` of the policy."""
    attributable: bool | None
    """Whether the drift is the new version's fault (None when not evaluated)."""
    reverts_in_period: int
    """Automatic reverts of this model within ``revertPeriodSeconds`` before this window."""
    at: float
    history: History = field(repr=False)
    """The history after this decision (pass it to the next `decide`)."""

    @property
    def reverts(self) -> bool:
        return self.verdict is Verdict.REVERT

    @property
    def history_until_landed(self) -> History:
        """The history to keep while the revert this decision asks for has not landed."""
        return self.history.without_revert(self.at) if self.reverts else self.history

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready numbers (what events and ``status.drift`` carry)."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "streak": self.streak,
            "needed": self.needed,
            "attributable": self.attributable,
            "revertsInPeriod": self.reverts_in_period,
            "closedAt": self.at,
            **self.evidence.to_dict(),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _pct(share: float) -> str:
    return f"{share:.0%}"


def attribute(evidence: Evidence, policy: DriftPolicy) -> tuple[bool, str]:
    """Whether a revert could cure the drift, and the sentence saying why (rule 4)."""
    if policy.attribution == "none":
        return True, "attribution is off (spec.drift.attribution: none)"
    cur = evidence.fit_current
    prev = evidence.fit_previous
    inputs_fit = evidence.share < policy.dataset_share
    if (
        prev is not None
        and cur is not None
        and prev < policy.dataset_share
        and cur - prev >= ATTRIBUTION_MARGIN - 1e-9
    ):
        return True, (
            f"live data fits the previous version's baseline clearly better "
            f"({_pct(prev)} of features drift against it vs {_pct(cur)} against this version's)"
        )
    if evidence.prediction_drifted and inputs_fit:
        return True, (
            f"the predictions drifted ({evidence.prediction_method} "
            f"{fmt_number(evidence.prediction_score)} vs threshold {fmt_number(evidence.prediction_threshold)}) "
            f"while only {_pct(evidence.share)} of input features drift"
        )
    if prev is None:
        return False, (
            f"{_pct(evidence.share)} of input features drift and there is no previous baseline "
            "to compare with, so a revert may not cure it"
        )
    return False, (
        f"the inputs drifted away from both versions ({_pct(prev)} of features drift against the "
        f"previous baseline, {_pct(cur if cur is not None else evidence.share)} against this "
        "one's): a revert cannot cure input drift"
    )


def fmt_number(value: float | None) -> str:
    """A score for a sentence (3 significant digits; "n/a" when absent)."""
    return "n/a" if value is None else f"{value:.3g}"


def decide(evidence: Evidence, history: History, policy: DriftPolicy, *, now: float) -> Decision:
    """The decision for one closed window (see the package docstring for the rules)."""
    needed = policy.consecutive_windows
    period_start = now - policy.revert_period_seconds
    in_period = len(history.reverts_since(period_start))

    def done(verdict: Verdict, reason: str, *, streak: int, keep_streak: int,
             attributable: bool | None = None, reverts: tuple[float, ...] | None = None) -> Decision:
        kept = History(streak=keep_streak, reverts=history.reverts if reverts is None else reverts)
        return Decision(verdict, reason, evidence, streak, needed, attributable, in_period, now, kept)

    if evidence.rows < policy.min_rows:
        return done(
            Verdict.INCONCLUSIVE,
            f"only {evidence.rows} live rows in the window; at least {policy.min_rows} "
            "(spec.drift.minRows) are needed for a verdict",
            streak=history.streak,
            keep_streak=history.streak,
        )
    inputs = evidence.share >= policy.dataset_share
    if not inputs and not evidence.prediction_drifted:
        return done(
            Verdict.OK,
            f"{_pct(evidence.share)} of features drift (below {_pct(policy.dataset_share)}) and "
            "the predictions do not",
            streak=0,
            keep_streak=0,
        )
    what = []
    if inputs:
        what.append(f"{_pct(evidence.share)} of features drift "
                    f"({', '.join(evidence.drifted_columns) or '-'})")
    if evidence.prediction_drifted:
        what.append(f"the predictions drift ({evidence.prediction_method} "
                    f"{fmt_number(evidence.prediction_score)})")
    breach = " and ".join(what)
    streak = history.streak + 1
    if streak < needed:
        return done(
            Verdict.BREACH,
            f"{breach}: breached window {streak} of {needed} needed in a row",
            streak=streak,
            keep_streak=streak,
        )
    if policy.action == "none":
        return done(Verdict.BREACH, f"{breach}; spec.drift.action is none, so nothing is done",
                    streak=streak, keep_streak=0)
    attributable, why = attribute(evidence, policy)
    prefix = f"{breach} for {streak} window(s) in a row"
    if not attributable:
        return done(Verdict.ALERT, f"{prefix}, but {why}; alerting only",
                    streak=streak, keep_streak=0, attributable=False)
    if policy.action == "alert":
        return done(Verdict.ALERT, f"{prefix} and {why}; spec.drift.action is alert",
                    streak=streak, keep_streak=0, attributable=True)
    if evidence.revert_blocked:
        return done(Verdict.ALERT, f"{prefix} and {why}, but {evidence.revert_blocked}; alerting only",
                    streak=streak, keep_streak=0, attributable=True)
    if in_period >= policy.max_reverts:
        return done(
            Verdict.ALERT,
            f"{prefix} and {why}, but {in_period} automatic revert(s) already happened within "
            f"{policy.revert_period_seconds:.0f}s (spec.drift.maxReverts {policy.max_reverts}); "
            "alerting only",
            streak=streak, keep_streak=0, attributable=True,
        )
    last = history.reverts[-1] if history.reverts else None
    if last is not None and now - last < policy.cooldown_seconds:
        return done(
            Verdict.ALERT,
            f"{prefix} and {why}, but the last automatic revert was {now - last:.0f}s ago "
            f"(spec.drift.cooldownSeconds {policy.cooldown_seconds:.0f}); alerting only",
            streak=streak, keep_streak=0, attributable=True,
        )
    kept = (*history.reverts_since(period_start), now)
    return done(Verdict.REVERT, f"{prefix} and {why}", streak=streak, keep_streak=0,
                attributable=True, reverts=kept)
