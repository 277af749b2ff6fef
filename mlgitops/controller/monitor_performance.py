"""The Monitor's performance checks (issue 20, item 5): revert for what a version gets wrong.

Every ``performance_interval`` seconds, for each watched version whose manifest has a
``spec.performance`` policy, the labels are joined with its prediction log
(`performance.labelled`). Once ``minRows`` rows are labelled, and again whenever more labels
came back, the *previous* version (the content of the model's paths at the parent of the
serving version) is scored on the same inputs by a `PreviousScorer`; `core.performance.policy`
observes (both versions' metric, exactly scikit-learn's, and the one-sided p-value) and decides;
`core.performance.revert.gated` applies the drift path's blockers, cooldown and cap.

- **revert**: exactly the drift revert path (`monitor_reverts.Reverts._revert`: pending record,
  path-scoped revert commit with the same trailers, quarantine entry, push, status, events,
  report), with the subject and body carrying the performance numbers
  (`core.performance.revert.commit`) and the decision page showing both metric values, the
  labelled rows and the p-value;
- **alert**: a ``PerformanceAlert`` event and an alert decision (page, webhooks);
- **keep**: a ``PerformanceWindow`` event with the numbers.

Scoring the previous version: `SandboxScorer` exports its model directory from Git (checked
against its digest, `source.Source.materialize`) and loads it in the same sandbox the hook and
the gate use (`adapters.sandbox.predict`: a child process with limits), in the monitor's
thread, never on a request path. It was chosen over the parked workload's HTTP route because
that route records what it scores into the previous version's live statistics and prediction
log, and returns no class probabilities.

May NOT: import a runtime adapter, decide anything itself, or write to Git except through the
drift revert path.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml

from mlgitops import errors
from mlgitops.adapters import git, sandbox
from mlgitops.controller import decision_pages, ports, reports
from mlgitops.controller import performance as perf_mod
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.controller.monitor_base import MonitorBase, Track
from mlgitops.controller.ports import H
from mlgitops.core import decisions, layout, manifest, policy
from mlgitops.core import status as status_mod
from mlgitops.core.performance import policy as perf_policy
from mlgitops.core.performance import revert as perf_revert


@dataclass(frozen=True)
class Scored:
    """What the previous version answered for the labelled rows, row for row."""

    prediction: np.ndarray
    proba: np.ndarray | None = None
    classes: tuple[Any, ...] = ()


class Unscorable(errors.ModelError):
    """The previous version cannot be scored on the labelled rows: they lack columns it takes
    (the new version's inputs changed). Nothing to compare with, so nothing to revert to."""


class PreviousScorer(Protocol):
    """Scores the previous version (``dep`` as committed at ``commit``) on ``inputs``."""

    def score(self, commit: str, dep: manifest.ModelDeployment, inputs: pd.DataFrame) -> Scored:
        ...


class SandboxScorer:
    """`PreviousScorer` in the sandbox: the model exported from Git, loaded in a child."""

    def __init__(self, source: source_mod.Source, *, timeout: float = 180.0) -> None:
        self.source = source
        self.timeout = timeout

    def score(self, commit: str, dep: manifest.ModelDeployment, inputs: pd.DataFrame) -> Scored:
        from mlgitops.adapters import mlflow_models  # imports mlflow: only when scoring

        model_dir = self.source.materialize(commit, dep, gated=False)
        info = mlflow_models.read_info(model_dir)
        lacking = [c for c in info.column_names if c not in inputs.columns]
        if lacking:
            raise Unscorable(
                f"the previous version {commit[:12]} takes {', '.join(lacking[:10])}, which the "
                "serving version's logged rows do not have")
        loadable = mlflow_models.check_loadable(info, policy=self.source.policy,
                                                reviewed=dep.trusted_types,
                                                source=layout.manifest_path(dep.name))
        with tempfile.TemporaryDirectory(prefix="mlgitops-score-") as tmp:
            data = Path(tmp) / "rows.parquet"
            inputs.to_parquet(data, index=False)
            Path(tmp).chmod(0o755)
            data.chmod(0o644)
            got = sandbox.predict(model_dir, data=data, trusted_types=loadable,
                                  policy=self.source.policy, timeout=self.timeout)
        proba = got.get("proba")
        classes = got.get("classes")
        return Scored(np.asarray(got["prediction"], dtype=object),
                      None if proba is None else np.asarray(proba, dtype=np.float64),
                      tuple(classes) if isinstance(classes, list) else ())


def aligned(scored: Scored, classes: list[Any], like: np.ndarray) -> perf_policy.Outputs:
    """``scored`` as `policy.Outputs`: predictions in the type of ``like`` (the serving
    version's), probabilities reordered to ``classes`` (None when they cannot be)."""
    prediction = scored.prediction
    if like.dtype.kind == "f":
        prediction = prediction.astype(np.float64)
    elif len(like):
        prediction = np.asarray([perf_mod.like(p, like[0]) for p in prediction], dtype=object)
    proba = None
    if scored.proba is not None and classes:
        index = {json.dumps(c): j for j, c in enumerate(scored.classes)}
        cols = [index.get(json.dumps(c)) for c in classes]
        if all(c is not None for c in cols):
            proba = scored.proba[:, [int(c) for c in cols if c is not None]]
    return perf_policy.Outputs(prediction=prediction, proba=proba)


class PerformanceChecks(MonitorBase[H]):
    predictions: ports.PredictionSource
    labels: ports.LabelSource
    scorer: PreviousScorer
    performance_interval: float
    alert_report_seconds: float
    _performance_seen: dict[str, tuple[str, int, float]]
    #: (model, version) -> when its last performance alert was recorded (page, webhooks)
    _performance_alerted: dict[tuple[str, str], float]
    performance_decisions: list[tuple[str, perf_policy.Decision]]

    def performance_tick(self) -> list[tuple[str, perf_policy.Decision]]:
        """Check every watched version's labelled rows (at most once per interval each)."""
        out = []
        for name, track in sorted(self.tracks.items()):
            try:
                got = self.check_performance(track)
            except (errors.MlgitopsError, ValueError, KeyError, OSError) as exc:
                self.store.event("MonitorFailed", model=name, commit=track.version,
                                 message=f"the performance monitor cannot check {name}: {exc}")
                continue
            if got is not None:
                out.append((name, got))
        return out

    def check_performance(self, track: Track) -> perf_policy.Decision | None:
        pol = track.deployment.performance
        if track.reverted or pol.metric is None or pol.action == "none":
            return None
        now = self.clock()
        seen = self._performance_seen.get(track.name)
        if seen is not None and seen[0] == track.version and now - seen[2] < self.performance_interval:
            return None
        rows = perf_mod.labelled(self.predictions, self.labels, track.name, track.version)
        count = 0 if rows is None else len(rows.ids)
        if seen is not None and seen[0] == track.version and seen[1] == count:
            self._performance_seen[track.name] = (track.version, count, now)
            return None  # no new labels since the last decision
        if rows is None or count < pol.min_rows:
            self._performance_seen[track.name] = (track.version, count, now)
            return None
        # until it is decided: a failure is retried after the interval, not on every pass
        self._performance_seen[track.name] = (track.version, -1, now)
        new = perf_policy.Outputs(prediction=rows.prediction, proba=rows.proba)
        previous = None
        unscorable: str | None = None
        if track.blocked is None and track.previous_version is not None:
            try:
                scored = self._score_previous(track, rows.inputs)
            except Unscorable as exc:
                unscorable = str(exc)
            else:
                previous = aligned(scored, rows.classes, rows.prediction)
        obs = perf_policy.observe(pol, y=rows.y, new=new, previous=previous,
                                  classes=rows.classes, evaluation=self._evaluation(track))
        decision = perf_policy.decide(pol, obs)
        if unscorable is not None and decision.action == "alert":
            decision = perf_policy.Decision(
                "alert", f"{decision.reason} ({unscorable})",
                {**decision.evidence, "whyNotReverted": unscorable})
        decision = perf_revert.gated(decision, blocked=track.blocked,
                                     reverts=self._history(track.name).reverts,
                                     rules=track.deployment.drift, now=now)
        self._performance_seen[track.name] = (track.version, count, now)
        self._act(track, decision, obs, rows.inputs, now=now)
        self.performance_decisions = [*self.performance_decisions[-99:], (track.name, decision)]
        return decision

    def _score_previous(self, track: Track, inputs: pd.DataFrame) -> Scored:
        parent = git.rev_parse(self.source.clone, f"{track.version}^")
        raw = git.show(self.source.clone, f"{track.version}^", layout.manifest_path(track.name))
        if parent is None or raw is None:
            raise errors.ManifestError(f"{track.name} has no previous version to score")
        dep = manifest.parse(yaml.safe_load(raw), source=layout.manifest_path(track.name))
        return self.scorer.score(parent, dep, inputs)

    def _evaluation(self, track: Track) -> float | None:
        """The serving version's own offline value of the policy's metric (evaluation.json)."""
        metric = track.deployment.performance.metric
        raw = git.show(self.source.clone, track.version,
                       f"{layout.model_path(track.name)}/evaluation.json")
        if raw is None or metric is None:
            return None
        try:
            value = json.loads(raw).get("metrics", {}).get(metric)
        except (ValueError, AttributeError):
            return None
        return float(value) if isinstance(value, int | float) else None

    def _act(self, track: Track, decision: perf_policy.Decision, obs: perf_policy.Observation,
             inputs: pd.DataFrame, *, now: float) -> None:
        numbers = {k: v for k, v in decision.evidence.items() if k != "breaches"}
        if decision.action == "keep":
            self.store.event("PerformanceWindow", model=track.name, commit=track.version,
                             message=decision.reason, **numbers)
            self._set_performance(track.name, "keep", decision.reason)
            return
        drift_decision = as_drift_decision(
            decision, obs, history=self._history(track.name), rules=track.deployment.drift,
            now=now)
        kind = decisions.Kind.REVERT if decision.action == "revert" else decisions.Kind.ALERT
        ident = decisions.make_id(model=track.name, kind=kind, at=now, version=track.version)
        page = decision_pages.page_file(self.state_dir / reports.REPORTS, track.name, ident)
        url = decisions.page_url(self.report_base, model=track.name, id=ident)
        record = decisions.Decision(
            id=ident, model=track.name, kind=kind, at=now, version=track.version,
            previous_version=track.previous_version, verdict=decision.reason,
            thresholds=perf_revert.evidence_table(decision), rows=obs.rows,
            report_url=url or _relative(page, self.root), digest=track.digest,
            policy_verdict=decision.action,
            why_not_reverted=perf_revert.why_not_reverted(decision),
            evidently_file=f"{ident}.evidently.html" if kind is decisions.Kind.REVERT else None)
        if decision.action == "alert":
            self.store.event("PerformanceAlert", model=track.name, commit=track.version,
                             message=decision.reason, **numbers)
            self._set_performance(track.name, "alert", decision.reason)
            key = (track.name, track.version)
            last = self._performance_alerted.get(key)
            if last is None or now - last >= self.alert_report_seconds:
                # a page and webhooks at most once per alert_report_seconds per version, as
                # drift alerts (the event above is recorded every time)
                self._performance_alerted[key] = now
                self._submit(record, None)
            return
        self._revert(track, drift_decision, inputs, record,
                     plan_with=lambda plan: perf_revert.commit(plan, decision),
                     set_status=self._performance_status)

    def _set_performance(self, name: str, action: str, message: str, *,
                         reason: str | None = None) -> None:
        """The Performance condition of ``name`` after a decision ``action``."""
        with self.store.locked():
            self.store.set(status_mod.performance_check(
                self.store.status(name), action=action, message=message, reason=reason,
                now=state_mod.now()))
        self.store.save()

    def _performance_status(self, name: str, decision: policy.Decision, *,
                            reason: str | None = None, message: str | None = None) -> None:
        """The revert path's status step for a performance revert: the Performance condition,
        not the Drift one (whose share would read 0.0)."""
        action = {policy.Verdict.REVERT: "revert",
                  policy.Verdict.ALERT: "alert"}.get(decision.verdict, "keep")
        self._set_performance(name, action, message or decision.reason, reason=reason)


def as_drift_decision(decision: perf_policy.Decision, obs: perf_policy.Observation, *,
                      history: policy.History, rules: manifest.DriftPolicy,
                      now: float) -> policy.Decision:
    """The `core.policy.Decision` the drift revert path executes for a performance decision
    (its verdict, reason and rows; a revert's time in the history until it lands)."""
    verdict = {"revert": policy.Verdict.REVERT,
               "alert": policy.Verdict.ALERT}.get(decision.action, policy.Verdict.OK)
    reverting = verdict is policy.Verdict.REVERT
    attributable = decision.evidence.get("attributable")
    return policy.Decision(
        verdict=verdict, reason=decision.reason,
        evidence=policy.Evidence(rows=obs.rows, share=0.0),
        streak=1 if decision.action != "keep" else 0, needed=1,
        attributable=attributable if isinstance(attributable, bool) else None,
        reverts_in_period=len(history.reverts_since(now - rules.revert_period_seconds)),
        at=now, history=history.with_revert(now) if reverting else history)


def _relative(page: Path, root: Path) -> str:
    try:
        return page.relative_to(root).as_posix()
    except ValueError:
        return str(page)
