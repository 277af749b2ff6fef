"""The install, installed: manifests/install/ applied, the operator runs as a pod from the image with
its ServiceAccount and RBAC, and deploys a published model to real pods.

The base is moved into a test namespace (kustomize's namespace overlay, as tests/k8s/test_install.py
builds it) and given what this cluster needs: the repository's URL in the ConfigMap and, since no
cluster DNS or kube-proxy runs, `kubernetes.default.svc` and `KUBERNETES_SERVICE_HOST`/`PORT`
pointing at the API server on the bridge gateway (`node.in_cluster_overrides`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import git_http

from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.core import install
from mlgitops.devcluster import node as realnode

from ..test_install import apply, build
from .conftest import wait
from .test_operator_pods import NAME, answer, served

pytestmark = pytest.mark.realnode


@pytest.mark.timeout(600)
def test_the_operator_installed_from_the_manifests_runs_as_a_pod_and_deploys_a_model(
    real_node: realnode.RealNode, node_cluster: k8s.Cluster, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    cluster = real_node.cluster
    assert cluster is not None
    ns = f"rn-install-{int(time.time()) % 100000}"
    v1 = publish_version(name=NAME, seed=0)
    bare = Path(git.remote_url(repo) or "")
    docs = build(ns, tmp_path)
    overrides = realnode.in_cluster_overrides()
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            config_map = doc
        if doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
            spec["hostAliases"] = overrides["hostAliases"]
            spec["containers"][0]["env"] += overrides["env"]
            spec["containers"][0]["args"] += ["--interval", "2"]
    figures: dict[str, float] = {}

    def w(what: str, probe: Callable[[], Any], timeout: float = 240) -> Any:
        return wait(what, probe, real_node=real_node, namespace=ns, timeout=timeout)

    with git_http.serve(bare, user="", password="", host=realnode.GATEWAY) as (url, _):
        config_map["data"]["repoUrl"] = url
        try:
            began = time.monotonic()
            for doc in docs:  # kustomization order: namespace, CRDs, RBAC, the operator
                apply(cluster, doc, dry_run=False)
            pod = w("the operator's pod Ready", lambda: next((
                p for p in cluster.request(f"/api/v1/namespaces/{ns}/pods?labelSelector="
                                           "app.kubernetes.io/component%3Doperator")["items"]
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in p["status"].get("conditions", []))), None))
            figures["apply -> operator pod Ready"] = time.monotonic() - began
            assert pod["spec"]["serviceAccountName"] == install.NAME
            assert pod["spec"]["nodeName"] == realnode.NODE_NAME
            mounts = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
            assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts  # its token, projected
            w("v1 Ready through the installed operator", lambda: served(node_cluster, ns, v1))
            figures["apply -> model Ready (through the installed operator)"] = time.monotonic() - began
            assert answer(node_cluster, ns) == v1
            cr = node_cluster.get_resource(ns, NAME)
            assert cr is not None
            managers = {f.get("manager") for f in cr["metadata"].get("managedFields", [])}
            assert managers, "the operator wrote the resource"
            files = list((real_node.state_dir / "pod-logs").glob(f"{ns}_{install.NAME}-*/operator/*.log"))
            logs = "".join(p.read_text(errors="replace") for p in files)
            assert files and "forbidden" not in logs.lower(), \
                "the install's RBAC lacks something the operator asks for:\n" + logs[-3000:]
        finally:
            with contextlib.suppress(OSError):
                cluster.request(f"/api/v1/namespaces/{ns}", method="DELETE")
            for kind in ("clusterrolebindings", "clusterroles"):
                with contextlib.suppress(OSError):
                    cluster.request(f"/apis/rbac.authorization.k8s.io/v1/{kind}/{install.NAME}",
                                    method="DELETE")
    print("\ninstalled-operator figures: " + json.dumps({k: round(v, 1) for k, v in figures.items()}))
