"""The operator's retry: a held ModelDeployment is tried again when its ``mlgitops.io/retry``
annotation changes, or when another operator run (a restart) looks at it; never otherwise.

Against the real API server, with the operator's `deploy.Deployer` and a real Git source; no
kubelet is needed (a version tried again gets its Deployment, which is what is asserted).
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
from mlgitops.controller import source as source_mod
from mlgitops.core import k8s_objects as ko
from mlgitops.core import layout, trust
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.operator import deploy

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


def test_a_held_version_is_tried_again_on_the_retry_annotation_and_after_a_restart(
        cluster: k8s.Cluster, k8s_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = k8s_namespace
    repo = tmp_path / "models-repo"
    bare = repository.init(repo)
    (bare / settings.REMOTE_TRUST_FILE).write_text(yaml.safe_dump({"allow": ["numpy.round"]}))
    version = rounded_model(repo, monkeypatch)
    doc = yaml.safe_load((repo / layout.manifest_path(NAME)).read_text())
    doc["metadata"]["annotations"] = {ko.ANNOTATION_COMMIT: version}
    cluster.create_resource(ns, doc)

    cfg = settings.OperatorSettings(repo_url=f"file://{bare}", namespace=ns,
                                    state_dir=tmp_path / "operator")

    def deployer(policy: trust.Policy) -> deploy.Deployer:
        """An operator run: its own source and settings under ``policy``."""
        source = source_mod.Source(cfg.state_dir, url=cfg.repo_url, branch=cfg.branch,
                                   policy=policy)
        source.sync()
        return deploy.Deployer(cluster, source, dataclasses.replace(cfg, trust=policy))

    def reconcile(d: deploy.Deployer) -> deploy.Result:
        body = cluster.get_resource(ns, NAME)
        assert body is not None
        return d.reconcile(body)

    # 1. held for a trust reason, and remembered
    first = deployer(trust.Policy())
    held = reconcile(first)
    assert held.phase == "Held" and "numpy.round" in held.message
    st = status_of(cluster, ns)
    assert st["failedCommit"] == version and st["failedInputs"] and st["failedRetry"] == ""

    # 2. a restarted operator (another run) looks again: still refused under the same policy
    second = deployer(trust.Policy())
    assert reconcile(second).phase == "Held"
    assert status_of(cluster, ns)["failedInputs"] != st["failedInputs"]

    # 3. what held it is fixed where the operator reads it, but nothing asks: held, not looked at
    second.source.policy = trust.Policy(allow=frozenset({"numpy.round"}))
    assert reconcile(second).phase == "Held"
    assert cluster.read_deployment(ns, NAME) is None

    # 4. the annotation asks (any new value, as `flux reconcile --force`): tried, and it rolls out
    cluster.patch_resource(ns, NAME, {"metadata": {"annotations": {deploy.ANNOTATION_RETRY: "1"}}})
    tried = reconcile(second)
    assert tried.phase == "Deploying", tried.message
    deployment = cluster.read_deployment(ns, NAME)
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["labels"][ko.LABEL_VERSION] == version
    assert status_of(cluster, ns).get("failedCommit") is None  # a null in a merge patch removes it

    # 5. and a version held with the annotation set is held again until its value changes
    third = deployer(trust.Policy())
    assert reconcile(third).phase == "Held"
    assert status_of(cluster, ns)["failedRetry"] == "1"
    third.source.policy = trust.Policy(allow=frozenset({"numpy.round"}))
    assert reconcile(third).phase == "Held"
    cluster.patch_resource(ns, NAME, {"metadata": {"annotations": {deploy.ANNOTATION_RETRY: "2"}}})
    assert reconcile(third).phase in ("Deploying", "Serving")
