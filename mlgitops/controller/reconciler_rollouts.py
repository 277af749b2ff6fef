"""The reconciler's progressive rollouts: a candidate beside the stable version, promoted or
dropped when Git (or the monitor's analysis) says so.

- CANDIDATE (`core.plan`): the new version starts beside the one serving; the `Router` gets a
  `Split` (shadow or canary step) and the rollout's `core.rollout.State`, resumed from the
  model's status when an earlier controller ran the same version (its current step starts
  again: its counters were in that controller; no step is skipped).
- PROGRESS: the monitor judges the steps; once it says promoted, the candidate takes the route
  and the replaced version is parked or retired as after any switch. A dead candidate is
  started again at its current step.
- A candidate Git no longer names (the monitor's revert landed, or a person committed another
  version) is dropped: nothing reaches it any more, and it stops once drained.

May NOT: import a runtime adapter, nor decide a step (the monitor's `core.rollout.judge` does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any, Generic

from mlgitops import errors
from mlgitops.controller import ports
from mlgitops.controller import source as source_mod
from mlgitops.controller.ports import H
from mlgitops.controller.router import Router, Split
from mlgitops.core import manifest, plan, quarantine, rollout, status


def view(policy: manifest.Rollout, state: rollout.State) -> dict[str, Any]:
    """What a model's status shows of its rollout: the state, its step's mode and weights."""
    stage = rollout.current(policy, state)
    steps = rollout.stages(policy)
    weight = 100 if state.phase == "promoted" else (0 if stage is None else stage.weight)
    return {**state.to_dict(), "strategy": policy.strategy, "steps": len(steps),
            "mode": None if stage is None else stage.mode,
            "weights": {"stable": 100 - weight, "candidate": weight},
            "mirrored": stage is not None and stage.mirror}


def publish(store: ports.StatusSink, router: Router[Any], name: str) -> None:
    """Write ``name``'s rollout (as `view`) into its status (kept across restarts)."""
    entry = router.rollouts.get(name)
    if entry is None:
        return
    store.set(replace(store.status(name), rollout=view(*entry)))


class Rollouts(Generic[H]):
    workloads: ports.Workloads[H]
    store: ports.StateStore
    router: Router[H]
    source: source_mod.Source
    endpoint: Callable[[str], str]
    inputs: Callable[[], str]
    wall: Callable[[], float]
    retiring: dict[Hashable, H]
    retry_wanted: bool
    retry_after: float | None

    def _hold(self, st: status.ModelStatus, step: plan.Step, now: str) -> None:
        raise NotImplementedError

    def _switched(self, name: str, old: H | None, handle: H, warm: H | None, *,
                  keep: float | None = None) -> None:
        raise NotImplementedError

    def _retire(self, handle: H) -> None:
        raise NotImplementedError

    def _deploy(self, st: status.ModelStatus, step: plan.Step, now: str) -> None:
        raise NotImplementedError

    def _revive(self, step: plan.Step) -> None:
        raise NotImplementedError

    def _set(self, st: status.ModelStatus) -> None:
        entry = self.router.rollouts.get(st.name)
        self.store.set(st if entry is None else replace(st, rollout=view(*entry)))

    def _candidate(self, st: status.ModelStatus, step: plan.Step, now: str) -> None:
        d, lv = step.desired, step.live
        assert d is not None and d.deployment is not None and lv is not None
        dep = d.deployment
        st = status.deploying(st, version=d.version, reason=step.reason, serving_now=True,
                              now=now)
        self.store.set(st)
        try:
            handle = self.workloads.deploy(d, model_dir=self.source.materialize(d.version, dep))
        except errors.Stalled as exc:
            self.store.failures[step.name] = plan.Failure(dep.digest, d.version, str(exc),
                                                          self.inputs())
            if isinstance(exc, errors.QuarantinedError):
                d = replace(d, quarantined=True)
            self._hold(st, plan.Step(step.name, plan.Action.HOLD, d, lv, str(exc)), now)
            self.store.event("DeployFailed", model=step.name, commit=d.version, message=str(exc),
                             digest=dep.digest)
            return
        except errors.Transient as exc:
            self.store.set(status.retry_pending(st, message=str(exc), serving_now=True, now=now))
            self.store.event("DeployRetry", model=step.name, commit=d.version, message=str(exc))
            self.retry_wanted = True
            return
        except errors.Waiting as exc:
            self.retry_after = min(exc.delay, self.retry_after or exc.delay)
            return
        prior = self._resume(st, d.version, dep.digest)
        state = prior or rollout.start(
            version=d.version, digest=dep.digest, stable_version=lv.version,
            stable_digest=lv.digest, now=self.wall())
        policy = dep.rollout
        self.router.rollouts = {**self.router.rollouts, step.name: (policy, state)}
        self.store.failures.pop(step.name, None)
        if state.phase == "promoted":  # promoted just before a restart: finish it now
            self.router.set_split(step.name, Split(handle, "canary", 100, state.step,
                                                   policy.key))
            self._promote(st, step.name, now)
            return
        stage = rollout.current(policy, state)
        assert stage is not None
        replaced = self.router.end_split(step.name)
        if replaced is not None and replaced.candidate.key != handle.key:
            self._stop_candidate(replaced.candidate)
        self.router.set_split(step.name, Split(handle, stage.mode, stage.weight, stage.index,
                                               policy.key))
        resumed = prior is not None
        self.store.event("RolloutResumed" if resumed else "RolloutStarted", model=step.name,
                         commit=d.version, digest=dep.digest, step=stage.index + 1,
                         weight=stage.weight, mode=stage.mode, stable=lv.version,
                         message=f"{d.version[:12]} runs beside {lv.version[:12]} on "
                                 f"{handle.where}: {stage.describe()}"
                                 + (" (the step starts again after a restart)" if resumed
                                    else ""))
        self._rolling(st, state.reason or stage.describe(), now)

    def _live_reverted(self, step: plan.Step, head: str) -> bool:
        """True when the version serving is quarantined at ``head`` (Git reverted it): going
        back to the older content is a rollback, never judged beside the bad version."""
        if step.live is None:
            return False
        try:
            entries = self.source.quarantined(head)
        except errors.MlgitopsError:
            return False
        return quarantine.find(entries, model=step.name, digest=step.live.digest) is not None

    def _restore_stable(self, st: status.ModelStatus, step: plan.Step, now: str) -> bool:
        """Nothing serves but a rollout of the desired version was under way (the controller
        stopped everything): the stable version serves again first, then the candidate resumes
        at its step. Deploying the candidate directly would skip its steps."""
        d = step.desired
        assert d is not None and d.deployment is not None
        prior = self._resume(st, d.version, d.deployment.digest)
        if prior is None or not d.deployment.rollout.progressive:
            return False
        try:
            stable = self.source.desired(prior.stable_version).get(step.name)
        except errors.MlgitopsError:
            return False
        if stable is None or stable.deployment is None or stable.digest != prior.stable_digest:
            return False
        self._deploy(st, plan.Step(step.name, plan.Action.DEPLOY, stable, None,
                                   f"the stable version of the rollout of {d.version[:12]} "
                                   "serves again first"), now)
        live = self.router.get(step.name)
        if live is None or live.version != prior.stable_version:
            return True  # it could not start: the next pass tries again
        self._candidate(replace(self.store.status(step.name), desired_commit=d.version),
                        plan.Step(step.name, plan.Action.CANDIDATE, d,
                                  plan.Live(step.name, live.version, live.digest, True),
                                  step.reason), now)
        return True

    def _resume(self, st: status.ModelStatus, version: str, digest: str) -> rollout.State | None:
        """The rollout of ``version`` an earlier controller (or an earlier candidate) ran."""
        entry = self.router.rollouts.get(st.name)
        if entry is not None:
            prior: rollout.State | None = entry[1]
        else:
            try:
                prior = rollout.State.from_dict(st.rollout) if st.rollout else None
            except (KeyError, TypeError, ValueError):
                prior = None
        if prior is None or prior.version != version or prior.digest != digest \
                or prior.phase == "aborted":
            return None
        return prior.restarted(self.wall())

    def _rolling(self, st: status.ModelStatus, message: str, now: str) -> None:
        st = replace(st, health=status.Health.PROGRESSING)
        st = st.with_condition(status.ConditionType.RECONCILING, status=True,
                               reason="Progressing", message=message, now=now)
        st = st.with_condition(status.ConditionType.STALLED, status=False, reason="Synced",
                               message="", now=now)
        self._set(st)

    def _progress(self, st: status.ModelStatus, step: plan.Step, now: str) -> None:
        name = step.name
        split = self.router.split(name)
        entry = self.router.rollouts.get(name)
        assert split is not None
        if step.live is not None and not step.live.alive:  # the stable version's server died
            self._revive(step)
        if step.candidate is not None and not step.candidate.alive:
            self.router.end_split(name)
            self.store.event("CandidateLost", model=name, commit=split.candidate.version,
                             message="the candidate's workload is gone; its current step "
                                     "starts again")
            self._candidate(st, replace(step, action=plan.Action.CANDIDATE), now)
            return
        if entry is not None and entry[1].phase == "promoted":
            self._promote(st, name, now)
            return
        message = entry[1].reason if entry is not None and entry[1].reason else step.reason
        self._rolling(st, message, now)

    def _promote(self, st: status.ModelStatus, name: str, now: str) -> None:
        split = self.router.end_split(name)
        assert split is not None
        handle = split.candidate
        old = self.router.set(name, handle)
        self.store.backends[name] = handle.record()
        st = status.serving(st, version=handle.version, digest=handle.digest,
                            endpoint=self.endpoint(name), now=now, applied=True)
        self._set(st)
        self.store.save()
        self.store.event("Deployed", model=name, commit=handle.version, digest=handle.digest,
                         previous=old.version if old else None, promoted=True,
                         message=f"{handle.version[:12]} serves on {handle.where}: promoted "
                                 "after its rollout passed every step")
        self._switched(name, old, handle, None)

    def _drop_candidate(self, name: str, why: str) -> None:
        split = self.router.end_split(name)
        if split is None:
            return
        entry = self.router.rollouts.get(name)
        if entry is not None and entry[1].phase == "running":
            state = replace(entry[1], phase="aborted",
                            reason=f"dropped: Git no longer names it ({why})")
            self.router.rollouts = {**self.router.rollouts, name: (entry[0], state)}
        handle = split.candidate
        self._stop_candidate(handle)
        self.store.event("CandidateDropped", model=name, commit=handle.version,
                         digest=handle.digest,
                         message=f"{handle.version[:12]} no longer runs beside the stable "
                                 f"version: {why}")

    def _stop_candidate(self, handle: H) -> None:
        """``handle`` gets no more requests: it finishes those it has, then stops."""
        self.workloads.draining(handle)
        self.retiring[handle.key] = handle
        threading.Thread(target=self._retire, args=(handle,), daemon=True).start()
