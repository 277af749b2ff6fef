"""`mlgitops.adapters.kubernetes.Cluster` against the real kube-apiserver (no kubelet).

What the operator will rely on: rendered Deployments and Services pass the API server's own
validation (server-side dry run, then server-side apply, idempotent), are owned by the
ModelDeployment and collected with it; custom resources and their status subresource; Events
that aggregate; and every refusal arrives as the mlgitops error the loop acts on.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client

from mlgitops import errors
from mlgitops.adapters import kubernetes as k8s
from mlgitops.core import k8s_objects as ko
from mlgitops.core import manifest
from mlgitops.devcluster.cluster import TestCluster, free_port
from mlgitops.devcluster.crds import install_crds

from . import waits

T = TypeVar("T")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    return waits.wait_for(what, probe, timeout, every=0.2)


@pytest.fixture(scope="module")
def crds(k8s_cluster: TestCluster) -> list[str]:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig_path))
    try:
        return install_crds(api)
    finally:
        api.close()


@pytest.fixture()
def cluster(k8s_cluster: TestCluster, crds: list[str]) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        yield c


def model(name: str = "credit", *, replicas: int = 1) -> manifest.ModelDeployment:
    return manifest.ModelDeployment(
        name=manifest.ModelName(name), model_path=f"models/{name}", digest=manifest.Digest(DIGEST),
        trusted_types=("sklearn.tree._tree.Tree",),
        serving=manifest.Serving(replicas=replicas),
    )  # fmt: skip


def create_cr(cluster: k8s.Cluster, ns: str, dep: manifest.ModelDeployment) -> dict[str, Any]:
    body = dep.to_dict()
    body["metadata"]["annotations"] = {"mlgitops.io/source-commit": COMMIT}
    return cluster.create_resource(ns, body)


def test_rendered_objects_pass_the_api_servers_validation_and_apply_idempotently(
    cluster: k8s.Cluster, k8s_namespace: str
) -> None:
    ns, dep = k8s_namespace, model()
    cr = create_cr(cluster, ns, dep)
    owner = ko.Owner.of(cr)
    source = ko.Source("https://git.example.com/team/models.git", secret_name="git-creds")
    deployment = ko.deployment(dep, COMMIT, owner=owner, source=source,
                               trusted_types=dep.trusted_types, namespace=ns)
    service = ko.service(dep, owner=owner, namespace=ns)

    dry = cluster.apply(deployment, dry_run=True)
    assert dry["metadata"]["labels"][ko.LABEL_VERSION] == COMMIT
    assert dry["spec"]["template"]["spec"]["restartPolicy"] == "Always"  # defaulted by the server
    assert cluster.read_deployment(ns, dep.name) is None, "a dry run stores nothing"
    assert cluster.apply(service, dry_run=True)["spec"]["ports"][0]["targetPort"] == "http"

    stored = cluster.apply(deployment)
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner.uid
    again = cluster.apply(deployment)
    assert again["metadata"]["generation"] == stored["metadata"]["generation"] == 1
    assert again["spec"] == stored["spec"]
    svc = cluster.apply(service)
    assert svc["spec"]["clusterIP"], "the API server allocated a cluster IP"
    assert cluster.read_service(ns, dep.name) is not None

    # The deployment controller creates the pod; nothing runs it (no kubelet), so it waits.
    pods = wait_for("the pod of the Deployment", lambda: cluster.list_pods(ns, dep.name))
    assert [(p.commit, p.ready, p.ip) for p in pods] == [(COMMIT, False, None)]
    assert pods[0].digest == DIGEST
    state = wait_for("the Deployment's status", lambda: (
        (s := cluster.rollout(ns, dep.name)) and s.updated_replicas == 1 and s))  # fmt: skip
    assert state.phase is ko.Phase.PROGRESSING and state.commit == COMMIT
    assert state.serving_commits == ()

    # A new version is a new template generation; the selector (immutable) never changes.
    nxt = "fedcba9876543210fedcba9876543210fedcba98"
    moved = cluster.apply(ko.deployment(dep, nxt, owner=owner, source=source,
                                        trusted_types=dep.trusted_types, namespace=ns))
    assert moved["metadata"]["generation"] == 2
    assert moved["spec"]["template"]["metadata"]["labels"][ko.LABEL_VERSION] == nxt


def test_the_model_deployment_owns_what_it_deploys(cluster: k8s.Cluster, k8s_namespace: str) -> None:
    """Deleting the resource deletes its Deployment, Service and pods (garbage collection).

    The collector watches a new CRD's objects only after its next discovery sync (every 30 s),
    so right after the CRDs are installed this takes up to that long.
    """
    ns, dep = k8s_namespace, model("gc")
    cr = create_cr(cluster, ns, dep)
    owner = ko.Owner.of(cr)
    cluster.apply(ko.deployment(dep, COMMIT, owner=owner, source=ko.Source("/srv/git/m.git"),
                                trusted_types=(), namespace=ns))
    cluster.apply(ko.service(dep, owner=owner, namespace=ns))
    wait_for("the pod", lambda: cluster.list_pods(ns, dep.name))

    assert cluster.delete_resource(ns, dep.name) is True
    wait_for("the Deployment to be collected", lambda: cluster.read_deployment(ns, dep.name) is None)
    wait_for("the Service to be collected", lambda: cluster.read_service(ns, dep.name) is None)
    wait_for("the pods to be collected", lambda: cluster.list_pods(ns, dep.name) == [])
    assert cluster.delete_resource(ns, dep.name) is False
    assert cluster.get_resource(ns, dep.name) is None


def test_model_deployment_resources_and_their_status(cluster: k8s.Cluster, k8s_namespace: str) -> None:
    ns, dep = k8s_namespace, model("status")
    created = create_cr(cluster, ns, dep)
    assert manifest.parse(created, source="the stored resource") == dep, "the same schema both ways"
    with pytest.raises(errors.Conflict, match="already exists"):
        create_cr(cluster, ns, dep)
    assert [r["metadata"]["name"] for r in cluster.list_resources(ns)] == ["status"]
    assert any(r["metadata"]["namespace"] == ns for r in cluster.list_resources(None))
    assert cluster.list_resources(ns, label_selector="team=none") == []

    status = {
        "observedGeneration": 1, "servedCommit": COMMIT, "drift": {"verdict": "ok"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                        "message": "1 of 1 pods ready", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }  # fmt: skip
    after = cluster.patch_status(ns, dep.name, status)
    assert after["status"] == status
    assert after["spec"] == created["spec"], "a status write leaves the spec alone"
    assert after["metadata"]["generation"] == created["metadata"]["generation"]
    # A status body cannot change the spec either (the subresource ignores it).
    cluster.patch_status(ns, dep.name, {"servedCommit": COMMIT})
    with pytest.raises(errors.Conflict, match="changed meanwhile"):
        cluster.patch_status(ns, dep.name, {"servedCommit": None},
                             resource_version=created["metadata"]["resourceVersion"])
    with pytest.raises(errors.NotFound, match="not found"):
        cluster.patch_status(ns, "nobody", {"servedCommit": COMMIT})

    patched = cluster.patch_resource(ns, dep.name, {"spec": {"serving": {"replicas": 2}}},
                                     resource_version=after["metadata"]["resourceVersion"])
    assert patched["spec"]["serving"]["replicas"] == 2
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(errors.ManifestError, match=r"spec\.serving\.replicas"):
        cluster.patch_resource(ns, dep.name, {"spec": {"serving": {"replicas": 0}}})
    bad = dep.to_dict()
    bad["metadata"]["name"] = "bad"
    bad["spec"]["model"]["digest"] = "md5:1234"
    with pytest.raises(errors.ManifestError, match=r"spec\.model\.digest"):
        cluster.create_resource(ns, bad)

    # The same object by server-side apply (how Git's manifests become resources).
    applied = cluster.apply(dep.to_dict(), namespace=ns)
    assert applied["spec"]["serving"]["replicas"] == 1


def table(k8s_cluster: TestCluster, path: str) -> dict[str, Any]:
    """What `kubectl get` shows: the server's Table rendering with the printer columns."""
    req = urllib.request.Request(f"{k8s_cluster.server}{path}")
    req.add_header("Authorization", f"Bearer {k8s_cluster.token}")
    req.add_header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    ctx = ssl.create_default_context(cafile=str(k8s_cluster.ca_path))
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return dict(json.loads(resp.read()))


def test_kubectl_get_shows_ready_commit_drift_and_age(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str
) -> None:
    ns, dep = k8s_namespace, model("columns")
    create_cr(cluster, ns, dep)
    cluster.patch_status(ns, dep.name, {
        "servedCommit": COMMIT,
        "drift": {"verdict": "breach", "share": 0.6, "streak": 1},
        "conditions": [{"type": "Reconciling", "status": "False", "reason": "Done"},
                       {"type": "Ready", "status": "True", "reason": "Serving"}],
    })  # fmt: skip
    got = table(k8s_cluster, f"/apis/mlgitops.io/v1alpha1/namespaces/{ns}/modeldeployments")
    columns = [c["name"] for c in got["columnDefinitions"]]
    assert columns == ["Name", "Ready", "Commit", "Drift", "Age"]
    (row,) = got["rows"]
    assert row["cells"][:4] == ["columns", "True", COMMIT, "breach"]


def test_events_aggregate_like_kubectls(cluster: k8s.Cluster, k8s_namespace: str) -> None:
    ns, dep = k8s_namespace, model("events")
    cr = create_cr(cluster, ns, dep)
    first = cluster.record_event(cr, reason="Deployed", message=f"commit {COMMIT[:12]} serves",
                                 action="Deploy")
    assert first["count"] == 1 and first["involvedObject"]["uid"] == cr["metadata"]["uid"]
    second = cluster.record_event(cr, reason="Deployed", message=f"commit {COMMIT[:12]} serves")
    assert second["metadata"]["name"] == first["metadata"]["name"]
    assert second["count"] == 2
    assert second["firstTimestamp"] == first["firstTimestamp"]
    cluster.record_event(cr, reason="Held", message="x" * 5000, type="Warning")
    events = cluster.events(cr)
    assert sorted((e["reason"], e["type"], e["count"]) for e in events) == [
        ("Deployed", "Normal", 2), ("Held", "Warning", 1)]
    held = next(e for e in events if e["reason"] == "Held")
    assert len(held["message"]) == k8s.MAX_EVENT_MESSAGE
    with pytest.raises(ValueError, match="Normal or Warning"):
        cluster.record_event(cr, reason="X", message="y", type="Error")


def test_refusals_become_mlgitops_errors(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str
) -> None:
    ns, dep = k8s_namespace, model("refused")
    owner = ko.Owner(name=dep.name, uid="00000000-0000-4000-8000-000000000000")
    deployment = ko.deployment(dep, COMMIT, owner=owner, source=ko.Source("/srv/m.git"),
                               trusted_types=(), namespace=ns)
    # 422: the selector must match the template (the API server says which field)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["selector"] = {"matchLabels": {"mlgitops.io/model": "other"}}
    with pytest.raises(errors.ManifestError, match="selector"):
        cluster.apply(broken)
    # 404 on a write: the namespace does not exist
    with pytest.raises(errors.NotFound, match="not found"):
        cluster.apply(deployment, namespace="no-such-namespace")
    # a read of what is not there is None, not an error
    assert cluster.read_deployment(ns, "nothing") is None
    assert cluster.get_resource(ns, "nothing") is None
    # 403: a user without permissions (impersonated by the admin)
    cfg = cluster.api.configuration
    nobody = k8s.Cluster(client.ApiClient(cfg, header_name="Impersonate-User", header_value="nobody"))
    try:
        with pytest.raises(errors.ConfigError, match=r"forbidden.*permission"):
            nobody.list_resources(ns)
    finally:
        nobody.close()
    # no API server: a transient error, fast
    dead_cfg = k8s.Cluster._configuration()
    dead_cfg.host = f"https://127.0.0.1:{free_port()}"
    dead = k8s.Cluster(client.ApiClient(dead_cfg), timeout=5)
    began = time.monotonic()
    try:
        with pytest.raises(errors.ClusterError, match="cannot be reached") as unreachable:
            dead.read_deployment(ns, dep.name)
    finally:
        dead.close()
    assert isinstance(unreachable.value, errors.Transient)
    assert time.monotonic() - began < 10
    with pytest.raises(errors.ConfigError, match="not an object mlgitops applies"):
        cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, namespace=ns)
