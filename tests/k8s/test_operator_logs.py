"""``mlgitops operator --log-format json``: the real command, as a process, against the test
cluster; every line it writes to stderr is one JSON object with time, level, logger and message,
and the records about the model's ModelDeployment name the model (and its namespace).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds

from .waits import wait_for

NAME = "credit"


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


def lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]


def test_the_operator_logs_one_json_object_per_line_with_the_model(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    ns = k8s_namespace
    publish_version(name=NAME, seed=0)
    err = tmp_path / "operator.stderr"
    env = {**os.environ, "KUBECONFIG": str(k8s_cluster.kubeconfig_path), "MLGITOPS_MLFLOW": "0",
           "MLGITOPS_EVIDENTLY": "0"}
    argv = [sys.executable, "-m", "mlgitops.cli", "operator", "--log-format", "json",
            "--repo-url", f"file://{git.remote_url(repo)}", "--namespace", ns,
            "--kubeconfig", str(k8s_cluster.kubeconfig_path), "--state-dir", str(tmp_path / "op"),
            "--http-port", "0", "--interval", "1"]
    with err.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink, env=env)
    try:
        def about_the_model() -> dict[str, Any] | None:
            for ln in lines(err):
                try:
                    doc = json.loads(ln)
                except ValueError:
                    continue
                if doc.get("model") == NAME:
                    return dict(doc)
            assert proc.poll() is None, err.read_text()[-3000:]
            return None

        doc = wait_for("a log record about the model", about_the_model, timeout=90, every=0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert doc["namespace"] == ns
    records = [json.loads(ln) for ln in lines(err)]  # every line: one JSON object
    assert records, "the operator wrote nothing"
    for r in records:
        assert {"time", "level", "logger", "message"} <= set(r), r
        assert r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), r
        assert time.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert any(ns in r["message"] for r in records), records[:5]  # its start-up line
