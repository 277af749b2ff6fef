"""One reconcile pass: source -> desired -> live -> plan -> apply -> health.

A version that fails validation or loading never replaces the one serving: the model is
marked Degraded and Stalled with the reason, and the failure is remembered with the inputs that
produced it (digest, commit, and the ``inputs`` fingerprint: trust and signing policy, settings,
this controller's run), so it is tried again when any of them changes, after a restart, or when
asked (`Reconciler.retry`, ``mlgitops retry``).

Runtime-neutral: workloads run behind the `ports.Workloads` port (the local runtime's server
processes, or a fake in tests), conditions and events go to a `ports.StateStore`; condition
transitions are the pure functions of `core.status`, the steps those of `core.plan`.

May NOT: import a runtime adapter (``adapters.local_runtime``, ``adapters.kubernetes``), nor
know about processes, pids or ports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace

from mlgitops import errors
from mlgitops.controller import ports
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.controller.ports import H
from mlgitops.controller.reconciler_rollouts import Rollouts
from mlgitops.controller.router import Router as Router
from mlgitops.core import plan, status


@dataclass(frozen=True)
class Outcome:
    head: str | None
    steps: tuple[plan.Step, ...]
    seconds: float


class Reconciler(Rollouts[H]):
    def __init__(
        self,
        *,
        source: source_mod.Source,
        workloads: ports.Workloads[H],
        store: ports.StateStore,
        router: Router[H],
        endpoint: Callable[[str], str],
        drain_seconds: float = 1.0,
        keep_previous_seconds: float = 0.0,
        inputs: Callable[[], str] = lambda: "",
        declare: Callable[[str, Mapping[str, plan.Desired]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], str] = state_mod.now,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
        progressive: bool = False,
    ) -> None:
        self.source = source
        #: told what Git declares at each reconciled head before anything is planned (the
        #: Kubernetes runtime keeps one ModelDeployment per declared model)
        self.declare = declare
        #: monotonic seconds (drain and keep-warm deadlines), wall-clock timestamps, and the
        #: pause between looks at a draining workload: injected so tests need no real time
        self.clock = clock
        #: seconds since the epoch (a rollout step's start, persisted across restarts)
        self.wall = wall
        #: whether this runtime runs a rollout's candidate beside the stable version (and a
        #: gateway splits and mirrors); without it a shadow or canary version deploys directly
        self.progressive = progressive
        self.now = now
        self.sleep = sleep
        #: the fingerprint of what, besides the version, decides whether it may deploy
        self.inputs = inputs
        self.workloads = workloads
        self.store = store
        self.router = router
        self.endpoint = endpoint
        self.drain_seconds = drain_seconds
        self.lock = threading.Lock()
        self.on_deployed: list[Callable[[str, H], None]] = []
        #: set when a deploy failed for a transient reason: the loop retries with back-off
        self.retry_wanted = False
        #: set when a deploy is under way (`errors.Waiting`): look again after this many seconds
        self.retry_after: float | None = None
        #: workloads replaced by a newer version, draining before they stop (key -> handle)
        self.retiring: dict[Hashable, H] = {}
        #: how long the version a switch replaced stays warm at most (0: it stops after
        #: draining; the manifest's ``spec.rollout.scaleDownDelaySeconds`` says how long below
        #: that); a rollback to its content then routes to it at once instead of loading it again
        self.keep_previous_seconds = keep_previous_seconds
        #: model -> (the replaced version's workload kept warm, when it stops)
        self.parked: dict[str, tuple[H, float]] = {}

    # live -------------------------------------------------------------------------------
    def adopt(self) -> ports.Recovered[H]:
        """Take over workloads an earlier controller left running, when they still answer.

        Every other workload the earlier controller started (warm standbys, one that was
        launching, those draining after a switch) is stopped: after a crash nothing of ours
        keeps running unowned.
        """
        found = self.workloads.recover(dict(self.store.backends))
        for name, why in found.lost.items():
            record = self.store.backends.pop(name, {})
            self.store.event("Lost", model=name, commit=record.get("version"),
                             message=f"a server left by the previous controller is gone: {why}")
        for name, handle in found.adopted.items():
            self.router.set(name, handle)
            self.store.backends[name] = handle.record()
            self.store.event("Adopted", model=name, commit=handle.version,
                             message=f"kept serving {handle.label}")
        for left in found.leftovers:
            self.store.event("OrphanStopped", model=left.name, commit=left.version,
                             role=left.role, **left.details,
                             message=f"stopped a {left.role} {left.what} the previous "
                                     "controller left behind")
        self.store.save()
        return found

    def live(self) -> dict[str, plan.Live]:
        return {
            name: plan.Live(name, h.version, h.digest, self.workloads.alive(h))
            for name, h in self.router.routes.items()
        }

    def candidates(self) -> dict[str, plan.Live]:
        """The candidates of the rollouts under way (`Router.splits`), by model."""
        return {
            name: plan.Live(name, sp.candidate.version, sp.candidate.digest,
                            self.workloads.alive(sp.candidate))
            for name, sp in self.router.splits.items()
        }

    def retry(self, names: list[str]) -> list[str]:
        """Forget the remembered failures of ``names``: the next pass tries their versions
        again. Returns the names that had one."""
        with self.lock:
            had = [n for n in names if self.store.failures.pop(n, None) is not None]
            for n in names:
                st = self.store.status(n)
                self.store.event("RetryRequested", model=n, commit=st.desired_commit,
                                 message="a retry was asked for" + (
                                     "; its held version is tried again" if n in had else
                                     "; nothing was held, so the next pass simply looks again"))
            self.store.save()
            return had

    def any_dead(self) -> bool:
        return any(not self.workloads.alive(h) for h in self.router.routes.values())

    # the pass ---------------------------------------------------------------------------
    def reconcile(self, *, fetch: bool = True) -> Outcome:
        with self.lock:
            start = time.perf_counter()
            head = self.source.sync() if fetch else self.store.head
            if head is None:
                return Outcome(None, (), time.perf_counter() - start)
            self.store.head = head
            self.retry_wanted = False
            self.retry_after = None
            desired = self.source.desired(head)
            if self.declare is not None:
                self.declare(head, desired)
            inputs = self.inputs()
            failures = {n: f for n, f in self.store.failures.items() if f.inputs == inputs}
            steps = plan.plan(desired, self.live(), failures, self.candidates())
            for step in steps:
                self._apply(step, head)
            self.store.save()
            return Outcome(head, tuple(steps), time.perf_counter() - start)

    def _apply(self, step: plan.Step, head: str) -> None:
        name = step.name
        now = self.now()
        st = self.store.status(name)
        if step.desired is not None:
            st = replace(st, desired_commit=step.desired.version)
        if step.candidate is not None and step.action is not plan.Action.PROGRESS:
            self._drop_candidate(name, step.reason)
        if step.action is plan.Action.CANDIDATE and not self.progressive:
            step = replace(step, action=plan.Action.DEPLOY,
                           reason=f"{step.reason.split('; rolled out by')[0]} (this runtime "
                                  "cannot run a candidate beside the serving version yet: "
                                  "it replaces it)")
        if step.action is plan.Action.CANDIDATE and self._live_reverted(step, head):
            step = replace(step, action=plan.Action.DEPLOY,
                           reason=f"{step.reason.split('; rolled out by')[0]} (a rollback: the "
                                  "version serving is quarantined, so no rollout)")
        if step.action is plan.Action.CANDIDATE:
            self._candidate(st, step, now)
            return
        if step.action is plan.Action.PROGRESS:
            self._progress(st, step, now)
            return
        if step.action is plan.Action.KEEP:
            assert step.live is not None
            st = self._ready(st, step.live.version, step.live.digest, now)
            if self.store.failures.get(name) and step.desired is not None:
                self.store.failures.pop(name, None)
            self._set(st)
            return
        if step.action is plan.Action.RETIRE:
            old = self.router.drop(name)
            if old is not None:
                self._retire(old)
            parked = self.parked.pop(name, None)
            if parked is not None:
                self._retire(parked[0])
            self.store.forget(name)
            self.store.event("Retired", model=name, commit=head, message=step.reason)
            return
        if step.action is plan.Action.HOLD:
            if step.live is not None and not step.live.alive:
                self._revive(step)
            self._hold(st, step, now)
            return
        assert step.desired is not None and step.desired.deployment is not None
        if step.live is None and self._restore_stable(st, step, now):
            return
        self._deploy(st, step, now)

    def _ready(self, st: status.ModelStatus, version: str, digest: str, now: str) -> status.ModelStatus:
        return status.serving(st, version=version, digest=digest, endpoint=self.endpoint(st.name),
                              now=now)

    def _hold(self, st: status.ModelStatus, step: plan.Step, now: str) -> None:
        live = self.router.get(step.name)
        version = step.desired.version if step.desired else None
        st, new = status.held(st, version=version, reason=step.reason,
                              quarantined=step.desired is not None and step.desired.quarantined,
                              serving_version=live.version if live else None, now=now)
        self._set(st)
        if new:
            self.store.event("Held", model=step.name, commit=version, message=step.reason)

    def _deploy(self, st: status.ModelStatus, step: plan.Step, now: str) -> None:
        d = step.desired
        assert d is not None and d.deployment is not None
        dep = d.deployment
        st = status.deploying(st, version=d.version, reason=step.reason,
                              serving_now=step.live is not None, now=now)
        self._set(st)
        started = time.perf_counter()
        try:
            handle = warm = self._unpark(step.name, dep.digest)
            exported = time.perf_counter()
            if handle is None:
                model_dir = self.source.materialize(d.version, dep)
                exported = time.perf_counter()
                handle = self.workloads.deploy(d, model_dir=model_dir)
        except errors.Stalled as exc:
            self.store.failures[step.name] = plan.Failure(dep.digest, d.version, str(exc),
                                                          self.inputs())
            if isinstance(exc, errors.QuarantinedError):  # matched by content, not bytes
                d = replace(d, quarantined=True)
            self._hold(st, plan.Step(step.name, plan.Action.HOLD, d, step.live, str(exc)), now)
            self.store.event("DeployFailed", model=step.name, commit=d.version, message=str(exc),
                             digest=dep.digest)
            return
        except errors.Transient as exc:
            st = status.retry_pending(st, message=str(exc), serving_now=step.live is not None,
                                      now=now)
            self._set(st)
            self.store.event("DeployRetry", model=step.name, commit=d.version, message=str(exc))
            self.retry_wanted = True
            return
        except errors.Waiting as exc:  # under way (a rollout): Reconciling, looked at again
            st = status.deploying(st, version=d.version, reason=str(exc),
                                  serving_now=step.live is not None, now=now)
            self._set(st)
            self.retry_after = min(exc.delay, self.retry_after or exc.delay)
            return
        old = self.router.set(step.name, handle)
        self.store.backends[step.name] = handle.record()
        self.store.failures.pop(step.name, None)
        st = status.serving(st, version=d.version, digest=dep.digest,
                            endpoint=self.endpoint(st.name), now=now, applied=True)
        self._set(st)
        self.store.save()
        kind = "Restarted" if step.action is plan.Action.RESTART else "Deployed"
        self.store.event(kind, model=step.name, commit=d.version, digest=dep.digest,
                         message=f"{d.version[:12]} serves on {handle.where}" + (
                             "" if warm is None else f" (kept warm since {handle.version[:12]} "
                             "served this content)"),
                         previous=old.version if old else None,
                         seconds=round(time.perf_counter() - started, 3),
                         exportSeconds=round(exported - started, 3))
        self._switched(step.name, old, handle, warm, keep=dep.rollout.scale_down_delay_seconds)

    def _switched(self, name: str, old: H | None, handle: H, warm: H | None, *,
                  keep: float | None = None) -> None:
        """``handle`` now answers for ``name`` instead of ``old``: hooks, then ``old`` drains
        (kept warm for ``keep`` seconds, at most `keep_previous_seconds`, for a rollback; or
        stopped)."""
        for hook in self.on_deployed:
            hook(name, handle)
        if old is not None and old.key != handle.key:
            self.workloads.draining(old)
            keep = self.keep_previous_seconds if keep is None else min(self.keep_previous_seconds, keep)
            if keep > 0 and old.digest != handle.digest and warm is None:
                self._park(name, old, keep)
            else:
                self.retiring[old.key] = old
                threading.Thread(target=self._retire, args=(old,), daemon=True).start()

    def _park(self, name: str, handle: H, seconds: float) -> None:
        """Keep ``handle`` (just replaced) warm for ``seconds`` (the manifest's
        ``scaleDownDelaySeconds``, at most `keep_previous_seconds`), then retire it."""
        until = self.clock() + seconds
        earlier = self.parked.get(name)
        self.parked[name] = (handle, until)
        if earlier is not None:
            self.retiring[earlier[0].key] = earlier[0]
            threading.Thread(target=self._retire, args=(earlier[0],), daemon=True).start()

        def expire() -> None:
            while self.clock() < until:
                self.sleep(min(0.05, max(until - self.clock(), 0.0)))
            with self.lock:
                if self.parked.get(name, (None, 0.0)) != (handle, until):
                    return  # routed again (maybe parked anew since), or replaced by a newer one
                del self.parked[name]
                self.retiring[handle.key] = handle
            self._retire(handle)

        threading.Thread(target=expire, daemon=True).start()

    def _unpark(self, name: str, digest: str) -> H | None:
        """The warm workload of ``name``'s replaced version when it holds ``digest`` (a rollback)."""
        found = self.parked.pop(name, None)
        if found is None:
            return None
        handle = found[0]
        if handle.digest == digest and self.workloads.alive(handle):
            return handle
        self.parked[name] = found  # another content: it stays parked until it expires
        return None

    def _revive(self, step: plan.Step) -> None:
        """The older version serves while a newer one is held: if it died, start it again."""
        old = self.router.get(step.name)
        if old is None:
            return
        try:
            handle = self.workloads.relaunch(old)
        except errors.MlgitopsError as exc:
            self.store.event("RestartFailed", model=step.name, commit=old.version, message=str(exc))
            self.retry_wanted = True
            return
        if handle is None:
            return
        self.router.set(step.name, handle)
        self.store.backends[step.name] = handle.record()
        self.store.event("Restarted", model=step.name, commit=old.version, digest=old.digest,
                         message=f"restarted {old.version[:12]} (its server died) while the "
                                 f"newer version is held: {step.reason}")

    def _retire(self, handle: H) -> None:
        """Stop an old workload once requests routed to it have finished (zero failed requests)."""
        drained = self.clock() + self.drain_seconds
        deadline = drained + 30.0
        while self.clock() < drained or (self.router.busy(handle) and self.clock() < deadline):
            self.sleep(0.05)
        self.workloads.stop(handle)
        self.retiring.pop(handle.key, None)

    def stop_all(self) -> None:
        """Stop every workload: those serving and those still draining after a switch."""
        for name in list(self.router.routes):
            handle = self.router.drop(name)
            if handle is not None:
                self.workloads.stop(handle, grace=5.0)
        for name in list(self.router.splits):
            split = self.router.end_split(name)
            if split is not None:
                self.workloads.stop(split.candidate, grace=5.0)
        for handle, _ in list(self.parked.values()):
            self.workloads.stop(handle, grace=5.0)
        self.parked.clear()
        for handle in list(self.retiring.values()):
            self.workloads.stop(handle, grace=5.0)
        self.retiring.clear()
        self.store.backends.clear()
        self.store.save()
