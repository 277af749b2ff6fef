"""Progressive delivery on the local runtime, end to end: a real controller (gateway, reconciler,
monitor), real server processes of real scikit-learn models saved as MLflow models, a real
repository and bare remote, live traffic over HTTP.

Every response names the version that answered (``x-mlgitops-version``): the clients count
them, so "no user request answered by the shadowed version" is counted, not assumed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.data import make_frame, train
from support.net import free_port
from support.repos import with_v1
from support.users import Users
from support.waits import wait_until

import mlgitops
from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reports, run
from mlgitops.core import layout, quarantine

pytestmark = pytest.mark.process

NAME = "credit"
#: a step's drift check waits for windowRows of the candidate's rows (on 300, up to 10% of the
#: windows of this very population breach: noise, not drift; bench/drift_false_alarms.py)
DRIFT = {"windowRows": 1000, "minRows": 500, "consecutiveWindows": 1, "cooldownSeconds": 0,
         "maxReverts": 3, "revertPeriodSeconds": 3600}
#: latency is not judged here (a shared test machine's timings are not evidence)
ANALYSIS = {"minRows": 100, "minAgreement": 0.8, "maxLatencyRatio": 1000}


@dataclass
class Repo:
    work: Path
    bare: Path
    stable: str


def repo_with(root: Path, rollout: dict[str, Any]) -> Repo:
    """v1 (population A) with ``spec.rollout`` and small drift windows, pushed."""
    work, bare, _, _ = with_v1(root, {"drift": DRIFT, "rollout": rollout}, name=NAME,
                               message=f"rollout {rollout['strategy']}")
    stable = git.rev_parse(work, "HEAD")
    assert stable is not None
    git.push(work)
    return Repo(work, bare, stable)


def publish_v2(repo: Repo, *, bad: bool) -> str:
    """v2: trained on a shifted population B (bad on live traffic) or on A again (good)."""
    frame = make_frame(1500, shift=1.5, seed=2) if bad else make_frame(1500, seed=3)
    v2 = str(mlgitops.publish(train(frame, seed=3), frame, name=NAME, repo=repo.work,
                              target="label", push=False, quiet=True,
                              message=f"credit v2 ({'bad' if bad else 'good'})"))
    git.push(repo.work)
    return v2


def served(base: str) -> str | None:
    try:
        r = httpx.get(f"{base}/v2/models/{NAME}", timeout=5)
        return r.json().get("version") if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def events(ctl: run.Controller, *kinds: str) -> list[dict[str, Any]]:
    return [e for e in ctl.store.events(NAME) if e["type"] in kinds]


def remote_head(bare: Path) -> git.LogEntry:
    (entry,) = git.log(bare, "main", [], limit=1)
    return entry


@contextlib.contextmanager
def controller(repo: Repo, port: int) -> Iterator[run.Controller]:
    cfg = settings.controller(repo.work, port=port, poll_seconds=5.0)
    with run.running(cfg) as ctl:
        assert ctl.monitor is not None
        ctl.monitor.interval = 0.2
        yield ctl


def wait_serving(ctl: run.Controller, version: str) -> None:
    wait_until(lambda: served(ctl.base_url) == version, timeout=180, what=f"{version[:12]} serving")


def wait_reverted(repo: Repo, version: str, timeout: float = 240) -> git.LogEntry:
    wait_until(lambda: remote_head(repo.bare).trailers.get(layout.TRAILER_REVERTS) == version,
               timeout=timeout, what=f"the revert of {version[:12]} on the remote")
    return remote_head(repo.bare)


def test_a_bad_version_under_shadow_is_reverted_before_a_user_sees_it(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"strategy": "shadow", "shadow": {"rows": 3000},
                                "analysis": ANALYSIS})
    with controller(repo, free_port()) as ctl:
        wait_serving(ctl, repo.stable)
        with Users(f"{ctl.base_url}/models/{NAME}/invocations", clients=2, pause=0.005) as users:
            v2 = publish_v2(repo, bad=True)
            ctl.trigger("test")
            wait_until(lambda: ctl.router.split(NAME) is not None, timeout=180,
                       what="the candidate beside the stable version")
            revert = wait_reverted(repo, v2)
            wait_until(lambda: ctl.router.split(NAME) is None and served(ctl.base_url)
                       == revert.commit, timeout=180, what="the candidate dropped")
            time.sleep(0.5)
        # zero user requests were answered by the bad version; it did answer copies of them
        assert users.by_version[v2] == 0 and ctl.router.served[(NAME, v2)] == 0
        assert ctl.router.mirrored[(NAME, v2)] * 25 >= ANALYSIS["minRows"]  # 25 rows a request
        assert not users.failed, users.failed[:3]
        assert users.by_version[repo.stable] > 0
        # Git says so: the revert commit, path-scoped, with the candidate quarantined
        assert git.tree_id(repo.bare, revert.commit, f"models/{NAME}") == \
            git.tree_id(repo.bare, repo.stable, f"models/{NAME}")
        entries = quarantine.parse(
            yaml.safe_load(git.show(repo.bare, revert.commit, layout.QUARANTINE) or b""),
            source=layout.QUARANTINE)
        assert [(e.model, e.commit) for e in entries] == [(NAME, v2)]
        assert "rollout failed at step 1 (shadow)" in revert.subject
        (rev,) = events(ctl, "Reverted")
        assert "same label" in rev["message"]
        status = ctl.store.status(NAME).rollout
        assert status is not None and status["phase"] == "aborted"


def test_a_good_version_under_shadow_is_promoted_then_serves_everything(
        tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"strategy": "shadow", "shadow": {"rows": 400},
                                "analysis": ANALYSIS})
    with controller(repo, free_port()) as ctl:
        wait_serving(ctl, repo.stable)
        with Users(f"{ctl.base_url}/models/{NAME}/invocations", clients=2, pause=0.005) as users:
            v2 = publish_v2(repo, bad=False)
            ctl.trigger("test")
            wait_serving(ctl, v2)
            before = users.by_version[v2]
            after_promotion = sum(users.by_version.values())
            wait_until(lambda: sum(users.by_version.values()) > after_promotion + 20,
                       what="requests after the promotion")
            time.sleep(1.0)  # requests still in flight on the old route finish
            settled = dict(users.by_version)
            wait_until(lambda: sum(users.by_version.values()) > sum(settled.values()) + 20,
                       what="more requests")
        assert not users.failed, users.failed[:3]
        assert before == 0 or users.by_version[v2] > before
        # from then on every user request is answered by v2
        assert users.by_version[repo.stable] == settled.get(repo.stable, 0)
        assert remote_head(repo.bare).commit == v2  # nothing was reverted
        (step,) = [e for e in events(ctl, "RolloutStep") if e["action"] == "promote"]
        assert step["verdict"] == "pass" and step["compared"] >= 100
        status = ctl.store.status(NAME)
        assert status.served_commit == v2 and status.rollout is not None
        assert status.rollout["phase"] == "promoted"
        assert status.rollout["weights"] == {"stable": 0, "candidate": 100}
        deploys = [d for d in decision_log.read(ctl.state_dir / reports.REPORTS, model=NAME)
                   if d.kind.value == "step"]
        assert deploys and deploys[-1].version == v2


def test_a_canary_step_that_breaches_is_reverted_with_traffic_back_on_stable(
        tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"strategy": "canary",
                                "canary": {"steps": [{"weight": 50, "rows": 5000}],
                                           "key": "x-client"},
                                "analysis": ANALYSIS})
    with controller(repo, free_port()) as ctl:
        wait_serving(ctl, repo.stable)
        with Users(f"{ctl.base_url}/models/{NAME}/invocations", clients=3, pause=0.005) as users:
            v2 = publish_v2(repo, bad=True)
            ctl.trigger("test")
            revert = wait_reverted(repo, v2)
            wait_until(lambda: served(ctl.base_url) == revert.commit, timeout=180,
                       what="the stable content serving at the revert commit")
            time.sleep(1.0)
            at_revert = users.by_version[v2]
            wait_until(lambda: users.by_version[revert.commit] > 20, what="traffic after it")
        # the canary did answer users (that is what a canary is), then none once it breached
        assert 0 < at_revert == users.by_version[v2]
        assert not users.failed, users.failed[:3]
        (rev,) = events(ctl, "Reverted")
        assert "canary 50%" in rev["message"]
        assert ctl.router.split(NAME) is None


def test_a_restart_mid_rollout_resumes_at_its_step(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"strategy": "shadow-canary", "shadow": {"rows": 300},
                                "canary": {"steps": [{"weight": 50, "rows": 300}]},
                                "analysis": ANALYSIS})
    port = free_port()
    with controller(repo, port) as ctl:
        wait_serving(ctl, repo.stable)
        with Users(f"{ctl.base_url}/models/{NAME}/invocations", clients=2, pause=0.005) as users:
            v2 = publish_v2(repo, bad=False)
            ctl.trigger("test")
            wait_until(lambda: (ctl.store.status(NAME).rollout or {}).get("step") == 1,
                       timeout=240, what="the canary step")
        assert not users.failed, users.failed[:3]
    # the controller stopped (every server with it); the rollout's state is in its status
    with controller(repo, port) as ctl:
        wait_until(lambda: bool(events(ctl, "RolloutResumed")), timeout=180,
                   what="the rollout resumed")
        resumed = events(ctl, "RolloutResumed")[-1]
        assert resumed["step"] == 2 and resumed["mode"] == "canary"
        with Users(f"{ctl.base_url}/models/{NAME}/invocations", clients=2, pause=0.005) as users:
            wait_until(lambda: getattr(ctl.router.get(NAME), "version", None) == v2,
                       timeout=240, what="v2 promoted")
        assert not users.failed, users.failed[:3]
        st = ctl.store.status(NAME).rollout
        assert st is not None and st["phase"] == "promoted"
        # each step passed once, in order: none skipped, none run twice to completion
        assert [(h["step"], h["verdict"]) for h in st["history"]] == [(1, "pass"), (2, "pass")]
