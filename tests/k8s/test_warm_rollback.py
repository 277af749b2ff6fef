"""A revert within ``spec.rollout.scaleDownDelaySeconds`` switches the model's Service back to the
previous version's pods, still running and ready: no pod is created, the previous version
answers, and the reverted version's Deployment goes. A version replaced with no revert keeps
its Deployment (marked replaced) for the delay, then it is gone. The
operator runs as in test_operator (kopf, standalone); the harness plays the kubelet.
Figure printed: revert pushed -> the ModelDeployment Ready at the revert with the previous
version's pods answering.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters.kubernetes import versions
from mlgitops.core import layout
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet

from .test_operator import NAME, answer, operator, served
from .waits import wait_for

DELAY = 25.0


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


def uids(cluster: k8s.Cluster, ns: str) -> set[str]:
    return {str(p["metadata"]["uid"]) for p in cluster.pods(ns, NAME)}


def names(cluster: k8s.Cluster, ns: str) -> dict[str, bool]:
    """Deployment name -> replaced (kept warm, not selected by the Service)."""
    return {str(d["metadata"]["name"]): versions.replaced(d) for d in cluster.deployments(ns, NAME)}


def test_a_revert_within_the_delay_reuses_the_warm_pods_and_after_it_the_old_deployment_goes(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    ns = k8s_namespace
    publish_version(name=NAME, seed=0)
    path = repo / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["rollout"] = {"strategy": "direct", "scaleDownDelaySeconds": DELAY}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    d1 = git.commit(repo, message=f"{NAME}: keep a replaced version {DELAY:.0f} s", paths=[layout.MANIFESTS])
    assert d1 is not None
    git.push(repo)
    with Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet, \
            operator(k8s_cluster, ns, repo, tmp_path / "operator"):
        wait_for("v1 Ready", lambda: served(cluster, ns, d1), kubelet=kubelet)
        first = cluster.read_deployment(ns, NAME)
        assert first is not None
        v1_deployment = str(first["metadata"]["name"])

        v2 = publish_version(name=NAME, seed=1)  # keeps the manifest's rollout section
        wait_for("v2 Ready", lambda: served(cluster, ns, v2), kubelet=kubelet)
        assert answer(cluster, ns) == v2
        kept = names(cluster, ns)
        assert kept.get(v1_deployment) is True, kept  # v1 kept warm, marked replaced
        second = cluster.read_deployment(ns, NAME)
        assert second is not None and second["metadata"]["name"] != v1_deployment
        assert kept == {v1_deployment: True, str(second["metadata"]["name"]): False}
        before = uids(cluster, ns)

        subprocess.run(["git", "-C", str(repo), "revert", "--no-edit", "HEAD"], check=True,
                       capture_output=True)
        git.push(repo)
        reverted = str(git.rev_parse(repo, "HEAD"))
        began = time.monotonic()
        wait_for("the revert Ready", lambda: served(cluster, ns, reverted), kubelet=kubelet)
        # its pods answer with the commit they were started at (v1 first served at d1)
        wait_for("the previous version answering", lambda: answer(cluster, ns) == d1)
        took = time.monotonic() - began
        assert uids(cluster, ns) <= before  # no pod created: the warm ones serve
        service = cluster.read_service(ns, NAME)
        assert versions.serving_template(service) == versions.template_of(first)
        # the version the revert took out is not kept warm: its Deployment goes at once
        wait_for("v2's Deployment gone", lambda: names(cluster, ns) == {v1_deployment: False})

        # -- a new version replaces v1 and no revert comes: after the delay v1's Deployment goes
        v3 = publish_version(name=NAME, seed=2)
        wait_for("v3 Ready", lambda: served(cluster, ns, v3), kubelet=kubelet)
        replaced_at = time.monotonic()
        assert answer(cluster, ns) == v3
        third = cluster.read_deployment(ns, NAME)
        assert third is not None
        v3_deployment = str(third["metadata"]["name"])
        assert names(cluster, ns) == {v1_deployment: True, v3_deployment: False}
        wait_for("v1's Deployment gone after the delay",
                 lambda: v1_deployment not in names(cluster, ns), timeout=DELAY + 60, every=0.5)
        kept_for = time.monotonic() - replaced_at
        assert kept_for >= DELAY - 5.0, kept_for  # not before the delay (the clocks differ a bit)
        assert names(cluster, ns) == {v3_deployment: False}
        assert answer(cluster, ns) == v3
    print(f"\nrevert pushed -> Ready with v1's warm pods answering: {took:.2f} s "
          f"(operator polling every 1 s); v1 kept {kept_for:.1f} s after v3 replaced it")
