"""Smoke tests of the test cluster itself, through the official kubernetes client.

They pin down what later operator tests rely on: CRDs and custom objects, Deployments turned into
ReplicaSets and Pods by kube-controller-manager, pod readiness played by the test, garbage
collection through ownerReferences, namespace deletion, and server-side dry-run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from . import waits

T = TypeVar("T")

GROUP, VERSION, PLURAL, KIND = "smoke.mlgitops.io", "v1", "widgets", "Widget"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    return waits.wait_for(what, probe, timeout, every=0.2)


def gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_version_and_identity(k8s_api: Any) -> None:
    info = client.VersionApi(k8s_api).get_code()
    assert (info.major, info.minor) == ("1", "34")
    assert info.git_version.startswith("v1.34.")
    review = client.AuthenticationV1Api(k8s_api).create_self_subject_review(
        client.V1SelfSubjectReview(metadata=client.V1ObjectMeta())
    )
    assert review.status.user_info.username == "admin"
    assert "system:masters" in review.status.user_info.groups


def test_namespace_lifecycle(k8s_api: Any) -> None:
    core = client.CoreV1Api(k8s_api)
    name = f"smoke-ns-{uuid.uuid4().hex[:6]}"
    created = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    assert created.status.phase == "Active"
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"), data={"k": "v"})
    )
    assert name in {ns.metadata.name for ns in core.list_namespace().items}

    core.delete_namespace(name)
    # The namespace controller empties it and removes the `kubernetes` finalizer.
    wait_for(f"namespace {name} to be deleted", lambda: gone(lambda: core.read_namespace(name)))


@pytest.fixture(scope="module")
def widget_crd(k8s_cluster: Any) -> Iterator[str]:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig_path))
    ext = client.ApiextensionsV1Api(api)
    name = f"{PLURAL}.{GROUP}"
    schema = client.V1JSONSchemaProps(
        type="object",
        properties={
            "spec": client.V1JSONSchemaProps(
                type="object",
                required=["size"],
                properties={"size": client.V1JSONSchemaProps(type="integer", minimum=1)},
            ),
            "status": client.V1JSONSchemaProps(
                type="object", x_kubernetes_preserve_unknown_fields=True
            ),
        },
    )
    ext.create_custom_resource_definition(
        client.V1CustomResourceDefinition(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1CustomResourceDefinitionSpec(
                group=GROUP,
                scope="Namespaced",
                names=client.V1CustomResourceDefinitionNames(
                    plural=PLURAL, singular="widget", kind=KIND
                ),
                versions=[
                    client.V1CustomResourceDefinitionVersion(
                        name=VERSION,
                        served=True,
                        storage=True,
                        schema=client.V1CustomResourceValidation(open_apiv3_schema=schema),
                        subresources=client.V1CustomResourceSubresources(status={}),
                    )
                ],
            ),
        )
    )

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(f"CRD {name} to be established", established)
    try:
        yield name
    finally:
        ext.delete_custom_resource_definition(name)
        api.close()


def test_custom_resource(k8s_api: Any, k8s_namespace: str, widget_crd: str) -> None:
    custom = client.CustomObjectsApi(k8s_api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    # Discovery can lag a moment behind Established.
    created = wait_for(
        "the custom object to be accepted",
        lambda: _try_create(
            lambda: custom.create_namespaced_custom_object(
                GROUP, VERSION, k8s_namespace, PLURAL, body
            )
        ),
    )
    assert created["metadata"]["uid"]
    got = custom.get_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, "w1")
    assert got["spec"] == {"size": 3}

    # The structural schema is enforced by the apiserver.
    bad = {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}}
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, bad)
    assert invalid.value.status == 422

    # The status subresource: a status write does not touch spec and vice versa.
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, k8s_namespace, PLURAL, "w1", {"status": {"phase": "Seen"}}
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, "w1")
    assert got["status"] == {"phase": "Seen"}
    assert got["spec"] == {"size": 3}


def _try_create(create: Callable[[], T]) -> T | None:
    try:
        return create()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _deployment(name: str) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    # Pre-bound: no scheduler runs. No kubelet either, so the node need not exist.
                    node_name="fake-node",
                    # Deleted pods disappear at once instead of waiting for a kubelet to confirm.
                    termination_grace_period_seconds=0,
                    containers=[
                        client.V1Container(name="main", image="example.invalid/never-pulled:1")
                    ],
                ),
            ),
        ),
    )


def play_kubelet_ready(core: client.CoreV1Api, namespace: str, pod: str) -> None:
    """What a kubelet would report for a started, ready pod."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [
        {"type": kind, "status": "True", "lastTransitionTime": now}
        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    core.patch_namespaced_pod_status(
        pod,
        namespace,
        {
            "status": {
                "phase": "Running",
                "conditions": conditions,
                "startTime": now,
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "example.invalid/never-pulled:1",
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                ],
            }
        },
    )


def test_deployment_replicaset_pods_readiness_and_gc(k8s_api: Any, k8s_namespace: str) -> None:
    apps, core = client.AppsV1Api(k8s_api), client.CoreV1Api(k8s_api)
    ns = k8s_namespace
    deployment = apps.create_namespaced_deployment(ns, _deployment("web"))

    replica_sets = wait_for(
        "the deployment controller to create a ReplicaSet",
        lambda: apps.list_namespaced_replica_set(ns, label_selector="app=web").items,
    )
    assert len(replica_sets) == 1
    rs = replica_sets[0]
    assert [(o.kind, o.name, o.uid, o.controller) for o in rs.metadata.owner_references] == [
        ("Deployment", "web", deployment.metadata.uid, True)
    ]

    pods = wait_for(
        "the replicaset controller to create a Pod",
        lambda: core.list_namespaced_pod(ns, label_selector="app=web").items,
    )
    assert len(pods) == 1
    pod = pods[0]
    assert pod.spec.node_name == "fake-node"
    assert [(o.kind, o.uid) for o in pod.metadata.owner_references] == [
        ("ReplicaSet", rs.metadata.uid)
    ]
    assert apps.read_namespaced_deployment_status("web", ns).status.ready_replicas in (None, 0)

    play_kubelet_ready(core, ns, pod.metadata.name)
    assert core.read_namespaced_pod_status(pod.metadata.name, ns).status.phase == "Running"
    status = wait_for(
        "the Deployment to count the pod as ready",
        lambda: (
            (s := apps.read_namespaced_deployment_status("web", ns).status).ready_replicas == 1
            and s
        ),
    )
    assert status.available_replicas == 1
    assert status.updated_replicas == 1

    # Garbage collection: deleting the owner (background propagation) removes the ReplicaSet
    # and, through it, the Pod.
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Background")
    wait_for(
        "the garbage collector to delete the ReplicaSet",
        lambda: gone(lambda: apps.read_namespaced_replica_set(rs.metadata.name, ns)),
    )
    wait_for(
        "the garbage collector to delete the Pod",
        lambda: gone(lambda: core.read_namespaced_pod(pod.metadata.name, ns)),
    )


def test_garbage_collection_of_plain_owner_references(k8s_api: Any, k8s_namespace: str) -> None:
    core, ns = client.CoreV1Api(k8s_api), k8s_namespace
    owner = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    for name in ("dependent-1", "dependent-2"):
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, owner_references=[ref]))
        )
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bystander"))
    )

    core.delete_namespaced_config_map("owner", ns)
    for name in ("dependent-1", "dependent-2"):
        wait_for(
            f"{name} to be collected",
            lambda name=name: gone(lambda: core.read_namespaced_config_map(name, ns)),
        )
    assert core.read_namespaced_config_map("bystander", ns).metadata.name == "bystander"


def test_server_side_dry_run(k8s_api: Any, k8s_namespace: str) -> None:
    apps, core, ns = client.AppsV1Api(k8s_api), client.CoreV1Api(k8s_api), k8s_namespace
    dry = apps.create_namespaced_deployment(ns, _deployment("dry"), dry_run="All")
    # Defaulted and validated by the server, never stored.
    assert dry.metadata.name == "dry"
    assert dry.spec.strategy.type == "RollingUpdate"
    assert dry.spec.template.spec.restart_policy == "Always"
    assert gone(lambda: apps.read_namespaced_deployment("dry", ns))

    invalid = _deployment("invalid")
    invalid.spec.selector = client.V1LabelSelector(match_labels={"app": "something-else"})
    with pytest.raises(ApiException) as rejected:
        apps.create_namespaced_deployment(ns, invalid, dry_run="All")
    assert rejected.value.status == 422
    assert "selector" in rejected.value.body

    # Dry-run of a delete leaves the object in place.
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="kept"))
    )
    core.delete_namespaced_config_map("kept", ns, dry_run="All")
    assert core.read_namespaced_config_map("kept", ns).metadata.name == "kept"
