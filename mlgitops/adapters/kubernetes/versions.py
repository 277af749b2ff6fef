"""One Deployment per version of a model, named by its pods' content; the Service picks one.

`core.k8s_objects` renders a model's Deployment and Service; `versioned` makes that Deployment
one of several: named ``mlgitops-<model>-<template>`` (the first characters of its pod
template's digest, ``mlgitops.io/pod-template``, which leaves the commit out), selecting only
its own pods (``mlgitops.io/template``), and the Service selecting the pods of the version that
serves. A commit that changes nothing the pods run (``spec.serving.replicas``) renders the same
name, so the same Deployment scales; a revert to a version kept warm finds its Deployment still
there, with ready pods, and only the Service's selector changes.

A Deployment the Service stopped selecting is annotated ``mlgitops.io/replaced``: it is kept
(warm, for a rollback) until the reconciler retires it, and `Cluster.list_pods` leaves its pods
out. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from mlgitops.core import k8s_objects as ko

LABEL_TEMPLATE = "mlgitops.io/template"
"""On a version's Deployment selector, its pods and the Service's selector: the pod template's
digest (``mlgitops.io/pod-template``), 32 hex digits."""
ANNOTATION_REPLACED = "mlgitops.io/replaced"
"""On a Deployment the Service no longer selects: when (UTC) it was replaced."""
_NAME_DIGITS = 10


def template_of(deployment: Mapping[str, Any]) -> str | None:
    """The pod-template digest a rendered (or read) Deployment's pods carry."""
    tmpl = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    stamp = (tmpl.get("annotations") or {}).get(ko.ANNOTATION_POD_TEMPLATE)
    return str(stamp) if stamp else None


def deployment_name(model: str, template: str) -> str:
    """``mlgitops-<model>-<first 10 digits of the template digest>``."""
    return f"{ko.object_name(model)}-{template[:_NAME_DIGITS]}"


def versioned(deployment: Mapping[str, Any], model: str) -> dict[str, Any]:
    """``deployment`` (as `k8s_objects.deployment` renders it) as its version's own Deployment."""
    out = copy.deepcopy(dict(deployment))
    stamp = template_of(out)
    if stamp is None:
        raise ValueError("a rendered Deployment carries its pod template's digest")
    out["metadata"]["name"] = deployment_name(model, stamp)
    out["spec"]["selector"] = {"matchLabels": selector(model, stamp)}
    out["spec"]["template"]["metadata"]["labels"][LABEL_TEMPLATE] = stamp
    return out


def selector(model: str, template: str) -> dict[str, str]:
    """What one version's Deployment, and the Service while that version serves, select."""
    return {**ko.selector(model), LABEL_TEMPLATE: template}


def routed(service: Mapping[str, Any], model: str, template: str) -> dict[str, Any]:
    """``service`` selecting the pods of the version whose template digest is ``template``."""
    out = copy.deepcopy(dict(service))
    out["spec"]["selector"] = selector(model, template)
    return out


LABEL_ROLE = "mlgitops.io/role"
"""``candidate`` on a rollout's candidate Service."""


def candidate_service(service: Mapping[str, Any], model: str, deployment: str,
                      template: str) -> dict[str, Any]:
    """The candidate Service of a progressive rollout: the model's ``service`` renamed after
    the candidate's Deployment, selecting only its pods (the model's Service keeps selecting
    the stable version's)."""
    out = routed(service, model, template)
    meta = out["metadata"]
    meta["name"] = deployment
    meta["labels"] = {**(meta.get("labels") or {}), LABEL_ROLE: "candidate"}
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    spec = out["spec"]
    for key in ("clusterIP", "clusterIPs"):
        spec.pop(key, None)
    out.pop("status", None)
    return out


def serving_template(service: Mapping[str, Any] | None) -> str | None:
    """The template digest a Service selects (None: none, or the model's pods of any version)."""
    if not service:
        return None
    found = ((service.get("spec") or {}).get("selector") or {}).get(LABEL_TEMPLATE)
    return str(found) if found else None


def replaced(deployment: Mapping[str, Any]) -> bool:
    notes = (deployment.get("metadata") or {}).get("annotations") or {}
    return ANNOTATION_REPLACED in notes


def created(deployment: Mapping[str, Any]) -> str:
    return str((deployment.get("metadata") or {}).get("creationTimestamp") or "")


def current(deployments: list[dict[str, Any]], service: Mapping[str, Any] | None
            ) -> dict[str, Any] | None:
    """The model's Deployment as one Deployment was before: the version being rolled out when
    one is (a Deployment the Service does not select yet, not replaced), else the serving one."""
    serving = serving_template(service)
    live = [d for d in deployments if not replaced(d)]
    pending = [d for d in live if serving is None or template_of(d) != serving]
    if serving is not None and pending:
        return max(pending, key=lambda d: (created(d), str(d["metadata"].get("resourceVersion"))))
    chosen = [d for d in live if serving is not None and template_of(d) == serving] or live
    if not chosen:
        return None
    return max(chosen, key=lambda d: (created(d), str(d["metadata"].get("resourceVersion"))))
