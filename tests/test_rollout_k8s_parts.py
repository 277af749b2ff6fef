"""The Kubernetes rollout's pure parts: the rendered HTTPRoute, the candidate Service, and the
operator gateway's view over each repository's router (`operator.traffic.Traffic`).

The cluster test (`tests/k8s/test_rollout_progressive.py`) runs them against the API server and
real pods; here, what they compute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from mlgitops.adapters.kubernetes import versions
from mlgitops.adapters.kubernetes.routes import http_route
from mlgitops.adapters.kubernetes.workloads import PodHandle
from mlgitops.controller.router import Router, Split
from mlgitops.core import k8s_objects as ko
from mlgitops.core.k8s_rollout import Pod
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


class _Pods:
    """What `Traffic.refresh` reads of the cluster: each model's pods (as the API returns)."""

    def __init__(self) -> None:
        self.pods: dict[str, list[Pod]] = {}

    def list_pods(self, namespace: str, model: str) -> list[Pod]:
        return self.pods.get(model, [])


def _pod(deployment: str, ip: str, commit: str) -> Pod:
    return Pod(f"{deployment}-x", ip, True, commit, None, "Running", False,
               deployment=deployment)


def test_the_gateway_view_asks_the_router_that_serves_each_model() -> None:
    routers = _Models(Router(), Router())
    routers.a.set("credit", _handle("credit", "v1"))
    routers.b.set("fraud", _handle("fraud", "v7"))
    cluster = _Pods()
    traffic = Traffic()
    traffic.add("a", routers.a, cluster, "ns")  # type: ignore[arg-type]
    traffic.add("b", routers.b, cluster, "ns")  # type: ignore[arg-type]
    assert traffic.get("credit") == routers.a.get("credit")
    assert traffic.get("fraud") == routers.b.get("fraud")
    assert traffic.get("other") is None
    assert traffic.choose("other") == (None, "stable", None, None)
    # a shadow in repository a: users get the stable version, the candidate a copy once its
    # pods are known (before that, nothing is sent where the gateway cannot reach)
    cand = _handle("credit", "v2")
    routers.a.set_split("credit", Split(cand, "shadow", 0, 0))
    backend, role, other, counters = traffic.choose("credit")
    assert (backend, role, other) == (routers.a.get("credit"), "stable", None)
    cluster.pods["credit"] = [_pod("credit-v1", "127.0.1.1", "v1"),
                              _pod("credit-v2", "127.0.1.2", "v2")]
    traffic.refresh()
    backend, role, other, counters = traffic.choose("credit")
    assert backend is not None and backend.url == "http://127.0.1.1:8080" and role == "stable"
    assert other is not None and other.url == "http://127.0.1.2:8080" and other.version == "v2"
    assert counters is routers.a.counters["credit"]
    # a canary step: the candidate's share goes to its pods, none before they are known
    routers.a.set_split("credit", Split(cand, "canary", 100, 1))
    backend, role, other, _ = traffic.choose("credit")
    assert (backend.url, role, other.url) == (  # type: ignore[union-attr]
        "http://127.0.1.2:8080", "candidate", "http://127.0.1.1:8080")
    cluster.pods["credit"] = cluster.pods["credit"][:1]
    traffic.refresh()
    backend, role, other, _ = traffic.choose("credit")
    assert (backend.url, role, other) == ("http://127.0.1.1:8080", "stable", None)  # type: ignore[union-attr]
    routers.a.end_split("credit")
    # a commit that keeps the pods (same content, same Deployment): still their address
    routers.a.set("credit", replace(_handle("credit", "v1"), version="v3"))
    assert traffic.get("credit").url == "http://127.0.1.1:8080"  # type: ignore[union-attr]
    # the counts are shared: what the gateway counts, the repository's reconciler sees
    traffic.inflight[("credit", "v1")] = 1
    assert routers.a.busy(_handle("credit", "v1")) == 1
    traffic.served[("credit", "v1")] += 3
    assert routers.a.served[("credit", "v1")] == 3
    traffic.remove("a")
    assert traffic.get("credit") is None and traffic.get("fraud") is not None
    # a handle handed out with its pods' addresses is reachable before any reading of the pods
    fresh = Traffic()
    routers.b.set("fraud", replace(_handle("fraud", "v8"), addresses=("http://127.0.2.1:8080",)))
    fresh.add("b", routers.b, cluster, "ns")  # type: ignore[arg-type]
    assert fresh.get("fraud").url == "http://127.0.2.1:8080"  # type: ignore[union-attr]
