"""The controller's state a push cannot reach, and held versions tried again when what held them
changes (issue 15 item 3, issue 16 item 2), against a real `mlgitops up` and real git.

- State lives in ``<clone>/.git/mlgitops``: files an attacker pushes under ``.mlgitops/`` with
  ``git add -f`` (to a remote without the hook) and a ``git pull`` brings into the clone are never
  read nor served; a clone that tracks ``.mlgitops`` is refused with a sentence.
- A version held for a trust reason serves after the trust setting is fixed and ``up`` restarted,
  and, without a restart, after ``mlgitops retry``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from conftest import free_port, make_frame, train, wait_until

import mlgitops
from mlgitops import errors, settings
from mlgitops.adapters import files, git
from mlgitops.authoring import repository
from mlgitops.core import layout
from mlgitops.notebook import insights

NAME = "credit"
QUIET = {"MLGITOPS_MLFLOW": "0", "MLGITOPS_EVIDENTLY": "0", "MLGITOPS_MONITOR": "0"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlgitops.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, check=False)


@contextmanager
def up(repo: Path, port: int, *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`mlgitops up` in its own process; Ctrl-C at the end."""
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("MLGITOPS_TRUST_ALLOW", "MLGITOPS_TRUST_POLICY")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlgitops.cli", "up", "--repo", str(repo), "--port", str(port),
             "--poll", "300"],
            env={**base_env, **QUIET, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def version_at(port: int) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}", timeout=2)
    except httpx.HTTPError:
        return None
    return str(r.json()["version"]) if r.status_code == 200 else None


def model_status(repo: Path) -> dict[str, Any]:
    doc = json.loads(cli("status", "--repo", str(repo), "--json").stdout)
    return next((m for m in doc["models"] if m["name"] == NAME), {})


def stalled_message(repo: Path) -> str | None:
    for c in model_status(repo).get("conditions") or ():
        if c["type"] == "Stalled" and c["status"] == "True":
            return str(c["message"])
    return None


# ------------------------------------------------------------------------ state out of reach
def test_state_is_in_the_git_dir_and_a_pushed_mlgitops_dir_is_never_read(
        tmp_path: Path) -> None:
    repo = tmp_path / "models-repo"
    bare = repository.init(repo)
    frame = make_frame()
    v1 = str(mlgitops.publish(train(frame), frame, name=NAME, repo=repo, target="label",
                              quiet=True))
    state = settings.state_dir(repo)
    assert state == (repo / ".git" / "mlgitops").resolve()
    port = free_port()
    log = tmp_path / "up.log"
    with up(repo, port, env={}, log=log):
        wait_until(lambda: version_at(port) == v1, what="v1 serving", timeout=180)
        assert (state / "state.json").is_file() and not (repo / layout.LEGACY_STATE_DIR).exists()
        wait_until(lambda: bool(insights.decision_records(repo, NAME)), what="the deploy decision")
        before = [d.to_dict() for d in insights.decision_records(repo, NAME)]
        proven_before = files.read_json(state / "proven.json")

        # an attacker pushes state files to a remote without the hook, bypassing .gitignore
        attacker = tmp_path / "attacker"
        git.clone(str(bare), attacker)
        (bare / "hooks" / "pre-receive").unlink()
        forged = {**before[-1], "kind": "revert", "verdict": "forged: reverted by nobody"}
        planted = {
            ".mlgitops/reports/decisions.jsonl": json.dumps(forged) + "\n",
            ".mlgitops/proven.json": json.dumps({"digests": ["sha256:" + "e" * 64]}),
            ".mlgitops/reports/base/incident-2026.html": "<html>incident: pay here</html>",
        }
        for rel, text in planted.items():
            (attacker / rel).parent.mkdir(parents=True, exist_ok=True)
            (attacker / rel).write_text(text)
        git.run(attacker, "add", "-f", *planted)
        git.run(attacker, "commit", "-q", "-m", "state, planted")
        git.run(attacker, "push", "-q", "origin", layout.BRANCH)
        # the operator pulls into the controller's clone: the files land in the work tree
        git.run(repo, "pull", "-q", "--no-rebase", "origin", layout.BRANCH)
        assert (repo / ".mlgitops/reports/base/incident-2026.html").is_file()

        # the running controller serves none of it and its decisions are its own
        page = httpx.get(f"http://127.0.0.1:{port}/reports/base/incident-2026.html", timeout=5)
        assert page.status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/reports/", timeout=5).text.count("forged") == 0
        assert [d.to_dict() for d in insights.decision_records(repo, NAME)] == before
        assert files.read_json(state / "proven.json") == proven_before
        report = cli("report", NAME, "--repo", str(repo), "--json")
        assert report.returncode == 0 and "forged" not in report.stdout
        assert version_at(port) == v1

    # started again on a clone that tracks .mlgitops: refused with one sentence
    again = subprocess.run(
        [sys.executable, "-m", "mlgitops.cli", "up", "--repo", str(repo), "--port",
         str(free_port())], capture_output=True, text=True, timeout=120,
        env={**os.environ, **QUIET})
    assert again.returncode != 0
    assert "tracks .mlgitops/" in again.stderr and "git rm -r --cached .mlgitops" in again.stderr
    assert "Traceback" not in again.stderr


def test_the_state_dir_of_a_linked_worktree_is_its_common_git_dir(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    repo = tmp_path / "models-repo"
    repository.init(repo)
    git.run(repo, "commit", "-q", "--allow-empty", "-m", "empty")
    linked = tmp_path / "linked"
    git.run(repo, "worktree", "add", "-q", str(linked), "-b", "other")
    monkeypatch.delenv("MLGITOPS_STATE_DIR", raising=False)
    assert settings.state_dir(linked) == (repo / ".git" / "mlgitops").resolve()
    monkeypatch.setenv("MLGITOPS_STATE_DIR", str(tmp_path / "elsewhere"))
    assert settings.state_dir(repo) == (tmp_path / "elsewhere").resolve()
    assert settings.controller(repo).state_dir == (tmp_path / "elsewhere").resolve()


# ------------------------------------------------------------------ held versions retried
def rounded(seed: int) -> Any:
    """A pipeline that stores ``numpy.round``: a function, untrusted unless admitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FunctionTransformer, make_pipeline

    frame = make_frame(seed=seed)
    model = make_pipeline(FunctionTransformer(np.round), LogisticRegression(C=1.0 + seed))
    return model.fit(frame.drop(columns="label"), frame.label), frame


def test_a_version_held_for_trust_serves_after_the_fix_on_restart_and_on_retry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "models-repo"
    bare = repository.init(repo)
    # the remote's own policy admits it (its hook checks pushes); the controller's does not yet
    (bare / settings.REMOTE_TRUST_FILE).write_text(yaml.safe_dump({"allow": ["numpy.round"]}))
    frame = make_frame()
    v1 = str(mlgitops.publish(train(frame), frame, name=NAME, repo=repo, target="label",
                              quiet=True))
    monkeypatch.setenv("MLGITOPS_TRUST_ALLOW", "numpy.round")  # the publisher reviewed it
    model, data = rounded(1)
    v2 = str(mlgitops.publish(model, data, name=NAME, repo=repo, target="label", quiet=True,
                              trusted_types=["numpy.round"]))
    # the team's policy is tightened after the push (or the push came through a host without
    # the hook): the controller's policy no longer admits it
    (bare / settings.REMOTE_TRUST_FILE).write_text(yaml.safe_dump({"allow": []}))
    monkeypatch.delenv("MLGITOPS_TRUST_ALLOW")
    policy = tmp_path / "trust.yaml"
    policy.write_text(yaml.safe_dump({"allow": []}))
    port = free_port()
    log = tmp_path / "up.log"

    # 1. held for a trust reason
    with up(repo, port, env={"MLGITOPS_TRUST_POLICY": str(policy)}, log=log):
        wait_until(lambda: "numpy.round" in (stalled_message(repo) or ""),
                   what="v2 held for numpy.round", timeout=180)
        assert version_at(port) in (None, v1)
    # 2. the setting fixed and `up` started again: it serves
    with up(repo, port, env={"MLGITOPS_TRUST_ALLOW": "numpy.round"}, log=log):
        wait_until(lambda: version_at(port) == v2, what="v2 serving after the restart",
                   timeout=120)
    # 3. held again under the old policy; fixed in the policy file; `mlgitops retry`, no restart
    with up(repo, port, env={"MLGITOPS_TRUST_POLICY": str(policy)}, log=log):
        wait_until(lambda: "numpy.round" in (stalled_message(repo) or ""),
                   what="v2 held again", timeout=180)
        policy.write_text(yaml.safe_dump({"allow": ["numpy.round"]}))
        asked = cli("retry", NAME, "--repo", str(repo))
        assert asked.returncode == 0, asked.stderr
        assert "asked the controller" in " ".join((asked.stdout + asked.stderr).split())
        wait_until(lambda: version_at(port) == v2, what="v2 serving after mlgitops retry",
                   timeout=120)
        kinds = [e["type"] for e in files.read_jsonl(settings.state_dir(repo) / "events.jsonl")]
        assert "RetryRequested" in kinds
    # 4. held under the team's file; fixed with `mlgitops trust allow`; retry: the servers load
    #    under the policy read now (not the one `up` started with)
    policy.write_text(yaml.safe_dump({"allow": []}))
    with up(repo, port, env={"MLGITOPS_TRUST_POLICY": str(policy)}, log=log):
        wait_until(lambda: "numpy.round" in (stalled_message(repo) or ""),
                   what="v2 held under the team file", timeout=180)
        allowed = cli("trust", "allow", "numpy.round", "--repo", str(repo), "--reason", "reviewed")
        assert allowed.returncode == 0, allowed.stderr
        asked = cli("retry", NAME, "--repo", str(repo))
        assert asked.returncode == 0, asked.stderr
        wait_until(lambda: version_at(port) == v2, what="v2 serving after trust allow + retry",
                   timeout=120)
    (bare / settings.REMOTE_TRUST_FILE).write_text(yaml.safe_dump({"allow": []}))
    # retry of a model that does not exist: a sentence, non-zero
    wrong = cli("retry", "nope", "--repo", str(repo))
    assert wrong.returncode != 0 and "has no model named 'nope'" in " ".join(wrong.stderr.split())
    # retry while no controller runs: it says when it will happen
    later = cli("retry", NAME, "--repo", str(repo))
    assert later.returncode == 0
    assert "tries credit again when it starts" in " ".join((later.stdout + later.stderr).split())


# ------------------------------------------------------------------------ finite numbers
def test_a_non_finite_threshold_is_refused_by_validate_and_by_the_hook(
        repo: Path, publish_version: Any) -> None:
    publish_version()
    path = repo / layout.manifest_path(NAME)
    good = path.read_text()
    doc = yaml.safe_load(good)
    doc["spec"]["drift"]["datasetShare"] = float("nan")
    path.write_text(yaml.safe_dump(doc))
    assert ".nan" in path.read_text()
    checked = cli("validate", str(repo), "--no-load")
    assert checked.returncode != 0
    said = " ".join((checked.stdout + checked.stderr).split())  # rich wraps at the terminal width
    assert "field spec.drift.datasetShare: .nan is not a finite number" in said
    git.run(repo, "commit", "-q", "-am", "a threshold nobody can meet")
    pushed = subprocess.run(["git", "-C", str(repo), "push", "origin", layout.BRANCH],
                            capture_output=True, text=True, timeout=300, check=False)
    assert pushed.returncode != 0
    assert "spec.drift.datasetShare: .nan is not a finite number" in " ".join(pushed.stderr.split())


# ------------------------------------------------------------------------ worker cap
def test_the_local_runtime_caps_the_workers_one_push_can_start(
        repo: Path, publish_version: Any, tmp_path: Path) -> None:
    """More workers than the cap alone: held with a sentence (ConfigError) before any process
    starts; more than the other models leave: retried later (RuntimeFailure), nothing started."""
    import dataclasses

    from mlgitops.adapters import local_hosts, local_runtime
    from mlgitops.authoring import validate
    from mlgitops.core import plan

    v1 = publish_version()
    dep = validate.read_manifest(repo, layout.manifest_path(NAME))

    def desired(name: str, workers: int) -> plan.Desired:
        d = dataclasses.replace(dep, name=name, serving=dataclasses.replace(dep.serving,
                                                                          workers=workers))
        return plan.Desired(name, v1, d)

    state = tmp_path / "state"
    runtime = local_runtime.LocalRuntime(state, standby=0, max_workers=3,
                                         hosting=local_hosts.Hosting(mode=local_hosts.PROCESS))
    try:
        with pytest.raises(errors.ConfigError) as caught:
            runtime.deploy(desired(NAME, 64), model_dir=repo / "models" / NAME)
        assert str(caught.value).startswith(
            "spec.serving.workers of credit asks for 64 worker processes, more than this "
            "controller runs for all models together (3, MLGITOPS_MAX_WORKERS)")
        assert local_runtime.owned_pids(state) == set()
        first = runtime.deploy(desired(NAME, 2), model_dir=repo / "models" / NAME)
        assert runtime.workers_in_use() == 2
        with pytest.raises(errors.RuntimeFailure, match="other models use 2 of the 3"):
            runtime.deploy(desired("other", 2), model_dir=repo / "models" / NAME)
        runtime.stop(first)
        assert runtime.workers_in_use() == 0
    finally:
        runtime.close()
        runtime.sweep(grace=2.0)


def test_the_worker_cap_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repository.init(repo)
    monkeypatch.setenv("MLGITOPS_MAX_WORKERS", "6")
    assert settings.controller(repo).max_workers == 6
    monkeypatch.setenv("MLGITOPS_MAX_WORKERS", "2.5")
    with pytest.raises(errors.ConfigError, match=r"MLGITOPS_MAX_WORKERS=2\.5 is not a whole number"):
        settings.controller(repo)
    monkeypatch.delenv("MLGITOPS_MAX_WORKERS")
    assert settings.controller(repo).max_workers == settings.default_max_workers() >= 16


def test_an_old_mlgitops_dir_is_left_unread_and_said_so(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """State left in the working tree by an older version may have come from a pull: not
    carried over, and the controller says where its state is now."""
    from mlgitops.controller import run

    legacy = repo / layout.LEGACY_STATE_DIR
    (legacy / "reports").mkdir(parents=True)
    (legacy / "state.json").write_text(json.dumps({"head": "f" * 40, "failures": {
        NAME: {"digest": "sha256:" + "a" * 64, "version": "f" * 40, "reason": "old"}}}))
    ctl = run.Controller(settings.controller(repo, port=free_port(), monitor=False))
    try:
        said = "".join(capsys.readouterr().err.split())  # rich wraps, even inside a path
        assert f"{legacy}isnolongerread" in said and str(settings.state_dir(repo)) in said
        assert ctl.state_dir == settings.state_dir(repo) and ctl.store.head is None
        assert ctl.store.failures == {}
    finally:
        ctl.runtime.close()
