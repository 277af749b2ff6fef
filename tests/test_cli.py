"""The `mlgitops` command as people script against it: publish, status --json, history."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import FEATURES, free_port, make_frame, train

from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.controller import run
from mlgitops.demo import wait_for_version

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
                          "conditions", "drift"}
    assert model["servedCommit"] == v1 and model["health"] == "Healthy"
    assert {c["type"] for c in model["conditions"]} >= {"Ready", "Reconciling", "Stalled"}
    table = mlgitops("status", "--repo", str(repo))
    assert "credit" in table.stdout + table.stderr
    hist = mlgitops("history", "credit", "--repo", str(repo), "--json")
    assert hist.returncode == 0, hist.stderr
    kinds = [(r["kind"], r["commit"]) for r in json.loads(hist.stdout)]
    assert ("published", v1) in kinds and ("Deployed", v1) in kinds
    assert FEATURES  # the frame the model serves
