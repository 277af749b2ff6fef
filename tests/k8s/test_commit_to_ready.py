"""Commit -> Ready through the operator, three times in a row (the median is printed).

Each publish is a real commit pushed to a bare remote; Ready is the ModelDeployment's status
naming that commit with ``Ready=True`` while the kubelet stand-in runs the real pods.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mlgitops.adapters import kubernetes as k8s
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
