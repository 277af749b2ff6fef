"""The operator's runtime for one repository plus its gateway on a loopback port, for the
progressive-rollout cluster tests (`test_rollout_progressive`, `test_rollout_monitor`).

`rigged` wires what ``mlgitops operator`` wires for a repository (`operator.runtime`) and the
operator's HTTP port (`controller.gateway` over `operator.traffic.Traffic`, whose pod addresses
are refreshed by its own thread as in `operator.handlers`); `support.users.Users` post
through that gateway and count every answer by the version it names, and every failure.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from kubernetes import client
from support import scenarios
from support.data import FEATURES, make_frame, train
from support.repos import with_v1

import mlgitops
from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters.kubernetes import versions
from mlgitops.adapters.kubernetes.api import HTTP_ROUTE
from mlgitops.controller import gateway
from mlgitops.core import layout
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet
from mlgitops.operator.runtime import Repository, RepositoryRuntime
from mlgitops.operator.traffic import Traffic

NAME = scenarios.NAME
RECORDS = make_frame(200, seed=9)[FEATURES].to_dict(orient="records")
#: a step's drift check waits for windowRows of the candidate's rows (on 300, up to 10% of the
#: windows of this very population breach: noise, not drift; bench/drift_false_alarms.py)
DRIFT = {"windowRows": 1000, "minRows": 500, "consecutiveWindows": 1, "cooldownSeconds": 0,
         "maxReverts": 3, "revertPeriodSeconds": 3600}
#: latency is not judged here (a shared test machine's timings are not evidence)
ANALYSIS = {"minRows": 100, "minAgreement": 0.8, "maxLatencyRatio": 1000}


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0,
               detail: Callable[[], str] | None = None) -> Any:
    """``check()``'s first true answer; fails after ``timeout`` with ``detail()``'s account
    of the state, when given."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}"
                        + (f"\n{detail()}" if detail is not None else ""))
        time.sleep(0.2)


def install_gateway_api(api: client.ApiClient) -> None:
    """The Gateway API's HTTPRoute CRD (its group, kind and version; the schema left open)."""
    ext = client.ApiextensionsV1Api(api)
    body = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{HTTP_ROUTE.plural}.{HTTP_ROUTE.group}",
                     # a *.k8s.io group: the upstream CRDs carry this approval annotation
                     "annotations": {"api-approved.kubernetes.io":
                                     "https://github.com/kubernetes-sigs/gateway-api/pull/2466"}},
        "spec": {"group": HTTP_ROUTE.group, "scope": "Namespaced",
                 "names": {"plural": HTTP_ROUTE.plural, "singular": "httproute",
                           "kind": HTTP_ROUTE.kind, "listKind": "HTTPRouteList"},
                 "versions": [{"name": HTTP_ROUTE.version, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    try:
        ext.create_custom_resource_definition(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        got = ext.read_custom_resource_definition(body["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True"
                   for c in (got.status.conditions or []))

    wait_until("the HTTPRoute CRD is established", established)


@dataclass
class Rig:
    bare: Path
    runtime: RepositoryRuntime
    cluster: k8s.Cluster
    namespace: str
    kubelet: Kubelet
    traffic: Traffic
    url: str

    def converge(self) -> None:
        scenarios.converge(self.runtime.reconciler, timeout=180.0)

    def explain(self) -> str:
        """The model's rollout status, its last events and the remote's head: what a failed
        wait reports."""
        st = self.runtime.store.status(NAME)
        lines = [f"served {st.served_commit and st.served_commit[:12]}, rollout {st.rollout}",
                 f"remote head {remote_head(self.bare).subject!r}"]
        lines += [f"event {e}" for e in list(self.runtime.store.events(NAME))[-12:]]
        return "\n".join(lines)

    def ask(self, n: int) -> collections.Counter[str]:
        """``n`` user requests through the operator's gateway: which version answered each."""
        self.traffic.refresh()
        seen: collections.Counter[str] = collections.Counter()
        with httpx.Client(timeout=30) as http:
            for i in range(n):
                r = http.post(f"{self.url}/models/{NAME}/invocations",
                              json={"dataframe_records": RECORDS[(i * 5) % 195:(i * 5) % 195 + 5]})
                assert r.status_code == 200, r.text
                seen[r.headers[gateway.VERSION_HEADER]] += 1
        return seen

    @contextlib.contextmanager
    def operating(self, *, monitor_every: float = 0.2) -> Iterator[None]:
        """The operator's loop, monitor and route keeper running (`run_forever`), as in the
        operator process, until the block ends."""
        self.runtime.monitor.interval = monitor_every
        stop = threading.Event()
        runner = threading.Thread(target=self.runtime.run_forever, args=(stop,), daemon=True)
        runner.start()
        try:
            yield
        finally:
            stop.set()
            runner.join(timeout=30)


@contextlib.contextmanager
def rigged(bare: Path, cluster_: TestCluster, namespace: str, tmp_path: Path,
           interval: float = 10.0) -> Iterator[Rig]:
    """The operator's runtime for the remote ``bare`` and its gateway on a loopback port."""
    cfg = settings.OperatorSettings(repo_url=f"file://{bare}", namespace=namespace,
                                    state_dir=tmp_path / "operator", progress_deadline_seconds=60)
    with (k8s.Cluster.from_kubeconfig(cluster_.kubeconfig_path, timeout=20) as cluster,
          Kubelet(cluster_, namespace, workdir=tmp_path / "kubelet",
                  backoff=(1.0, 5.0)) as kubelet):
        install_crds(cluster.api)
        install_gateway_api(cluster.api)
        runtime = RepositoryRuntime(cluster, cfg, Repository("flags", cfg.repo_url, namespace,
                                                             interval_seconds=interval))
        traffic = Traffic()
        traffic.add("flags", runtime.router, cluster, namespace)
        stop = threading.Event()
        traffic.start(stop)  # the pods' addresses, as the operator's handlers start it
        app = gateway.build(router=traffic, trigger=lambda why: None, statuses=list,
                            webhook_secret=None)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_until("the gateway answers", lambda: server.started)
        try:
            yield Rig(bare, runtime, cluster, namespace, kubelet, traffic,
                      f"http://127.0.0.1:{port}")
        finally:
            stop.set()
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


def repo_with(root: Path, rollout: dict[str, Any]) -> tuple[Path, Path, str]:
    """A models repository whose v1 (population A) has ``spec.rollout`` and small drift
    windows, pushed: (work tree, bare remote, v1's commit)."""
    work, bare, _, _ = with_v1(root, {"drift": DRIFT, "rollout": rollout}, name=NAME,
                               message=f"rollout {rollout['strategy']}")
    stable = git.rev_parse(work, "HEAD")
    assert stable is not None
    git.push(work)
    return work, bare, stable


def publish_v2(work: Path, *, bad: bool) -> str:
    """v2, pushed: trained on a shifted population B (bad on live traffic) or on A again."""
    frame = make_frame(1500, shift=1.5, seed=2) if bad else make_frame(1500, seed=3)
    v2 = str(mlgitops.publish(train(frame, seed=3), frame, name=NAME, repo=work,
                              target="label", push=False, quiet=True,
                              message=f"credit v2 ({'bad' if bad else 'good'})"))
    git.push(work)
    return v2


def remote_head(bare: Path) -> git.LogEntry:
    (head,) = git.log(bare, "main", [], limit=1)
    return head


def reverted(bare: Path, version: str) -> git.LogEntry | None:
    """The remote's head when it is the revert of ``version`` (its ``Reverts`` trailer)."""
    head = remote_head(bare)
    return head if head.trailers.get(layout.TRAILER_REVERTS) == version else None


def selected(rig: Rig, service: str) -> str | None:
    """The pod template the Service ``service`` selects."""
    got = client.CoreV1Api(rig.cluster.api).read_namespaced_service(service, rig.namespace)
    return (got.spec.selector or {}).get(versions.LABEL_TEMPLATE)


def template_of(rig: Rig, deployment: str) -> str | None:
    found = rig.cluster.read_deployment_named(rig.namespace, deployment)
    return None if found is None else versions.template_of(found)
