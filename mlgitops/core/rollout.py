"""Progressive delivery, pure: a rollout's steps, its state, and the verdict on each step.

A manifest with ``spec.rollout.strategy`` other than ``direct`` makes a new version a
*candidate* beside the *stable* one. Its steps (`stages`): an optional shadow (the candidate
answers a copy of live traffic; users get the stable answer) and canary steps (the candidate
answers ``weight`` percent of user requests). `judge` takes the step's counters and the drift
analysis of its live rows and says: hold (the step goes on), next (the following step starts),
promote (the candidate takes all traffic) or abort (the candidate is reverted in Git).

Rules, in order (each verdict carries a sentence saying which applied):

1. A check fails only on enough evidence: ``analysis.minRows`` requests (error rate, latency)
   or compared answers (agreement, relative error). Failed checks abort at once, even before
   the step's end: a bad version should see as few rows as possible.
2. Checks: error rate above the stable version's by more than ``maxErrorRate``; p95 latency
   above ``maxLatencyRatio`` times the stable version's; label agreement below
   ``minAgreement`` (classifiers); mean relative error above ``maxRelativeError``
   (regressors); at the step's end, drift of the step's rows attributed to the candidate
   (``analysis.drift``, judged by `core.policy` with ``spec.drift``, on at least
   ``spec.drift.windowRows`` of the candidate's rows: the step's, or all it scored when the
   step's are fewer).
3. A step ends when the candidate scored its ``rows`` or its ``seconds`` passed. A step that
   ends with fewer than ``minRows`` rows, or before the drift check could be judged, is
   extended (inconclusive), never passed.
4. The last step passed: promote.

No I/O, no clock: callers pass ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mlgitops.core.rollout_policy import Hold, Rollout

Mode = Literal["shadow", "canary"]
Phase = Literal["running", "promoted", "aborted"]
Action = Literal["hold", "next", "promote", "abort"]


@dataclass(frozen=True)
class Stage:
    """One step of a rollout policy."""

    index: int
    mode: Mode
    weight: int
    """Percent of user requests the candidate answers (0 in a shadow)."""
    hold: Hold

    @property
    def mirror(self) -> bool:
        return self.mode == "shadow"

    def describe(self) -> str:
        what = "shadow (0% of users)" if self.mode == "shadow" else f"canary {self.weight}%"
        until = " or ".join([*([f"{self.hold.rows} rows"] if self.hold.rows else []),
                             *([f"{self.hold.seconds:g} s"] if self.hold.seconds else [])])
        return f"step {self.index + 1}: {what} for {until}"


def stages(policy: Rollout) -> tuple[Stage, ...]:
    """The steps of ``policy`` in order (empty for ``direct``)."""
    out: list[Stage] = []
    if policy.strategy in ("shadow", "shadow-canary"):
        out.append(Stage(0, "shadow", 0, policy.shadow))
    if policy.strategy in ("canary", "shadow-canary"):
        first = len(out)  # not inside the generator: `extend` grows ``out`` as it consumes it
        out.extend(Stage(first + i, "canary", s.weight, s.hold)
                   for i, s in enumerate(policy.canary_steps))
    return tuple(out)


@dataclass(frozen=True)
class State:
    """Where one model's rollout is: persisted, so that a restart resumes it."""

    version: str
    digest: str
    stable_version: str
    stable_digest: str
    step: int
    started_at: float
    """When the current step started (it restarts from here after a controller restart)."""
    phase: Phase = "running"
    reason: str = ""
    history: tuple[Mapping[str, Any], ...] = ()
    """One summary per finished step (its verdict and numbers)."""
    last: Mapping[str, Any] = field(default_factory=dict)
    """The current step's latest analysis (what ``status`` shows)."""

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest,
                "stableVersion": self.stable_version, "stableDigest": self.stable_digest,
                "step": self.step, "startedAt": self.started_at, "phase": self.phase,
                "reason": self.reason, "history": [dict(h) for h in self.history],
                "analysis": dict(self.last)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> State:
        phase = str(data.get("phase", "running"))
        return cls(version=str(data["version"]), digest=str(data["digest"]),
                   stable_version=str(data["stableVersion"]),
                   stable_digest=str(data["stableDigest"]), step=int(data["step"]),
                   started_at=float(data["startedAt"]),
                   phase="promoted" if phase == "promoted" else (
                       "aborted" if phase == "aborted" else "running"),
                   reason=str(data.get("reason", "")),
                   history=tuple(dict(h) for h in data.get("history", [])),
                   last=dict(data.get("analysis") or {}))

    def restarted(self, now: float) -> State:
        """The current step again from ``now`` (its counters were in the stopped controller)."""
        return replace(self, started_at=now, last={})


def start(*, version: str, digest: str, stable_version: str, stable_digest: str,
          now: float) -> State:
    return State(version, digest, stable_version, stable_digest, 0, now)


@dataclass(frozen=True)
class Counters:
    """What the current step measured (since it started)."""

    rows: int = 0
    """Live rows the candidate scored."""
    requests: int = 0
    """Requests the candidate answered (users' in a canary, copies in a shadow)."""
    errors: int = 0
    stable_requests: int = 0
    stable_errors: int = 0
    compared: int = 0
    """Rows answered by both versions (the same request)."""
    agreed: int = 0
    """Of ``compared``, rows where both gave the same label (classifiers)."""
    labels: int = 0
    """Of ``compared``, rows whose answers are labels (the rest are numbers)."""
    relative_error_sum: float = 0.0
    """Sum over the numeric compared rows of |candidate - stable| / max(|stable|, 1e-9)."""
    latency_p95: float | None = None
    stable_latency_p95: float | None = None

    @property
    def numeric(self) -> int:
        return self.compared - self.labels

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "requests": self.requests, "errors": self.errors,
                "stableRequests": self.stable_requests, "stableErrors": self.stable_errors,
                "compared": self.compared, "agreement": _ratio(self.agreed, self.labels),
                "relativeError": _ratio(self.relative_error_sum, self.numeric),
                "latencyP95": self.latency_p95, "stableLatencyP95": self.stable_latency_p95}


@dataclass(frozen=True)
class DriftCheck:
    """The drift policy's view of the step's live rows (`core.policy` computed it).

    ``judged`` is False while the candidate has scored fewer rows than the drift policy's
    window (``spec.drift.windowRows``): a verdict on fewer rows would be the tests' noise
    (`bench/drift_false_alarms.py`: on 300 rows of the reference's own population a fifth of
    the features drift by Evidently's Wasserstein rule at 0.1, and up to 9.5% of windows
    breach), so a step that ends then waits for them."""

    breached: bool
    attributable: bool
    reason: str
    judged: bool = True


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    threshold: float
    ok: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "value": self.value, "threshold": self.threshold,
                "ok": self.ok, "note": self.note}


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    state: State
    """The state after this verdict (persist it)."""
    checks: tuple[Check, ...] = ()


def _ratio(a: float, b: float) -> float | None:
    return None if b <= 0 else a / b


def checks(policy: Rollout, c: Counters, drift: DriftCheck | None) -> tuple[Check, ...]:
    """Every check with enough evidence to be judged, failed ones included."""
    a = policy.analysis
    out: list[Check] = []
    if c.requests >= a.min_rows:
        rate = c.errors / c.requests
        stable = (c.stable_errors / c.stable_requests) if c.stable_requests else 0.0
        out.append(Check("errorRate", round(rate, 4), a.max_error_rate, rate - stable
                         <= a.max_error_rate,
                         f"{rate:.1%} of the candidate's requests failed, {stable:.1%} of the "
                         f"stable version's (at most {a.max_error_rate:.1%} more allowed)"))
        if c.latency_p95 is not None and c.stable_latency_p95 is not None \
                and c.stable_requests >= a.min_rows:
            ratio = c.latency_p95 / max(c.stable_latency_p95, 1e-4)
            out.append(Check("latencyRatio", round(ratio, 3), a.max_latency_ratio,
                             ratio <= a.max_latency_ratio,
                             f"p95 latency {c.latency_p95 * 1000:.1f} ms against the stable "
                             f"version's {c.stable_latency_p95 * 1000:.1f} ms"))
    if c.labels >= a.min_rows:
        agreement = c.agreed / c.labels
        out.append(Check("agreement", round(agreement, 4), a.min_agreement,
                         agreement >= a.min_agreement,
                         f"both versions gave the same label on {agreement:.1%} of "
                         f"{c.labels} rows (at least {a.min_agreement:.0%} needed)"))
    if c.numeric >= a.min_rows:
        rel = c.relative_error_sum / c.numeric
        out.append(Check("relativeError", round(rel, 4), a.max_relative_error,
                         rel <= a.max_relative_error,
                         f"the answers differ by {rel:.1%} on average over {c.numeric} rows "
                         f"(at most {a.max_relative_error:.0%} allowed)"))
    if a.drift and drift is not None and drift.judged and c.rows >= a.min_rows:
        bad = drift.breached and drift.attributable
        out.append(Check("drift", 1.0 if bad else 0.0, 0.0, not bad, drift.reason))
    return tuple(out)


def _ended(stage: Stage, c: Counters, elapsed: float) -> bool:
    return ((stage.hold.rows is not None and c.rows >= stage.hold.rows)
            or (stage.hold.seconds is not None and elapsed >= stage.hold.seconds))


def judge(policy: Rollout, state: State, counters: Counters, drift: DriftCheck | None, *,
          now: float) -> Verdict:
    """The verdict on the current step of ``state`` (see the module docstring for the rules)."""
    steps = stages(policy)
    if state.phase != "running" or not steps:
        return Verdict("hold", state.reason or f"the rollout is {state.phase}", state)
    stage = steps[min(state.step, len(steps) - 1)]
    elapsed = now - state.started_at
    ended = _ended(stage, counters, elapsed)
    # drift is judged on the step's rows as a whole: a window judged again on every pass
    # would add up the false alarms of small samples
    found = checks(policy, counters, drift if ended else None)
    numbers = {"step": stage.index + 1, "of": len(steps), "mode": stage.mode,
               "weight": stage.weight, **counters.to_dict(),
               "checks": [ch.to_dict() for ch in found]}
    failed = [ch for ch in found if not ch.ok]
    if failed:
        reason = (f"{stage.describe()} failed: " + "; ".join(ch.note for ch in failed))
        done = replace(state, phase="aborted", reason=reason, last=numbers,
                       history=(*state.history, {**numbers, "verdict": "abort"}))
        return Verdict("abort", reason, done, found)
    if not ended:
        reason = (f"{stage.describe()}: {counters.rows} rows scored in {elapsed:.0f} s, "
                  f"{len(found)} check(s) passing so far")
        return Verdict("hold", reason, replace(state, reason=reason, last=numbers), found)
    basis = max(counters.rows, counters.compared)
    if basis < policy.analysis.min_rows:
        reason = (f"{stage.describe()} ended with only {basis} rows; it goes on until "
                  f"{policy.analysis.min_rows} (spec.rollout.analysis.minRows) are judged")
        return Verdict("hold", reason, replace(state, reason=reason, last=numbers), found)
    if policy.analysis.drift and drift is not None and not drift.judged:
        reason = f"{stage.describe()} ended; it goes on until {drift.reason}"
        return Verdict("hold", reason, replace(state, reason=reason, last=numbers), found)
    passed = f"{stage.describe()} passed ({', '.join(ch.name for ch in found) or 'no checks'})"
    history = (*state.history, {**numbers, "verdict": "pass"})
    if stage.index + 1 >= len(steps):
        reason = f"{passed}: the candidate takes all traffic"
        return Verdict("promote", reason, replace(state, phase="promoted", reason=reason,
                                                  history=history, last=numbers), found)
    following = steps[stage.index + 1]
    reason = f"{passed}; {following.describe()} starts"
    return Verdict("next", reason, replace(state, step=stage.index + 1, started_at=now,
                                           reason=reason, history=history, last={}), found)


def current(policy: Rollout, state: State) -> Stage | None:
    """The step ``state`` is in (None when it is no longer running)."""
    steps = stages(policy)
    if state.phase != "running" or not steps:
        return None
    return steps[min(state.step, len(steps) - 1)]


# comparing two answers -----------------------------------------------------------------------

def predictions(doc: Any) -> list[Any] | None:
    """The per-row predictions of a server's JSON answer (MLflow ``/invocations`` or a KServe v2
    ``infer`` response), or None when it holds none."""
    if isinstance(doc, Mapping):
        if isinstance(doc.get("predictions"), list):
            return _flat(doc["predictions"])
        outputs = doc.get("outputs")
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], Mapping):
            data = outputs[0].get("data")
            return _flat(data) if isinstance(data, list) else None
        return None
    if isinstance(doc, list):
        return _flat(doc)
    return None


def _flat(rows: Sequence[Any]) -> list[Any]:
    return [r[0] if isinstance(r, list) and len(r) == 1 else r for r in rows]


def _is_label(value: Any) -> bool:
    if isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


@dataclass(frozen=True)
class Comparison:
    compared: int = 0
    agreed: int = 0
    labels: int = 0
    relative_error_sum: float = 0.0


def compare(candidate: Sequence[Any], stable: Sequence[Any]) -> Comparison:
    """Row by row: label agreement where both answers are labels, else the relative error."""
    if len(candidate) != len(stable):
        return Comparison()
    agreed = labels = 0
    rel = 0.0
    for c, s in zip(candidate, stable, strict=True):
        if _is_label(c) and _is_label(s):
            labels += 1
            agreed += c == s
        elif isinstance(c, (int, float)) and isinstance(s, (int, float)):
            diff = abs(float(c) - float(s)) / max(abs(float(s)), 1e-9)
            rel += diff if math.isfinite(diff) else 1.0
        else:
            labels += 1  # unlike answers: a disagreement
    return Comparison(len(stable), agreed, labels, rel)


def summary(view: Mapping[str, Any]) -> str:
    """One line of a model status's ``rollout`` (what ``mlgitops status`` prints)."""
    weights = view.get("weights") or {}
    a = view.get("analysis") or {}
    step = f"step {int(view.get('step', 0)) + 1}/{view.get('steps', '?')}"
    parts = [f"{view.get('strategy', '?')} of {str(view.get('version', ''))[:12]} beside "
             f"{str(view.get('stableVersion', ''))[:12]}: {view.get('phase', '?')}",
             step if view.get("phase") == "running" else "",
             f"{view.get('mode')} " if view.get("phase") == "running" and view.get("mode")
             else "",
             f"weights stable {weights.get('stable', '?')}% / candidate "
             f"{weights.get('candidate', '?')}%"]
    if a:
        agreement = a.get("agreement")
        parts.append(f"rows {a.get('rows', 0)}, compared {a.get('compared', 0)}"
                     + (f", agreement {agreement:.1%}" if isinstance(agreement, float) else "")
                     + f", errors {a.get('errors', 0)}/{a.get('requests', 0)}")
    if view.get("reason"):
        parts.append(str(view["reason"]))
    return "; ".join(p.strip() for p in parts if p.strip())
