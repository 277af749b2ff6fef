"""What the operator sends to Kubernetes for one ModelDeployment at a commit (no cluster needed).

The rendering is checked against the manifest it comes from and against the `mlgitops` commands
the pod runs (their arguments parse with the real click commands); `rollout_state` and
`pod_view` are table-driven over Deployment and Pod status documents as the API server writes
them. tests/k8s/test_objects_on_cluster.py sends the same objects to a real API server.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgitops import cli, errors, settings
from mlgitops.core import k8s_objects as ko
from mlgitops.core import manifest, source_spec

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
UID = "6f1c7f2e-0000-4000-8000-000000000001"


def example() -> manifest.ModelDeployment:
    doc = yaml.safe_load((ROOT / "manifests" / "credit-risk.yaml").read_text())
    return manifest.parse(doc, source="manifests/credit-risk.yaml")


def owner() -> ko.Owner:
    return ko.Owner(name="credit-risk", uid=UID)


def render(**kw: Any) -> dict[str, Any]:
    dep = kw.pop("dep", example())
    return ko.deployment(
        dep, kw.pop("commit", COMMIT), owner=owner(),
        source=kw.pop("source", ko.Source("https://git.example.com/team/models.git")),
        trusted_types=kw.pop("trusted_types", ["sklearn.tree._tree.Tree"]), **kw,
    )  # fmt: skip


def test_deployment_is_pinned_to_the_commit_and_owned_by_the_resource() -> None:
    dep = example()
    d = render(namespace="models")
    meta = d["metadata"]
    assert (d["apiVersion"], d["kind"], meta["name"], meta["namespace"]) == (
        "apps/v1", "Deployment", "mlgitops-credit-risk", "models")
    hexdigest = dep.digest.removeprefix("sha256:")
    assert meta["labels"] == {
        "app.kubernetes.io/name": "credit-risk",
        "app.kubernetes.io/managed-by": "mlgitops",
        "mlgitops.io/model": "credit-risk",
        "mlgitops.io/version": COMMIT,
        "mlgitops.io/digest": hexdigest[:63],
    }
    assert all(len(v) <= 63 for v in meta["labels"].values())
    assert meta["annotations"]["mlgitops.io/commit"] == COMMIT
    assert meta["annotations"]["mlgitops.io/digest"] == dep.digest
    assert meta["ownerReferences"] == [{
        "apiVersion": "mlgitops.io/v1alpha1", "kind": "ModelDeployment", "name": "credit-risk",
        "uid": UID, "controller": True, "blockOwnerDeletion": True,
    }]  # fmt: skip
    spec = d["spec"]
    assert spec["replicas"] == dep.serving.replicas
    assert spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["selector"] == {"matchLabels": {"mlgitops.io/model": "credit-risk"}}
    template = spec["template"]
    assert template["metadata"]["labels"] == meta["labels"]
    # the selector matches the pods of every version, so it never has to change
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_the_pod_fetches_then_serves_exactly_that_version() -> None:
    dep = example()
    pod = render(source=ko.Source("https://git.example.com/m.git", secret_name="git-creds"))[
        "spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["command"] == server["command"] == ["mlgitops"]
    assert init["args"] == [
        "fetch-model", "--repo-url", "https://git.example.com/m.git", "--commit", COMMIT,
        "--name", "credit-risk", "--digest", dep.digest, "--dest", "/models/credit-risk",
        "--credentials", "/etc/mlgitops/git",
    ]  # fmt: skip
    assert server["args"][:16] == [
        "serve", "/models/credit-risk", "--port", "8080", "--host", "0.0.0.0",
        "--name", "credit-risk", "--version", COMMIT, "--digest", dep.digest,
        "--workers", str(dep.serving.workers), "--max-batch-size", "64",
    ]  # fmt: skip
    assert server["args"][-2:] == ["--trust", "sklearn.tree._tree.Tree"]
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    for c in (init, server):
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DO_NOT_TRACK"] == "true"
        assert c["image"] == "mlgitops:0.1.0"
        assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                  "limits": {"cpu": "2", "memory": "2Gi"}}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert mounts["/etc/mlgitops/git"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {}}
    assert volumes["git-credentials"]["secret"]["secretName"] == "git-creds"
    assert {m["mountPath"]: m.get("readOnly", False) for m in server["volumeMounts"]}[
        "/models"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_commands_parse_with_the_real_cli() -> None:
    """What the pod runs is what `mlgitops fetch-model` and `mlgitops serve` accept."""
    pod = render(source=ko.Source("/srv/git/models.git", secret_name="s"))["spec"]["template"]["spec"]
    for container in (*pod["initContainers"], *pod["containers"]):
        sub, *rest = container["args"]
        command = cli.main.commands[sub]
        ctx = command.make_context(sub, list(rest))
        assert ctx.params, sub
    serve = cli.main.commands["serve"].make_context("serve", pod["containers"][0]["args"][1:])
    assert serve.params["trust"] == ("sklearn.tree._tree.Tree",)
    assert serve.params["version"] == COMMIT


def test_options_change_image_resources_deadline_and_trust_policy() -> None:
    opts = ko.PodOptions(image="registry.example.com/mlgitops:1.2.3", requests={"cpu": "1"},
                         limits={"memory": "1Gi"}, progress_deadline_seconds=30,
                         trust_allow=("team.Clipper",))
    d = render(options=opts, trusted_types=[])
    assert d["spec"]["progressDeadlineSeconds"] == 30
    for c in (*d["spec"]["template"]["spec"]["initContainers"], *d["spec"]["template"]["spec"]["containers"]):
        assert c["image"] == "registry.example.com/mlgitops:1.2.3"
        assert c["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}
        assert {"name": "MLGITOPS_TRUST_ALLOW", "value": "team.Clipper"} in c["env"]
    assert "--trust" not in d["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--credentials" not in d["spec"]["template"]["spec"]["initContainers"][0]["args"]


def test_service_follows_every_version_of_the_model() -> None:
    s = ko.service(example(), owner=owner(), namespace="models")
    assert (s["apiVersion"], s["kind"], s["metadata"]["name"]) == ("v1", "Service", "mlgitops-credit-risk")
    assert s["spec"]["type"] == "ClusterIP"
    assert s["spec"]["selector"] == {"mlgitops.io/model": "credit-risk"}
    assert s["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert "mlgitops.io/version" not in s["metadata"]["labels"]
    assert "mlgitops.io/digest" not in s["metadata"]["labels"]
    assert s["metadata"]["ownerReferences"] == render()["metadata"]["ownerReferences"]


def test_grpc_port_is_served_by_the_container_and_exposed_by_the_service() -> None:
    opts = ko.PodOptions(grpc_port=8081)
    server = render(options=opts)["spec"]["template"]["spec"]["containers"][0]
    assert server["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    serve = cli.main.commands["serve"].make_context("serve", server["args"][1:])
    assert serve.params["grpc_port"] == 8081 and serve.params["port"] == 8080
    s = ko.service(example(), owner=owner(), namespace="models", options=opts)
    assert s["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP"},
    ]
    # without the option: HTTP only, as before
    plain = render()["spec"]["template"]["spec"]["containers"][0]
    assert "--grpc-port" not in plain["args"] and len(plain["ports"]) == 1
    assert [p["name"] for p in ko.service(example(), owner=owner())["spec"]["ports"]] == ["http"]


def test_names_fit_kubernetes_limits() -> None:
    long = "m" + "-x" * 31  # 63 characters, the longest model name
    assert manifest.valid_name(long)
    name = ko.object_name(long)
    assert len(name) <= 63 and name.startswith("mlgitops-m-x")
    assert name == ko.object_name(long), "stable"
    assert ko.object_name(long[:-2] + "-y") != name
    assert ko.object_name("a") == "mlgitops-a"


@pytest.mark.parametrize("commit", ["0123456789ab", "HEAD", "main", COMMIT.upper()])
def test_only_full_commits_render(commit: str) -> None:
    with pytest.raises(ValueError, match="not a full commit id"):
        render(commit=commit)


def test_owner_comes_from_the_stored_resource() -> None:
    stored = {**example().to_dict(), "metadata": {"name": "credit-risk", "uid": UID}}
    assert ko.Owner.of(stored) == owner()
    with pytest.raises(ValueError, match=r"no metadata\.uid"):
        ko.Owner.of(example().to_dict())
    with pytest.raises(ValueError, match="must be a ModelDeployment"):
        ko.Owner.of({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "uid": "u"}})


# -- reading Deployments and Pods back -------------------------------------------------------


def with_status(generation: int = 1, want: int = 1, **status: Any) -> dict[str, Any]:
    d = copy.deepcopy(render())
    d["metadata"]["generation"] = generation
    d["spec"]["replicas"] = want
    d["status"] = status
    return d


def cond(kind: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


ROLLOUTS = [
    ("just created", with_status(), ko.Phase.PROGRESSING, "has not yet seen generation 1"),
    ("controller lags", with_status(generation=3, observedGeneration=2), ko.Phase.PROGRESSING,
     "has not yet seen generation 3"),
    ("new pod starting", with_status(
        observedGeneration=1, replicas=1, updatedReplicas=1, readyReplicas=0, availableReplicas=0,
        conditions=[cond("Progressing", "True", "ReplicaSetUpdated")]), ko.Phase.PROGRESSING,
     "1 of 1 pod(s) updated, 0 ready"),
    ("surge: old still serves", with_status(
        observedGeneration=1, replicas=2, updatedReplicas=1, readyReplicas=1, availableReplicas=1,
        conditions=[cond("Progressing", "True", "ReplicaSetUpdated")]), ko.Phase.PROGRESSING,
     "1 of the previous version left"),
    ("ready", with_status(
        observedGeneration=1, replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1,
        conditions=[cond("Available", "True", "MinimumReplicasAvailable"),
                    cond("Progressing", "True", "NewReplicaSetAvailable")]), ko.Phase.READY,
     "1 of 1 pod(s) of commit 0123456789ab ready"),
    ("deadline exceeded", with_status(
        observedGeneration=1, replicas=2, updatedReplicas=1, readyReplicas=1, availableReplicas=1,
        conditions=[cond("Progressing", "False", "ProgressDeadlineExceeded",
                         'ReplicaSet "x" has timed out progressing.')]), ko.Phase.FAILED,
     "did not become ready within the progress deadline"),
    ("pods cannot be created", with_status(
        observedGeneration=1, replicas=0, updatedReplicas=0,
        conditions=[cond("ReplicaFailure", "True", "FailedCreate", "exceeded quota: models")]),
     ko.Phase.FAILED, "cannot be created: exceeded quota: models"),
    ("two replicas, one ready", with_status(
        want=2, replicas=2, observedGeneration=1, updatedReplicas=2, readyReplicas=1, availableReplicas=1),
     ko.Phase.PROGRESSING, "2 of 2 pod(s) updated, 1 ready"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "deployment", "phase", "words"), ROLLOUTS, ids=[r[0] for r in ROLLOUTS])
def test_rollout_state(label: str, deployment: dict[str, Any], phase: ko.Phase, words: str) -> None:
    state = ko.rollout_state(deployment)
    assert state.phase is phase, state.message
    assert words in state.message
    assert state.commit == COMMIT
    assert state.serving_commits == ((COMMIT,) if phase is ko.Phase.READY else ())


def pod(name: str, commit: str, *, ready: bool, ip: str | None = "10.0.0.7", **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {"name": name, "labels": {"mlgitops.io/version": commit},
                     "annotations": {"mlgitops.io/digest": "sha256:" + "a" * 64}},
        "status": {"phase": "Running" if ready else "Pending", "podIP": ip,
                   "conditions": conditions, **status},
    }  # fmt: skip


def test_serving_commits_come_from_ready_pods_during_a_rollout() -> None:
    old = "f" * 40
    deployment = ROLLOUTS[3][1]
    pods = [pod("a", old, ready=True), pod("b", COMMIT, ready=False, ip=None)]
    state = ko.rollout_state(deployment, pods)
    assert state.phase is ko.Phase.PROGRESSING
    assert state.serving_commits == (old,)


def test_pod_view_says_why_a_pod_is_not_ready() -> None:
    ready = ko.pod_view(pod("a", COMMIT, ready=True))
    assert (ready.ready, ready.endpoint, ready.commit, ready.problem) == (
        True, "http://10.0.0.7:8080", COMMIT, None)
    failing = ko.pod_view(pod("b", COMMIT, ready=False, initContainerStatuses=[{
        "name": "fetch-model", "ready": False, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                     "message": "error: credit is quarantined: …"}},
    }]))  # fmt: skip
    assert not failing.ready
    assert failing.problem == "container fetch-model exited with 1: error: credit is quarantined: …"
    leaving = pod("c", COMMIT, ready=True)
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    view = ko.pod_view(leaving)
    assert view.terminating and not view.ready


# -- the ModelRepository resource ------------------------------------------------------------


def repository_doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mlgitops.io/v1alpha1", "kind": "ModelRepository",
            "metadata": {"name": "credit-models"}, "spec": spec}


def test_model_repository_spec() -> None:
    src = source_spec.parse(repository_doc(
        url="https://git.example.com/team/models.git", branch="release/1", interval="1m30s",
        secretRef={"name": "git-creds"}, webhookSecretRef={"name": "hook"}), source="x")
    assert src == source_spec.RepositorySource(
        name="credit-models", url="https://git.example.com/team/models.git", branch="release/1",
        interval_seconds=90.0, secret_name="git-creds", webhook_secret_name="hook")
    minimal = source_spec.parse(repository_doc(url="git@github.com:team/models.git"), source="x")
    assert (minimal.branch, minimal.interval_seconds, minimal.secret_name) == ("main", 60.0, None)


@pytest.mark.parametrize(("spec", "words"), [
    ({}, "'url' is a required property"),
    ({"url": "ftp://x/y"}, "field spec.url"),
    ({"url": "https://x/y", "interval": "soon"}, "field spec.interval"),
    ({"url": "https://x/y", "interval": "10ms"}, "under a second"),
    ({"url": "https://x/y", "secretRef": {"name": "Bad_Name"}}, "field spec.secretRef.name"),
    ({"url": "https://x/y", "extra": 1}, "Additional properties"),
])  # fmt: skip
def test_model_repository_errors_name_the_field(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(errors.ManifestError, match=words.replace(".", r"\.").replace("(", r"\(")):
        source_spec.parse(repository_doc(**spec), source="modelrepositories/x")


def test_model_repository_crd_defaults_what_parse_defaults() -> None:
    crd = source_spec.crd()
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["branch"]["default"] == source_spec.DEFAULT_BRANCH
    assert source_spec.interval_seconds(props["interval"]["default"]) == 60.0
    assert "default" not in source_spec.SCHEMA["properties"]["spec"]["properties"]["branch"]


def test_every_pod_has_cpu_and_memory_limits_whatever_the_manifest_asks() -> None:
    """A push asking for 64 workers still gets a pod bounded by the operator's limits."""
    doc = yaml.safe_load((ROOT / "manifests" / "credit-risk.yaml").read_text())
    doc["spec"].setdefault("serving", {})["workers"] = 64
    doc["spec"]["resources"] = {"limits": {"cpu": "64"}}  # no such field: refused
    with pytest.raises(errors.ManifestError, match="resources"):
        manifest.parse(doc, source="m.yaml")
    del doc["spec"]["resources"]
    greedy = manifest.parse(doc, source="m.yaml")
    assert greedy.serving.workers == 64
    d = render(dep=greedy)
    for c in (*d["spec"]["template"]["spec"]["initContainers"],
              *d["spec"]["template"]["spec"]["containers"]):
        assert c["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
        assert c["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}


def test_pod_resources_come_from_the_operators_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGITOPS_OPERATOR_REPO_URL", "/srv/git/models.git")
    monkeypatch.setenv("MLGITOPS_OPERATOR_NAMESPACE", "models")
    monkeypatch.setenv("MLGITOPS_OPERATOR_CPU_LIMIT", "500m")
    monkeypatch.setenv("MLGITOPS_OPERATOR_MEMORY_LIMIT", "768Mi")
    monkeypatch.setenv("MLGITOPS_OPERATOR_MEMORY_REQUEST", "128Mi")
    cfg = settings.operator()
    assert dict(cfg.pod_limits) == {"cpu": "500m", "memory": "768Mi"}
    assert dict(cfg.pod_requests) == {"cpu": "100m", "memory": "128Mi"}
    monkeypatch.setenv("MLGITOPS_OPERATOR_CPU_LIMIT", "lots")
    with pytest.raises(errors.ConfigError, match="MLGITOPS_OPERATOR_CPU_LIMIT='lots' is not a "
                                                 "Kubernetes quantity"):
        settings.operator()


def test_the_api_token_reaches_the_model_server_from_a_secret_never_as_a_value() -> None:
    server = render(options=ko.PodOptions(api_token_secret="mlgitops-api-token"))
    env = server["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLGITOPS_API_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "mlgitops-api-token", "key": "token"}}} in env
    plain = render()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all(e["name"] != "MLGITOPS_API_TOKEN" for e in plain)
