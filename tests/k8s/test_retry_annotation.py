"""The operator's retry: a held version is tried again when asked (the ``mlgitops.io/retry``
annotation, `Reconciler.retry`) or when another operator run (a restart) looks at it; never
otherwise. The same remembered failure as the local runtime's, kept in the resource's status.

Against the real API server, with the operator's runtime (the controller's reconciler behind
the Kubernetes ports) and a real Git source; no kubelet is needed (a version tried again gets
its Deployment, which is what is asserted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import mlgitops
from mlgitops import settings
from mlgitops.adapters import kubernetes as k8s
from mlgitops.authoring import repository
from mlgitops.core import k8s_objects as ko
from mlgitops.core import trust
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.operator import handlers
from mlgitops.operator.runtime import Repository, RepositoryRuntime

from .test_operator import operator
from .waits import wait_for

NAME = "credit"


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


def rounded_model(repo: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Publish a pipeline storing ``numpy.round`` (a function: untrusted unless admitted)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FunctionTransformer, make_pipeline

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, 3)), columns=["a", "b", "c"])
    frame["label"] = (frame.a + frame.b > 0).astype(int)
    model = make_pipeline(FunctionTransformer(np.round), LogisticRegression())
    model.fit(frame.drop(columns="label"), frame.label)
    monkeypatch.setenv("MLGITOPS_TRUST_ALLOW", "numpy.round")  # the publisher reviewed it
    try:
        return str(mlgitops.publish(model, frame, name=NAME, repo=repo, target="label",
                                    quiet=True, trusted_types=["numpy.round"]))
    finally:
        monkeypatch.delenv("MLGITOPS_TRUST_ALLOW")


def status_of(cluster: k8s.Cluster, ns: str) -> dict[str, Any]:
    return dict((cluster.get_resource(ns, NAME) or {}).get("status") or {})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or () if c["type"] == kind), {})


def test_a_held_version_is_tried_again_when_asked_and_after_a_restart(
        cluster: k8s.Cluster, k8s_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = k8s_namespace
    repo = tmp_path / "models-repo"
    bare = repository.init(repo)
    (bare / settings.REMOTE_TRUST_FILE).write_text(yaml.safe_dump({"allow": ["numpy.round"]}))
    version = rounded_model(repo, monkeypatch)
    cfg = settings.OperatorSettings(repo_url=f"file://{bare}", namespace=ns,
                                    state_dir=tmp_path / "operator")

    def runtime(policy: trust.Policy) -> RepositoryRuntime:
        """An operator run: its own reconciler under ``policy``."""
        return RepositoryRuntime(cluster, dataclasses.replace(cfg, trust=policy),
                                 Repository("flags", cfg.repo_url, ns))

    # 1. held for a trust reason, and remembered in the resource's status
    first = runtime(trust.Policy())
    first.reconciler.reconcile()
    st = status_of(cluster, ns)
    stalled = condition(st, "Stalled")
    assert stalled["status"] == "True" and "numpy.round" in stalled["message"], st
    assert st["failedCommit"] == version and st["failedInputs"] and st["phase"] == "Held"
    assert cluster.read_deployment(ns, NAME) is None

    # 2. a restarted operator (another run) looks again: still refused under the same policy
    second = runtime(trust.Policy())
    assert second.store.failures[NAME].version == version  # read back from the status
    second.reconciler.reconcile()
    assert status_of(cluster, ns)["failedInputs"] != st["failedInputs"]

    # 3. what held it is fixed where the operator reads it, but nothing asks: held, not tried
    second.source.policy = trust.Policy(allow=frozenset({"numpy.round"}))
    second.reconciler.reconcile()
    assert cluster.read_deployment(ns, NAME) is None

    # 4. asked (what the annotation does): tried, and it rolls out
    second.retry([NAME])
    second.reconciler.reconcile()
    deployment = cluster.read_deployment(ns, NAME)
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["labels"][ko.LABEL_VERSION] == version
    st = status_of(cluster, ns)
    assert st.get("failedCommit") is None and st["phase"] == "Deploying"  # a null removes it
    assert condition(st, "Reconciling")["status"] == "True"


def test_the_retry_annotation_reaches_the_reconciler(
        cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = k8s_namespace
    repo = tmp_path / "models-repo"
    bare = repository.init(repo)
    (bare / settings.REMOTE_TRUST_FILE).write_text(yaml.safe_dump({"allow": ["numpy.round"]}))
    rounded_model(repo, monkeypatch)
    with operator(k8s_cluster, ns, repo, tmp_path / "operator"):
        cr = wait_for("the held resource", lambda: (got := cluster.get_resource(ns, NAME)) and condition(
            dict(got.get("status") or {}), "Stalled").get("status") == "True" and got)
        assert not [e for e in cluster.events(cr) if e.get("reason") == "RetryRequested"]
        cluster.patch_resource(ns, NAME, {"metadata": {"annotations": {
            handlers.ANNOTATION_RETRY: "1"}}})
        asked = wait_for("the RetryRequested Event", lambda: [
            e for e in cluster.events(cr) if e.get("reason") == "RetryRequested"], timeout=30)
        assert "tried again" in asked[0]["message"]
