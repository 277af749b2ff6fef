"""The `mlgitops` command as people script against it: publish, status --json, history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.data import FEATURES, make_frame, train
from support.net import free_port
from support.waits import wait_until

from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.controller import run
from mlgitops.demo.embedded import wait_for_version

pytestmark = pytest.mark.process

CLI = [sys.executable, "-m", "mlgitops.cli"]


def mlgitops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_publish_from_an_mlflow_model_directory(repo: Path, tmp_path: Path) -> None:
    import mlflow.sklearn

    frame = make_frame()
    model_dir = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(train(frame, kind="logistic"), str(model_dir),
                              serialization_format="skops")
    data = tmp_path / "train.csv"
    frame.to_csv(data, index=False)
    done = mlgitops("publish", "scores", "--model", str(model_dir), "--reference", str(data),
                    "--target", "label", "--repo", str(repo), "-m", "scores from MLflow")
    assert done.returncode == 0, done.stderr
    sha = done.stdout.strip().splitlines()[-1]
    assert git.text(repo, "ls-remote", "origin", "refs/heads/main").split()[0] == sha
    assert git.text(repo, "log", "-1", "--format=%s") == "scores from MLflow"
    again = mlgitops("publish", "scores", "--model", str(model_dir), "--reference", str(data),
                     "--target", "label", "--repo", str(repo))
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == sha
    assert "nothing to do" in again.stderr


def test_publish_errors_are_sentences(repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    make_frame(20).to_csv(data, index=False)
    done = mlgitops("publish", "x", "--model", str(tmp_path / "missing"), "--reference", str(data),
                    "--repo", str(repo))
    assert done.returncode == 1
    assert done.stderr.startswith("error:")
    assert "Traceback" not in done.stderr


def test_status_json_and_history(repo: Path, publish_version: Callable[..., str]) -> None:
    v1 = publish_version()
    cfg = settings.controller(repo, port=free_port(), monitor=False)
    with run.running(cfg) as ctl:
        wait_for_version(ctl.base_url, "credit", v1)
        live = mlgitops("status", "--repo", str(repo), "--json")
    assert live.returncode == 0, live.stderr
    doc = json.loads(live.stdout)
    assert doc["controller"]["running"] is True
    (model,) = doc["models"]
    assert set(model) == {"name", "desiredCommit", "servedCommit", "servedDigest",
                          "lastAppliedCommit", "lastAttemptedCommit", "health", "endpoint",
                          "conditions", "drift", "rollout"}
    assert model["servedCommit"] == v1 and model["health"] == "Healthy"
    assert model["rollout"] is None, "a direct deploy has no rollout under way"
    assert {c["type"] for c in model["conditions"]} >= {"Ready", "Reconciling", "Stalled"}
    table = mlgitops("status", "--repo", str(repo))
    assert "credit" in table.stdout + table.stderr
    hist = mlgitops("history", "credit", "--repo", str(repo), "--json")
    assert hist.returncode == 0, hist.stderr
    kinds = [(r["kind"], r["commit"]) for r in json.loads(hist.stdout)]
    assert ("published", v1) in kinds and ("Deployed", v1) in kinds
    assert FEATURES  # the frame the model serves


def mlgitops_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    """The error a command printed: one line starting ``error:``, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_every_command_refuses_a_directory_that_is_not_a_model_repository(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    plain_git = tmp_path / "plain-git"
    plain_git.mkdir()
    git.run(plain_git, "init", "-q")
    (plain_git / "notes.txt").write_text("not models\n")
    git.commit(plain_git, message="notes", paths=["notes.txt"])
    data = tmp_path / "d.csv"
    make_frame(20).to_csv(data, index=False)
    commands = {
        "status": lambda d: ["status", "--repo", d],
        "validate": lambda d: ["validate", d],
        "history": lambda d: ["history", "credit", "--repo", d],
        "report": lambda d: ["report", "credit", "--repo", d],
        "up": lambda d: ["up", "--repo", d, "--port", str(free_port())],
        "publish": lambda d: ["publish", "credit", "--model", str(tmp_path / "m"),
                              "--reference", str(data), "--repo", d],
        "retry": lambda d: ["retry", "credit", "--repo", d],
    }
    cases = [(cmd, where, args(str(where)))
             for cmd, args in commands.items()
             for where in (empty, tmp_path / "missing", plain_git)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: mlgitops(*case[2]), cases))
    for (cmd, where, _), done in zip(cases, results, strict=True):
        assert done.returncode == 1, (cmd, where, done.stdout, done.stderr)
        sentence = one_sentence(done)
        assert str(where) in sentence and "model repository" in sentence, (cmd, sentence)
        assert "\x1f" not in sentence and "\x1e" not in sentence and "--format" not in sentence
        assert done.stdout == "", (cmd, done.stdout)


def test_user_mistakes_in_publish_are_sentences_and_debug_shows_the_traceback(
    repo: Path, tmp_path: Path
) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    frame = make_frame(200)
    fitted = tmp_path / "fitted"
    mlflow.sklearn.save_model(train(frame, kind="logistic"), str(fitted),
                              serialization_format="skops")
    unfitted = tmp_path / "unfitted"
    mlflow.sklearn.save_model(LogisticRegression(), str(unfitted), serialization_format="skops")
    lacking = tmp_path / "lacking.csv"
    frame.drop(columns=["f3"]).to_csv(lacking, index=False)
    full = tmp_path / "full.csv"
    frame.to_csv(full, index=False)

    done = mlgitops("publish", "credit", "--model", str(fitted), "--reference", str(lacking),
                    "--target", "label", "--repo", str(repo))
    assert done.returncode == 1
    assert "lacks 'f3'" in one_sentence(done)
    done = mlgitops("publish", "credit", "--model", str(unfitted), "--reference", str(full),
                    "--target", "label", "--repo", str(repo))
    assert done.returncode == 1
    assert "LogisticRegression is not fitted" in one_sentence(done)
    debug = mlgitops("--debug", "publish", "credit", "--model", str(unfitted), "--reference",
                     str(full), "--target", "label", "--repo", str(repo))
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "NotFittedError" in debug.stderr
    usage = mlgitops("publish", "credit", "--repo", str(repo))
    assert usage.returncode == 2 and "Missing option '--model'" in usage.stderr


def test_history_on_a_model_repository_without_that_model_is_a_sentence(repo: Path) -> None:
    done = mlgitops("history", "nosuch", "--repo", str(repo))
    assert done.returncode == 1
    assert "has no model nosuch" in one_sentence(done)


def test_tables_fit_80_columns_and_history_shows_decisions(
    repo: Path, publish_version: Callable[..., str]
) -> None:
    from mlgitops.controller import state

    v1 = publish_version()
    cfg = settings.controller(repo, port=free_port(), monitor=False)
    with run.running(cfg) as ctl:
        wait_for_version(ctl.base_url, "credit", v1)
        wait_until(lambda: bool(mlgitops("report", "credit", "--repo", str(repo),
                                         "--json").stdout.strip("[]\n ")),
                   what="the deploy decision recorded")
        store = state.Store(settings.state_dir(repo))
        for i in range(5):
            store.event("DriftWindow", model="credit", commit=v1, message=f"window {i} ok")
        status = mlgitops_env("status", "--repo", str(repo), COLUMNS="80")
        report = mlgitops_env("report", "credit", "--repo", str(repo), COLUMNS="80")
        wide = mlgitops_env("report", "credit", "--repo", str(repo), "--wide", COLUMNS="80")
        url = json.loads(mlgitops("report", "credit", "--repo", str(repo), "--json").stdout)[0]["url"]
    history = mlgitops_env("history", "credit", "--repo", str(repo), COLUMNS="80")
    windows = mlgitops_env("history", "credit", "--repo", str(repo), "--windows", COLUMNS="80")
    for done in (status, report, history, windows):
        assert done.returncode == 0, done.stderr
        too_long = [line for line in done.stdout.splitlines() if len(line) > 80]
        assert not too_long, too_long
        assert "…" not in done.stdout, done.stdout  # no cell is cut
    assert "credit" in status.stdout and "Healthy" in status.stdout and v1[:12] in status.stdout
    assert f"{ctl.base_url}/v2/models/credit" in status.stdout or "credit: http" in status.stdout
    assert url in report.stdout.split()  # whole, on its own line
    assert any(url in line and "deploy" in line for line in wide.stdout.splitlines())
    assert "Deployed" in history.stdout and "published" in history.stdout
    assert "window 3 ok" not in history.stdout and "5 closed drift window(s)" in history.stdout
    assert "window 3 ok" in windows.stdout
