"""``mlgitops demo --shadow --kubernetes``: the shadow story on a local Kubernetes API server.

A throw-away control plane and the kubelet stand-in (as ``demo --kubernetes``), the operator
(kopf) in this process with its HTTP port on loopback, users posting live rows through that
port the whole time. v1 (population A) is published with ``spec.rollout.strategy: shadow``;
v2 (trained on a shifted population) gets its own Deployment and Service beside v1's, and the
operator's gateway sends it a copy of each user request; the operator's monitor judges its
answers against v1's on the same rows, the rollout fails, and the operator reverts v2 in Git
(path-scoped revert + quarantine) before any user request was answered by it. Every response
names its version (``x-mlgitops-version``): the demo counts them. Everything is stopped on the
way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from mlgitops import settings, ui
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters import validator
from mlgitops.authoring.publishing import publish
from mlgitops.core import k8s_objects as ko
from mlgitops.demo import examples
from mlgitops.demo import k8s as demo_k8s
from mlgitops.demo.embedded import free_port, reverted_by
from mlgitops.demo.shadow import MODEL, VERSION_HEADER, Users, start_repository
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet
from mlgitops.operator import handlers

NAMESPACE = demo_k8s.NAMESPACE


def run(*, workdir: Path | None = None) -> dict[str, Any]:
    """Run the story; what it measured (also printed)."""
    settings.telemetry_off()
    base_dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlgitops-demo-k8s-"))
    base_dir.mkdir(parents=True, exist_ok=True)
    repo = base_dir / "models-repo"
    steps = ui.Steps("demo --shadow --kubernetes")
    ui.console.rule("[bold]mlgitops demo --shadow --kubernetes[/]: a bad version judged on "
                    "copies of live traffic by the operator, reverted before any user sees it")
    bins = demo_k8s.bin_dir(steps)
    dev = TestCluster(bins, parent_dir=base_dir, log=lambda _msg: None)
    try:
        with steps.step("start a local Kubernetes API server (etcd, kube-apiserver, "
                        "kube-controller-manager)"):
            dev.start()
        with k8s.Cluster.from_kubeconfig(dev.kubeconfig_path, timeout=20) as cluster:
            with steps.step(f"install the CRDs and create namespace {NAMESPACE}"):
                install_crds(cluster.api)
                dev.request("/api/v1/namespaces", method="POST", body={
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            found = _story(dev, cluster, repo, base_dir, steps)
    finally:
        validator.stop(Path(str(repo) + ".git"))
        with steps.step("stop the local API server"):
            dev.stop()
    _print(found, repo)
    return found


def _story(dev: TestCluster, cluster: k8s.Cluster, repo: Path, base_dir: Path,
           steps: ui.Steps) -> dict[str, Any]:
    bare = start_repository(repo, steps)
    port = free_port()
    env = {
        "MLGITOPS_OPERATOR_REPO_URL": f"file://{bare}",
        "MLGITOPS_OPERATOR_NAMESPACE": NAMESPACE,
        "MLGITOPS_OPERATOR_INTERVAL_SECONDS": "1",
        "MLGITOPS_OPERATOR_STATE_DIR": str(base_dir / "operator"),
        "MLGITOPS_OPERATOR_KUBECONFIG": str(dev.kubeconfig_path),
        "MLGITOPS_OPERATOR_PROGRESS_DEADLINE_SECONDS": "120",
        "MLGITOPS_OPERATOR_HTTP_PORT": str(port),
        "KUBECONFIG": str(dev.kubeconfig_path),
    }
    gateway = f"http://127.0.0.1:{port}/models/{MODEL}/invocations"
    kubelet = Kubelet(dev, NAMESPACE, workdir=base_dir / "kubelet", backoff=(1.0, 5.0),
                      log=lambda _msg: None)
    with contextlib.ExitStack() as stack:
        with steps.step("start the kubelet stand-in and the operator (kopf, in this process; "
                        f"its gateway on 127.0.0.1:{port})"):
            stack.enter_context(kubelet)
            stack.enter_context(demo_k8s._operator_env(env))
            stack.enter_context(handlers.running(NAMESPACE))
        with steps.step("operator: Git -> ModelDeployment -> Deployment; v1 Ready and "
                        "answering through the operator's gateway"):
            v1 = demo_k8s.wait_for("v1 Ready", lambda: demo_k8s._ready_on(cluster))
            demo_k8s.wait_for("v1 answering through the gateway",
                              lambda: _answered_by(gateway) == v1, timeout=120)
        users = Users(gateway, examples.credit_population(5000, seed=7)
                      .drop(columns=examples.TARGET))
        users.thread.start()
        stack.callback(users.thread.join, 30)
        stack.callback(users.stop.set)
        b = examples.credit_population(4000, shift=1.0, seed=2)
        with steps.step("train v2 on population B (shifted) and publish it"):
            v2 = str(publish(examples.train_credit_model(b, seed=2), b, name=MODEL, repo=repo,
                             target=examples.TARGET, quiet=True,
                             message="credit-risk v2: retrained on population B"))
            pushed = time.perf_counter()
        with steps.step("v2's own Deployment and Service start beside v1's; the operator's "
                        "gateway copies each user request to it"):
            demo_k8s.wait_for("v2 beside v1", lambda: _rollout(cluster).get("version") == v2,
                              timeout=240)
        with steps.step("the operator's monitor judges v2's answers: the rollout fails, "
                        "Git reverts"):
            revert = demo_k8s.wait_for("the revert of v2", lambda: reverted_by(bare, v2),
                                       timeout=300)
            to_revert = time.perf_counter() - pushed
        with steps.step("the operator drops v2's Deployment because Git no longer names it"):
            demo_k8s.wait_for("v2's Deployment deleted", lambda: not any(
                ko.pinned_commit(d) == v2 for d in cluster.deployments(NAMESPACE, MODEL)),
                timeout=180)
        users.stop.set()
        users.thread.join(timeout=30)
        status = _rollout(cluster)
        analysis = status.get("analysis") or {}
        found = {
            "v1": v1, "v2": v2, "revert": revert.commit, "revertSubject": revert.subject,
            "userAnswersByV2": users.by_version.get(v2, 0),
            "userAnswersByStable": sum(n for v, n in users.by_version.items() if v != v2),
            "copiesAnsweredByV2": analysis.get("requests"),
            "failedRequests": len(users.failed), "pushToRevertSeconds": round(to_revert, 2),
            "phase": status.get("phase"), "reason": status.get("reason", ""),
            "agreement": analysis.get("agreement"),
            "podProcessesLeft": None,
        }
    found["podProcessesLeft"] = kubelet.running_processes()
    return found


def _answered_by(url: str) -> str | None:
    rows = examples.credit_population(5, seed=3).drop(columns=examples.TARGET)
    try:
        r = httpx.post(url, json={"dataframe_records": rows.to_dict(orient="records")},
                       timeout=10)
    except httpx.HTTPError:
        return None
    return r.headers.get(VERSION_HEADER) if r.status_code == 200 else None


def _rollout(cluster: k8s.Cluster) -> dict[str, Any]:
    cr = cluster.get_resource(NAMESPACE, MODEL) or {}
    return dict((cr.get("status") or {}).get("rollout") or {})


def _print(found: dict[str, Any], repo: Path) -> None:
    table = Table(title="mlgitops demo --shadow --kubernetes")
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    for k, v in [("v1 (stable)", found["v1"][:12]), ("v2 (bad, shadowed)", found["v2"][:12]),
                 ("revert commit", f"{found['revert'][:12]} {found['revertSubject']}"),
                 ("user requests answered by v2", str(found["userAnswersByV2"])),
                 ("user requests answered by v1's content", str(found["userAnswersByStable"])),
                 ("copies v2 answered (never returned)", str(found["copiesAnsweredByV2"])),
                 ("failed user requests", str(found["failedRequests"])),
                 ("v2 pushed → revert on the remote", f"{found['pushToRevertSeconds']:.1f} s"),
                 ("rollout", f"{found['phase']}: {found['reason']}"),
                 ("pod processes left running", str(found["podProcessesLeft"]))]:
        table.add_row(k, v)
    ui.console.print(table)
    ui.console.print(f"v2 answered {found['userAnswersByV2']} user requests through the "
                     f"operator's gateway; {found['failedRequests']} user requests failed.")
    ui.console.print(f"Repository: {repo}  (git log -3 shows the revert; quarantine.yaml "
                     "lists v2's digest)")
