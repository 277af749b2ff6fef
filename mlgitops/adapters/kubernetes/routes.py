"""A progressive rollout as a Gateway API ``HTTPRoute``, when the cluster has that CRD.

Without a service mesh the operator's own gateway splits and mirrors a rollout's traffic
(`operator.traffic`). A cluster that has the Gateway API (``httproutes.gateway.networking.k8s.io``)
gets, per model, an ``HTTPRoute`` named after the model's Service, attached to the Gateway
``parent`` (default ``mlgitops``) in the model's namespace: its ``backendRefs`` are the model's
Service (the stable version) and, during a canary step, the candidate's Service with the step's
weights; during a shadow, a ``RequestMirror`` filter copies every request to the candidate.
The Gateway API has no request key: a canary there is split per request, not per client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mlgitops import errors
from mlgitops.adapters.kubernetes.api import HTTP_ROUTE, Cluster
from mlgitops.core import k8s_objects as ko

LABEL_MODEL_ROUTE = "mlgitops.io/route"


def http_route(model: str, namespace: str, *, candidate: str | None = None, weight: int = 0,
               mirror: bool = False, parent: str = "mlgitops",
               owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``HTTPRoute`` of ``model``: its Service takes ``100 - weight`` percent of requests,
    the ``candidate`` Service (a rollout's) ``weight`` percent; with ``mirror`` every request
    is also copied to the candidate (its answers are dropped by the Gateway)."""
    if not 0 <= weight <= 100:
        raise ValueError(f"a route's weight is a percentage, not {weight}")
    stable = ko.object_name(model)

    def ref(service: str, share: int) -> dict[str, Any]:
        return {"kind": "Service", "name": service, "port": ko.SERVICE_PORT, "weight": share}

    backends = [ref(stable, 100 - weight)]
    if candidate is not None and weight > 0:
        backends.append(ref(candidate, weight))
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{model}"}}],
        "backendRefs": backends,
    }
    if candidate is not None and mirror:
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": {"backendRef": {
            "kind": "Service", "name": candidate, "port": ko.SERVICE_PORT}}}]
    meta: dict[str, Any] = {"name": stable, "namespace": namespace,
                            "labels": {ko.LABEL_MANAGED_BY: ko.MANAGER, LABEL_MODEL_ROUTE: model}}
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    return {"apiVersion": HTTP_ROUTE.api_version, "kind": HTTP_ROUTE.kind, "metadata": meta,
            "spec": {"parentRefs": [{"name": parent}], "rules": [rule]}}


class Routes:
    """Keeps each model's ``HTTPRoute`` as its rollout says, when the cluster has the CRD
    (asked again every ``recheck`` seconds: the CRD may be installed later)."""

    def __init__(self, cluster: Cluster, namespace: str, *, parent: str = "mlgitops",
                 recheck: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.parent = parent
        self.recheck = recheck
        self.clock = clock
        self._known: tuple[float, bool] | None = None
        self._applied: dict[str, dict[str, Any]] = {}
        self._owners: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def available(self) -> bool:
        """True when the API server serves ``HTTPRoute`` objects."""
        if self._known is not None and self.clock() - self._known[0] < self.recheck:
            return self._known[1]
        try:
            self.cluster.list_resources(self.namespace, kind=HTTP_ROUTE)
            there = True
        except errors.MlgitopsError:
            there = False
        self._known = (self.clock(), there)
        return there

    def sync(self, model: str, *, candidate: str | None, weight: int, mirror: bool) -> bool:
        """Apply ``model``'s route when it changed; False when the cluster has no Gateway API."""
        with self._lock:
            if not self.available():
                return False
            owner = self._owners.get(model)
            if owner is None:  # the ModelDeployment owns it: deleted with it
                cr = self.cluster.get_resource(self.namespace, model)
                if cr is not None and (cr.get("metadata") or {}).get("uid"):
                    owner = self._owners[model] = ko.Owner.of(cr).reference()
            doc = http_route(model, self.namespace, candidate=candidate, weight=weight,
                             mirror=mirror, parent=self.parent, owner=owner)
            if self._applied.get(model) != doc:
                self.cluster.apply(doc, namespace=self.namespace)
                self._applied[model] = doc
            return True

    def models(self) -> set[str]:
        """The models whose route this process wrote."""
        with self._lock:
            return set(self._applied)

    def forget(self, model: str) -> None:
        """``model`` no longer serves here (its route goes with its ModelDeployment)."""
        with self._lock:
            self._applied.pop(model, None)
            self._owners.pop(model, None)

    def read(self, model: str) -> dict[str, Any] | None:
        return self.cluster.get_resource(self.namespace, ko.object_name(model), kind=HTTP_ROUTE)
