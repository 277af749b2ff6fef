"""The reconciler's statuses and events on the cluster: each ModelDeployment's ``status`` and
Kubernetes Events (``ports.StatusMirror`` and a store listener).

`ResourceStatus.publish` merges a model's `ModelStatus` into its resource's status subresource
(with ``phase`` and the remembered failure: ``failedCommit``, ``failedDigest``,
``failedInputs``), skipping what it wrote last; `ResourceStatus.load` reads them back after a
restart. `ResourceStatus.event` turns the transitions people look for (deployed, held, failed,
reverted, drift) into Events on the resource, one per transition, as ``kubectl describe`` shows
them. A write that fails (the API server away) is logged and tried again at the next save.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from mlgitops import errors
from mlgitops.adapters.kubernetes.api import Cluster
from mlgitops.core import plan
from mlgitops.core.status import ConditionType, ModelStatus

#: Store events that become Kubernetes Events on the model's resource (type by kind).
EVENT_TYPES = {
    "Deployed": "Normal", "Restarted": "Normal", "RetryRequested": "Normal", "Adopted": "Normal",
    "RolledBack": "Normal", "RevertSkipped": "Normal",
    "Held": "Warning", "DeployFailed": "Warning", "DeployRetry": "Warning", "Lost": "Warning",
    "Reverted": "Warning", "DriftAlert": "Warning", "RevertFailed": "Warning",
    "MonitorFailed": "Warning", "PerformanceAlert": "Warning",
}


def phase(st: ModelStatus) -> str:
    """One word for ``kubectl get``: Deploying (a version is tried), Held, Serving or Pending."""
    if (c := st.condition(ConditionType.RECONCILING)) is not None and c.status:
        return "Deploying"
    if (c := st.condition(ConditionType.STALLED)) is not None and c.status:
        return "Held"
    if (c := st.condition(ConditionType.READY)) is not None and c.status:
        return "Serving"
    return "Pending"


def document(st: ModelStatus, failure: plan.Failure | None) -> dict[str, Any]:
    """The status subresource of ``st`` (nulls remove what a failure left)."""
    return {**st.to_dict(), "phase": phase(st),
            "failedCommit": failure.version if failure else None,
            "failedDigest": failure.digest if failure else None,
            "failedInputs": failure.inputs if failure else None}


def from_document(name: str, doc: Mapping[str, Any]) -> tuple[ModelStatus, plan.Failure | None]:
    st = ModelStatus.from_dict({**doc, "name": name})
    failure = None
    if doc.get("failedCommit") and doc.get("failedDigest"):
        stalled = st.condition(ConditionType.STALLED)
        failure = plan.Failure(str(doc["failedDigest"]), str(doc["failedCommit"]),
                               stalled.message if stalled else "it failed before",
                               str(doc.get("failedInputs") or ""))
    return st, failure


class ResourceStatus:
    """The ModelDeployments of one namespace (those ``selector`` picks) as the status mirror."""

    def __init__(self, cluster: Cluster, namespace: str, *, selector: str | None = None,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.selector = selector
        self.log = log
        self._written: dict[str, dict[str, Any]] = {}
        self._objects: dict[str, dict[str, Any]] = {}
        """name -> the resource as last read (an Event names its uid)."""
        self._lock = threading.Lock()

    def load(self) -> dict[str, tuple[ModelStatus, plan.Failure | None]]:
        out = {}
        for cr in self.cluster.list_resources(self.namespace, label_selector=self.selector):
            name = str(cr["metadata"]["name"])
            self._objects[name] = cr
            doc = cr.get("status") or {}
            if doc.get("conditions") is not None:
                out[name] = from_document(name, doc)
                self._written[name] = document(*out[name])
        return out

    def publish(self, value: ModelStatus, failure: plan.Failure | None) -> None:
        doc = document(value, failure)
        known = self._objects.get(value.name)
        if known is None:
            try:
                known = self.cluster.get_resource(self.namespace, value.name)
            except errors.MlgitopsError:
                known = None
            if known is None:
                return  # not created yet, or deleted: nothing to show it on
            self._objects[value.name] = known
        doc["observedGeneration"] = (known.get("metadata") or {}).get("generation")
        with self._lock:
            if self._written.get(value.name) == doc:
                return
        try:
            stored = self.cluster.patch_status(self.namespace, value.name, doc)
        except errors.NotFound:
            return  # not created yet, or deleted: nothing to show it on
        except errors.MlgitopsError as exc:
            self.log(f"status of {value.name} not written (tried again later): {exc}")
            return
        with self._lock:
            self._written[value.name] = doc
            self._objects[value.name] = stored

    def seen(self, cr: dict[str, Any]) -> None:
        """The resource as just written (its generation is what the status observes)."""
        with self._lock:
            self._objects[str(cr["metadata"]["name"])] = cr

    def forget(self, name: str) -> None:
        with self._lock:
            self._written.pop(name, None)
            self._objects.pop(name, None)

    def event(self, record: Mapping[str, Any]) -> None:
        """A store listener: the record of a transition, as a Kubernetes Event."""
        kind, name = str(record.get("type")), str(record.get("model") or "")
        if kind not in EVENT_TYPES or not name:
            return
        commit = str(record.get("commit") or "")[:12]
        message = str(record.get("message") or "")
        if commit and commit not in message:
            message = f"{commit}: {message}"
        self.record(name, reason=kind, message=message, type=EVENT_TYPES[kind])

    def record(self, name: str, *, reason: str, message: str, type: str) -> None:
        """An Event on model ``name``'s resource; logged, never raised, when it cannot be."""
        try:
            cr = self._objects.get(name) or self.cluster.get_resource(self.namespace, name)
            if cr is None:
                return
            self._objects[name] = cr
            self.cluster.record_event(cr, reason=reason, message=message, type=type)
        except errors.MlgitopsError as exc:
            self.log(f"event {reason} of {name} not recorded: {exc}")

