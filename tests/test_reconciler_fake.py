"""The reconciler against the fake `Workloads` port: every decision, no process, milliseconds.

The source is real: a real repository and bare remote built once for the module (v1, v2, an
invalid manifest, a quarantined v2, the model's manifest removed), each test pointing the
remote's branch at one of those commits. Workloads, status and events are the in-memory fakes
shipped beside the ports (`mlgitops.controller.fakes`). The local runtime's processes are
tested in test_controller.py / test_crash_safety.py, the same decisions end to end.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import scenarios

from mlgitops import errors
from mlgitops.adapters import git
from mlgitops.controller import fakes
from mlgitops.controller import loop as loop_mod
from mlgitops.controller import reconciler as rec
from mlgitops.controller import source as source_mod
from mlgitops.core import layout, plan
from mlgitops.core.status import ConditionType, Health

pytestmark = pytest.mark.fast

NAME = "credit"
A = plan.Action


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> scenarios.Template:
    return scenarios.build_template(tmp_path_factory.mktemp("reconciler-template"))


@dataclass
class World:
    bare: Path
    commits: dict[str, str]
    source: source_mod.Source
    workloads: fakes.FakeWorkloads = field(default_factory=fakes.FakeWorkloads)
    store: fakes.FakeStatus = field(default_factory=fakes.FakeStatus)
    router: rec.Router[fakes.FakeHandle] = field(default_factory=rec.Router)
    reconciler: rec.Reconciler[fakes.FakeHandle] = field(init=False)
    outcome: rec.Outcome | None = None
    clock: list[float] = field(default_factory=lambda: [0.0])
    """The reconciler's monotonic clock: it moves only when a test moves it."""

    def __post_init__(self) -> None:
        self.reconciler = self.restart()

    def restart(self) -> rec.Reconciler[fakes.FakeHandle]:
        """A new reconciler (a controller started again) on the same store and workloads."""
        self.router = rec.Router()
        return rec.Reconciler(source=self.source, workloads=self.workloads, store=self.store,
                              router=self.router, endpoint=lambda n: f"http://gw.invalid/{n}",
                              drain_seconds=0.0, clock=lambda: self.clock[0],
                              sleep=lambda s: time.sleep(0.001))

    def label(self, version: str | None) -> str | None:
        """The label of the commit a version is (v1, v2, bad, ...)."""
        return next((k for k, v in self.commits.items() if v == version), version)

    def serving(self) -> str | None:
        handle = self.router.get(NAME)
        return None if handle is None else self.label(handle.version)

    def settle(self) -> None:
        """Wait for replaced workloads to finish draining (a thread per switch)."""
        deadline = time.monotonic() + 5
        while self.reconciler.retiring and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not self.reconciler.retiring

    # moves ---------------------------------------------------------------------------------
    def move(self, word: str) -> None:
        verb, _, arg = word.partition(":")
        if verb == "git":  # the remote's branch now names this state of the repository
            git.run(self.bare, "update-ref", f"refs/heads/{layout.BRANCH}", self.commits[arg])
        elif verb == "reconcile":
            self.outcome = self.reconciler.reconcile()
            self.settle()
        elif verb == "kill":
            handle = self.router.get(NAME)
            assert handle is not None
            self.workloads.kill(handle)
        elif verb == "refuse":
            error: errors.MlgitopsError = {
                "model": errors.ModelError("the model does not load: a test said so"),
                "transient": errors.RuntimeFailure("the server did not start: a test said so"),
                "waiting": errors.Waiting("rolling out: 0 of 1 new pods ready", delay=2.0),
            }[arg]
            self.workloads.refuse(NAME, error, times=1 if arg in ("transient", "waiting") else None)
        else:
            raise AssertionError(f"unknown move {word!r}")


@pytest.fixture()
def world(template: scenarios.Template, tmp_path: Path) -> World:
    bare = tmp_path / "remote.git"
    shutil.copytree(template.bare, bare, symlinks=True)
    source = source_mod.Source(tmp_path / "state", url=str(bare), local=bare)
    return World(bare, template.commits, source)


@dataclass(frozen=True)
class Case:
    id: str
    given: tuple[str, ...]
    """Moves before the pass under test (each ``reconcile`` is a full pass)."""
    when: tuple[str, ...]
    """Moves right before the pass under test."""
    action: plan.Action
    serving: str | None
    events: tuple[str, ...]
    """The events of the pass under test, in order."""
    ready: tuple[bool, str]
    stalled: tuple[bool, str] | None = None
    health: Health = Health.HEALTHY
    retry: bool = False
    attempts: int = 1
    """Deploys asked of the workloads over the whole case (refused ones included)."""
    started: int | None = None
    """Workloads started over the whole case (default: ``attempts``)."""
    drained: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()


SERVING_V1 = ("git:v1", "reconcile")

CASES = [
    Case("deploy", (), ("git:v1",), A.DEPLOY, "v1", ("Deployed",), (True, "Serving"),
         stalled=(False, "Synced")),
    Case("keep", SERVING_V1, (), A.KEEP, "v1", (), (True, "Serving"), stalled=(False, "Synced")),
    Case("restart a dead one", SERVING_V1, ("kill",), A.RESTART, "v1", ("Restarted",),
         (True, "Serving"), attempts=2, drained=("v1",), stopped=("v1",)),
    Case("switch drains the old one", SERVING_V1, ("git:v2",), A.DEPLOY, "v2", ("Deployed",),
         (True, "Serving"), attempts=2, drained=("v1",), stopped=("v1",)),
    Case("hold an invalid manifest, keep the old one", SERVING_V1, ("git:bad",), A.HOLD, "v1",
         ("Held",), (True, "OlderVersionServing"), stalled=(True, "InvalidVersion"),
         health=Health.DEGRADED),
    Case("hold a quarantined version, keep the old one", SERVING_V1, ("git:quarantined",),
         A.HOLD, "v1", ("Held",), (True, "OlderVersionServing"), stalled=(True, "Quarantined"),
         health=Health.DEGRADED),
    Case("hold an invalid first version: nothing serves", (), ("git:bad",), A.HOLD, None,
         ("Held",), (False, "NothingServing"), stalled=(True, "InvalidVersion"),
         health=Health.MISSING, attempts=0),
    Case("a version that does not load is held, the old one serves", SERVING_V1,
         ("refuse:model", "git:v2"), A.DEPLOY, "v1", ("DeployFailed",),
         (True, "OlderVersionServing"), stalled=(True, "InvalidVersion"),
         health=Health.DEGRADED, attempts=2, started=1),
    Case("a refused version is not tried again until Git changes",
         (*SERVING_V1, "refuse:model", "git:v2", "reconcile"), (), A.HOLD, "v1", (),
         (True, "OlderVersionServing"), stalled=(True, "InvalidVersion"),
         health=Health.DEGRADED, attempts=2, started=1),
    Case("transient failure: retry flag, the old one serves", SERVING_V1,
         ("refuse:transient", "git:v2"), A.DEPLOY, "v1", ("DeployRetry",),
         (True, "RetryPending"), health=Health.PROGRESSING, retry=True, attempts=2, started=1),
    Case("transient failure: the retry deploys",
         (*SERVING_V1, "refuse:transient", "git:v2", "reconcile"), (), A.DEPLOY, "v2",
         ("Deployed",), (True, "Serving"), attempts=3, started=2, drained=("v1",),
         stopped=("v1",)),
    Case("a rollout under way: Reconciling, the old one serves, looked at again", SERVING_V1,
         ("refuse:waiting", "git:v2"), A.DEPLOY, "v1", (), (True, "Serving"),
         health=Health.PROGRESSING, attempts=2, started=1),
    Case("a rollout under way: done on the next look",
         (*SERVING_V1, "refuse:waiting", "git:v2", "reconcile"), (), A.DEPLOY, "v2",
         ("Deployed",), (True, "Serving"), attempts=3, started=2, drained=("v1",),
         stopped=("v1",)),
    Case("retire", SERVING_V1, ("git:gone",), A.RETIRE, None, ("Retired",), (False, ""),
         health=Health.MISSING, stopped=("v1",)),
    Case("restart the old one while the new one is held", SERVING_V1, ("git:bad", "kill"),
         A.HOLD, "v1", ("Restarted", "Held"), (True, "OlderVersionServing"),
         stalled=(True, "InvalidVersion"), health=Health.DEGRADED, attempts=1, started=2),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reconcile(world: World, case: Case) -> None:
    for word in case.given:
        world.move(word)
    before = len(world.store.events)
    for word in case.when:
        world.move(word)
    world.move("reconcile")
    outcome = world.outcome
    assert outcome is not None and outcome.head is not None
    assert [(s.name, s.action) for s in outcome.steps] == [(NAME, case.action)]
    assert world.serving() == case.serving
    assert [e["type"] for e in world.store.events[before:]] == list(case.events)
    assert world.reconciler.retry_wanted is case.retry
    waiting = "refuse:waiting" in case.when
    assert world.reconciler.retry_after == (2.0 if waiting else None)
    if waiting:
        reconciling = world.store.status(NAME).condition(ConditionType.RECONCILING)
        assert reconciling is not None and reconciling.status
        assert "rolling out" in reconciling.message
    workloads = world.workloads
    assert len(workloads.attempts) == case.attempts
    started = case.attempts if case.started is None else case.started
    assert len(workloads.deployed) == started
    assert [world.label(h.version) for h in workloads.drained] == list(case.drained)
    assert [world.label(h.version) for h in workloads.stopped] == list(case.stopped)
    # exactly the routed workload runs: nothing leaks, nothing routed is dead
    assert set(workloads.running.values()) == set(world.router.routes.values())
    st = world.store.status(NAME)
    if case.action is A.RETIRE:
        assert NAME not in world.store.models and NAME not in world.store.backends
        return
    assert st.health is case.health
    ready = st.condition(ConditionType.READY)
    assert ready is not None and (ready.status, ready.reason) == case.ready
    if case.stalled is not None:
        stalled = st.condition(ConditionType.STALLED)
        assert stalled is not None and (stalled.status, stalled.reason) == case.stalled
    handle = world.router.get(NAME)
    if handle is not None:
        assert world.store.backends[NAME] == handle.record()
        assert st.served_commit == handle.version and st.served_digest == handle.digest
        assert st.endpoint == f"http://gw.invalid/{NAME}"
    if case.events in (("Deployed",), ("Restarted",)):
        assert handle is not None and st.last_applied_commit == handle.version
        reconciling = st.condition(ConditionType.RECONCILING)
        assert reconciling is not None and not reconciling.status


def test_a_switch_waits_for_requests_in_flight_on_the_old_one(world: World) -> None:
    world.move("git:v1")
    world.move("reconcile")
    old = world.router.get(NAME)
    assert old is not None
    world.router.inflight[old.key] = 1  # a request the gateway forwarded is still running
    world.move("git:v2")
    world.reconciler.reconcile()
    assert world.serving() == "v2"
    assert world.workloads.drained == [old]
    # the reconciler's clock stands still: only the request in flight can be holding it
    assert world.workloads.alive(old) and old.key in world.reconciler.retiring
    world.router.inflight[old.key] = 0
    world.settle()
    assert world.workloads.stopped == [old]


def test_a_restarted_controller_adopts_what_serves_and_stops_the_rest(world: World) -> None:
    world.move("git:v1")
    world.move("reconcile")
    serving = world.router.get(NAME)
    assert serving is not None
    # the earlier controller was also starting v2 when it stopped
    spare = world.workloads.relaunch(fakes.FakeHandle(NAME, world.commits["v2"], "d", 0))
    assert spare is not None
    world.reconciler = world.restart()
    found = world.reconciler.adopt()
    assert dict(found.adopted) == {NAME: serving}
    assert [left.details for left in found.leftovers] == [{"serial": spare.serial}]
    kinds = world.store.kinds(NAME)
    assert kinds[-2:] == ["Adopted", "OrphanStopped"]
    assert not world.workloads.alive(spare)
    world.move("reconcile")
    assert world.outcome is not None and world.outcome.steps[0].action is A.KEEP
    assert len(world.workloads.attempts) == 1  # nothing deployed again


def test_a_workload_gone_during_the_restart_is_lost_then_deployed_again(world: World) -> None:
    world.move("git:v1")
    world.move("reconcile")
    serving = world.router.get(NAME)
    assert serving is not None
    world.workloads.kill(serving)
    world.reconciler = world.restart()
    found = world.reconciler.adopt()
    assert NAME in found.lost and NAME not in world.store.backends
    world.move("reconcile")
    assert world.outcome is not None and world.outcome.steps[0].action is A.DEPLOY
    assert world.serving() == "v1" and world.store.kinds(NAME)[-2:] == ["Lost", "Deployed"]


def test_stop_all_stops_serving_and_draining_workloads(world: World) -> None:
    world.move("git:v1")
    world.move("reconcile")
    old = world.router.get(NAME)
    assert old is not None
    world.router.inflight[old.key] = 1
    world.move("git:v2")
    world.reconciler.reconcile()
    world.reconciler.stop_all()
    assert world.workloads.running == {}
    assert world.store.backends == {} and world.router.routes == {}
    world.router.inflight[old.key] = 0
    world.settle()


def test_a_held_version_is_tried_again_when_asked_or_when_its_inputs_change(world: World) -> None:
    """A failure is remembered with the inputs that produced it (issue 16): the same inputs hold
    it without a new attempt; `Reconciler.retry` or other inputs try it again."""
    inputs = ["trust=a"]
    world.reconciler = rec.Reconciler(
        source=world.source, workloads=world.workloads, store=world.store, router=world.router,
        endpoint=lambda n: f"http://gw.invalid/{n}", drain_seconds=0.0,
        inputs=lambda: inputs[0])
    world.move("git:v2")
    world.workloads.refuse(NAME, errors.ModelError("numpy.round is not admitted by the trust policy"))
    world.move("reconcile")
    assert world.serving() is None and world.store.failures[NAME].inputs == "trust=a"
    attempts = len(world.workloads.attempts)
    world.workloads.allow(NAME)  # what held it is fixed, but nothing says so yet
    world.move("reconcile")
    assert world.outcome is not None and world.outcome.steps[0].action is A.HOLD
    assert len(world.workloads.attempts) == attempts  # remembered: not tried again
    assert world.reconciler.retry([NAME]) == [NAME]
    world.move("reconcile")
    assert world.serving() == "v2" and NAME not in world.store.failures
    assert "RetryRequested" in world.store.kinds(NAME)

    # the same again, cured by a change of inputs (a trust policy fixed, a restart)
    world.move("git:v1")
    world.workloads.refuse(NAME, errors.ModelError("held"), version=world.commits["v1"])
    world.move("reconcile")
    assert world.serving() == "v2" and world.store.failures[NAME].version == world.commits["v1"]
    world.workloads.allow(NAME)
    world.move("reconcile")
    assert world.serving() == "v2"
    inputs[0] = "trust=b"
    world.move("reconcile")
    assert world.serving() == "v1"


# the loop both runtimes run (`controller.loop`), on an injected clock -----------------------

def test_the_loop_backs_off_while_git_is_away_and_resets_once_it_answers(
        world: World, tmp_path: Path) -> None:
    world.move("git:v1")
    source = source_mod.Source(tmp_path / "fetching", url=f"file://{world.bare}")
    reconciler = rec.Reconciler(source=source, workloads=world.workloads, store=world.store,
                                router=world.router, endpoint=lambda n: f"http://gw.invalid/{n}",
                                drain_seconds=0.0)
    now, failures = [0.0], []
    loop = loop_mod.Loop(reconciler, poll_seconds=60.0, clock=lambda: now[0], max_backoff=300.0,
                         failed=lambda exc, wait: failures.append((str(exc), wait)))
    away = world.bare.with_name("away.git")
    world.bare.rename(away)  # the remote cannot be fetched (an outage)
    assert [loop.once() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert len(failures) == 4 and "away" not in failures[0][0]
    away.rename(world.bare)  # it answers again: the next pass goes through, back-off reset
    assert loop.once() == loop.idle
    assert world.serving() == "v1" and loop.backoff == 1.0
    assert loop.once() == loop.idle and len(world.workloads.attempts) == 1  # nothing due
    world.bare.rename(away)
    loop.trigger("a push")
    assert [loop.once() for _ in range(3)] == [1.0, 2.0, 4.0]  # from a second again, not 16
    away.rename(world.bare)
    loop.answered()  # told the remote answers (the operator: a watch event): at once, reset
    assert loop.once() == loop.idle and loop.backoff == 1.0 and not loop.failing


def test_the_loop_looks_again_after_a_rollout_asked_it_to(world: World) -> None:
    now: list[float] = [0.0]
    loop = loop_mod.Loop(world.reconciler, poll_seconds=60.0, clock=lambda: now[0])
    world.move("git:v1")
    world.move("refuse:waiting")
    loop.once()
    assert world.serving() is None and world.reconciler.retry_after == 2.0
    now[0] = 1.0
    loop.once()
    assert len(world.workloads.attempts) == 1  # not yet: the rollout said two seconds
    now[0] = 2.5
    loop.once()
    assert len(world.workloads.attempts) == 2 and world.serving() == "v1"
    assert world.reconciler.retry_after is None


# the scenario table every runtime runs (`scenarios`), here against the fakes ------------------

@dataclass
class FakeDriver:
    bare: Path
    reconciler: rec.Reconciler[fakes.FakeHandle]

    def converge(self) -> None:
        scenarios.converge(self.reconciler, timeout=10.0)


@pytest.mark.parametrize("scenario", sorted(scenarios.SCENARIOS))
def test_scenario_on_the_fakes(scenario: str, template: scenarios.Template, tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    shutil.copytree(template.bare, bare, symlinks=True)
    source = source_mod.Source(tmp_path / "state", url=f"file://{bare}")
    reconciler = rec.Reconciler(source=source, workloads=fakes.FakeWorkloads(),
                                store=fakes.FakeStatus(), router=rec.Router(),
                                endpoint=lambda n: f"http://gw.invalid/{n}", drain_seconds=0.0,
                                progressive=True)
    scenarios.run_scenario(scenarios.SCENARIOS[scenario], FakeDriver(bare, reconciler), template)
