"""The calls on a model's Deployments, Service and pods (`Cluster` has them; split by concern).

A model has one Deployment per version (`versions`) and one Service; these read, patch and
delete them, list their pods, and read where a rollout stands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from mlgitops.adapters.kubernetes import versions
from mlgitops.core import k8s_objects

MERGE = "application/merge-patch+json"


class WorkloadCalls:
    """A mixin of `api.Cluster`: what it needs of it is declared here."""

    field_manager: str
    _apps: client.AppsV1Api
    _core: client.CoreV1Api

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _read(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
              ) -> dict[str, Any] | None:
        raise NotImplementedError

    def deployments(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """Every Deployment of ``model`` (one per version: `versions`), with its status."""
        doc = self._call(
            f"list Deployments of {namespace}/{model}", self._apps.list_namespaced_deployment,
            namespace, label_selector=self._model_selector(model),
        )  # fmt: skip
        return list(doc.get("items") or [])

    def read_deployment(self, namespace: str, model: str) -> dict[str, Any] | None:
        """The model's Deployment with its status, or None: the version being rolled out when
        one is, else the one serving (`versions.current`)."""
        return versions.current(self.deployments(namespace, model), self.read_service(namespace, model))

    def read_deployment_named(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(
            f"read Deployment {namespace}/{name}", self._apps.read_namespaced_deployment, name, namespace
        )

    def patch_deployment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch of a Deployment (None: it is gone)."""
        return self._read(
            f"patch Deployment {namespace}/{name}", self._apps.patch_namespaced_deployment, name,
            namespace, dict(patch), field_manager=self.field_manager, _content_type=MERGE,
        )  # fmt: skip

    def delete_deployment(self, namespace: str, name: str) -> bool:
        """Delete one Deployment (its pods go with it); False if it was gone."""
        done = self._read(
            f"delete Deployment {namespace}/{name}", self._apps.delete_namespaced_deployment, name,
            namespace, propagation_policy="Background",
        )  # fmt: skip
        return done is not None

    def read_service(self, namespace: str, model: str) -> dict[str, Any] | None:
        name = k8s_objects.object_name(model)
        return self._read(
            f"read Service {namespace}/{name}", self._core.read_namespaced_service, name, namespace
        )

    def patch_service(self, namespace: str, model: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch of the model's Service (None: it is gone)."""
        name = k8s_objects.object_name(model)
        return self._read(
            f"patch Service {namespace}/{name}", self._core.patch_namespaced_service, name,
            namespace, dict(patch), field_manager=self.field_manager, _content_type=MERGE,
        )  # fmt: skip

    def delete_service_named(self, namespace: str, name: str) -> bool:
        """Delete one Service by its name (a rollout's candidate Service); False if it was gone."""
        done = self._read(
            f"delete Service {namespace}/{name}", self._core.delete_namespaced_service, name,
            namespace, propagation_policy="Background",
        )  # fmt: skip
        return done is not None

    def delete_workload(self, namespace: str, model: str) -> bool:
        """Delete the model's Deployments and Service (their pods go with them); False if none.

        Deleting the ModelDeployment does the same through garbage collection; this is for a
        model that stays declared but must not run.
        """
        name = k8s_objects.object_name(model)
        gone = False
        for d in self.deployments(namespace, model):
            gone = self.delete_deployment(namespace, str(d["metadata"]["name"])) or gone
        done = self._read(
            f"delete Service {namespace}/{name}", self._core.delete_namespaced_service, name,
            namespace, propagation_policy="Background",
        )  # fmt: skip
        return gone or done is not None

    @staticmethod
    def _model_selector(model: str) -> str:
        return f"{k8s_objects.LABEL_MODEL}={model},{k8s_objects.LABEL_MANAGED_BY}={k8s_objects.MANAGER}"

    def pods(self, namespace: str, model: str, *, template: str | None = None) -> list[dict[str, Any]]:
        """The pods of every version of ``model`` (raw objects, for `k8s_objects.rollout_state`);
        with ``template``, those of that pod template only (one version's Deployment)."""
        doc = self._call(
            f"list pods of {namespace}/{model}", self._core.list_namespaced_pod, namespace,
            label_selector=self._model_selector(model),
        )  # fmt: skip
        items = list(doc.get("items") or [])
        if template is not None:
            items = [p for p in items if _pod_template(p) == template]
        return items

    def list_pods(self, namespace: str, model: str) -> list[k8s_objects.Pod]:
        """The pods of ``model`` that serve or are rolled out: name, IP, Ready, commit and
        digest, why not ready (each viewed against its own Deployment: `k8s_objects.pod_view`).
        Pods of a replaced version kept warm for a rollback (`versions.ANNOTATION_REPLACED`), and
        those whose Deployment was deleted (the garbage collector removes them), are left out."""
        found = self.deployments(namespace, model)
        by_template = {versions.template_of(d): d for d in found}
        legacy = next((d for d in found if d["metadata"]["name"] == k8s_objects.object_name(model)), None)
        views = []
        for p in self.pods(namespace, model):
            deployment = by_template.get(_pod_template(p))
            if deployment is None:
                if versions.LABEL_TEMPLATE in ((p.get("metadata") or {}).get("labels") or {}):
                    continue  # its version's Deployment is gone (the pod goes too)
                deployment = legacy  # the one Deployment of a model, as before versions
            elif versions.replaced(deployment):
                continue  # kept warm for a rollback
            views.append(k8s_objects.pod_view(p, deployment))
        return sorted(views, key=lambda p: p.name)

    def rollout(self, namespace: str, model: str) -> k8s_objects.RolloutState | None:
        """Where the model's rollout stands (None: no Deployment), read from its Deployment
        (`read_deployment`) and that Deployment's pods."""
        deployment = self.read_deployment(namespace, model)
        if deployment is None:
            return None
        legacy = deployment["metadata"]["name"] == k8s_objects.object_name(model)
        # a version's own Deployment: its pods; the one Deployment of before: every pod
        pods = self.pods(namespace, model, template=None if legacy else versions.template_of(deployment))
        return k8s_objects.rollout_state(deployment, pods)


def _pod_template(pod: Mapping[str, Any]) -> str | None:
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    found = notes.get(k8s_objects.ANNOTATION_POD_TEMPLATE)
    return str(found) if found else None
