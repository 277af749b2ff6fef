"""The monitor's rollout analysis: each candidate's step judged on its own live rows.

On every pass, for each model with a candidate (`router.Split`): the candidate's live rows
since the step started (the stats store, as for any version) go through the drift policy and
its attribution against the stable version's baseline; the gateway's `router.StepCounters`
give the agreement of both answers on the same rows, failures and latencies. The pure
`core.rollout.judge` says hold, next, promote or abort:

- next: the `Split` moves to the following step (new counters); a ``step`` decision is recorded.
- promote: recorded, and the reconciler is woken: it gives the candidate the route.
- abort: nothing reaches the candidate any more (`Router.freeze`), then the same revert as a
  drift breach (path-scoped ``git revert`` + quarantine, pushed, a revert decision); the
  reconciler drops the candidate because Git no longer names it.

May NOT: deploy or route a version (the reconciler does), nor write to Git except through the
revert path of `monitor_reverts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlgitops import errors
from mlgitops.adapters import stats_store
from mlgitops.controller import reconciler_rollouts
from mlgitops.controller.monitor_base import Track
from mlgitops.controller.monitor_reverts import Reverts
from mlgitops.controller.ports import H
from mlgitops.controller.router import Split
from mlgitops.core import decisions, drift, manifest, policy, rollout, stats


@dataclass
class Candidate:
    """What the monitor keeps about one candidate's current step."""

    track: Track
    step: int
    started_at: float
    cursor: stats_store.Snapshot | None
    published: float = 0.0


class RolloutChecks(Reverts[H]):
    _candidates: dict[str, Candidate]

    def rollout_tick(self) -> list[tuple[str, rollout.Verdict]]:
        """Judge every candidate's current step once; the verdicts."""
        out: list[tuple[str, rollout.Verdict]] = []
        for name in [n for n in self._candidates if n not in self.router.splits]:
            del self._candidates[name]
        for name, split in sorted(self.router.splits.items()):
            try:
                verdict = self._judge(name, split)
            except (errors.MlgitopsError, ValueError, KeyError, OSError) as exc:
                self._problem(name, split.candidate.version,
                              f"the rollout of {name} cannot be judged yet: {exc}")
                continue
            if verdict is not None:
                out.append((name, verdict))
        return out

    def _candidate(self, name: str, split: Split[H], state: rollout.State) -> Candidate:
        known = self._candidates.get(name)
        if (known is not None and known.track.version == split.candidate.version
                and known.step == state.step and known.started_at == state.started_at):
            return known
        if known is not None and known.track.version == split.candidate.version:
            track = known.track
        else:
            track = self._candidate_track(name, split.candidate, state)
        try:  # the step counts the rows scored from now on
            cursor: stats_store.Snapshot | None = self.live_stats.read(
                name, track.version, baseline=track.baseline)
        except errors.MlgitopsError:
            cursor = None  # nothing recorded yet: every row is the step's
        found = Candidate(track, state.step, state.started_at, cursor)
        self._candidates[name] = found
        return found

    def _candidate_track(self, name: str, candidate: H, state: rollout.State) -> Track:
        clone = self.source.clone
        dep = self._deployment(clone, name, candidate.version)
        baseline = self._baseline(clone, name, candidate.version)
        if dep is None or baseline is None:
            raise errors.BaselineError(
                f"the manifest or baseline of {name} is missing at {candidate.version[:12]}")
        previous = self._baseline(clone, name, state.stable_version)
        return Track(name=name, version=candidate.version, digest=candidate.digest,
                     deployment=dep, baseline=baseline, previous_baseline=previous,
                     previous_version=state.stable_version, blocked=None, opened=self.clock())

    def _judge(self, name: str, split: Split[H]) -> rollout.Verdict | None:
        entry = self.router.rollouts.get(name)
        counters = self.router.counters.get(name)
        if entry is None or counters is None or split.frozen:
            return None
        rollout_policy, state = entry
        if state.phase != "running" or state.version != split.candidate.version:
            return None
        cand = self._candidate(name, split, state)
        track = cand.track
        snap = self.live_stats.read(name, track.version, baseline=track.baseline)
        window = self.live_stats.window(snap, cand.cursor, version=track.version,
                                        baseline=track.baseline)
        # drift is judged on the drift policy's window at least: the step's rows, or every
        # row the candidate scored (the same live traffic) when the step's are fewer
        since = cand.cursor
        rows = window
        if window.rows < track.deployment.drift.window_rows and cand.cursor is not None:
            since = None
            rows = self.live_stats.window(snap, None, version=track.version,
                                          baseline=track.baseline)
        evidence, check = self._drift(track, rows, rollout_policy)
        now = self.clock()
        verdict = rollout.judge(rollout_policy, state, counters.snapshot(rows=window.rows),
                                check, now=now)
        if verdict.action == "hold":
            self._keep(name, rollout_policy, verdict.state, cand, now)
            return verdict
        self.router.rollouts = {**self.router.rollouts, name: (rollout_policy, verdict.state)}
        if verdict.action == "abort":
            self.router.freeze(name)
            self._publish(name)
            self._abort(track, verdict, evidence, rows, snap, since, now)
            return verdict
        stage = rollout.current(rollout_policy, verdict.state)
        if verdict.action == "next" and stage is not None:
            self.router.set_split(name, Split(split.candidate, stage.mode, stage.weight,
                                              stage.index, split.key))
        self._publish(name)
        self.store.event("RolloutStep", model=name, commit=track.version,
                         action=verdict.action, message=verdict.reason,
                         **{k: v for k, v in verdict.state.history[-1].items()
                            if k not in ("checks",)})
        self.dispatcher.submit(decisions.of_rollout(
            kind=decisions.Kind.STEP, model=name, at=now, version=track.version,
            previous_version=state.stable_version, verdict=verdict.reason,
            digest=track.digest, base_url=self.report_base))
        if verdict.action == "promote":
            self.trigger(f"rollout of {name} passed")
        return verdict

    def _drift(self, track: Track, window: stats.LiveStats, ro: manifest.Rollout
               ) -> tuple[policy.Evidence | None, rollout.DriftCheck | None]:
        if window.rows < max(ro.analysis.min_rows, 1):
            return None, None
        rules = track.deployment.drift
        if window.rows < rules.window_rows:
            return None, rollout.DriftCheck(
                False, False, f"the candidate has scored {rules.window_rows} rows for the drift "
                f"check (spec.drift.windowRows; {window.rows} so far)", judged=False)
        report = drift.compare_stats(track.baseline, window,
                                     share=track.deployment.drift.dataset_share)
        fit_current = fit_previous = None
        if track.previous_baseline is not None:
            fit_previous = policy.fit_share(track.previous_baseline, track.baseline, window)
            if fit_previous is not None:
                fit_current = policy.fit_share(track.baseline, track.baseline, window)
        evidence = policy.Evidence.from_reports(report, fit_current=fit_current,
                                                fit_previous=fit_previous)
        breached = evidence.share >= rules.dataset_share or evidence.prediction_drifted
        attributable, why = policy.attribute(evidence, rules)
        reason = (f"{evidence.share:.0%} of features drift against the candidate's baseline"
                  + (f"; {why}" if breached else ""))
        return evidence, rollout.DriftCheck(breached, attributable, reason)

    def _keep(self, name: str, ro: manifest.Rollout, state: rollout.State, cand: Candidate,
              now: float) -> None:
        self.router.rollouts = {**self.router.rollouts, name: (ro, state)}
        if now - cand.published >= 2.0:  # the status file is not rewritten every pass
            cand.published = now
            self._publish(name)

    def _publish(self, name: str) -> None:
        with self.store.locked():
            reconciler_rollouts.publish(self.store, self.router, name)
        self.store.save()

    def _abort(self, track: Track, verdict: rollout.Verdict, evidence: policy.Evidence | None,
               window: stats.LiveStats, snap: stats_store.Snapshot,
               since: stats_store.Snapshot | None, now: float) -> None:
        """The same revert as a drift breach: the candidate's commit, path-scoped, quarantined."""
        ev = evidence or policy.Evidence(rows=window.rows, share=0.0)
        decision = policy.Decision(policy.Verdict.REVERT, verdict.reason, ev, 1, 1, True,
                                   0, now, self._history(track.name).with_revert(now))
        record = self.record_of(track, decision, window)
        sample = self.window_rows_of(track, snap, since)
        stage = verdict.state.history[-1] if verdict.state.history else {}
        why = (f"its rollout failed at step {stage.get('step', '?')} "
               f"({stage.get('mode', '?')}) before it was promoted")
        self._revert(track, decision, sample, record, why=why)

    def _problem(self, name: str, version: str, message: str) -> None:
        raise NotImplementedError

    def record_of(self, track: Track, decision: policy.Decision,
                window: stats.LiveStats) -> decisions.Decision:
        raise NotImplementedError

    def window_rows_of(self, track: Track, snap: stats_store.Snapshot,
                       since: stats_store.Snapshot | None) -> Any:
        raise NotImplementedError

    @staticmethod
    def _deployment(clone: Any, name: str, rev: str) -> manifest.ModelDeployment | None:
        raise NotImplementedError

    @staticmethod
    def _baseline(clone: Any, name: str, rev: str) -> stats.Baseline | None:
        raise NotImplementedError
