"""The operator's scenarios on real pods: a real kubelet runs the image, fetching from Git in the pod.

`mlgitops operator` runs on the host as its user would run it, against the node's API server; the
model repository is served over HTTP on the bridge gateway, the only host address a pod reaches,
and the init container `fetch-model` clones it from inside the pod. Cases: v1 Ready (the pod as
the kubelet ran it: non-root, no capabilities, seccomp, read-only root); an invalid version
Stalled while v1 serves; v2 rolled out with zero failed requests; the serving pod killed and
recreated; drift on v2 -> the operator's revert commit -> rollback to v1's content.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import git_http

from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.devcluster import node as realnode

from .conftest import operator_process, wait

pytestmark = pytest.mark.realnode

NAME = "credit"


def status_of(cluster: k8s.Cluster, ns: str) -> dict[str, Any]:
    return dict((cluster.get_resource(ns, NAME) or {}).get("status") or {})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or () if c["type"] == kind), {})


def served(cluster: k8s.Cluster, ns: str, commit: str) -> bool:
    st = status_of(cluster, ns)
    return st.get("servedCommit") == commit and condition(st, "Ready").get("status") == "True"


def version_at(endpoint: str, timeout: float = 3.0) -> str | None:
    try:
        with urllib.request.urlopen(f"{endpoint}/v2/models/{NAME}", timeout=timeout) as resp:
            return str(json.loads(resp.read())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ready_endpoints(cluster: k8s.Cluster, ns: str) -> list[str]:
    """What a Service would route to: ready pods not being deleted."""
    return [p.endpoint for p in cluster.list_pods(ns, NAME)
            if p.ready and not p.terminating and p.endpoint]


def answer(cluster: k8s.Cluster, ns: str) -> str | None:
    for endpoint in ready_endpoints(cluster, ns):
        return version_at(endpoint)
    return None


def pod_processes(pod_uid: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if pod_uid.replace("-", "_") in (proc / "cgroup").read_text() or \
                        pod_uid in (proc / "cgroup").read_text():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def push_past_the_hook(repo: Path, change: Callable[[Path], None], message: str) -> str:
    bare = Path(git.remote_url(repo) or "")
    (bare / "hooks" / "pre-receive").unlink(missing_ok=True)
    change(repo)
    sha = git.commit(repo, message=message, paths=["manifests"])
    assert sha is not None
    git.push(repo)
    return sha


class Traffic(threading.Thread):
    """A client of the model as a Service would route it: each request to a ready pod, counted."""

    def __init__(self, cluster: k8s.Cluster, ns: str, rows: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.ns, self.rows = cluster, ns, rows
        self.stop = threading.Event()
        self.ok: list[str] = []
        self.failed: list[str] = []

    def run(self) -> None:
        body = json.dumps({"dataframe_records": self.rows}).encode()
        turn = 0
        while not self.stop.is_set():
            endpoints = ready_endpoints(self.cluster, self.ns)
            if not endpoints:
                self.failed.append("no ready pod")
            else:
                endpoint = endpoints[turn % len(endpoints)]
                turn += 1
                request = urllib.request.Request(f"{endpoint}/invocations", data=body,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as resp:
                        resp.read()
                    self.ok.append(endpoint)
                except (OSError, urllib.error.URLError) as exc:
                    self.failed.append(f"{endpoint}: {exc}")
            time.sleep(0.05)


@pytest.mark.timeout(900)  # the first test of the lane starts the node too
def test_v1_ready_invalid_held_v2_rolled_with_zero_failures_and_a_killed_pod_recreated(
    real_node: realnode.RealNode, node_cluster: k8s.Cluster, node_namespace: str, repo: Path,
    publish_version: Callable[..., str], tmp_path: Path,
) -> None:
    from support.data import FEATURES, make_frame

    cluster, ns, figures = node_cluster, node_namespace, {}
    oplog = tmp_path / "operator" / "operator.log"

    ops: list[subprocess.Popen[bytes]] = []

    def w(what: str, probe: Callable[[], Any], timeout: float = 240, every: float = 0.2) -> Any:
        return wait(what, probe, real_node=real_node, namespace=ns, operator_log=oplog,
                    operator=ops[-1] if ops else None, timeout=timeout, every=every)

    v1 = publish_version(name=NAME, seed=0)
    bare = Path(git.remote_url(repo) or "")
    with git_http.serve(bare, user="", password="", host=realnode.GATEWAY) as (url, _), \
            operator_process(real_node, ns, url, tmp_path / "operator") as op:
        ops.append(op)
        began = time.monotonic()
        w("v1 Ready on a real pod", lambda: served(cluster, ns, v1))
        figures["commit -> Ready (v1, operator start included)"] = time.monotonic() - began
        assert answer(cluster, ns) == v1

        # -- the pod as the kubelet ran it -------------------------------------------------------
        (raw,) = cluster.pods(ns, NAME)
        assert raw["spec"]["nodeName"] == realnode.NODE_NAME
        assert raw["status"]["podIP"].startswith(realnode.GATEWAY.rsplit(".", 1)[0] + ".")
        (init,) = raw["status"]["initContainerStatuses"]
        assert init["state"]["terminated"]["exitCode"] == 0
        assert init["imageID"] and raw["status"]["containerStatuses"][0]["image"] == \
            f"{realnode.IMAGE_NAME}:0.1.0"
        uid = raw["metadata"]["uid"]
        fetch_logs = list((real_node.state_dir / "pod-logs").glob(f"{ns}_*_{uid}/fetch-model/*.log"))
        assert fetch_logs and f"{v1[:12]}" in fetch_logs[0].read_text(), "fetched in the pod from Git"
        server_pids = [p for p in pod_processes(uid)
                       if b"serve" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert server_pids, "the server's process runs in the pod's cgroup"
        status = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{server_pids[0]}/status").read_text().splitlines() if ":\t" in line)
        assert status["Uid"].split()[:2] == ["10001", "10001"]
        assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"  # RuntimeDefault: a filter
        root = next(line.split() for line in Path(f"/proc/{server_pids[0]}/mountinfo").read_text()
                    .splitlines() if line.split()[4] == "/")
        assert "ro" in root[5].split(","), "the root filesystem is read-only"

        # -- an invalid version: Stalled, v1 keeps serving --------------------------------------
        def break_manifest(r: Path) -> None:
            path = r / "manifests" / f"{NAME}.yaml"
            doc = yaml.safe_load(path.read_text())
            doc["spec"]["serving"]["replicas"] = "many"
            path.write_text(yaml.safe_dump(doc))

        bad = push_past_the_hook(repo, break_manifest, "a typo in the manifest")
        held = w("the invalid version Stalled", lambda: (
            (c := condition(status_of(cluster, ns), "Stalled")).get("status") == "True"
            and str(status_of(cluster, ns).get("lastAttemptedCommit", ""))[:12] == bad[:12] and c),
            timeout=60, every=0.2)
        assert "spec.serving.replicas" in held["message"]
        assert answer(cluster, ns) == v1 and served(cluster, ns, v1)

        # -- v2 rolls out under traffic: zero failed requests -----------------------------------
        rows = make_frame(20, seed=5)[FEATURES].to_dict(orient="records")
        traffic = Traffic(cluster, ns, rows)
        traffic.start()
        try:
            time.sleep(1.0)
            began = time.monotonic()
            v2 = publish_version(name=NAME, seed=1, shift=0.3)
            w("v2 Ready", lambda: served(cluster, ns, v2) and
                     [p.commit for p in cluster.list_pods(ns, NAME)] == [v2])
            figures["commit -> Ready (v2 rollout)"] = time.monotonic() - began
            time.sleep(1.0)
        finally:
            traffic.stop.set()
            traffic.join(15)
        assert not traffic.failed, traffic.failed[:5]
        assert len(traffic.ok) > 20
        assert answer(cluster, ns) == v2

        # -- the serving pod killed: recreated from the image, serving v2 again ------------------
        (old,) = cluster.list_pods(ns, NAME)
        began = time.monotonic()
        real_node.cluster.request(  # type: ignore[union-attr]
            f"/api/v1/namespaces/{ns}/pods/{old.name}?gracePeriodSeconds=0", method="DELETE")
        new = w("a new pod Ready", lambda: next(
            (p for p in cluster.list_pods(ns, NAME) if p.name != old.name and p.ready), None),
            timeout=180, every=0.2)
        figures["pod killed -> new pod Ready"] = time.monotonic() - began
        assert new.endpoint and version_at(new.endpoint) == v2
        w("still Ready at v2", lambda: served(cluster, ns, v2), timeout=60)
    print("\nreal-node figures: " + json.dumps({k: round(v, 1) for k, v in figures.items()}))


@pytest.mark.timeout(600)
def test_drift_on_v2_reverts_it_in_git_and_real_pods_roll_back(
    real_node: realnode.RealNode, node_cluster: k8s.Cluster, node_namespace: str, tmp_path: Path,
) -> None:
    from support.data import FEATURES, make_frame, train

    import mlgitops
    from mlgitops.authoring import repository
    from mlgitops.core import layout, quarantine

    cluster, ns = node_cluster, node_namespace
    oplog = tmp_path / "operator" / "operator.log"

    ops: list[subprocess.Popen[bytes]] = []

    def w(what: str, probe: Callable[[], Any], timeout: float = 240, every: float = 0.2) -> Any:
        return wait(what, probe, real_node=real_node, namespace=ns, operator_log=oplog,
                    operator=ops[-1] if ops else None, timeout=timeout, every=every)

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
    with git_http.serve(Path(bare), user="", password="", host=realnode.GATEWAY) as (url, _), \
            operator_process(real_node, ns, url, tmp_path / "operator") as op:
        ops.append(op)
        w("v1 Ready", lambda: (st := status_of(cluster, ns)).get("servedDigest")
                 and served(cluster, ns, str(st.get("servedCommit"))))
        v1 = str(status_of(cluster, ns)["servedCommit"])
        v2 = str(mlgitops.publish(train(b, seed=2), b, name=NAME, repo=work, target="label",
                                  quiet=True, message="credit v2 on population B"))
        w("v2 Ready", lambda: served(cluster, ns, v2))
        traffic = make_frame(1200, seed=9)[FEATURES]
        began = time.monotonic()

        def send_and_look() -> str | None:
            for pod in cluster.list_pods(ns, NAME):
                if pod.ready and pod.commit == v2 and pod.endpoint:
                    rows = traffic.sample(100, random_state=int(time.monotonic() * 1000) % 2**31)
                    body = json.dumps({"dataframe_records": rows.to_dict(orient="records")}).encode()
                    request = urllib.request.Request(f"{pod.endpoint}/invocations", data=body,
                                                     headers={"Content-Type": "application/json"})
                    # v2's pod goes once the revert has switched the Service and drained it
                    with contextlib.suppress(OSError), \
                            urllib.request.urlopen(request, timeout=10) as resp:
                        resp.read()
            for e in git.log(Path(bare), "refs/heads/main", layout.model_paths(NAME), limit=3):
                if e.trailers.get(layout.TRAILER_REVERTS) == v2:
                    return e.commit
            time.sleep(0.2)
            return None

        revert = w("the operator's revert commit of v2 on the remote", send_and_look,
                          timeout=240)
        figures["first drifted row -> revert commit"] = time.monotonic() - began
        entries = quarantine.parse(yaml.safe_load(git.show(Path(bare), revert, "quarantine.yaml") or b""),
                                   source="quarantine.yaml")
        assert [e.commit for e in entries] == [v2]
        # v1's pods, kept warm (spec.rollout.scaleDownDelaySeconds), serve the revert: they
        # answer as v1, and v2's pods go
        w("v1's content serving again on real pods", lambda: served(cluster, ns, revert) and
                 {p.commit for p in cluster.list_pods(ns, NAME)} <= {v1, revert})
        figures["revert commit -> rolled back (Ready)"] = (
            time.monotonic() - began - figures["first drifted row -> revert commit"])
        w("v1's pods answering", lambda: answer(cluster, ns) in (v1, revert), timeout=30)
    print("\nreal-node drift figures: " + json.dumps({k: round(v, 1) for k, v in figures.items()}))
