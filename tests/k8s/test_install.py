"""The install base (manifests/install/) against the real API server.

Every object goes through server-side apply with ``dryRun=All`` (what ``kubectl apply
--server-side --dry-run=server`` does): the CRDs are created for real first, since custom objects
can only be validated against a served CRD, then a ModelRepository and the repository's own
ModelDeployment are dry-run too. The base is built with ``kubectl kustomize`` when kubectl is on
PATH (else from the generator, with kustomize's namespace rule applied by hand).

Then the RBAC is exercised for real: in a test namespace (an overlay that moves the base there),
the adapter acting as the operator's ServiceAccount (impersonated) does everything the operator
does, and is refused what it must not do.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from mlgitops import errors
from mlgitops.adapters import kubernetes as k8s
from mlgitops.core import install, k8s_objects, manifest, source_spec
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "install"

#: (apiVersion, kind) -> (path prefix, plural, namespaced)
RESOURCES = {
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    (manifest.API_VERSION, manifest.KIND): (f"/apis/{manifest.API_VERSION}", manifest.PLURAL, True),
    (source_spec.API_VERSION, source_spec.KIND): (f"/apis/{source_spec.API_VERSION}", source_spec.PLURAL, True),
}  # fmt: skip


def apply(cluster: TestCluster, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    """Server-side apply over plain HTTP, as kubectl does it."""
    prefix, plural, namespaced = RESOURCES[(obj["apiVersion"], obj["kind"])]
    meta = obj["metadata"]
    where = f"/namespaces/{meta['namespace']}" if namespaced else ""
    query = "fieldManager=mlgitops-install-test&force=true" + ("&dryRun=All" if dry_run else "")
    url = f"{cluster.server}{prefix}{where}/{plural}/{meta['name']}?{query}"
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="PATCH")
    req.add_header("Authorization", f"Bearer {cluster.token}")
    req.add_header("Content-Type", "application/apply-patch+yaml")
    req.add_header("Accept", "application/json")
    ctx = ssl.create_default_context(cafile=str(cluster.ca_path))
    try:
        with urllib.request.urlopen(req, timeout=20, context=ctx) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        pytest.fail(f"{obj['kind']} {meta['name']}: {exc.code} {exc.read().decode()[:800]}")


def build(namespace: str | None, tmp_path: Path) -> list[dict[str, Any]]:
    """The base (moved to ``namespace`` by an overlay), built by kustomize when available."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        target = BASE
        if namespace is not None:
            overlay = tmp_path / "overlay"
            overlay.mkdir()
            (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
                {"namespace": namespace, "resources": [os.path.relpath(BASE, overlay)]}))  # fmt: skip
            target = overlay
        out = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True,
                             timeout=60, check=True).stdout  # fmt: skip
        return [d for d in yaml.safe_load_all(out) if d]
    docs = [copy.deepcopy(d) for docs in install.objects().values() for d in docs]
    if namespace is not None:  # what kustomize's namespace transformer does to this base
        for d in docs:
            if d["kind"] == "Namespace":
                d["metadata"]["name"] = namespace
            elif "namespace" in d["metadata"]:
                d["metadata"]["namespace"] = namespace
            for s in d.get("subjects") or []:
                s["namespace"] = namespace
    return docs


@pytest.fixture(scope="module")
def crds_installed(k8s_cluster: TestCluster) -> None:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig_path))
    try:
        install_crds(api)
    finally:
        api.close()


def test_every_install_object_passes_a_server_side_dry_run(
    k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path, crds_installed: None
) -> None:
    docs = build(None, tmp_path)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted((d["kind"], d["metadata"]["name"]) for ds in install.objects().values() for d in ds)
    # CRDs for real (the same documents the base holds), then everything else dry-run.
    for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
        stored = apply(k8s_cluster, crd, dry_run=False)
        assert stored["spec"]["versions"][0]["additionalPrinterColumns"]
    # Namespaced objects can be dry-run only into a namespace that exists.
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    apply(k8s_cluster, namespace, dry_run=False)
    for doc in docs:
        if doc["kind"] == "CustomResourceDefinition":
            continue
        got = apply(k8s_cluster, doc, dry_run=True)
        assert got["metadata"]["name"] == doc["metadata"]["name"]
    operator = next(d for d in docs if d["kind"] == "Deployment")
    got = apply(k8s_cluster, operator, dry_run=True)
    assert got["spec"]["template"]["spec"]["serviceAccountName"] == install.NAME
    assert got["spec"]["template"]["spec"]["containers"][0]["image"] == k8s_objects.DEFAULT_IMAGE

    # Custom objects, dry-run: a ModelRepository and this repository's own ModelDeployment.
    repo = {"apiVersion": source_spec.API_VERSION, "kind": source_spec.KIND,
            "metadata": {"name": "credit-models", "namespace": k8s_namespace},
            "spec": {"url": "https://git.example.com/team/models.git",
                     "secretRef": {"name": "git-creds"}, "webhookSecretRef": {"name": "hook"}}}  # fmt: skip
    got = apply(k8s_cluster, repo, dry_run=True)
    assert got["spec"]["branch"] == "main" and got["spec"]["interval"] == "1m", "CRD defaults"
    assert source_spec.parse(got, source="stored").interval_seconds == 60.0
    example = yaml.safe_load((ROOT / "manifests" / "credit-risk.yaml").read_text())
    example["metadata"]["namespace"] = k8s_namespace
    got = apply(k8s_cluster, example, dry_run=True)
    assert manifest.parse(got, source="stored") == manifest.parse(example, source="file")


@pytest.fixture()
def admin(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path) as cluster:
        yield cluster


@pytest.fixture()
def operator_identity(
    k8s_cluster: TestCluster, admin: k8s.Cluster, k8s_namespace: str, tmp_path: Path,
    crds_installed: None,
) -> Iterator[k8s.Cluster]:
    """The base's RBAC created for real in the test namespace; the adapter acting as its SA."""
    for doc in build(k8s_namespace, tmp_path):
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
            apply(k8s_cluster, doc, dry_run=False)
    sa = f"system:serviceaccount:{k8s_namespace}:{install.NAME}"
    api = client.ApiClient(admin.api.configuration, header_name="Impersonate-User", header_value=sa)
    with k8s.Cluster(api, timeout=20) as operator:
        yield operator


def test_the_operators_role_allows_what_it_does_and_nothing_more(
    operator_identity: k8s.Cluster, admin: k8s.Cluster, k8s_namespace: str
) -> None:
    op, ns = operator_identity, k8s_namespace
    client.CoreV1Api(admin.api).create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="git-creds"), string_data={"username": "u", "password": "p"}))  # fmt: skip

    # RBAC is cached for a moment after the binding appears: wait until the first call passes.
    deadline = time.monotonic() + 30
    while True:
        try:
            op.list_resources(ns)
            break
        except errors.ConfigError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

    dep = manifest.parse(yaml.safe_load((ROOT / "manifests" / "credit-risk.yaml").read_text()), source="x")
    cr = op.apply(dep.to_dict(), namespace=ns)
    cr = op.patch_status(ns, dep.name, {"servedCommit": None, "conditions": []})
    op.patch_resource(ns, dep.name, {"metadata": {"annotations": {"mlgitops.io/source-commit": "0" * 40}}})
    owner = k8s_objects.Owner.of(cr)
    commit = "ab" * 20
    op.apply(k8s_objects.deployment(dep, commit, owner=owner, source=k8s_objects.Source("https://x/y.git", "git-creds"),
                                    trusted_types=dep.trusted_types, namespace=ns))  # fmt: skip
    op.apply(k8s_objects.service(dep, owner=owner, namespace=ns))
    assert op.read_deployment(ns, dep.name) is not None
    op.list_pods(ns, dep.name)  # allowed (whether the pod exists yet or not)
    op.record_event(cr, reason="Deployed", message="test")
    op.record_event(cr, reason="Deployed", message="test")
    repo_doc = {"apiVersion": source_spec.API_VERSION, "kind": source_spec.KIND,
                "metadata": {"name": "credit-models", "namespace": ns}, "spec": {"url": "https://x/y.git"}}  # fmt: skip
    admin.create_resource(ns, repo_doc, kind=k8s.MODEL_REPOSITORY)  # people create these
    assert op.get_resource(ns, "credit-models", kind=k8s.MODEL_REPOSITORY) is not None
    op.patch_status(ns, "credit-models", {"commit": commit}, kind=k8s.MODEL_REPOSITORY)
    secret = op._call("read secret", op._core.read_namespaced_secret, "git-creds", ns)
    assert secret["data"]["username"]
    crds = op._call("list CRDs", client.ApiextensionsV1Api(op.api).list_custom_resource_definition)
    assert any(c["metadata"]["name"] == f"{manifest.PLURAL}.{manifest.GROUP}" for c in crds["items"])
    assert op.delete_resource(ns, dep.name) is True

    refused = {
        "list secrets": lambda: op._call("list secrets", op._core.list_namespaced_secret, ns),
        "create a pod": lambda: op._call("create pod", op._core.create_namespaced_pod, ns, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
            "spec": {"containers": [{"name": "x", "image": "x"}]}}),
        "another namespace": lambda: op.list_resources("default"),
        "delete a namespace": lambda: op._call("delete ns", op._core.delete_namespace, ns),
        "create a ModelRepository": lambda: op.create_resource(ns, {**repo_doc, "metadata": {"name": "other"}},
                                                               kind=k8s.MODEL_REPOSITORY),
    }  # fmt: skip
    for what, call in refused.items():
        try:
            call()
        except errors.ConfigError as exc:
            assert "forbidden" in str(exc), what
        else:
            pytest.fail(f"the operator's ServiceAccount may {what}")
