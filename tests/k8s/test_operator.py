"""The kopf operator against the real API server: Git -> ModelDeployments -> Deployments that serve.

The operator runs as a cluster runs it (kopf, standalone, one namespace, its own login), loaded
from its file; the harness plays only the kubelet. Cases: publish v1 -> a Deployment pinned to
v1's commit, Ready; publish v2 -> rolled out; an invalid manifest and a quarantined version ->
Stalled with the sentence while the serving Deployment stays; the operator restarted -> nothing
redeployed; the custom resource deleted -> what it owns goes. Figures printed: commit -> Ready.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from mlgitops import errors
from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters.kubernetes.pod_stats import PodStats
from mlgitops.authoring import validate
from mlgitops.controller import decisions as decision_log
from mlgitops.core import k8s_objects as ko
from mlgitops.core import quarantine
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet, http_get
from mlgitops.operator import handlers

from .waits import wait_for

NAME = "credit"
GRPC_PORT = 9081
HANDLERS = Path(handlers.__file__)


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


@contextlib.contextmanager
def operator(k8s_cluster: TestCluster, ns: str, repo: Path, state: Path, *,
             interval: float = 1.0, http_port: int = 0, secret: str = "",
             grpc_port: int | None = None, tracking: bool = False) -> Iterator[KopfRunner]:
    bare = git.remote_url(repo)
    env = {
        # MLflow and Evidently each import in a child of their own: only where a test looks
        "MLGITOPS_MLFLOW": "1" if tracking else "0",
        "MLGITOPS_EVIDENTLY": "1" if tracking else "0",
        "MLGITOPS_OPERATOR_GRPC_PORT": "" if grpc_port is None else str(grpc_port),
        "MLGITOPS_OPERATOR_HTTP_PORT": str(http_port),
        "MLGITOPS_WEBHOOK_SECRET": secret,
        "MLGITOPS_OPERATOR_REPO_URL": f"file://{bare}",
        "MLGITOPS_OPERATOR_NAMESPACE": ns,
        "MLGITOPS_OPERATOR_INTERVAL_SECONDS": str(interval),
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


def status_of(cluster: k8s.Cluster, ns: str) -> dict[str, Any]:
    cr = cluster.get_resource(ns, NAME)
    return dict((cr or {}).get("status") or {})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or () if c["type"] == kind), {})


def served(cluster: k8s.Cluster, ns: str, commit: str) -> bool:
    st = status_of(cluster, ns)
    return st.get("servedCommit") == commit and condition(st, "Ready").get("status") == "True"


def template_commit(cluster: k8s.Cluster, ns: str) -> str | None:
    d = cluster.read_deployment(ns, NAME) or {}
    return ((d.get("spec") or {}).get("template", {}).get("metadata", {}).get("labels", {})
            .get(ko.LABEL_VERSION))


def answer(cluster: k8s.Cluster, ns: str) -> str | None:
    for pod in cluster.list_pods(ns, NAME):
        if pod.ready and pod.endpoint:
            status, body = http_get(f"{pod.endpoint}/v2/models/{NAME}")
            if status == 200:
                return str(json.loads(body)["version"])
    return None


def grpc_version(cluster: k8s.Cluster, ns: str) -> str | None:
    """The serving version as a ready pod's v2 gRPC API says (tritonclient, in a child: its
    protobuf module and ours must not share an interpreter)."""
    for pod in cluster.list_pods(ns, NAME):
        if pod.ready and pod.endpoint:
            host = urllib.parse.urlsplit(pod.endpoint).hostname
            code = ("import sys, tritonclient.grpc as g; c = g.InferenceServerClient(sys.argv[1]); "
                    "print(c.get_model_metadata(sys.argv[2]).versions[0])")
            done = subprocess.run([sys.executable, "-c", code, f"{host}:{GRPC_PORT}", NAME],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr[-2000:]
            return done.stdout.strip()
    return None


def push_past_the_hook(repo: Path, change: Callable[[Path], None], message: str) -> str:
    bare = Path(git.remote_url(repo) or "")
    (bare / "hooks" / "pre-receive").unlink(missing_ok=True)
    change(repo)
    sha = git.commit(repo, message=message, paths=["manifests", "quarantine.yaml"])
    assert sha is not None
    git.push(repo)
    return sha


def test_the_operator_deploys_what_git_says_holds_what_it_must_and_survives_a_restart(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    ns = k8s_namespace
    figures: dict[str, float] = {}
    v1 = publish_version(name=NAME, seed=0)
    with Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet:
        with operator(k8s_cluster, ns, repo, tmp_path / "operator", grpc_port=GRPC_PORT):
            began = time.monotonic()
            wait_for("v1 Ready through the operator", lambda: served(cluster, ns, v1), kubelet=kubelet)
            figures["commit -> Ready (v1, operator start included)"] = time.monotonic() - began
            cr = cluster.get_resource(ns, NAME)
            assert cr is not None
            assert cr["metadata"]["annotations"][ko.ANNOTATION_COMMIT] == v1
            assert template_commit(cluster, ns) == v1
            deployment = cluster.read_deployment(ns, NAME)
            assert deployment is not None
            assert deployment["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
            assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
            service = cluster.read_service(ns, NAME)
            assert service is not None
            assert {"name": "grpc", "port": GRPC_PORT} in [
                {"name": p["name"], "port": p["port"]} for p in service["spec"]["ports"]]
            assert answer(cluster, ns) == v1
            assert grpc_version(cluster, ns) == v1  # the pod serves the v2 gRPC API too
            st = status_of(cluster, ns)
            assert st["lastAppliedCommit"] == v1 and st["observedGeneration"] == cr["metadata"]["generation"]
            assert "Deployed" in {e.get("reason") for e in cluster.events(cr)}

            # -- v2 rolls out -----------------------------------------------------------------
            began = time.monotonic()
            v2 = publish_version(name=NAME, seed=1)
            wait_for("v2 Ready", lambda: served(cluster, ns, v2), kubelet=kubelet)
            figures["commit -> Ready (v2 rollout)"] = time.monotonic() - began
            assert answer(cluster, ns) == v2

            # -- the monitor's reads of idle pods: 304 answers, the merged snapshot reused ------
            pod_stats = PodStats(cluster, ns)

            def read_twice_without_a_body() -> bool:
                snap, fetched = pod_stats.read(NAME, v2), pod_stats.fetched
                return pod_stats.read(NAME, v2) is snap and pod_stats.fetched == fetched > 0

            wait_for("idle pods answering the monitor with 304", read_twice_without_a_body,
                     timeout=30, every=0.5)

            # -- an invalid manifest: Stalled, the serving Deployment untouched -----------------
            def break_manifest(r: Path) -> None:
                path = r / "manifests" / f"{NAME}.yaml"
                doc = yaml.safe_load(path.read_text())
                doc["spec"]["serving"]["replicas"] = "many"
                path.write_text(yaml.safe_dump(doc))

            bad = push_past_the_hook(repo, break_manifest, "a typo in the manifest")

            def stalled_on(commit: str) -> dict[str, Any] | None:
                c = condition(status_of(cluster, ns), "Stalled")
                return c if c.get("status") == "True" and commit[:12] in str(status_of(cluster, ns).get(
                    "lastAttemptedCommit", ""))[:12] else None

            held = wait_for("the invalid version held", lambda: stalled_on(bad))
            assert "spec.serving.replicas" in held["message"]
            assert template_commit(cluster, ns) == v2 and answer(cluster, ns) == v2

            # -- the manifest fixed but the version quarantined: Stalled as Quarantined ---------
            def fix_and_quarantine(r: Path) -> None:
                git.run(r, "checkout", "-q", v2, "--", f"manifests/{NAME}.yaml")
                digest = validate.read_manifest(r, f"manifests/{NAME}.yaml").digest
                entry = quarantine.Entry(model=NAME, digest=digest, commit="f" * 40,
                                         reason="reverted by a test", at="2026-11-28T00:00:00Z")
                (r / "quarantine.yaml").write_text(
                    quarantine.HEADER + yaml.safe_dump({"entries": [entry.to_dict()]}))

            push_past_the_hook(repo, fix_and_quarantine, "quarantine v2")
            q = wait_for("the quarantined version held", lambda: (
                (c := condition(status_of(cluster, ns), "Stalled")).get("reason") == "Quarantined" and c))
            assert "quarantined" in q["message"]
            assert template_commit(cluster, ns) == v2 and answer(cluster, ns) == v2
            before = cluster.read_deployment(ns, NAME)
            assert before is not None
            pods_before = {p.name for p in cluster.list_pods(ns, NAME)}

        # -- the operator restarted: it resumes without redeploying -----------------------------
        with operator(k8s_cluster, ns, repo, tmp_path / "operator"):
            time.sleep(6)  # a stretch in which nothing may be redeployed (a negative check)
            after = cluster.read_deployment(ns, NAME)
            assert after is not None
            assert after["metadata"]["generation"] == before["metadata"]["generation"]
            assert {p.name for p in cluster.list_pods(ns, NAME)} == pods_before
            assert condition(status_of(cluster, ns), "Stalled").get("reason") == "Quarantined"
            # the decision log: each deploy and each hold once, across the restart
            log = [(d.kind.value, d.version, d.verdict or "") for d in decision_log.read(
                tmp_path / "operator" / "reports", model=NAME)]
            assert [v for k, v, _ in log if k == "deploy"] == [v1, v2]
            holds = [(v, why) for k, v, why in log if k == "hold"]
            assert len(holds) == 2 and len({v for v, _ in holds}) == 2
            assert holds[0][0] == bad and "spec.serving.replicas" in holds[0][1]
            assert "quarantined" in holds[1][1]

            # -- the model removed from Git: its resource goes, and what it owns with it --------
            git.run(repo, "rm", "-r", "-q", f"models/{NAME}", f"manifests/{NAME}.yaml")
            assert git.commit(repo, message=f"retire {NAME}", paths=["models", "manifests"])
            git.push(repo)
            wait_for("the resource deleted", lambda: cluster.get_resource(ns, NAME) is None)
            wait_for("the Deployment and Service garbage-collected", lambda: (
                cluster.read_deployment(ns, NAME) is None and cluster.read_service(ns, NAME) is None),
                timeout=180)
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in figures.items()))


@pytest.mark.timeout(900)  # MLflow and Evidently start in their own processes here
def test_drift_attributable_to_the_new_version_reverts_it_in_git_and_the_operator_rolls_back(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path,
) -> None:
    """v1 (population A) -> v2 (trained on B) serves -> live traffic is A -> the operator's
    monitor reads every pod's stats route, reverts v2 in Git (path-scoped, quarantined) and the
    operator rolls back to v1's content because Git says so. Restarted, it reverts nothing twice."""
    import httpx
    from support.data import FEATURES, make_frame, train

    import mlgitops
    from mlgitops.authoring import repository
    from mlgitops.core import layout

    ns = k8s_namespace
    work = tmp_path / "models-repo"
    bare = repository.init(work)
    a, b = make_frame(1500, seed=1), make_frame(1500, shift=1.5, seed=2)
    mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label", push=False,
                     quiet=True, message="credit v1 on population A")
    path = work / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["drift"].update({"windowRows": 500, "minRows": 300, "consecutiveWindows": 1,
                                 "cooldownSeconds": 0, "maxReverts": 1})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(work, message="credit: small drift windows", paths=[layout.MANIFESTS])
    git.push(work)
    figures: dict[str, float] = {}
    with Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet:
        with operator(k8s_cluster, ns, work, tmp_path / "operator"):
            wait_for("v1 Ready", lambda: (st := status_of(cluster, ns)).get("servedDigest")
                     and served(cluster, ns, str(st.get("servedCommit"))), kubelet=kubelet)
            v1 = str(status_of(cluster, ns)["servedCommit"])
            v2 = str(mlgitops.publish(train(b, seed=2), b, name=NAME, repo=work, target="label",
                                      quiet=True, message="credit v2 on population B"))
            # the operator is stopped in the middle of v2's rollout ...
            wait_for("v2's rollout started", lambda: template_commit(cluster, ns) == v2)
            stopped_at = (cluster.read_deployment(ns, NAME) or {})["metadata"]["generation"]
        # ... and a new one converges without starting it over (the Deployment is not rewritten)
        with operator(k8s_cluster, ns, work, tmp_path / "operator", tracking=True):
            wait_for("v2 Ready", lambda: served(cluster, ns, v2), kubelet=kubelet)
            deployment = cluster.read_deployment(ns, NAME)
            assert deployment is not None and deployment["metadata"]["generation"] == stopped_at
            traffic = make_frame(1200, seed=9)[FEATURES]
            began = time.monotonic()

            def send_and_look() -> str | None:
                for pod in cluster.list_pods(ns, NAME):
                    if pod.ready and pod.commit == v2 and pod.endpoint:
                        rows = traffic.sample(100, random_state=int(time.monotonic() * 1000) % 2**31)
                        # v2's pod goes once the revert has switched the Service and drained it
                        with contextlib.suppress(httpx.TransportError):
                            httpx.post(f"{pod.endpoint}/invocations", timeout=10,
                                       json={"dataframe_records": rows.to_dict(orient="records")})
                for e in git.log(bare, "refs/heads/main", layout.model_paths(NAME), limit=3):
                    if e.trailers.get(layout.TRAILER_REVERTS) == v2:
                        return e.commit
                time.sleep(0.2)
                return None

            revert = wait_for("the revert commit of v2 on the remote", send_and_look, timeout=180)
            figures["first drifted row -> revert commit"] = time.monotonic() - began
            entries = quarantine.parse(yaml.safe_load(git.show(bare, revert, "quarantine.yaml") or b""),
                                       source="quarantine.yaml")
            assert [e.commit for e in entries] == [v2]
            for p in layout.model_paths(NAME):
                assert git.tree_id(bare, revert, p) == git.tree_id(bare, f"{v2}^", p)
            wait_for("v1's content serving again", lambda: served(cluster, ns, revert), kubelet=kubelet)
            figures["revert commit -> rolled back (Ready)"] = time.monotonic() - began - figures[
                "first drifted row -> revert commit"]
            # v1's pods, kept warm (spec.rollout.scaleDownDelaySeconds), answer as v1 (the
            # Service is switched by the operator's hook right after the status is written)
            wait_for("v1's pods answering", lambda: answer(cluster, ns) in (revert, v1), timeout=30)
            cr = cluster.get_resource(ns, NAME)
            assert cr is not None and "Reverted" in {e.get("reason") for e in cluster.events(cr)}
            assert status_of(cluster, ns).get("drift"), "the verdict is on the resource's status"
            the_decisions_are_recorded_as_the_embedded_controller_records_them(
                tmp_path / "operator", bare, v2=v2, revert=revert)
        reverts_before = [e.commit for e in git.log(bare, "refs/heads/main") if layout.TRAILER_REVERTS in e.trailers]
        with operator(k8s_cluster, ns, work, tmp_path / "operator"):
            time.sleep(8)  # a stretch in which no second revert may be made (a negative check)
        reverts_after = [e.commit for e in git.log(bare, "refs/heads/main") if layout.TRAILER_REVERTS in e.trailers]
        assert reverts_after == reverts_before == [revert]
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in figures.items()))


def the_decisions_are_recorded_as_the_embedded_controller_records_them(
        state: Path, bare: Path, *, v2: str, revert: str) -> None:
    """Every deploy (v1, v2, the revert commit) and the revert in the operator's decision log,
    each with its page; in MLflow, ``production`` on v1's content and v2 quarantined; in the
    Evidently workspace, the revert window's snapshot."""
    from mlgitops.adapters import evidently_workspace, mlflow_tracking
    from mlgitops.controller import decision_pages, reports, tracking
    from mlgitops.core import decisions, layout

    root = state / reports.REPORTS

    def recorded() -> list[tuple[str, str | None]] | None:
        seen = [(d.kind.value, d.version) for d in decision_log.read(root, model=NAME)
                if d.kind.value in ("deploy", "revert")]
        return seen if ("deploy", revert) in seen else None

    seen = wait_for("the deploy of the revert commit in the decision log", recorded, timeout=60)
    assert ("deploy", v2) in seen and ("revert", v2) in seen
    assert len([v for k, v in seen if k == "deploy"]) == len({v for k, v in seen if k == "deploy"})
    for d in decision_log.read(root, model=NAME):
        if d.kind in (decisions.Kind.DEPLOY, decisions.Kind.REVERT):
            wait_for(f"the page of {d.id}", lambda d=d: decision_pages.page_file(
                root, NAME, d.id).is_file() or None, timeout=60)
    v1_digest = yaml.safe_load(git.show(bare, revert, layout.manifest_path(NAME)) or b"")[
        "spec"]["model"]["digest"]
    tracker = mlflow_tracking.Tracker(mlflow_tracking.default_uri(state),
                                      artifact_root=tracking.artifact_root(state))

    def production() -> str | None:
        if not (state / mlflow_tracking.DB_FILE).exists():
            return None
        with contextlib.suppress(errors.MlgitopsError):  # the model is not registered yet
            prod = tracker.alias(NAME)
            return prod.tags.get("mlgitops.digest") if prod is not None else None
        return None

    wait_for("MLflow's production alias on v1's content", lambda: production() == v1_digest or None,
             timeout=300, every=1.0)
    # the reverted version is tagged before the alias moves
    quarantined = [v for v in tracker.versions(NAME) if v["tags"].get("mlgitops.commit") == v2]
    assert quarantined and quarantined[0]["tags"].get("mlgitops.quarantined") == "true"
    assert quarantined[0]["tags"].get("mlgitops.revertedBy") == revert
    def revert_snapshot() -> bool | None:
        try:  # read while the sink writes: a half-written file is "not yet"
            found = evidently_workspace.snapshots(reports.workspace_dir(state), model=NAME)
        except errors.ReportError:
            return None
        return any("verdict=revert" in s.tags and "mlgitops:window" in s.tags
                   for s in found) or None

    wait_for("the revert window's Evidently snapshot", revert_snapshot, timeout=300, every=1.0)


def test_a_signed_push_webhook_syncs_at_once(
    cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    """With a 10-minute poll, only GitHub's push webhook (HMAC-verified) makes the operator see
    a commit; a wrong signature changes nothing."""
    import hashlib
    import hmac

    import httpx
    from support.net import free_port

    ns, port, secret = k8s_namespace, free_port(), "s3cret"
    with operator(k8s_cluster, ns, repo, tmp_path / "operator", interval=600, http_port=port,
                  secret=secret):
        url = f"http://127.0.0.1:{port}/hooks/github"
        wait_for("the operator's port", lambda: _answers(url))
        time.sleep(2)  # the first sync (an empty repository) is done
        v1 = publish_version(name=NAME, seed=0)
        body = json.dumps({"ref": "refs/heads/main", "after": v1}).encode()
        bad = httpx.post(url, content=body, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64,
                                                      "X-GitHub-Event": "push"}, timeout=5)
        assert bad.status_code == 401
        time.sleep(3)  # a stretch in which an unsigned push may fetch nothing (a negative check)
        assert cluster.get_resource(ns, NAME) is None  # nothing fetched without a valid push
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        began = time.monotonic()
        ok = httpx.post(url, content=body, headers={"X-Hub-Signature-256": signature,
                                                     "X-GitHub-Event": "push"}, timeout=5)
        assert ok.status_code == 202, ok.text
        cr = wait_for("the ModelDeployment of v1", lambda: cluster.get_resource(ns, NAME), timeout=30)
        assert cr["metadata"]["annotations"][ko.ANNOTATION_COMMIT] == v1
        print(f"\nwebhook -> ModelDeployment: {time.monotonic() - began:.1f} s")

        # the port knows the model (no kubelet here: nothing serves it): /status lists it,
        # /v2/health/ready waits on it, a request for it is a 503 to retry, an unknown one 404
        base = f"http://127.0.0.1:{port}"

        def listed() -> list[dict[str, Any]]:
            doc = httpx.get(f"{base}/status", timeout=5).json()
            return [m for m in doc["models"] if m["name"] == NAME and m["desiredCommit"] == v1]

        (model,) = wait_for("the model in the port's /status", listed, timeout=30)
        assert (model["namespace"], model["servedCommit"]) == (ns, None), model
        ready = httpx.get(f"{base}/v2/health/ready", timeout=5)
        assert (ready.status_code, ready.json()["missing"]) == (503, [NAME]), ready.text
        rows = {"dataframe_records": [{"x": 1.0}]}
        known = httpx.post(f"{base}/models/{NAME}/invocations", json=rows, timeout=5)
        unknown = httpx.post(f"{base}/models/nope/invocations", json=rows, timeout=5)
        assert (known.status_code, unknown.status_code) == (503, 404), (known.text, unknown.text)


def _answers(url: str) -> bool:
    import httpx

    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False
