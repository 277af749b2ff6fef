"""Install mlgitops' CustomResourceDefinitions in the test cluster, for real (idempotent).

Server-side apply with one field manager, so any test module (and the operator's tests) may call
`install_crds` first; CRDs are cluster-scoped and stay for the session (the cluster is thrown
away after it).
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client
from kubernetes.client import ApiException

from mlgitops.core import manifest, source_spec

APPLY = "application/apply-patch+yaml"
CRDS = (manifest.crd, source_spec.crd)


def install_crds(api: Any, *, timeout: float = 60.0) -> list[str]:
    """Apply both CRDs, wait until they are Established and served; return their names."""
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    names = []
    for make in CRDS:
        crd = make()
        name = crd["metadata"]["name"]
        ext.patch_custom_resource_definition(
            name, crd, field_manager="mlgitops-tests", force=True, _content_type=APPLY
        )
        names.append(name)
    deadline = time.monotonic() + timeout
    for make in CRDS:
        crd = make()
        spec = crd["spec"]
        while True:
            got = ext.read_custom_resource_definition(crd["metadata"]["name"])
            established = any(
                c.type == "Established" and c.status == "True" for c in (got.status.conditions if got.status else None) or []
            )
            if established and _served(custom, spec):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {crd['metadata']['name']} not served after {timeout:.0f} s")
            time.sleep(0.2)
    return names


def _served(custom: client.CustomObjectsApi, spec: dict[str, Any]) -> bool:
    """Discovery can lag a moment behind Established: a list must answer."""
    try:
        custom.list_cluster_custom_object(
            spec["group"], spec["versions"][0]["name"], spec["names"]["plural"], limit=1
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
