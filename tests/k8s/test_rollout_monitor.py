"""Progressive rollouts on the test cluster, driven by the operator's own monitor (issue 19).

The operator's runtime for one repository runs as in ``mlgitops operator`` (`run_forever`: the
loop, the monitor, the HTTPRoute keeper), with the operator's gateway on a loopback port; users
post through that gateway the whole time and every answer is counted by the version it names,
every failure kept. Nothing in these tests moves a rollout: the monitor judges each step on the
candidate's live rows (read from its pods' stats route) and on the gateway's step counters, then
moves to the next step, promotes, or reverts in Git; the reconciler follows Git.

- a good version under shadow-canary passes the shadow and two canary steps and is promoted:
  the model's Service selects its pods, the replaced version is kept warm;
- a bad version (trained on a shifted population) under shadow is reverted before any user
  request is answered by it;
- a bad version under canary breaches at its step: the revert is a path-scoped commit with the
  trailers and the quarantine, on the bare remote; its traffic is back on the stable version and
  no user request failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from support import scenarios
from support.users import Users

from mlgitops.adapters import git
from mlgitops.adapters.kubernetes import versions
from mlgitops.adapters.kubernetes.api import HTTP_ROUTE
from mlgitops.core import k8s_objects as ko
from mlgitops.core import layout, quarantine
from mlgitops.devcluster.cluster import TestCluster

from .rollout_rig import (
    ANALYSIS,
    NAME,
    Rig,
    publish_v2,
    remote_head,
    repo_with,
    reverted,
    rigged,
    selected,
    template_of,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]
assert NAME == scenarios.NAME


def events(rig: Rig, *kinds: str) -> list[dict[str, Any]]:
    return [e for e in rig.runtime.store.events(NAME) if e["type"] in kinds]


def route_backends(rig: Rig) -> list[tuple[str, int]] | None:
    route = rig.cluster.get_resource(rig.namespace, ko.object_name(NAME), kind=HTTP_ROUTE)
    if route is None:
        return None
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def service_names(rig: Rig) -> set[str]:
    found = client.CoreV1Api(rig.cluster.api).list_namespaced_service(rig.namespace)
    return {s.metadata.name for s in found.items}


def path_scoped(bare: Path, commit: str) -> list[str]:
    """The paths ``commit`` changed; each must be the model's own or the quarantine file."""
    changed = git.text(bare, "diff-tree", "--no-commit-id", "--name-only", "-r", commit).split()
    assert changed, f"{commit[:12]} changed nothing"
    for path in changed:
        assert (path.startswith(f"models/{NAME}/") or path == layout.manifest_path(NAME)
                or path == layout.QUARANTINE), f"the revert touched {path}"
    return changed


def quarantined(bare: Path, commit: str) -> list[tuple[str, str]]:
    entries = quarantine.parse(
        yaml.safe_load(git.show(bare, commit, layout.QUARANTINE) or b""),
        source=layout.QUARANTINE)
    return [(e.model, e.commit) for e in entries]


def test_a_good_version_passes_shadow_and_canary_steps_and_the_monitor_promotes_it(
        k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path) -> None:
    work, bare, stable = repo_with(tmp_path, {
        "strategy": "shadow-canary", "shadow": {"rows": 300},
        "canary": {"steps": [{"weight": 25, "rows": 300}, {"weight": 50, "rows": 300}],
                   "key": "x-client"},
        "analysis": ANALYSIS})
    with rigged(bare, k8s_cluster, k8s_namespace, tmp_path, interval=1.0) as rig, \
            rig.operating():
        router = rig.runtime.reconciler.router
        wait_until("v1 serving", lambda: getattr(router.get(NAME), "version", None) == stable,
                   timeout=240)
        old = router.get(NAME)
        assert old is not None and old.deployment
        with Users(f"{rig.url}/models/{NAME}/invocations", clients=2) as users:
            v2 = publish_v2(work, bad=False)
            rig.runtime.loop.trigger("test")
            wait_until("the candidate beside the stable version",
                       lambda: router.split(NAME) is not None, timeout=240)
            cand = router.split(NAME).candidate.deployment  # type: ignore[union-attr]
            wait_until("v2 promoted by the monitor",
                       lambda: getattr(router.get(NAME), "version", None) == v2, timeout=420,
                       detail=lambda: f"{rig.explain()}\nusers: {dict(users.by_version)}, "
                                       f"{len(users.failed)} failed")
            # from now on every user request is answered by v2
            promoted = users.answered
            wait_until("requests after the promotion",
                       lambda: users.answered > promoted + 20, timeout=120)
            settled = dict(users.by_version)
            wait_until("more requests", lambda: users.answered > sum(settled.values()) + 20,
                       timeout=120)
        assert not users.failed, users.failed[:3]
        assert set(users.statuses) == {200}
        assert users.by_version[stable] == settled.get(stable, 0)
        assert users.by_version[v2] > settled.get(v2, 0)
        assert remote_head(bare).commit == v2  # nothing was reverted
        # each step passed once, in order, judged on the candidate's own rows
        st = rig.runtime.store.status(NAME)
        assert st.served_commit == v2 and st.rollout is not None
        assert st.rollout["phase"] == "promoted"
        assert st.rollout["weights"] == {"stable": 0, "candidate": 100}
        assert [(h["step"], h["mode"], h["verdict"]) for h in st.rollout["history"]] == [
            (1, "shadow", "pass"), (2, "canary", "pass"), (3, "canary", "pass")]
        steps = events(rig, "RolloutStep")
        assert [e["action"] for e in steps] == ["next", "next", "promote"]
        assert all(max(e["rows"], e["compared"]) >= ANALYSIS["minRows"] and e["errors"] == 0
               for e in steps), steps
        # the Kubernetes objects: the Service on v2's pods, v1 kept warm, the route all stable
        assert cand and selected(rig, ko.object_name(NAME)) == template_of(rig, cand)
        kept = rig.cluster.read_deployment_named(rig.namespace, old.deployment)
        assert kept is not None and versions.replaced(kept)
        wait_until("the HTTPRoute on the model's Service alone",
                   lambda: route_backends(rig) == [(ko.object_name(NAME), 100)])
        cr = rig.cluster.get_resource(rig.namespace, NAME)
        assert cr is not None and cr["status"]["servedCommit"] == v2
        assert cr["status"]["rollout"]["phase"] == "promoted"


def test_the_operators_monitor_reverts_a_bad_version_under_shadow_before_a_user_sees_it(
        k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path) -> None:
    work, bare, stable = repo_with(tmp_path, {"strategy": "shadow", "shadow": {"rows": 3000},
                                              "analysis": ANALYSIS})
    with rigged(bare, k8s_cluster, k8s_namespace, tmp_path, interval=1.0) as rig, \
            rig.operating():
        router = rig.runtime.reconciler.router
        wait_until("v1 serving", lambda: getattr(router.get(NAME), "version", None) == stable,
                   timeout=240)
        with Users(f"{rig.url}/models/{NAME}/invocations") as users:
            v2 = publish_v2(work, bad=True)
            rig.runtime.loop.trigger("test")
            wait_until("the candidate beside the stable version",
                       lambda: router.split(NAME) is not None, timeout=240)
            cand = router.split(NAME).candidate.deployment  # type: ignore[union-attr]
            revert = wait_until("the operator's revert of v2 on the remote",
                                lambda: reverted(bare, v2), timeout=300)
            wait_until("the candidate dropped", lambda: router.split(NAME) is None, timeout=120)
            after = users.answered
            wait_until("requests after the revert", lambda: users.answered > after + 10,
                       timeout=120)
    # no user request was answered by the bad version; its pods answered copies of them
    assert users.by_version[v2] == 0 and router.served[(NAME, v2)] == 0
    assert router.mirrored[(NAME, v2)] * 25 >= ANALYSIS["minRows"]
    assert not users.failed, users.failed[:3]
    assert users.by_version[stable] > 0
    # judged on what it answered (its labels disagree with v1's), not on failed copies
    (rev,) = events(rig, "Reverted")
    assert "same label" in rev["message"], rev["message"]
    assert git.tree_id(bare, revert.commit, f"models/{NAME}") == \
        git.tree_id(bare, stable, f"models/{NAME}")
    assert "rollout failed at step 1 (shadow)" in revert.subject
    path_scoped(bare, revert.commit)
    assert quarantined(bare, revert.commit) == [(NAME, v2)]
    cr = rig.cluster.get_resource(rig.namespace, NAME)
    assert cr is not None and cr["status"]["rollout"]["phase"] == "aborted"
    wait_until("the candidate's Deployment deleted",
               lambda: rig.cluster.read_deployment_named(rig.namespace, cand) is None)


def test_a_canary_step_that_breaches_is_reverted_in_git_with_no_failed_user_request(
        k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path) -> None:
    work, bare, stable = repo_with(tmp_path, {
        "strategy": "canary", "canary": {"steps": [{"weight": 50, "rows": 5000}],
                                         "key": "x-client"},
        "analysis": ANALYSIS})
    with rigged(bare, k8s_cluster, k8s_namespace, tmp_path, interval=1.0) as rig, \
            rig.operating():
        router = rig.runtime.reconciler.router
        wait_until("v1 serving", lambda: getattr(router.get(NAME), "version", None) == stable,
                   timeout=240)
        stable_deployment = router.get(NAME).deployment  # type: ignore[union-attr]
        with Users(f"{rig.url}/models/{NAME}/invocations", clients=3) as users:
            v2 = publish_v2(work, bad=True)
            rig.runtime.loop.trigger("test")
            wait_until("the candidate beside the stable version",
                       lambda: router.split(NAME) is not None, timeout=240)
            cand = router.split(NAME).candidate.deployment  # type: ignore[union-attr]
            revert = wait_until("the operator's revert of v2 on the remote",
                                lambda: reverted(bare, v2), timeout=300)
            wait_until("the stable content serving at the revert commit",
                       lambda: router.split(NAME) is None
                       and getattr(router.get(NAME), "version", None) == revert.commit,
                       timeout=180)
            at_revert = users.by_version[v2]
            wait_until("traffic on the stable version after the revert",
                       lambda: users.by_version[revert.commit] > 30, timeout=120)
    # the canary did answer users (that is what a canary is), then none once it breached
    assert 0 < at_revert == users.by_version[v2]
    assert not users.failed, users.failed[:3]
    assert set(users.statuses) == {200}, users.statuses
    assert users.by_version[stable] > 0
    # Git: a path-scoped revert with its trailers and the quarantine, on the remote
    assert revert.trailers.get(layout.TRAILER_MODEL) == NAME
    assert git.tree_id(bare, revert.commit, f"models/{NAME}") == \
        git.tree_id(bare, stable, f"models/{NAME}")
    path_scoped(bare, revert.commit)
    assert quarantined(bare, revert.commit) == [(NAME, v2)]
    (rev,) = events(rig, "Reverted")
    assert "canary 50%" in rev["message"], rev["message"]
    # Kubernetes: the model's Service on the stable pods, the candidate gone, the route stable
    assert selected(rig, ko.object_name(NAME)) == template_of(rig, stable_deployment or "")
    wait_until("the candidate's Deployment and Service deleted",
               lambda: rig.cluster.read_deployment_named(rig.namespace, cand or "") is None
               and cand not in service_names(rig))
    wait_until("the HTTPRoute on the model's Service alone",
               lambda: route_backends(rig) == [(ko.object_name(NAME), 100)])
    cr = rig.cluster.get_resource(rig.namespace, NAME)
    assert cr is not None and cr["status"]["rollout"]["phase"] == "aborted"
