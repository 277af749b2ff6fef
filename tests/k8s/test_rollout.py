"""A real model version served by a rendered Deployment, rolled to the next, on the test cluster.

Everything but the kubelet is real: a model published to a real Git remote, the Deployment and
Service as `core.k8s_objects` renders them, applied with `adapters.kubernetes`, rolled out by the
real deployment controller. The harness (`kubelet.py`) runs what each pod says: the real
`mlgitops fetch-model` as the init container, the real `mlgitops serve` on the pod's loopback
address, readiness probed, status written back.

The rollout test observes `maxUnavailable: 0` from both sides: through the API (a ready pod at
every moment, the old one deleted only after the new one is ready) and over HTTP (the old server
answers until the new one does). Figures printed at the end: apply -> pod Ready -> Deployment
ready, and the rollout of the next version.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import git_http
import pytest
import yaml
from kubernetes import client

from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.authoring import validate
from mlgitops.core import k8s_objects as ko
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet, http_get

from .waits import wait_for

T = TypeVar("T")
NAME = "credit"


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


@pytest.fixture()
def kubelet(k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path) -> Iterator[Kubelet]:
    with Kubelet(k8s_cluster, k8s_namespace, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as k:
        yield k
    assert k.running_processes() == 0


def render(
    cluster: k8s.Cluster, repo: Path, ns: str, commit: str, *, source: ko.Source | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ModelDeployment of ``commit`` applied (as the operator keeps it), and what it owns."""
    raw = git.show(repo, commit, f"manifests/{NAME}.yaml")
    assert raw is not None
    dep = validate.parse_manifest(raw, rel=f"manifests/{NAME}.yaml")
    cr = cluster.apply({**yaml.safe_load(raw), "metadata": {
        "name": NAME, "annotations": {"mlgitops.io/source-commit": commit}}}, namespace=ns)  # fmt: skip
    owner = ko.Owner.of(cr)
    url = git.remote_url(repo)
    assert url is not None
    options = ko.PodOptions(progress_deadline_seconds=180, readiness_period_seconds=1)
    # A URL, as a pod would get one (a bare path would read as a path inside the container).
    deployment = ko.deployment(dep, commit, owner=owner, source=source or ko.Source(f"file://{url}"),
                               trusted_types=dep.trusted_types, namespace=ns, options=options)
    return deployment, ko.service(dep, owner=owner, namespace=ns)


def served_version(endpoint: str, *, timeout: float = 2.0) -> str | None:
    status, body = http_get(f"{endpoint}/v2/models/{NAME}", timeout=timeout)
    if status != 200:
        return None
    return str(json.loads(body)["version"])


def test_a_published_version_serves_and_the_next_one_rolls_out_with_no_unavailable_pod(
    cluster: k8s.Cluster,
    kubelet: Kubelet,
    k8s_namespace: str,
    repo: Path,
    publish_version: Callable[..., str],
) -> None:
    ns = k8s_namespace
    v1 = publish_version(name=NAME, seed=0)

    # -- v1: apply -> the harness binds, fetches, serves -> Ready --------------------------
    deployment, service = render(cluster, repo, ns, v1)
    began = time.monotonic()
    cluster.apply(deployment)
    cluster.apply(service)
    state = wait_for("v1 to be ready", lambda: (
        (s := cluster.rollout(ns, NAME)) and s.phase is ko.Phase.READY and s), kubelet=kubelet)  # fmt: skip
    v1_ready = time.monotonic() - began
    assert state.commit == v1 and state.serving_commits == (v1,)
    deployment_status = cluster.read_deployment(ns, NAME)
    assert deployment_status is not None
    assert deployment_status["status"]["readyReplicas"] == 1
    (pod1,) = cluster.list_pods(ns, NAME)
    assert pod1.ready and pod1.commit == v1 and pod1.ip and pod1.ip.startswith("127.")
    assert pod1.endpoint is not None
    assert served_version(pod1.endpoint) == v1
    rec1 = kubelet.record(pod1.name)
    assert rec1 is not None and rec1.ready is not None and rec1.initialized is not None
    fetch_log = kubelet.logs(pod1.name, "fetch-model")
    assert f"models/{NAME} at {v1[:12]}" in fetch_log

    # -- v2: the next commit rolls out; the old pod serves until the new one is ready -------
    v2 = publish_version(name=NAME, seed=1, shift=0.3)
    assert v2 != v1
    deployment2, _ = render(cluster, repo, ns, v2)
    seen: list[tuple[float, tuple[tuple[str, str | None, bool, bool], ...]]] = []
    answers: list[tuple[float, str | None]] = []  # (when the answer came, version)
    done = threading.Event()

    def keep_asking_v1() -> None:  # a client of the old pod, every 50 ms, until the end
        while not done.is_set():
            version = served_version(pod1.endpoint or "", timeout=10.0)
            answers.append((time.monotonic(), version))
            time.sleep(0.05)

    asker = threading.Thread(target=keep_asking_v1, daemon=True)
    asker.start()
    began2 = time.monotonic()
    cluster.apply(deployment2)

    def rolled() -> bool:
        pods = cluster.list_pods(ns, NAME)
        seen.append((time.monotonic(), tuple((p.name, p.commit, p.ready, p.terminating) for p in pods)))
        state = cluster.rollout(ns, NAME)
        return bool(state and state.phase is ko.Phase.READY and state.commit == v2
                    and [p.commit for p in pods] == [v2])

    try:
        wait_for("v2 to replace v1", rolled, kubelet=kubelet)
    finally:
        done.set()
        asker.join(timeout=10)
    rollout_seconds = time.monotonic() - began2

    # never without a ready pod (maxUnavailable 0), as the API saw it
    for when, pods in seen:
        assert any(ready for _, _, ready, _ in pods), f"no ready pod at +{when - began2:.2f}s: {pods}"
    # the new pod became ready before the old one stopped being ready
    new_ready = min(t for t, pods in seen if any(c == v2 and r for _, c, r, _ in pods))
    old_gone = min((t for t, pods in seen if not any(c == v1 and r for _, c, r, _ in pods)),
                   default=float("inf"))  # fmt: skip
    assert new_ready <= old_gone
    # the old server answered v1 over HTTP until the new one was ready (as the API showed it)
    # or the harness told it to stop, whichever came first (the API view lags the harness)
    told_to_stop = (kubelet.record(pod1.name) or rec1).terminating or float("inf")
    before = [v for t, v in answers if t < min(new_ready, told_to_stop)]
    assert before and all(v == v1 for v in before), before[-5:]
    # the old pod is gone for good, and its process with it
    (pod2,) = cluster.list_pods(ns, NAME)
    assert pod2.name != pod1.name and pod2.ip != pod1.ip
    assert pod2.endpoint is not None and served_version(pod2.endpoint) == v2
    wait_for("the old server to stop", lambda: served_version(pod1.endpoint or "") is None)
    rec1 = kubelet.record(pod1.name)
    assert rec1 is not None and rec1.deleted is not None
    rec2 = kubelet.record(pod2.name)
    assert rec2 is not None and rec2.ready is not None and rec2.initialized is not None
    # as the harness saw it: the new server passed its readiness probe before the old pod was
    # told to stop
    assert rec1.terminating is not None and rec2.ready < rec1.terminating

    figures = {
        "v1: apply -> Deployment ready (s)": round(v1_ready, 2),
        "v1: pod seen -> init done (fetch-model) (s)": round(kubelet_span(rec1, "seen", "initialized"), 2),
        "v1: init done -> server ready (s)": round(kubelet_span(rec1, "initialized", "ready"), 2),
        "v2: apply -> rolled out, old pod deleted (s)": round(rollout_seconds, 2),
        "v2: new server ready -> old pod told to stop (s)": round(rec1.terminating - rec2.ready, 2),
    }
    print("\nrollout figures: " + json.dumps(figures))


def kubelet_span(rec: Any, start: str, end: str) -> float:
    a, b = getattr(rec, start), getattr(rec, end)
    return float(b - a) if a is not None and b is not None else float("nan")


def test_a_version_whose_pod_refuses_it_never_replaces_the_serving_one(
    cluster: k8s.Cluster,
    kubelet: Kubelet,
    k8s_namespace: str,
    repo: Path,
    publish_version: Callable[..., str],
) -> None:
    ns = k8s_namespace
    v1 = publish_version(name=NAME, seed=0)
    deployment, service = render(cluster, repo, ns, v1)
    cluster.apply(deployment)
    cluster.apply(service)
    wait_for("v1 to be ready", lambda: (
        (s := cluster.rollout(ns, NAME)) and s.phase is ko.Phase.READY), kubelet=kubelet)  # fmt: skip
    (pod1,) = cluster.list_pods(ns, NAME)

    # v2's pod pins a digest its commit's manifest does not name: fetch-model refuses it.
    v2 = publish_version(name=NAME, seed=1, shift=0.3)
    bad, _ = render(cluster, repo, ns, v2)
    for c in bad["spec"]["template"]["spec"]["initContainers"]:
        c["args"][c["args"].index("--digest") + 1] = "sha256:" + "0" * 64
    bad["spec"]["progressDeadlineSeconds"] = 8
    cluster.apply(bad)

    state = wait_for("the rollout to fail", lambda: (
        (s := cluster.rollout(ns, NAME)) and s.phase is ko.Phase.FAILED and s), timeout=90,
        kubelet=kubelet)  # fmt: skip
    assert "did not become ready within the progress deadline" in state.message
    assert state.commit == v2 and state.serving_commits == (v1,)
    pods = {p.commit: p for p in cluster.list_pods(ns, NAME)}
    assert pods[v1].name == pod1.name and pods[v1].ready, "the serving pod was never touched"
    refused = pods[v2]
    assert not refused.ready and refused.problem is not None
    assert "container fetch-model exited with 1" in refused.problem
    assert "the pod spec is stale" in refused.problem
    assert pod1.endpoint is not None and served_version(pod1.endpoint) == v1
    rec = kubelet.record(refused.name)
    assert rec is not None and rec.init_failures >= 2 and rec.started is None, "restarted, never served"


def test_a_private_repository_through_the_credentials_secret(
    cluster: k8s.Cluster,
    kubelet: Kubelet,
    k8s_namespace: str,
    repo: Path,
    publish_version: Callable[..., str],
) -> None:
    """The Secret a pod names is mounted, and fetch-model authenticates with it over HTTPS-like
    smart HTTP (Basic authentication); without the Secret the pod cannot start."""
    ns = k8s_namespace
    v1 = publish_version(name=NAME, seed=0)
    url = git.remote_url(repo)
    assert url is not None
    with git_http.serve(Path(url), user="reader", password="s3cret pass") as (http_url, seen):
        deployment, _ = render(cluster, repo, ns, v1, source=ko.Source(http_url, secret_name="git-creds"))
        cluster.apply(deployment)
        (pending,) = wait_for("the pod to wait for its Secret", lambda: [
            p for p in cluster.list_pods(ns, NAME) if p.problem and "git-creds" in p.problem])  # fmt: skip
        assert "not found" in (pending.problem or "")
        admin = client.CoreV1Api(cluster.api)
        admin.create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name="git-creds"), type="kubernetes.io/basic-auth",
            string_data={"username": "reader", "password": "s3cret pass"}))  # fmt: skip
        wait_for("the private version to be ready", lambda: (
            (s := cluster.rollout(ns, NAME)) and s.phase is ko.Phase.READY), kubelet=kubelet)  # fmt: skip
        assert "Basic" in seen
    (pod,) = cluster.list_pods(ns, NAME)
    assert pod.endpoint is not None and served_version(pod.endpoint) == v1
    assert "s3cret" not in kubelet.logs(pod.name, "fetch-model")
