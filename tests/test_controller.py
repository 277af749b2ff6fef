"""The local controller: commit -> serving, zero-downtime switches, refusals, self-healing."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.data import FEATURES, make_frame
from support.net import free_port, version_at
from support.waits import wait_until

from mlgitops import settings
from mlgitops.adapters import files, git, local_runtime
from mlgitops.controller import run

pytestmark = pytest.mark.process

ROWS = make_frame(50, seed=9)[FEATURES].to_dict(orient="records")


@pytest.fixture()
def controller(repo: Path) -> Iterator[run.Controller]:
    cfg = settings.controller(repo, port=free_port(), poll_seconds=2.0, monitor=False)
    with run.running(cfg) as ctl:
        yield ctl


def predict(base: str, name: str, rows: list[dict[str, float]]) -> httpx.Response:
    return httpx.post(f"{base}/models/{name}/invocations", json={"dataframe_records": rows},
                      timeout=10)


def status_of(ctl: run.Controller, name: str) -> dict[str, object]:
    return ctl.store.status(name).to_dict()


def drop_remote_hooks(repo: Path) -> None:
    """Make the remote a plain Git host (no validating hook) so bad commits reach the controller."""
    remote = Path(git.remote_url(repo) or "")
    (remote / "hooks" / "pre-receive").unlink()


def serve_v1(controller: run.Controller, publish_version: Callable[..., str]) -> str:
    """Publish the first version and wait until the gateway answers with it."""
    v1 = publish_version()
    wait_until(lambda: version_at(controller.base_url, "credit") == v1, what="v1 serving")
    return v1


def edit_manifest(repo: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = repo / "manifests/credit.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc))


def push_past_the_hook(repo: Path, controller: run.Controller, *, message: str,
                       paths: list[str]) -> str:
    """Commit and push with the remote's validating hook removed; the controller must cope."""
    drop_remote_hooks(repo)
    bad = git.commit(repo, message=message, paths=paths)
    assert bad is not None
    git.push(repo)
    controller.trigger("test")
    return bad


def stalled(controller: run.Controller) -> dict[str, str]:
    conditions = controller.store.status("credit").to_dict()["conditions"]
    return next(c for c in conditions if c["type"] == "Stalled")


def kill_and_await_restart(controller: run.Controller, version: str) -> None:
    """SIGKILL the model's server; wait until a new process serves ``version``."""
    backend = controller.router.get("credit")
    assert backend is not None
    os.killpg(backend.pid, signal.SIGKILL)
    wait_until(lambda: (b := controller.router.get("credit")) is not None and b.pid != backend.pid
               and version_at(controller.base_url, "credit") == version,
               what="restart", timeout=60)


def test_publish_deploys_and_predicts(
    repo: Path, publish_version: Callable[..., str], controller: run.Controller
) -> None:
    v1 = serve_v1(controller, publish_version)
    base = controller.base_url
    r = predict(base, "credit", ROWS[:5])
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 5
    infer = httpx.post(
        f"{base}/v2/models/credit/infer",
        json={"inputs": [{"name": f, "shape": [2], "datatype": "FP64",
                          "data": [ROWS[0][f], ROWS[1][f]]} for f in FEATURES]},
        timeout=10,
    )
    assert infer.status_code == 200, infer.text
    assert infer.json()["model_version"] == v1
    st = status_of(controller, "credit")
    assert st["servedCommit"] == v1 and st["lastAppliedCommit"] == v1
    assert st["health"] == "Healthy"
    assert st["endpoint"] == f"{base}/v2/models/credit"
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200


def test_second_version_switches_in_with_zero_failed_requests(
    repo: Path, publish_version: Callable[..., str], controller: run.Controller
) -> None:
    base = controller.base_url
    v1 = serve_v1(controller, publish_version)
    outcomes: list[int] = []
    seen_versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{base}/v2/models/credit/infer", json={"inputs": [
                        {"name": f, "shape": [1], "datatype": "FP64", "data": [ROWS[0][f]]}
                        for f in FEATURES]})
                    outcomes.append(r.status_code)
                    if r.status_code == 200:
                        seen_versions.add(r.json()["model_version"])
                except httpx.HTTPError:
                    outcomes.append(-1)

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        v2 = publish_version(seed=4, kind="logistic")
        wait_until(lambda: version_at(base, "credit") == v2, what="v2 serving")
        time.sleep(1.5)  # traffic goes on while the old server drains and is retired: the point of the test
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert outcomes and all(code == 200 for code in outcomes), {c for c in outcomes if c != 200}
    assert {v1, v2} <= seen_versions
    events = [e["type"] for e in controller.store.events("credit")]
    assert events.count("Deployed") == 2


def test_corrupt_model_commit_never_replaces_the_serving_version(
    repo: Path, publish_version: Callable[..., str], controller: run.Controller
) -> None:
    base = controller.base_url
    v1 = serve_v1(controller, publish_version)
    skops = repo / "models/credit/model.skops"
    skops.write_bytes(skops.read_bytes()[:2000])  # truncated: does not load
    digest = files.dir_digest(repo / "models/credit")  # the manifest agrees with the content
    edit_manifest(repo, lambda doc: doc["spec"]["model"].update(digest=digest))
    bad = push_past_the_hook(repo, controller, message="broken model",
                             paths=["models", "manifests"])
    wait_until(lambda: status_of(controller, "credit")["lastAttemptedCommit"] == bad
               and status_of(controller, "credit")["health"] == "Degraded", what="bad version held")
    condition = stalled(controller)
    assert condition["status"] == "True" and condition["reason"] == "InvalidVersion"
    assert "model.skops" in condition["message"] or "load" in condition["message"]
    assert status_of(controller, "credit")["servedCommit"] == v1
    assert predict(base, "credit", ROWS[:3]).status_code == 200
    assert version_at(base, "credit") == v1
    # the older version's server dies while the broken one is held: it is restarted, not lost
    kill_and_await_restart(controller, v1)
    assert status_of(controller, "credit")["lastAttemptedCommit"] == bad


def test_manifest_error_is_reported_with_file_and_field(
    repo: Path, publish_version: Callable[..., str], controller: run.Controller
) -> None:
    v1 = serve_v1(controller, publish_version)
    edit_manifest(repo, lambda doc: doc["spec"]["serving"].update(replicas=0))
    bad = push_past_the_hook(repo, controller, message="zero replicas", paths=["manifests"])
    wait_until(lambda: status_of(controller, "credit")["lastAttemptedCommit"] == bad,
               what="manifest error held")
    assert stalled(controller)["message"].startswith(
        "manifests/credit.yaml: field spec.serving.replicas")
    assert version_at(controller.base_url, "credit") == v1


def test_a_killed_server_is_restarted(
    repo: Path, publish_version: Callable[..., str], controller: run.Controller
) -> None:
    v1 = serve_v1(controller, publish_version)
    kill_and_await_restart(controller, v1)
    assert "Restarted" in [e["type"] for e in controller.store.events("credit")]


def test_webhook_requires_a_valid_signature(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGITOPS_WEBHOOK_SECRET", "s3cret")
    cfg = settings.controller(repo, port=free_port(), poll_seconds=600.0, monitor=False)
    with run.running(cfg) as ctl:
        url = f"{ctl.base_url}/hooks/github"
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        sig = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        bad = httpx.post(url, content=body, headers={"X-Hub-Signature-256": "sha256=00",
                                                     "X-GitHub-Event": "push"})
        assert bad.status_code == 401 and "X-Hub-Signature-256" in bad.json()["error"]
        good = httpx.post(url, content=body, headers={"X-Hub-Signature-256": sig,
                                                      "X-GitHub-Event": "push"})
        assert good.status_code == 202


def test_polling_finds_commits_of_a_url_remote_without_hooks(
    repo: Path, publish_version: Callable[..., str]
) -> None:
    """A remote known only by URL (as a Git host would be): fetched into a clone, polled."""
    remote = Path(git.remote_url(repo) or "")
    (remote / "hooks" / "post-receive").unlink()
    git.run(repo, "remote", "set-url", "origin", f"file://{remote}")
    cfg = settings.controller(repo, port=free_port(), poll_seconds=1.0, monitor=False)
    with run.running(cfg) as ctl:
        v1 = publish_version()
        wait_until(lambda: version_at(ctl.base_url, "credit") == v1, what="poll", timeout=60)


def test_killed_controller_restarts_and_converges_without_redeploying(
    repo: Path, publish_version: Callable[..., str]
) -> None:
    v1 = publish_version()
    port = free_port()
    cmd = [sys.executable, "-m", "mlgitops.cli", "up", "--repo", str(repo), "--port", str(port),
           "--no-monitor"]
    base = f"http://127.0.0.1:{port}"
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: version_at(base, "credit") == v1, what="v1 serving", timeout=90)
        state = files.read_json(settings.state_dir(repo) / "state.json")
        server_pid = state["backends"]["credit"]["pid"]
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert version_at(base, "credit") is None  # the gateway died with it
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: version_at(base, "credit") == v1, what="converged", timeout=90)
            state = files.read_json(settings.state_dir(repo) / "state.json")
            assert state["backends"]["credit"]["pid"] == server_pid  # adopted, not redeployed
            kinds = [json.loads(line)["type"] for line in
                     (settings.state_dir(repo) / "events.jsonl").read_text().splitlines()]
            assert kinds.count("Deployed") == 1 and "Adopted" in kinds
        finally:
            second.send_signal(signal.SIGINT)  # Ctrl-C
            assert second.wait(timeout=60) == 0, second.stderr.read() if second.stderr else ""
        wait_until(lambda: not local_runtime.owned_pids(settings.state_dir(repo)),
                   what="no server or standby process left", timeout=20)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
