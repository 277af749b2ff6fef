"""A commit that changes only ``spec.serving.replicas`` scales the model's Deployment: the pod
that served keeps its name and uid, one more pod starts, and the ModelDeployment serves the new
commit. The operator runs as in test_operator (kopf, standalone); the harness plays the kubelet.
Figures printed: the pods before and after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.core import k8s_objects as ko
from mlgitops.core import layout
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet

from .test_operator import NAME, operator, served
from .waits import wait_for


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


def pods(cluster: k8s.Cluster, ns: str) -> dict[str, str]:
    """name -> uid of the model's pods that are not going away."""
    return {str(p["metadata"]["name"]): str(p["metadata"]["uid"]) for p in cluster.pods(ns, NAME)
            if p["metadata"].get("deletionTimestamp") is None}


def test_a_replicas_only_commit_keeps_the_pods(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    ns = k8s_namespace
    v1 = publish_version(name=NAME, seed=0)
    with Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet, \
            operator(k8s_cluster, ns, repo, tmp_path / "operator"):
        wait_for("v1 Ready", lambda: served(cluster, ns, v1), kubelet=kubelet)
        before = pods(cluster, ns)
        assert len(before) == 1

        path = repo / layout.manifest_path(NAME)
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["serving"]["replicas"] = 2
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        v2 = git.commit(repo, message=f"{NAME}: two replicas", paths=[layout.MANIFESTS])
        assert v2 is not None
        git.push(repo)
        began = time.monotonic()

        def scaled() -> bool:
            state = cluster.rollout(ns, NAME)
            return (served(cluster, ns, v2) and state is not None and state.ready_replicas == 2
                    and len(pods(cluster, ns)) == 2)

        wait_for("v2 (two replicas) Ready", scaled, kubelet=kubelet)
        took = time.monotonic() - began
        after = pods(cluster, ns)
        assert set(before.items()) <= set(after.items()), (before, after)  # same name, same uid
        deployment = cluster.read_deployment(ns, NAME)
        assert deployment is not None
        assert deployment["metadata"]["labels"][ko.LABEL_VERSION] == v2
        assert deployment["spec"]["template"]["metadata"]["labels"][ko.LABEL_VERSION] == v1
        assert {p.commit for p in cluster.list_pods(ns, NAME)} == {v2}  # they serve v2 ...
        assert {p.runs for p in cluster.list_pods(ns, NAME)} == {v1}  # ... as the pods of v1
    # outside the operator's block: kopf's runner captures stdout while it runs
    print(f"\nreplicas 1 -> 2 at {v2[:12]}: Ready in {took:.1f} s; pods before "
          f"{before}, after {after}")
