"""Fixtures for tests against a real Kubernetes control plane (see mlgitops/devcluster/cluster.py).

Binaries: tools/k8s/build.sh builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and the kubelet (the last two for the real-node lane, tests/k8s/realnode) into
${MLGITOPS_K8S_CACHE:-~/.cache/mlgitops/k8s}/<versions>/bin (about 10 minutes on 2 cores, once).
  MLGITOPS_K8S_BUILD=1   always run build.sh first (a no-op when the binaries exist)
  MLGITOPS_K8S_BUILD=0   never build; skip when the binaries are missing
  (unset)                build only when the binaries are missing and `go` is on PATH
  MLGITOPS_REQUIRE_K8S=1 fail instead of skipping when no cluster can be had
The build runs at the end of collection, outside any test, so pytest-timeout does not cut it.
The cluster starts once per session; `k8s_namespace` gives each test a fresh namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgitops.devcluster.cluster import TestCluster

HERE = Path(__file__).parent
REPO = HERE.parents[1]
BUILD_SH = REPO / "tools" / "k8s" / "build.sh"

# bin_dir: where the binaries are; missing: why there are none (skip); error: the build failed (fail)
_state: dict[str, Any] = {"bin_dir": None, "missing": None, "error": None, "startup": None}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "k8s: needs the real etcd + kube-apiserver + kube-controller-manager (tests/k8s)"
    )


@pytest.hookimpl(tryfirst=True)  # before `-m k8s` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.k8s)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Find (or build) the binaries once, if any selected test needs them."""
    if not any(item.get_closest_marker("k8s") for item in session.items):
        return
    try:
        _state["bin_dir"], _state["missing"] = _find_or_build_binaries(session.config)
    except subprocess.CalledProcessError as exc:
        _state["error"] = str(exc)


def _bin_dir() -> Path:
    out = subprocess.run(
        ["bash", str(BUILD_SH), "--print-bin-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def _have_binaries(bin_dir: Path) -> bool:
    return all(
        os.access(bin_dir / b, os.X_OK)
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
    )


def _find_or_build_binaries(config: pytest.Config) -> tuple[Path | None, str | None]:
    bin_dir = _bin_dir()
    mode = os.environ.get("MLGITOPS_K8S_BUILD", "")
    present = _have_binaries(bin_dir)
    if mode == "0" or (present and mode != "1"):
        if present:
            return bin_dir, None
        return (
            None,
            f"the k8s test binaries are not in {bin_dir} and MLGITOPS_K8S_BUILD=0 (run make k8s-bins)",
        )
    if shutil.which("go") is None:
        if present:
            return bin_dir, None
        return (
            None,
            f"the k8s test binaries are not in {bin_dir} and go is not on PATH to build them (make k8s-bins)",
        )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not present:
        reporter.write_line(
            f"building the k8s test binaries with {BUILD_SH} (about 10 minutes on 2 cores the first time)"
        )
    capture = config.pluginmanager.get_plugin("capturemanager")
    began = time.monotonic()
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        done = subprocess.run(["bash", str(BUILD_SH)], check=False)
    if done.returncode != 0 or not _have_binaries(bin_dir):
        raise subprocess.CalledProcessError(
            done.returncode, f"{BUILD_SH} (ran {time.monotonic() - began:.0f} s)"
        )
    return bin_dir, None


def _unavailable(reason: str) -> None:
    if os.environ.get("MLGITOPS_REQUIRE_K8S") == "1":
        pytest.fail(f"MLGITOPS_REQUIRE_K8S=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def k8s_bin_dir() -> Path:
    """The directory of the binaries (for tests that start a cluster of their own)."""
    if _state["error"]:
        pytest.fail(f"building the k8s test binaries failed: {_state['error']}", pytrace=False)
    bin_dir = _state["bin_dir"]
    if bin_dir is None:
        _unavailable(_state["missing"] or "the k8s test binaries were not looked for")
    return Path(bin_dir)


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[TestCluster]:
    """One control plane for the whole session; stopped (and its temp dir removed) at session end."""
    if _state["error"]:
        pytest.fail(f"building the k8s test binaries failed: {_state['error']}", pytrace=False)
    bin_dir = _state["bin_dir"]
    if bin_dir is None:
        _unavailable(
            _state["missing"] or "the k8s test binaries were not looked for (no k8s test selected)"
        )
    cluster = TestCluster(bin_dir)
    try:
        cluster.start()
    except Exception as exc:
        pytest.fail(f"the k8s test cluster did not start: {exc}", pytrace=False)
    _state["startup"] = cluster.startup_seconds
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture()
def k8s_api(k8s_cluster: TestCluster) -> Iterator[Any]:
    """A kubernetes.client.ApiClient of its own (the global default Configuration is left alone)."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig_path))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture()
def k8s_namespace(k8s_cluster: TestCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards (not waited for)."""
    from kubernetes import client, config

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    api = config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig_path))
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        finally:
            api.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _state["startup"] is not None:
        terminalreporter.write_line(f"k8s test cluster startup: {_state['startup']:.1f} s")
