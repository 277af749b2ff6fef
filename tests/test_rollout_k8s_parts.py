"""The Kubernetes rollout's pure parts: the rendered HTTPRoute, the candidate Service, and the
operator gateway's view over each repository's router (`operator.traffic.Traffic`).

The cluster test (`tests/k8s/test_rollout_progressive.py`) runs them against the API server and
real pods; here, what they compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mlgitops.adapters.kubernetes import versions
from mlgitops.adapters.kubernetes.routes import http_route
from mlgitops.adapters.kubernetes.workloads import PodHandle
from mlgitops.controller.router import Router, Split
from mlgitops.core import k8s_objects as ko
from mlgitops.operator.traffic import Traffic

pytestmark = pytest.mark.fast


def test_a_canary_route_splits_by_weight_and_a_shadow_route_mirrors() -> None:
    doc = http_route("credit", "models", candidate="credit-abc", weight=10)
    assert doc["kind"] == "HTTPRoute" and doc["apiVersion"] == "gateway.networking.k8s.io/v1"
    rule = doc["spec"]["rules"][0]
    assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [
        (ko.object_name("credit"), 90), ("credit-abc", 10)]
    assert "filters" not in rule
    assert rule["matches"][0]["path"]["value"] == "/v2/models/credit"
    shadow = http_route("credit", "models", candidate="credit-abc", weight=0, mirror=True)
    rule = shadow["spec"]["rules"][0]
    assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [
        (ko.object_name("credit"), 100)]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": {"backendRef": {
        "kind": "Service", "name": "credit-abc", "port": ko.SERVICE_PORT}}}]
    assert shadow["spec"]["parentRefs"] == [{"name": "mlgitops"}]
    with pytest.raises(ValueError, match="percentage"):
        http_route("credit", "models", candidate="x", weight=101)


def test_the_candidate_service_selects_only_the_candidate_pods() -> None:
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "credit", "resourceVersion": "7", "uid": "u"},
               "spec": {"selector": {"x": "y"}, "clusterIP": "10.0.0.1",
                        "ports": [{"port": 80}]}}
    out = versions.candidate_service(service, "credit", "credit-abc123", "abc123")
    assert out["metadata"]["name"] == "credit-abc123"
    assert out["metadata"]["labels"][versions.LABEL_ROLE] == "candidate"
    assert "resourceVersion" not in out["metadata"] and "clusterIP" not in out["spec"]
    assert out["spec"]["selector"] == versions.selector("credit", "abc123")
    assert service["metadata"]["name"] == "credit"  # the model's Service is left as it was


@dataclass(frozen=True)
class _Models:
    a: Router[PodHandle]
    b: Router[PodHandle]


def _handle(name: str, version: str) -> PodHandle:
    return PodHandle(name, version, "sha256:" + version * 8, f"http://{name}-{version}.ns.svc",
                     f"{name}-{version}")


def test_the_gateway_view_asks_the_router_that_serves_each_model() -> None:
    routers = _Models(Router(), Router())
    routers.a.set("credit", _handle("credit", "v1"))
    routers.b.set("fraud", _handle("fraud", "v7"))
    traffic = Traffic()
    traffic.add("a", routers.a, None, "ns")  # type: ignore[arg-type]  # refresh is not called
    traffic.add("b", routers.b, None, "ns")  # type: ignore[arg-type]
    assert traffic.get("credit") == routers.a.get("credit")
    assert traffic.get("fraud") == routers.b.get("fraud")
    assert traffic.get("other") is None
    assert traffic.choose("other") == (None, "stable", None, None)
    # a shadow in repository a: users get the stable version, the candidate a copy
    cand = _handle("credit", "v2")
    routers.a.set_split("credit", Split(cand, "shadow", 0, 0))
    backend, role, other, counters = traffic.choose("credit")
    assert (backend, role, other) == (routers.a.get("credit"), "stable", cand)
    assert counters is routers.a.counters["credit"]
    # the counts are shared: what the gateway counts, the repository's reconciler sees
    traffic.inflight[("credit", "v1")] = 1
    assert routers.a.busy(_handle("credit", "v1")) == 1
    traffic.served[("credit", "v1")] += 3
    assert routers.a.served[("credit", "v1")] == 3
    traffic.remove("a")
    assert traffic.get("credit") is None and traffic.get("fraud") is not None
