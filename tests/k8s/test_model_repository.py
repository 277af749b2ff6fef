"""ModelRepository resources are the operator's configuration (against the real API server).

The operator runs with no repository flag: a ModelRepository applied in its namespace brings
that repository's models up (ModelDeployments with status and Events, Deployments that serve,
the repository Ready with the commit it reconciled); one whose URL cannot be fetched is Stalled
with git's sentence; a new model whose manifest is invalid gets a ModelDeployment that is
Stalled with the reason and a Held Event; deleting the ModelRepository deletes its models and
what they own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.core import layout, source_spec
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet

from .test_operator import HANDLERS, NAME, condition, push_past_the_hook, served
from .waits import wait_for


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


@contextlib.contextmanager
def operator_without_flags(k8s_cluster: TestCluster, ns: str, state: Path) -> Iterator[KopfRunner]:
    env = {
        "MLGITOPS_MLFLOW": "0", "MLGITOPS_EVIDENTLY": "0",
        "MLGITOPS_OPERATOR_REPO_URL": "",
        "MLGITOPS_OPERATOR_HTTP_PORT": "0",
        "MLGITOPS_OPERATOR_NAMESPACE": ns,
        "MLGITOPS_OPERATOR_STATE_DIR": str(state),
        "MLGITOPS_OPERATOR_KUBECONFIG": str(k8s_cluster.kubeconfig_path),
        "MLGITOPS_OPERATOR_PROGRESS_DEADLINE_SECONDS": "60",
        "KUBECONFIG": str(k8s_cluster.kubeconfig_path),
    }
    args = ["run", "--standalone", "-n", ns, str(HANDLERS)]
    with KopfRunner(args, registry=kopf.OperatorRegistry(), timeout=60, env=env) as runner:
        yield runner
    assert runner.exception is None, runner.output[-3000:]
    assert runner.exit_code == 0, runner.output[-3000:]


def model_repository(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": source_spec.API_VERSION, "kind": source_spec.KIND,
            "metadata": {"name": name}, "spec": {"url": url, "interval": "1s", **spec}}


def repo_status(cluster: k8s.Cluster, ns: str, name: str) -> dict[str, Any]:
    cr = cluster.get_resource(ns, name, kind=k8s.MODEL_REPOSITORY)
    return dict((cr or {}).get("status") or {})


def test_a_model_repository_brings_its_models_up_and_takes_them_away(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    ns = k8s_namespace
    v1 = publish_version(name=NAME, seed=0)
    bare = Path(git.remote_url(repo) or "")
    with (Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet,
          operator_without_flags(k8s_cluster, ns, tmp_path / "operator")):
        cluster.apply(model_repository("team", f"file://{bare}"), namespace=ns)
        cluster.apply(model_repository("nowhere", f"file://{tmp_path}/no-such-repo.git"),
                      namespace=ns)
        wait_for("v1 Ready through the ModelRepository", lambda: served(cluster, ns, v1),
                 kubelet=kubelet)
        team = wait_for("the repository Ready", lambda: (
            st := repo_status(cluster, ns, "team")).get("commit") == v1
            and condition(st, "Ready").get("status") == "True" and st)
        assert team["url"] == f"file://{bare}"
        cr = cluster.get_resource(ns, NAME)
        assert cr is not None
        assert cr["metadata"]["ownerReferences"][0]["kind"] == source_spec.KIND
        wait_for("the Deployed Event", lambda: "Deployed" in {
            e.get("reason") for e in cluster.events(cr)})  # written after the pods answer
        stalled = wait_for("the unreachable repository Stalled", lambda: condition(
            repo_status(cluster, ns, "nowhere"), "Ready").get("status") == "False"
            and condition(repo_status(cluster, ns, "nowhere"), "Ready"))
        assert "no-such-repo.git" in stalled["message"], stalled
        cluster.apply(model_repository("private", f"file://{tmp_path}/private.git",
                                       secretRef={"name": "no-such-secret"}), namespace=ns)
        secret = wait_for("the repository without its Secret Stalled", lambda: condition(
            repo_status(cluster, ns, "private"), "Stalled").get("status") == "True"
            and condition(repo_status(cluster, ns, "private"), "Stalled"))
        assert "no-such-secret does not exist" in secret["message"], secret
        nowhere = cluster.get_resource(ns, "nowhere", kind=k8s.MODEL_REPOSITORY)
        assert nowhere is not None
        assert "Stalled" in {e.get("reason") for e in cluster.events(nowhere)}

        # -- a new model whose manifest is invalid: a ModelDeployment, Stalled, an Event --
        def add_broken(r: Path) -> None:
            doc = yaml.safe_load((r / layout.manifest_path(NAME)).read_text())
            doc["metadata"]["name"] = "broken"
            doc["spec"]["model"]["path"] = "models/broken"
            doc["spec"]["serving"]["replicas"] = "many"
            (r / layout.manifest_path("broken")).write_text(yaml.safe_dump(doc))

        bad = push_past_the_hook(repo, add_broken, "a new model with a typo")

        def broken_stalled() -> dict[str, Any] | None:
            got = cluster.get_resource(ns, "broken")
            c = condition(dict((got or {}).get("status") or {}), "Stalled")
            return got if c.get("status") == "True" else None

        broken = wait_for("the invalid new model Stalled", broken_stalled)
        c = condition(broken["status"], "Stalled")
        assert "spec.serving.replicas" in c["message"] and c["reason"] == "InvalidVersion"
        assert broken["status"]["lastAttemptedCommit"] == bad
        held = wait_for("its Held Event", lambda: [
            e for e in cluster.events(broken) if e.get("reason") == "Held"])
        assert "spec.serving.replicas" in held[0]["message"]
        assert cluster.read_deployment(ns, "broken") is None
        assert served(cluster, ns, v1)  # the other model is untouched

        # -- the repository deleted: its models go, and what they own -------------------
        cluster.delete_resource(ns, "team", kind=k8s.MODEL_REPOSITORY)
        wait_for("its ModelDeployments deleted", lambda: (
            cluster.get_resource(ns, NAME) is None and cluster.get_resource(ns, "broken") is None))
        wait_for("the ModelRepository gone (its finalizer released)", lambda: cluster.get_resource(
            ns, "team", kind=k8s.MODEL_REPOSITORY) is None)
        wait_for("the Deployment and Service garbage-collected", lambda: (
            cluster.read_deployment(ns, NAME) is None and cluster.read_service(ns, NAME) is None),
            timeout=180)
