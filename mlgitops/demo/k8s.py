"""``mlgitops demo --kubernetes``: the demo's story against a local Kubernetes API server.

A throw-away control plane (etcd + kube-apiserver + kube-controller-manager, `mlgitops.devcluster`),
a kubelet stand-in that runs pods as local processes, and the kopf operator in this process:
v1 (population A) -> Ready; v2 (trained on shifted population B) -> Ready; population-A traffic
to the serving pod -> the operator's drift monitor reverts v2 in Git -> the operator rolls back.
Everything is stopped on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from rich.table import Table

from mlgitops import errors, settings, ui
from mlgitops.adapters import git, validator
from mlgitops.adapters import kubernetes as k8s
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.core import layout
from mlgitops.demo import examples
from mlgitops.devcluster import gitserve, image
from mlgitops.devcluster import node as realnode
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet
from mlgitops.operator import handlers

MODEL = "credit-risk"
NAMESPACE = "mlgitops-demo"
BUILD_SH = Path(__file__).resolve().parents[2] / "tools" / "k8s" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")

T = TypeVar("T")


def bin_dir(steps: ui.Steps) -> Path:
    """Where etcd, kube-apiserver and kube-controller-manager are; built once when missing."""
    override = os.environ.get("MLGITOPS_K8S_BIN_DIR")
    if override:
        found = Path(override)
    elif BUILD_SH.exists():
        out = subprocess.run(["bash", str(BUILD_SH), "--print-bin-dir"], check=True,
                             capture_output=True, text=True)
        found = Path(out.stdout.strip())
    else:
        raise errors.ConfigError(
            "mlgitops demo --kubernetes needs etcd, kube-apiserver and kube-controller-manager: "
            "run it from a clone of the repository (tools/k8s/build.sh builds them) or set "
            "MLGITOPS_K8S_BIN_DIR to a directory holding them"
        )
    if all(os.access(found / b, os.X_OK) for b in BINARIES):
        return found
    if shutil.which("go") is None:
        raise errors.ConfigError(
            f"mlgitops demo --kubernetes needs etcd, kube-apiserver and kube-controller-manager in "
            f"{found}, and Go is not on PATH to build them: install Go (https://go.dev/dl/) and "
            f"run {BUILD_SH} (about 10 minutes on 2 cores, once)"
        )
    ui.console.print(f"building the Kubernetes binaries with {BUILD_SH} "
                     "(about 10 minutes on 2 cores, once)")
    with steps.step("build etcd, kube-apiserver, kube-controller-manager"):
        done = subprocess.run(["bash", str(BUILD_SH)], check=False)
    if done.returncode != 0:
        raise errors.RuntimeFailure(f"{BUILD_SH} failed with exit code {done.returncode}")
    return found


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 180.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.1)
    raise errors.RuntimeFailure(f"timed out after {timeout:.0f} s waiting for {what}")


def _status(cluster: k8s.Cluster) -> dict[str, Any]:
    cr = cluster.get_resource(NAMESPACE, MODEL)
    return dict((cr or {}).get("status") or {})


def _ready_on(cluster: k8s.Cluster, commit: str | None = None) -> str | None:
    """The served commit once the resource is Ready on it (on ``commit`` when given)."""
    st = _status(cluster)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in st.get("conditions") or ())
    served = st.get("servedCommit")
    if not ready or not served or not st.get("servedDigest") or (commit and served != commit):
        return None
    return str(served)


def _get_table(dev: TestCluster) -> list[list[str]]:
    """``kubectl get modeldeployments``: the API server's own Table (the CRD's printer columns)."""
    from mlgitops.core import manifest

    url = (f"{dev.server}/apis/{manifest.GROUP}/v1alpha1/namespaces/{NAMESPACE}/"
           f"{manifest.PLURAL}")
    req = urllib.request.Request(url)
    req.add_header("Authorization", f"Bearer {dev.token}")
    req.add_header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    context = ssl.create_default_context(cafile=str(dev.ca_path))
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        table = json.loads(resp.read())
    head = [str(c["name"]).upper() for c in table.get("columnDefinitions") or ()]
    rows = [[str(cell) for cell in r.get("cells") or ()] for r in table.get("rows") or ()]
    return [head, *rows]


def _format_columns(lines: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in lines if i < len(r)) for i in range(len(lines[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
                     for r in lines)


@contextlib.contextmanager
def _operator_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(*, workdir: Path | None = None, real_node: bool = False) -> None:
    """The story; `real_node`: on real pods (devcluster/node.py: the image, containerd, a kubelet)."""
    settings.telemetry_off()
    base_dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlgitops-demo-k8s-"))
    base_dir.mkdir(parents=True, exist_ok=True)
    repo = base_dir / "models-repo"
    steps = ui.Steps("demo --kubernetes")
    rows: list[tuple[str, str]] = []
    ui.console.rule("[bold]mlgitops demo --kubernetes[/]: Git says which model serves, "
                    "the operator deploys it" + (" to real pods" if real_node else ""))
    bins = bin_dir(steps)
    began = time.monotonic()
    node: realnode.RealNode | None = None
    if real_node:
        with steps.step("build the mlgitops image (cached; make image)"):
            try:
                archive = image.build(quiet=True)
            except image.ImageBuildError as exc:
                raise errors.ConfigError(f"demo --real-node: {exc}") from exc
        node = realnode.RealNode(bins, archive, log=lambda _msg: None)
        with steps.step("start a real node: API server, containerd, kubelet, scheduler; "
                        "import the image"):
            try:
                node.start()
            except realnode.NodeStartError as exc:
                raise errors.ConfigError(f"demo --real-node: {exc}") from exc
        assert node.cluster is not None
        dev = node.cluster
        rows.append(("real node", f"{realnode.NODE_NAME} Ready in {node.timings['total']:.1f} s "
                     f"(image import {node.timings['image import']:.1f} s)"))
    else:
        dev = TestCluster(bins, parent_dir=base_dir, log=lambda _msg: None)
    try:
        if node is None:
            with steps.step("start a local Kubernetes API server (etcd, kube-apiserver, "
                            "kube-controller-manager)"):
                dev.start()
        rows.append(("API server", f"{dev.server} (up in {dev.startup_seconds:.1f} s)"))
        with k8s.Cluster.from_kubeconfig(dev.kubeconfig_path, timeout=20) as cluster:
            with steps.step(f"install the CRDs and create namespace {NAMESPACE}"):
                install_crds(cluster.api)
                dev.request("/api/v1/namespaces", method="POST", body={
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            blocks = _story(dev, cluster, repo, base_dir, steps, rows, real=node is not None)
    finally:
        validator.stop(Path(str(repo) + ".git"))  # the remote's warm validator, if publish started one
        if node is not None:
            with steps.step("stop the node and undo what it did to the host"):
                left = node.stop()
            rows.append(("left on the host after teardown", str({k: v for k, v in left.items() if v})))
        else:
            with steps.step("stop the local API server (etcd, kube-apiserver, kube-controller-manager)"):
                dev.stop()
    rows.append(("whole demo", f"{time.monotonic() - began:.1f} s"))
    _print(rows, blocks, repo)


def _story(dev: TestCluster, cluster: k8s.Cluster, repo: Path, base_dir: Path, steps: ui.Steps,
           rows: list[tuple[str, str]], *, real: bool = False) -> list[tuple[str, str]]:
    """The story; returns (title, text) blocks to print after the table."""
    with steps.step(f"init model repository {repo} with a bare remote"):
        bare = repository.init(repo)
    a = examples.credit_population(1500, seed=1)
    b = examples.credit_population(1500, shift=1.5, seed=2)
    with steps.step("train v1 on population A and publish it (small drift windows for the demo)"):
        publish(examples.train_credit_model(a, seed=1), a, name=MODEL, repo=repo,
                         target=examples.TARGET, push=False, quiet=True,
                         message="credit-risk v1: trained on population A")
        path = repo / layout.manifest_path(MODEL)
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["drift"].update({"windowRows": 500, "minRows": 300, "consecutiveWindows": 1,
                                     "cooldownSeconds": 0, "maxReverts": 1})
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        git.commit(repo, message="credit-risk: small drift windows", paths=[layout.MANIFESTS])
        git.push(repo)
        pushed = time.monotonic()
    with contextlib.ExitStack() as stack:
        # real pods fetch over HTTP from the bridge gateway; the stand-in's from the file system
        url = (stack.enter_context(gitserve.serve(Path(bare), realnode.GATEWAY)) if real
               else f"file://{bare}")
        return _operate(dev, cluster, repo, bare, url, base_dir, steps, rows, pushed, b, real)


def _operate(dev: TestCluster, cluster: k8s.Cluster, repo: Path, bare: Path, url: str,
             base_dir: Path, steps: ui.Steps, rows: list[tuple[str, str]], pushed: float,
             b: Any, real: bool) -> list[tuple[str, str]]:
    env = {
        "MLGITOPS_OPERATOR_REPO_URL": url,
        "MLGITOPS_OPERATOR_NAMESPACE": NAMESPACE,
        "MLGITOPS_OPERATOR_INTERVAL_SECONDS": "1",
        "MLGITOPS_OPERATOR_STATE_DIR": str(base_dir / "operator"),
        "MLGITOPS_OPERATOR_KUBECONFIG": str(dev.kubeconfig_path),
        "MLGITOPS_OPERATOR_PROGRESS_DEADLINE_SECONDS": "120",
        "KUBECONFIG": str(dev.kubeconfig_path),
    }
    kubelet = None if real else Kubelet(dev, NAMESPACE, workdir=base_dir / "kubelet",
                                        backoff=(1.0, 5.0), log=lambda _msg: None)
    who = "the operator (kopf, in this process)" if real else \
        "the kubelet stand-in and the operator (kopf, in this process)"
    with contextlib.ExitStack() as stack:
        with steps.step(f"start {who}"):
            if kubelet is not None:
                stack.enter_context(kubelet)
            stack.enter_context(_operator_env(env))
            stack.enter_context(handlers.running(NAMESPACE))
        with steps.step("operator: Git -> ModelDeployment -> Deployment; v1 Ready"):
            v1 = wait_for("v1 Ready", lambda: _ready_on(cluster))
        rows.append(("v1 commit (with its small drift windows)", v1[:12]))
        rows.append(("commit -> Ready (v1, operator start included)",
                     f"{time.monotonic() - pushed:.1f} s"))
        with steps.step("train v2 on population B (shifted) and publish it"):
            v2 = str(publish(examples.train_credit_model(b, seed=2), b, name=MODEL,
                                      repo=repo, target=examples.TARGET, quiet=True,
                                      message="credit-risk v2: retrained on population B"))
            pushed = time.monotonic()
        with steps.step("operator rolls v2 out; v2 Ready"):
            wait_for("v2 Ready", lambda: _ready_on(cluster, v2))
        rows.append(("v2 commit", v2[:12]))
        rows.append(("commit -> Ready (v2 rollout)", f"{time.monotonic() - pushed:.1f} s"))
        revert, sent = _drift_and_revert(cluster, bare, v2, steps, rows)
        found = time.monotonic()
        with steps.step("operator rolls back to v1's content because Git says so"):
            wait_for("the rollback", lambda: _ready_on(cluster, revert))
        rows.append(("revert -> rolled back (Ready on the revert commit)",
                     f"{time.monotonic() - found:.1f} s ({time.monotonic() - sent:.1f} s after "
                     "the first drifted row)"))
        listing = _format_columns(_get_table(dev))
        cr = cluster.get_resource(NAMESPACE, MODEL) or {}
        events = [[str(e.get("type", "")), str(e.get("reason", "")), str(e.get("message", ""))]
                  for e in cluster.events(cr)]
        with steps.step(f"stop {who}"):
            stack.close()
    if kubelet is not None:
        rows.append(("pod processes left running", str(kubelet.running_processes())))
    return [
        (f"$ kubectl -n {NAMESPACE} get modeldeployments   (the API server's Table)", listing),
        (f"Events of modeldeployment/{MODEL} (oldest first)",
         _format_columns([["TYPE", "REASON", "MESSAGE"], *events])),
    ]


def _drift_and_revert(cluster: k8s.Cluster, bare: Path, v2: str, steps: ui.Steps,
                      rows: list[tuple[str, str]]) -> tuple[str, float]:
    traffic = examples.credit_population(1200, seed=9).drop(columns=examples.TARGET)
    sent = {"rows": 0, "failed": 0}
    started = time.monotonic()

    def send_and_look() -> str | None:
        for pod in cluster.list_pods(NAMESPACE, MODEL):
            if pod.ready and pod.commit == v2 and pod.endpoint:
                batch = traffic.sample(100, random_state=int(time.monotonic() * 1000) % 2**31)
                try:
                    r = httpx.post(f"{pod.endpoint}/invocations", timeout=10,
                                   json={"dataframe_records": batch.to_dict(orient="records")})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                sent["rows" if ok else "failed"] += len(batch) if ok else 1
        for e in git.log(bare, f"refs/heads/{layout.BRANCH}", layout.model_paths(MODEL), limit=3):
            if e.trailers.get(layout.TRAILER_REVERTS) == v2:
                rows.append(("revert commit", f"{e.commit[:12]} {e.subject}"))
                return e.commit
        time.sleep(0.2)
        return None

    with steps.step("live population-A traffic to the v2 pod; the operator's drift monitor "
                    "watches it"):
        revert = wait_for("the revert commit of v2 on the remote", send_and_look, timeout=240)
    rows.append(("breach -> revert commit", f"{time.monotonic() - started:.1f} s after the first "
                 f"drifted row ({sent['rows']} rows answered, {sent['failed']} failed requests)"))
    return revert, started


def _print(rows: list[tuple[str, str]], blocks: list[tuple[str, str]], repo: Path) -> None:
    table = Table(title="mlgitops demo --kubernetes", show_lines=True)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    ui.console.print(table)
    for title, text in blocks:
        ui.console.print(f"[bold]{title}[/]")
        ui.console.print(text, highlight=False, soft_wrap=True)
    git.fetch(repo)
    log = git.text(repo, "log", "--format=%h %s", f"origin/{layout.BRANCH}")
    ui.console.print("[bold]commits on the remote[/] (newest first):")
    ui.console.print(log, highlight=False)
    ui.console.print(f"Repository: {repo}")

