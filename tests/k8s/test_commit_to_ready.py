"""Commit -> Ready through the operator, three times in a row (the median is printed), and after
an API-server outage during which a commit was pushed.

Each publish is a real commit pushed to a bare remote; Ready is the ModelDeployment's status
naming that commit with ``Ready=True`` while the kubelet stand-in runs the real pods.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mlgitops import errors
from mlgitops.adapters import kubernetes as k8s
from mlgitops.core import k8s_objects as ko
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.kubelet import Kubelet

from .test_operator import NAME, cluster, operator, served  # noqa: F401  (fixture)
from .waits import wait_for


def test_commit_to_ready_median_of_three(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,  # noqa: F811
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    ns = k8s_namespace
    v0 = publish_version(name=NAME, seed=0)
    seconds: list[float] = []
    with (Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet,
          operator(k8s_cluster, ns, repo, tmp_path / "operator")):
        wait_for("v0 Ready", lambda: served(cluster, ns, v0), kubelet=kubelet)
        for seed in (1, 2, 3):
            began = time.monotonic()
            v = publish_version(name=NAME, seed=seed)
            wait_for(f"seed {seed} Ready", lambda v=v: served(cluster, ns, v), kubelet=kubelet)
            seconds.append(time.monotonic() - began)
    print(f"\ncommit -> Ready: {[round(s, 1) for s in seconds]} s, median "
          f"{statistics.median(seconds):.1f} s")
    assert len(seconds) == 3


def test_after_an_api_server_outage_a_commit_pushed_meanwhile_deploys_at_once(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,  # noqa: F811
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    """The kube-apiserver is stopped for 25 s and a commit is pushed meanwhile: the operator's
    passes fail and back off, the controller-manager loses its lease and is restarted (as a
    kubelet restarts it), and once the API server is back the commit reaches its
    ModelDeployment, its pod is created and it becomes Ready. Bounds are generous; the bench
    (bench/k8s_commit_to_ready.py --outage) measures."""
    ns = k8s_namespace
    v0 = publish_version(name=NAME, seed=0)
    with (Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet,
          operator(k8s_cluster, ns, repo, tmp_path / "operator")):
        wait_for("v0 Ready", lambda: served(cluster, ns, v0), kubelet=kubelet)
        restarts = k8s_cluster.restarts.get("kube-controller-manager", 0)
        k8s_cluster.stop_apiserver()
        try:
            time.sleep(12.5)
            v1 = publish_version(name=NAME, seed=1)  # Git answers; the API server does not
            time.sleep(12.5)
        finally:
            k8s_cluster.start_apiserver()
        back = time.monotonic()

        def declared() -> bool:
            try:
                cr = cluster.get_resource(ns, NAME) or {}
            except errors.MlgitopsError:  # the API server settles
                return False
            return bool((cr.get("metadata", {}).get("annotations") or {}).get(ko.ANNOTATION_COMMIT) == v1)

        wait_for("the commit in its ModelDeployment", declared, timeout=60)
        in_resource = time.monotonic() - back
        wait_for("a pod of the commit", lambda: any(
            (p["metadata"].get("labels") or {}).get(ko.LABEL_VERSION) == v1
            for p in cluster.pods(ns, NAME)), timeout=60)
        pod = time.monotonic() - back
        wait_for("the commit Ready", lambda: served(cluster, ns, v1), kubelet=kubelet)
        ready = time.monotonic() - back
        assert in_resource < 20.0 and pod < 30.0, (in_resource, pod)
        assert k8s_cluster.restarts.get("kube-controller-manager", 0) > restarts
    print(f"\nafter a 25 s outage, from the API server back: in the ModelDeployment "
          f"{in_resource:.1f} s, its pod {pod:.1f} s, Ready {ready:.1f} s")
