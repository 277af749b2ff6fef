"""The drift monitor: windows of live rows -> decisions -> alerts, reverts and reports.

Two levels:
- the monitor alone on a real repository and remote, reading live statistics in the servers'
  real file format (written here with `stats_store.write_worker`, no server processes);
- end to end: a real controller with real server processes, real git and a real bare remote
  with its validating hook, and live traffic through the gateway.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from support.data import FEATURES, make_frame, train
from support.net import free_port, version_at
from support.waits import wait_until

import mlgitops
from mlgitops import errors, settings
from mlgitops.adapters import evidently_reports, git, local_runtime, stats_store
from mlgitops.authoring import repository
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import monitor as monitor_mod
from mlgitops.controller import reconciler as rec
from mlgitops.controller import reports, run
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.core import decisions, layout, policy, quarantine, stats
from mlgitops.core.status import ConditionType

pytestmark = pytest.mark.process

NAME = "credit"
# Evidently's normed Wasserstein (threshold 0.1) flags ~30% of 200-row windows of an unchanged
# population and ~0% of 500-row ones: windows smaller than a few hundred rows measure noise.
DRIFT = {"windowRows": 500, "minRows": 300, "consecutiveWindows": 1, "cooldownSeconds": 0,
         "maxReverts": 1, "revertPeriodSeconds": 3600}


def population(n: int, *, shift: float = 0.0, seed: int = 9) -> pd.DataFrame:
    return make_frame(n, shift=shift, seed=seed)[FEATURES]


def build_repo(root: Path, *, drift: dict[str, Any] = DRIFT) -> tuple[Path, Path, str, str, Any]:
    """v1 (population A) -> drift policy edit -> v2 (trained on a shifted population B), one push."""
    work = root / "models-repo"
    bare = repository.init(work)
    a, b = make_frame(1500, seed=1), make_frame(1500, shift=1.5, seed=2)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label",
                              push=False, quiet=True, message="credit v1 on population A"))
    path = work / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["drift"].update(drift)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(work, message="credit: small drift windows", paths=[layout.MANIFESTS])
    model_b = train(b, seed=2)
    v2 = str(mlgitops.publish(model_b, b, name=NAME, repo=work, target="label", push=False,
                              quiet=True, message="credit v2 on population B"))
    git.push(work)
    return work, bare, v1, v2, model_b


def digest_at(repo: Path, rev: str, name: str = NAME) -> str:
    doc = yaml.safe_load(git.show(repo, rev, layout.manifest_path(name)) or b"")
    return str(doc["spec"]["model"]["digest"])


def events(store: state_mod.Store, *kinds: str) -> list[dict[str, Any]]:
    return [e for e in store.events(NAME) if not kinds or e["type"] in kinds]


# ---------------------------------------------------------------------------------------------
# The monitor alone


@dataclass
class World:
    work: Path
    bare: Path
    v1: str
    v2: str
    model: Any
    store: state_mod.Store
    source: source_mod.Source
    router: rec.Router
    monitor: monitor_mod.Monitor
    now: list[float]
    triggers: list[str]
    built: list[reports.Plan] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def serve(self, version: str) -> None:
        self.router.set(NAME, local_runtime.Backend(NAME, version, digest_at(self.bare, version),
                                                    port=1, pid=os.getpid(), log=Path(os.devnull)))

    def send(self, frame: pd.DataFrame, *, version: str | None = None) -> None:
        """What a server worker would publish after scoring ``frame`` (cumulative, one worker)."""
        version = version or self.router.routes[NAME].version
        raw = git.show(self.source.clone, version, f"models/{NAME}/{layout.BASELINE}")
        baseline = stats.Baseline.from_dict(json.loads(raw or b""))
        stats_dir = self.store.dir / "stats" / NAME / version
        before = stats_store.read(stats_dir, version=version, baseline=baseline)
        worker = before.workers.get("w1")
        live = worker.live.copy() if worker else stats.LiveStats.empty(baseline)
        preds = np.asarray(self.model.predict(frame[FEATURES]))
        live.update({c: frame[c].to_numpy() for c in FEATURES}, preds)
        sample = frame[FEATURES].assign(prediction=preds)
        if worker is not None:
            sample = pd.concat([worker.sample, sample], ignore_index=True).tail(2000)
        stats_store.write_worker(stats_dir, worker_id="w1", version=version,
                                 digest=digest_at(self.bare, version), live=live,
                                 sample_frame=sample, name=NAME)

    def tick(self) -> list[policy.Decision]:
        self.now[0] += 1.0
        return [d for _, d in self.monitor.tick()]

    def remote_head(self) -> str:
        return git.text(self.bare, "rev-parse", "refs/heads/main")

    def publish_bad(self, *, seed: int) -> str:
        """A person publishes another version trained on population B (and the controller sees it)."""
        git.run(self.work, "pull", "-q", "--ff-only", "origin", "main")
        b = make_frame(1500, shift=1.5, seed=seed)
        self.model = train(b, seed=seed)
        sha = str(mlgitops.publish(self.model, b, name=NAME, repo=self.work, target="label",
                                   quiet=True))
        self.store.head = self.source.sync()
        return sha


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str, Any]:
    return build_repo(tmp_path_factory.mktemp("monitor-template"))


@pytest.fixture()
def world(template: tuple[Path, Path, str, str, Any], tmp_path: Path) -> Iterator[World]:
    t_work, t_bare, v1, v2, model = template
    work, bare = tmp_path / "models-repo", tmp_path / "models-repo.git"
    shutil.copytree(t_bare, bare, symlinks=True)
    shutil.copytree(t_work, work, symlinks=True)
    git.run(work, "remote", "set-url", "origin", str(bare))
    # this level tests the monitor; the remote's validating hook is tested end to end below
    (bare / "hooks" / "pre-receive").unlink()
    state = settings.state_dir(work)
    store = state_mod.Store(state)
    src = source_mod.Source(state, url=str(bare))
    store.head = src.sync()
    router = rec.Router()
    now = [1_000_000.0]
    triggers: list[str] = []
    built: list[reports.Plan] = []

    def fake_report(state_dir: Path, clone: Path, *, name: str, version: str,
                    target: reports.Plan, **_: Any) -> reports.Built:
        built.append(target)
        paths = evidently_reports.ReportPaths(target.html, target.snapshot, target.snapshot)
        return reports.Built(target, paths, None, None, 0, 0, 0.0)

    mon = monitor_mod.Monitor(store=store, router=router, source=src, state_dir=state, root=work,
                              url=str(bare), trigger=triggers.append, window_seconds=30.0,
                              build_report=fake_report, clock=lambda: now[0])
    w = World(work, bare, v1, v2, model, store, src, router, mon, now, triggers, built)
    w.serve(v2)
    yield w


def test_breach_caused_by_the_new_version_reverts_then_reports(world: World) -> None:
    world.monitor.start_reports()
    world.send(population(300))  # population A: v2's baseline is B, v1's is A
    assert world.tick() == []  # 300 rows < windowRows: the window stays open
    world.send(population(600, seed=10))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.REVERT, d.reason
    assert d.evidence.rows == 900 and d.evidence.share >= 0.8
    assert d.evidence.fit_previous is not None and d.evidence.fit_previous <= 0.2
    head = world.remote_head()
    (entry,) = git.log(world.bare, head, [], limit=1)
    assert entry.trailers[layout.TRAILER_REVERTS] == world.v2
    assert entry.trailers[layout.TRAILER_REPORT].startswith(".git/mlgitops/reports/credit/")
    assert world.triggers  # the controller is asked to reconcile at once
    (rev,) = events(world.store, "Reverted")
    assert rev["commit"] == head and rev["reverted"] == world.v2 and rev["share"] >= 0.8
    status = world.store.status(NAME).condition(ConditionType.DRIFT)
    assert status is not None and status.status and status.reason == "Reverted"
    # the report waits until the reverted version no longer serves, then is built
    world.serve(head)
    world.monitor.on_deployed(NAME, world.router.routes[NAME])
    assert world.monitor.wait_reports(30)
    (plan,) = world.built
    # the commit links the decision's page (and names the decision); Evidently's report is beside it
    ident = entry.trailers[layout.TRAILER_REPORT_ID]
    assert entry.trailers[layout.TRAILER_REPORT] == f".git/mlgitops/reports/{NAME}/{ident}.html"
    assert plan.html.name == f"{ident}.evidently.html"
    assert world.monitor.dispatcher.wait(30)
    (record,) = [r for r in decision_log.read(world.store.dir / "reports") if r.id == ident]
    assert record.kind is decisions.Kind.REVERT and record.commit == head
    restored = git.rev_parse(world.bare, f"{world.v2}^")  # v1 with the drift policy edit
    assert (record.version, record.previous_version) == (world.v2, restored)
    assert [f.name for f in record.features] == FEATURES
    assert all(f.drifted and f.restored is not None and not f.restored.drifted
               for f in record.features)
    page = (world.store.dir / "reports" / NAME / f"{ident}.html").read_text()
    assert world.v2[:12] in page and str(restored)[:12] in page and "credit v2 on population B" in page
    (rolled,) = events(world.store, "RolledBack")
    assert rolled["commit"] == head and rolled["breachToRollbackSeconds"] >= 0
    assert [e["type"] for e in events(world.store)][-3:] == ["Reverted", "RolledBack", "ReportWritten"]


@pytest.mark.fast
def test_input_drift_a_revert_cannot_cure_only_alerts(world: World) -> None:
    before = world.remote_head()
    world.send(population(600, shift=4.0))  # fits neither v1's nor v2's baseline
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.ALERT and d.attributable is False
    assert "a revert cannot cure input drift" in d.reason
    assert world.remote_head() == before
    (alert,) = events(world.store, "DriftAlert")
    assert alert["fitPrevious"] >= 0.5 and alert["share"] >= 0.5
    assert not events(world.store, "Reverted", "RevertFailed")
    cond = world.store.status(NAME).condition(ConditionType.DRIFT)
    assert cond is not None and cond.status and cond.reason == "DriftAlert"


@pytest.mark.fast
def test_too_few_rows_is_inconclusive_and_never_reverts(world: World) -> None:
    before = world.remote_head()
    assert world.tick() == []  # the monitor watches v2 from when it serves
    for _ in range(3):
        world.send(population(40))  # population A again: it would revert with enough rows
        world.now[0] += 60.0  # the window times out with 40 rows
        (d,) = world.tick()
        assert d.verdict is policy.Verdict.INCONCLUSIVE and d.evidence.rows == 40
        assert "minRows" in d.reason
    assert world.remote_head() == before
    windows = events(world.store, "DriftWindow")
    assert [e["verdict"] for e in windows] == ["inconclusive"] * 3
    assert not events(world.store, "Reverted", "DriftAlert")


@pytest.mark.fast
def test_the_drift_condition_reason_reads_with_its_value(world: World) -> None:
    """An inconclusive window after an alert leaves ``Drift=True DriftAlert`` (never ``True
    Inconclusive``); before any conclusive window it reads ``False Inconclusive``."""
    assert world.tick() == []
    world.send(population(40))
    world.now[0] += 60.0
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.INCONCLUSIVE
    cond = world.store.status(NAME).condition(ConditionType.DRIFT)
    assert cond is not None and (cond.status, cond.reason) == (False, "Inconclusive")
    world.send(population(600, shift=4.0))  # fits neither version: an alert
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.ALERT
    world.send(population(40))
    world.now[0] += 60.0
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.INCONCLUSIVE
    cond = world.store.status(NAME).condition(ConditionType.DRIFT)
    assert cond is not None and (cond.status, cond.reason) == (True, "DriftAlert"), cond
    assert world.store.status(NAME).drift["verdict"] == "inconclusive"  # the latest window


def test_the_revert_cap_holds(world: World) -> None:
    world.send(population(600))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.REVERT
    first = world.remote_head()
    # a person publishes another version trained on population B; the controller serves it
    v3 = world.publish_bad(seed=5)
    world.serve(v3)
    world.send(population(600, seed=11))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.ALERT and d.attributable is True
    assert "maxReverts 1" in d.reason and d.reverts_in_period == 1
    assert world.remote_head() == v3  # no second revert
    assert git.last_change(world.bare, world.remote_head(), layout.model_paths(NAME)) == v3
    reverts = [e for e in git.log(world.bare, "main", []) if layout.TRAILER_REVERTS in e.trailers]
    assert [e.commit for e in reverts] == [first]
    # the cap survives a controller restart (it is kept in the state file)
    again = monitor_mod.Monitor(store=state_mod.Store(world.store.dir), router=world.router,
                                source=world.source, state_dir=world.store.dir, url=str(world.bare),
                                trigger=world.triggers.append, clock=lambda: world.now[0])
    assert again._history(NAME).reverts == d.history.reverts


def test_a_report_failure_does_not_block_the_revert(world: World) -> None:
    def broken(*args: Any, **kwargs: Any) -> reports.Built:
        raise errors.ReportError("Evidently exploded")

    world.monitor.build_report = broken
    world.monitor.start_reports()
    world.send(population(600))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.REVERT
    head = world.remote_head()
    assert git.text(world.bare, "log", "-1", "--format=%(trailers:key=Mlgitops-Reverts,valueonly)",
                    head).strip() == world.v2
    world.serve(head)
    assert world.monitor.wait_reports(30)
    kinds = [e["type"] for e in events(world.store)]
    assert kinds.index("Reverted") < kinds.index("ReportFailed")
    (failed,) = events(world.store, "ReportFailed")
    assert "Evidently exploded" in failed["message"]


@pytest.mark.fast
def test_no_revert_when_the_previous_content_has_the_same_model(world: World) -> None:
    """The policy edit changed only v1's manifest: reverting it would not change the model."""
    edit = git.text(world.bare, "rev-parse", f"{world.v2}^")
    world.serve(edit)
    # inputs fit its baseline but predictions do not (as if the model misbehaved): attributable
    world.send(population(600))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.ALERT and d.attributable is True
    assert d.evidence.prediction_drifted and d.evidence.share < 0.5
    assert "same model digest" in d.reason
    assert not events(world.store, "Reverted")


@pytest.mark.fast
def test_on_demand_report_is_an_evidently_report_in_the_workspace(world: World) -> None:
    world.send(population(300))
    world.store.update(NAME, served_commit=world.v2)
    world.store.save()
    html = reports.build_report(world.work, NAME)
    assert html.is_file() and html.parent == settings.state_dir(world.work) / "reports/credit"
    assert "on-demand" in html.name and world.v2[:12] in html.name
    assert html.with_name(html.name.replace(".html", ".snapshot.json")).is_file()
    runs = evidently_reports.list_runs(settings.state_dir(world.work) / "workspace", project=NAME)
    assert len(runs) == 1


# ---------------------------------------------------------------------------------------------
# End to end


class Traffic:
    """A client posting population-A rows to the gateway until stopped."""

    def __init__(self, url: str, frame: pd.DataFrame) -> None:
        self.url = url
        self.records = frame.to_dict(orient="records")
        self.stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                batch = self.records[i % 2900 : i % 2900 + 25]
                i += 25
                try:
                    r = client.post(self.url, json={"dataframe_records": batch})
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                time.sleep(0.01)  # traffic at a steady rate, not a synchronisation

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)



def test_automatic_revert_end_to_end(tmp_path: Path) -> None:
    work, bare, v1, v2, _ = build_repo(tmp_path)
    cfg = settings.controller(work, port=free_port(), poll_seconds=5.0)
    with run.running(cfg) as ctl:
        mon = ctl.monitor
        assert mon is not None
        mon.window_seconds = 1.0
        base = ctl.base_url
        wait_until(lambda: version_at(base, NAME) == v2, timeout=120, what="v2 serving")

        # too few rows: one request of 40 population-A rows makes an inconclusive window
        r = httpx.post(f"{base}/models/{NAME}/invocations",
                       json={"dataframe_records": population(40).to_dict(orient="records")})
        assert r.status_code == 200, r.text
        wait_until(lambda: any(e.get("verdict") == "inconclusive"
                               for e in events(ctl.store, "DriftWindow")), what="inconclusive window")
        assert not events(ctl.store, "Reverted")
        mon.window_seconds = 120.0  # from now on windows close at windowRows rows

        # live traffic from population A: v2 (trained on B) does not fit it, v1 does
        with Traffic(f"{base}/models/{NAME}/invocations", population(3000)) as traffic:
            wait_until(lambda: version_at(base, NAME) not in (v2, None), timeout=180, what="rollback")
        assert not traffic.failed, traffic.failed[:3]
        revert_sha = version_at(base, NAME)
        assert revert_sha is not None
        # Git says so: the remote's head reverts v2, restores v1's model, quarantines v2's digest
        (entry,) = git.log(bare, "main", [], limit=1)
        assert entry.commit == revert_sha and entry.trailers[layout.TRAILER_REVERTS] == v2
        assert git.tree_id(bare, revert_sha, f"models/{NAME}") == git.tree_id(bare, v1, f"models/{NAME}")
        q = quarantine.parse(yaml.safe_load(git.show(bare, revert_sha, layout.QUARANTINE) or b""),
                             source=layout.QUARANTINE)
        assert [(e.model, e.digest, e.commit) for e in q] == [(NAME, digest_at(bare, v2), v2)]
        (rev,) = events(ctl.store, "Reverted")
        assert rev["commit"] == revert_sha and rev["verdict"] == "revert"
        wait_until(lambda: bool(events(ctl.store, "RolledBack")), what="RolledBack event")
        st = ctl.store.status(NAME)
        assert st.served_commit == revert_sha and st.served_digest == digest_at(bare, v1)

        # the report linked from the commit is built in the background
        assert mon.wait_reports(180)
        ident = entry.trailers[layout.TRAILER_REPORT_ID]
        (written,) = [e for e in events(ctl.store, "ReportWritten")
                      if e["report"] == f"{base}/reports/{NAME}/{ident}.evidently.html"]
        assert (work / written["reportPath"]).is_file() and written["rows"] >= 100
        # the commit links the URL where the gateway serves the decision's page
        assert entry.trailers[layout.TRAILER_REPORT] == f"{base}/reports/{NAME}/{ident}"
        page = httpx.get(entry.trailers[layout.TRAILER_REPORT], timeout=10)
        assert page.status_code == 200 and v2[:12] in page.text and f"{ident}.evidently.html" in page.text
        assert evidently_reports.list_runs(settings.state_dir(work) / "workspace", project=NAME)

        # committing the quarantined digest again: the remote's hook refuses it ...
        git.run(work, "pull", "-q", "--ff-only", "origin", "main")
        git.run(work, "checkout", "-q", v2, "--", *layout.model_paths(NAME))
        git.commit(work, message="bring v2 back", paths=list(layout.model_paths(NAME)))
        with pytest.raises(errors.GitError, match="quarantined"):
            git.push(work)
        # ... and if it arrives anyway, the controller holds it and v1's content keeps serving
        (bare / "hooks" / "pre-receive").unlink()
        git.push(work)
        ctl.trigger("test")

        def held() -> bool:
            c = ctl.store.status(NAME).condition(ConditionType.STALLED)
            return c is not None and c.status and c.reason == "Quarantined"

        wait_until(held, timeout=60, what="Stalled/Quarantined")
        assert version_at(base, NAME) == revert_sha


def test_isolated_report_process_reports_its_failure_as_a_sentence(world: World) -> None:
    target = reports.plan(world.store.dir, name=NAME, version="0" * 40, now=0.0, why="alert")
    with pytest.raises(errors.ReportError, match="does not exist at 000000000000"):
        reports.build_isolated(world.store.dir, world.source.clone, name=NAME, version="0" * 40,
                               target=target, sample=population(10))


# ---------------------------------------------------------------------------------------------
# Reverts that do not land, and a controller killed around a revert


def restarted(world: World, *, build_report: Any = None, report_base: str | None = None
              ) -> monitor_mod.Monitor:
    """A new monitor on the same state directory, as after `mlgitops up` was started again."""
    return monitor_mod.Monitor(
        store=state_mod.Store(world.store.dir), router=world.router, source=world.source,
        state_dir=world.store.dir, root=world.work, url=str(world.bare),
        trigger=world.triggers.append,
        window_seconds=30.0, clock=lambda: world.now[0], report_base=report_base,
        build_report=build_report or world.monitor.build_report,
    )


def revert_commits(world: World) -> list[str]:
    return [e.commit for e in git.log(world.bare, "main", []) if layout.TRAILER_REVERTS in e.trailers]


def test_a_revert_that_did_not_land_counts_toward_neither_the_cap_nor_the_cooldown(
    world: World,
) -> None:
    hook = world.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen for the audit' >&2\nexit 1\n")
    hook.chmod(0o755)
    world.send(population(600))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.REVERT
    (failed,) = events(world.store, "RevertFailed")
    assert "frozen for the audit" in failed["message"]
    assert world.monitor._history(NAME).reverts == ()
    kept = state_mod.Store(world.store.dir).extra
    assert not kept.get("drift", {}).get(NAME, {}).get("reverts") and not kept.get("pendingReverts")
    hook.unlink()
    world.send(population(600, seed=12))
    (d,) = world.tick()  # maxReverts is 1: the refused revert did not use it up
    assert d.verdict is policy.Verdict.REVERT, d.reason
    assert revert_commits(world) == [world.remote_head()]
    assert world.monitor._history(NAME).reverts == (d.at,)


class Killed(BaseException):
    """The controller dies here (as with SIGKILL: nothing after this line runs)."""


def test_a_revert_pushed_just_before_a_crash_counts_and_is_not_made_again(world: World) -> None:
    real = world.monitor.writer.revert

    def push_then_die(plan: policy.RevertPlan) -> Any:
        outcome = real(plan)
        assert outcome.ok
        raise Killed

    world.monitor.writer.revert = push_then_die  # type: ignore[method-assign]
    world.send(population(600))
    with pytest.raises(Killed):
        world.tick()
    (landed,) = revert_commits(world)
    assert not events(world.store, "Reverted")  # the crash came before the event
    # started again: the old version still serves (not redeployed yet) and still gets traffic
    again = restarted(world)
    again.recover()
    (rev,) = events(again.store, "Reverted")
    assert rev["commit"] == landed and rev["recovered"] is True
    assert len(again._history(NAME).reverts) == 1  # it counts toward the cap and cooldown
    world.monitor = again
    world.send(population(600, seed=13))
    world.tick()
    world.send(population(600, seed=14))
    world.tick()
    assert revert_commits(world) == [landed]  # never reverted twice
    assert "RevertAbandoned" not in [e["type"] for e in events(again.store)]


def test_a_revert_that_never_left_before_a_crash_is_dropped_and_decided_again(
    world: World,
) -> None:
    def die(plan: policy.RevertPlan) -> Any:
        raise Killed

    world.monitor.writer.revert = die  # type: ignore[method-assign]
    world.send(population(600))
    with pytest.raises(Killed):
        world.tick()
    again = restarted(world)
    again.recover()
    assert [e["type"] for e in events(again.store)][-1] == "RevertAbandoned"
    assert again._history(NAME).reverts == ()
    world.monitor = again
    world.send(population(600, seed=15))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.REVERT
    assert len(revert_commits(world)) == 1


def test_the_report_link_is_the_gateway_url_and_a_missing_report_is_rebuilt(world: World) -> None:
    base = "http://127.0.0.1:8799"
    built: list[reports.Plan] = []

    def fake_report(state_dir: Path, clone: Path, *, target: reports.Plan, **_: Any
                    ) -> reports.Built:
        built.append(target)
        target.out_dir.mkdir(parents=True, exist_ok=True)
        target.html.write_text("<html>report</html>")
        paths = evidently_reports.ReportPaths(target.html, target.snapshot, target.snapshot)
        return reports.Built(target, paths, None, None, 0, 0, 0.0)

    world.monitor = restarted(world, build_report=fake_report, report_base=base)
    world.send(population(600))
    (d,) = world.tick()  # reverts; the report worker is not running: the controller dies
    assert d.verdict is policy.Verdict.REVERT
    (entry,) = git.log(world.bare, "main", [], limit=1)
    link = entry.trailers[layout.TRAILER_REPORT]
    ident = entry.trailers[layout.TRAILER_REPORT_ID]
    assert link == f"{base}/reports/{NAME}/{ident}"
    file = f"{ident}.evidently.html"
    report = world.store.dir / "reports" / NAME / file
    assert not report.exists() and not built
    again = restarted(world, build_report=fake_report, report_base=base)
    again.recover()
    assert again.wait_reports(30)
    assert [p.html.name for p in built] == [file] and report.is_file()
    assert built[0].version == world.v2
    # a report that cannot be built is a page saying why, never a dead link
    report.unlink()

    def broken(*args: Any, **kwargs: Any) -> reports.Built:
        raise errors.ReportError("no live rows were recorded")

    third = restarted(world, build_report=broken, report_base=base)
    third.recover()
    assert third.wait_reports(30)
    assert "no live rows were recorded" in report.read_text()


def test_a_lost_decision_page_is_rebuilt_from_the_log_or_from_the_revert_commit(
    world: World,
) -> None:
    base = "http://ml.example.com"
    world.monitor = restarted(world, report_base=base)
    world.send(population(600))
    (d,) = world.tick()
    assert d.verdict is policy.Verdict.REVERT
    assert world.monitor.dispatcher.wait(30)
    (entry,) = git.log(world.bare, "main", [], limit=1)
    ident = entry.trailers[layout.TRAILER_REPORT_ID]
    reports_root = world.store.dir / "reports"
    page = reports_root / NAME / f"{ident}.html"
    assert page.is_file() and entry.trailers[layout.TRAILER_REPORT] == f"{base}/reports/{NAME}/{ident}"
    # the page file is lost: the next controller rewrites it from the decision log
    page.unlink()
    again = restarted(world, report_base=base)
    again.recover()
    assert again.dispatcher.wait(30) and page.is_file()
    assert "f0" in page.read_text() and "rebuilt from the revert commit" not in page.read_text()
    # the whole reports directory is lost: the page is rebuilt from what the commit says
    shutil.rmtree(reports_root)
    third = restarted(world, report_base=base)
    third.recover()
    assert third.dispatcher.wait(30) and page.is_file()
    text = page.read_text()
    assert world.v2[:12] in text and entry.commit[:12] in text
    assert "rebuilt from the revert commit" in text
    (record,) = decision_log.read(reports_root, model=NAME)
    assert record.id == ident and record.commit == entry.commit
