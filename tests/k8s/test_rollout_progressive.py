"""Progressive rollouts on the Kubernetes runtime, on the test cluster (issue 19, item 3).

The operator's own reconciler (`operator.progressive`, wired by `operator.runtime`) runs a
shadow's candidate beside the stable version: its own Deployment and Service, the model's
Service still on the stable pods. The operator's gateway (`controller.gateway` over
`operator.traffic.Traffic`, on a real loopback port) answers users from the stable pods and
mirrors each request to the candidate's; every answer names its version, so "no user request
answered by the shadowed version" is counted. The cluster has the Gateway API's HTTPRoute CRD
installed here: the rendered route's mirror and weights are read back from the API server.
Promotion switches the model's Service to the candidate's pods; a revert deletes the candidate.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes import client
from support import scenarios

from mlgitops.adapters.kubernetes.api import HTTP_ROUTE
from mlgitops.controller.router import Split
from mlgitops.core import k8s_objects as ko
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.operator.runtime import RepositoryRuntime

from .rollout_rig import (
    NAME,
    Rig,
    rigged,
    selected,
    template_of,
    wait_until,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> scenarios.Template:
    return scenarios.build_template(tmp_path_factory.mktemp("rollout-k8s"))


@pytest.fixture()
def rig(template: scenarios.Template, k8s_cluster: TestCluster, k8s_namespace: str,
        tmp_path: Path) -> Iterator[Rig]:
    bare = tmp_path / "remote.git"
    shutil.copytree(template.bare, bare, symlinks=True)
    with rigged(bare, k8s_cluster, k8s_namespace, tmp_path) as made:
        yield made


def test_a_shadow_runs_beside_the_stable_version_then_is_promoted(
        rig: Rig, template: scenarios.Template) -> None:
    v1, shadow = template.commits["v1"], template.commits["shadow"]
    scenarios.point(rig.bare, v1)
    rig.converge()
    scenarios.point(rig.bare, shadow)
    rig.converge()
    router = rig.runtime.reconciler.router
    stable, split = router.get(NAME), router.split(NAME)
    assert stable is not None and stable.version == v1
    assert split is not None and split.mode == "shadow" and split.candidate.version == shadow
    # the candidate: its own Deployment and Service; the model's Service on the stable pods
    cand = split.candidate.deployment
    assert cand and cand != stable.deployment and f"//{cand}." in split.candidate.url
    assert selected(rig, ko.object_name(NAME)) == template_of(rig, stable.deployment or "")
    assert selected(rig, cand) == template_of(rig, cand) is not None
    # the HTTPRoute: every request to the stable Service, a copy to the candidate's
    route = rig.cluster.get_resource(rig.namespace, ko.object_name(NAME), kind=HTTP_ROUTE)
    assert route is not None
    rule = route["spec"]["rules"][0]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [(ko.object_name(NAME), 100)]
    assert rule["filters"][0]["requestMirror"]["backendRef"]["name"] == cand
    # status.rollout on the ModelDeployment
    cr = rig.cluster.get_resource(rig.namespace, NAME)
    assert cr is not None
    assert cr["status"]["rollout"]["mode"] == "shadow"
    assert cr["status"]["rollout"]["weights"] == {"stable": 100, "candidate": 0}
    assert cr["status"]["rollout"]["version"] == shadow

    # users are answered by the stable pods only; the candidate's pods get the copies
    seen = rig.ask(30)
    assert seen == {v1: 30}
    assert router.served[(NAME, shadow)] == 0
    wait_until("the candidate answered the copies",
               lambda: router.mirrored[(NAME, shadow)] >= 25)
    counters = router.counters[NAME]
    assert counters.requests["candidate"] >= 25 and counters.errors["candidate"] == 0
    assert counters.comparison.compared > 0

    # a canary step (as the monitor sets it): weights on the gateway and on the HTTPRoute
    router.set_split(NAME, Split(split.candidate, "canary", 50, 1, None))
    rig.runtime.reconciler.sync_routes()
    route = rig.cluster.get_resource(rig.namespace, ko.object_name(NAME), kind=HTTP_ROUTE)
    assert route is not None
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        (ko.object_name(NAME), 50), (cand, 50)]
    assert "filters" not in route["spec"]["rules"][0]
    seen = rig.ask(60)
    assert seen[v1] > 0 and seen[shadow] > 0 and sum(seen.values()) == 60
    router.set_split(NAME, split)

    # promoted (what the monitor does once the last step passed): the Service switches
    policy, state = router.rollouts[NAME]
    router.rollouts[NAME] = (policy, replace(state, phase="promoted"))
    rig.converge()
    now = router.get(NAME)
    assert now is not None and now.version == shadow and router.split(NAME) is None
    assert selected(rig, ko.object_name(NAME)) == template_of(rig, cand)
    route = rig.cluster.get_resource(rig.namespace, ko.object_name(NAME), kind=HTTP_ROUTE)
    assert route is not None
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        (ko.object_name(NAME), 100)]
    assert rig.ask(10) == {shadow: 10}


def test_a_restarted_operator_resumes_the_shadow_and_a_revert_leaves_no_candidate(
        rig: Rig, template: scenarios.Template) -> None:
    scenarios.point(rig.bare, template.commits["v1"])
    rig.converge()
    scenarios.point(rig.bare, template.commits["shadow"])
    rig.converge()
    split = rig.runtime.reconciler.router.split(NAME)
    assert split is not None
    cand = split.candidate.deployment
    # the operator restarts: a new runtime on the same state reads the rollout from the status
    rig.runtime = RepositoryRuntime(rig.cluster, rig.runtime.cfg, rig.runtime.repo)
    rig.traffic.remove("flags")
    rig.traffic.add("flags", rig.runtime.router, rig.cluster, rig.namespace)
    rig.runtime.reconciler.adopt()
    rig.converge()
    resumed = rig.runtime.reconciler.router.split(NAME)
    assert resumed is not None and resumed.candidate.deployment == cand
    assert resumed.mode == "shadow" and resumed.step == split.step
    cr = rig.cluster.get_resource(rig.namespace, NAME)
    assert cr is not None and cr["status"]["rollout"]["phase"] == "running"
    assert set(rig.ask(10)) == {template.commits["v1"]}
    scenarios.point(rig.bare, template.commits["shadow-reverted"])
    rig.converge()
    assert rig.runtime.reconciler.router.split(NAME) is None
    core = client.CoreV1Api(rig.cluster.api)

    def gone() -> bool:
        names = {s.metadata.name for s in core.list_namespaced_service(rig.namespace).items}
        return cand not in names and rig.cluster.read_deployment_named(rig.namespace, cand) is None

    wait_until("the candidate's Deployment and Service are deleted", gone)
    assert set(rig.ask(10)) == {rig.runtime.reconciler.router.get(NAME).version}  # type: ignore[union-attr]
