"""The real-node lane: one image, one node, for the whole session (tests marked `realnode`).

At the end of collection, if a selected test is marked `realnode`, the image is built (or found in
its cache: `make image`) outside any test, so pytest-timeout does not cut a cold build. The node
(mlgitops/devcluster/node.py: the control plane, containerd, the kubelet, the scheduler) starts
once, with the first test that needs it, and stops at the end of the session; its teardown must
leave nothing on the host, or the session errors.

A missing prerequisite (root, containerd, runc, the CNI plugins, umoci, debootstrap, gcc, the
kubelet) skips these tests, or fails them under MLGITOPS_REQUIRE_K8S=1 (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mlgitops.adapters import kubernetes as k8s
from mlgitops.devcluster import image, node
from mlgitops.devcluster.crds import install_crds

REPO = Path(__file__).resolve().parents[3]
BUILD_SH = REPO / "tools" / "k8s" / "build.sh"
T = TypeVar("T")
_state: dict[str, Any] = {"image": None, "missing": None, "error": None, "image_seconds": None}


def bin_dir() -> Path:
    out = subprocess.run(["bash", str(BUILD_SH), "--print-bin-dir"], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip())


@pytest.hookimpl(trylast=True)  # after tests/k8s/conftest.py has built the binaries
def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(item.get_closest_marker("realnode") for item in session.items):
        return
    missing = node.missing_prerequisites(bin_dir())
    missing += [f"{t} on PATH (apt-get install {t})" for t in ("debootstrap", "umoci")
                if shutil.which(t) is None and f"{t} on PATH" not in " ".join(missing)]
    if missing:
        _state["missing"] = "the real node needs " + "; ".join(missing)
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    capture = session.config.pluginmanager.get_plugin("capturemanager")
    began = time.monotonic()
    if reporter is not None and not image.archive_path().exists():
        reporter.write_line("building the mlgitops image (make image; about 4-8 minutes cold)")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        try:
            _state["image"] = image.build()
        except image.ImageBuildError as exc:
            _state["error"] = str(exc)
    _state["image_seconds"] = time.monotonic() - began


def _unavailable(reason: str) -> None:
    if os.environ.get("MLGITOPS_REQUIRE_K8S") == "1":
        pytest.fail(f"MLGITOPS_REQUIRE_K8S=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def realnode_image() -> Path:
    if _state["error"]:
        pytest.fail(f"building the image failed: {_state['error']}", pytrace=False)
    if _state["image"] is None:
        _unavailable(_state["missing"] or "the image was not built (no realnode test selected)")
    return Path(_state["image"])


@pytest.fixture(scope="session")
def real_node(realnode_image: Path) -> Iterator[node.RealNode]:
    """The control plane and the node, started once; stopped and checked at the session's end."""
    the_node = node.RealNode(bin_dir(), realnode_image)
    try:
        the_node.start()
    except node.NodeStartError as exc:
        pytest.fail(f"the real node did not start: {exc}", pytrace=False)
    _state["node"] = dict(the_node.timings)
    yield the_node
    left = the_node.stop()
    assert not any(left.values()), f"the node's teardown left {left}"


@pytest.fixture(scope="session")
def node_cluster(real_node: node.RealNode) -> Iterator[k8s.Cluster]:
    assert real_node.cluster is not None
    with k8s.Cluster.from_kubeconfig(real_node.cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


@pytest.fixture()
def node_namespace(real_node: node.RealNode, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, once its `default` ServiceAccount exists (pods are admitted only then)."""
    cluster = real_node.cluster
    assert cluster is not None
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    name = f"rn-{slug}-{uuid.uuid4().hex[:6]}"
    cluster.request("/api/v1/namespaces", method="POST",
                    body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while True:
        try:
            cluster.request(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield name
    with contextlib.suppress(OSError):
        cluster.request(f"/api/v1/namespaces/{name}", method="DELETE")


@contextlib.contextmanager
def operator_process(real_node: node.RealNode, namespace: str, repo_url: str, state: Path,
                     *, interval: float = 1.0) -> Iterator[subprocess.Popen[bytes]]:
    """`mlgitops operator` as its user runs it, on the host, against the node's API server."""
    assert real_node.cluster is not None
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLGITOPS_MLFLOW": "0", "MLGITOPS_EVIDENTLY": "0",
           "MLGITOPS_OPERATOR_PROGRESS_DEADLINE_SECONDS": "90"}
    argv = [str(Path(sys.executable).parent / "mlgitops"), "operator", "--repo-url", repo_url,
            "--namespace", namespace, "--state-dir", str(state / "state"), "--interval", str(interval),
            "--kubeconfig", str(real_node.cluster.kubeconfig_path), "--http-port", "0"]
    with open(state / "operator.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def explain(real_node: node.RealNode, namespace: str, operator_log: Path | None = None) -> str:
    """What a failing real-node test prints: the pods' statuses, their logs, the operator's log."""
    out = []
    cluster = real_node.cluster
    if cluster is not None:
        with contextlib.suppress(OSError):
            for pod in cluster.request(f"/api/v1/namespaces/{namespace}/pods")["items"]:
                out.append(f"--- pod {pod['metadata']['name']}: "
                           f"{json.dumps(pod.get('status', {}))[:3000]}")
        with contextlib.suppress(OSError):
            events = cluster.request(f"/api/v1/namespaces/{namespace}/events")["items"]
            out += [f"event {e.get('reason')}: {e.get('message')}" for e in events[-20:]]
    for log in sorted((real_node.state_dir / "pod-logs").glob(f"{namespace}_*/*/*.log")):
        out.append(f"--- {log.relative_to(real_node.state_dir)}:\n{log.read_text(errors='replace')[-2000:]}")
    if operator_log is not None and operator_log.exists():
        out.append(f"--- operator:\n{operator_log.read_text(errors='replace')[-4000:]}")
    return "\n".join(out)


def wait(what: str, probe: Callable[[], T | None], *, real_node: node.RealNode, namespace: str,
         operator_log: Path | None = None, operator: subprocess.Popen[bytes] | None = None,
         timeout: float = 240.0, every: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; on time-out (or the operator's exit) fail
    with `explain`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if operator is not None and operator.poll() is not None:
            pytest.fail(f"the operator exited ({operator.returncode}) while waiting for {what}\n"
                        + explain(real_node, namespace, operator_log), pytrace=False)
        last = probe()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n"
                + explain(real_node, namespace, operator_log), pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _state.get("image_seconds") is not None and _state["image"] is not None:
        terminalreporter.write_line(f"realnode image: {_state['image']} "
                                    f"(ready in {_state['image_seconds']:.1f} s)")
    if _state.get("node"):
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in _state["node"].items())
        terminalreporter.write_line(f"realnode start: {timings}")
