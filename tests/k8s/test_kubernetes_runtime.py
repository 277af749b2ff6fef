"""The Kubernetes runtime's pieces against the real API server (no kubelet, no operator).

`KubernetesWorkloads.declare` keeps one ModelDeployment per declared model (a placeholder for
one whose manifest is invalid) and deletes the rest; `deploy` applies the Deployment and the
Service once and says `errors.Waiting` while no pod is ready; `alive` reads at most every few
seconds of its injected clock; `ResourceStatus` writes a status once, reads it back with the
remembered failure, and turns a store event into a Kubernetes Event.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlgitops import errors
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters.kubernetes import resource_status as rs
from mlgitops.adapters.kubernetes import workloads as wl
from mlgitops.core import k8s_objects as ko
from mlgitops.core import manifest, plan, status
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds

URL = "file:///srv/git/models.git"
V1, V2 = "1" * 40, "2" * 40


def dep(name: str, digest: str = "sha256:" + "a" * 64) -> manifest.ModelDeployment:
    return manifest.parse({"apiVersion": manifest.API_VERSION, "kind": manifest.KIND,
                           "metadata": {"name": name},
                           "spec": {"model": {"path": f"models/{name}", "digest": digest}}},
                          source=f"{name}.yaml")


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


def workloads(cluster: k8s.Cluster, ns: str, clock: list[float] | None = None,
              events: list[tuple[str, str]] | None = None) -> wl.KubernetesWorkloads:
    now = clock if clock is not None else [0.0]
    return wl.KubernetesWorkloads(
        cluster, ns, url=URL, render=wl.Renderer(ko.Source(URL)), clock=lambda: now[0],
        record=lambda name, **e: (events if events is not None else []).append((name, e["reason"])))


def test_declare_keeps_one_resource_per_declared_model(cluster: k8s.Cluster,
                                                       k8s_namespace: str) -> None:
    ns, w = k8s_namespace, workloads(cluster, k8s_namespace)
    w.declare(V1, {"credit": plan.Desired("credit", V1, dep("credit")),
                   "broken": plan.Desired("broken", V1, None, "spec.serving.replicas: 'many'")})
    credit, broken = cluster.get_resource(ns, "credit"), cluster.get_resource(ns, "broken")
    assert credit is not None and broken is not None
    assert credit["spec"] == dep("credit").to_dict()["spec"]
    assert credit["metadata"]["annotations"][ko.ANNOTATION_COMMIT] == V1
    assert credit["metadata"]["labels"][wl.LABEL_SOURCE] == wl.source_label(URL)
    assert wl.ANNOTATION_PLACEHOLDER in broken["metadata"]["annotations"]
    before = credit["metadata"]["resourceVersion"]
    w.declare(V1, {"credit": plan.Desired("credit", V1, dep("credit")),
                   "broken": plan.Desired("broken", V2, None, "still broken")})
    again = cluster.get_resource(ns, "credit")
    assert again is not None and again["metadata"]["resourceVersion"] == before  # nothing written
    # the manifest fixed: the real spec replaces the placeholder (and its annotation goes)
    w.declare(V2, {"credit": plan.Desired("credit", V1, dep("credit")),
                   "broken": plan.Desired("broken", V2, dep("broken"))})
    fixed = cluster.get_resource(ns, "broken")
    assert fixed is not None and wl.ANNOTATION_PLACEHOLDER not in fixed["metadata"]["annotations"]
    assert fixed["spec"]["model"]["path"] == "models/broken"
    # a quarantined version of a model that has a resource: its spec stays as it was
    w.declare(V2, {"credit": plan.Desired("credit", V2, dep("credit", "sha256:" + "b" * 64),
                                          "quarantined", quarantined=True),
                   "broken": plan.Desired("broken", V2, dep("broken"))})
    kept = cluster.get_resource(ns, "credit")
    assert kept is not None and kept["spec"]["model"]["digest"] == "sha256:" + "a" * 64
    # a model Git no longer declares: its resource goes; another repository's stays
    other = wl.resource("other", dep("other").to_dict()["spec"], version=V1, head=V1,
                        url="file:///elsewhere.git")
    cluster.apply(other, namespace=ns)
    w.declare(V2, {"credit": plan.Desired("credit", V1, dep("credit"))})
    assert cluster.get_resource(ns, "broken") is None
    assert cluster.get_resource(ns, "other") is not None


def test_deploy_applies_once_and_waits_for_the_rollout(cluster: k8s.Cluster,
                                                       k8s_namespace: str) -> None:
    ns, clock = k8s_namespace, [0.0]
    events: list[tuple[str, str]] = []
    w = workloads(cluster, ns, clock, events)
    desired = plan.Desired("credit", V1, dep("credit"))
    with pytest.raises(errors.Waiting):  # no resource yet: declare writes it first
        w.deploy(desired, model_dir=Path("/nonexistent"))
    w.declare(V1, {"credit": desired})
    with pytest.raises(errors.Waiting) as waiting:
        w.deploy(desired, model_dir=Path("/nonexistent"))
    assert waiting.value.delay == w.rollout_poll and V1[:12] in str(waiting.value)
    deployment = cluster.read_deployment(ns, "credit")
    assert deployment is not None and cluster.read_service(ns, "credit") is not None
    assert deployment["spec"]["template"]["metadata"]["labels"][ko.LABEL_VERSION] == V1
    cr = cluster.get_resource(ns, "credit")
    assert cr is not None and deployment["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    with pytest.raises(errors.Waiting):
        w.deploy(desired, model_dir=Path("/nonexistent"))
    again = cluster.read_deployment(ns, "credit")
    assert again is not None and again["metadata"]["generation"] == deployment["metadata"]["generation"]
    assert events == [("credit", "Deploying")]  # applied once, said once
    handle = wl.PodHandle("credit", V1, desired.deployment.digest if desired.deployment else "",
                          w.endpoint("credit"), str(deployment["metadata"]["name"]))
    assert w.alive(handle)
    cluster.delete_workload(ns, "credit")
    assert w.alive(handle)  # read a moment ago: not again before alive_every
    clock[0] += w.alive_every
    assert not w.alive(handle)
    assert w.recover({"credit": handle.record()}).lost == {
        "credit": "no ready pod of its recorded version runs"}


def test_resource_status_writes_once_reads_back_and_records_events(
        cluster: k8s.Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    w = workloads(cluster, ns)
    w.declare(V1, {"credit": plan.Desired("credit", V1, dep("credit"))})
    mirror = rs.ResourceStatus(cluster, ns, selector=w.selector)
    st, _ = status.held(status.ModelStatus(name="credit"), version=V1, reason="numpy.round is "
                        "not admitted", quarantined=False, serving_version=None, now="t0")
    failure = plan.Failure("sha256:" + "a" * 64, V1, "numpy.round is not admitted", "run-1")
    mirror.publish(st, failure)
    cr = cluster.get_resource(ns, "credit")
    assert cr is not None
    assert cr["status"]["phase"] == "Held" and cr["status"]["failedCommit"] == V1
    assert cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
    mirror.publish(st, failure)
    same = cluster.get_resource(ns, "credit")
    assert same is not None and same["metadata"]["resourceVersion"] == cr["metadata"]["resourceVersion"]
    loaded = rs.ResourceStatus(cluster, ns, selector=w.selector).load()
    assert loaded == {"credit": (st, failure)}
    mirror.event({"type": "Held", "model": "credit", "commit": V1, "message": "numpy.round"})
    mirror.event({"type": "DriftWindow", "model": "credit", "commit": V1, "message": "ok"})
    reasons = [(e["reason"], e["type"]) for e in cluster.events(cr)]
    assert reasons == [("Held", "Warning")]
    mirror.publish(st, None)  # the failure forgotten: nulls remove it
    cleared = cluster.get_resource(ns, "credit")
    assert cleared is not None and "failedCommit" not in cleared["status"]
