"""A real single-node Kubernetes: `TestCluster` plus containerd + runc, a CNI bridge, the kubelet
and kube-scheduler, running pods from the mlgitops image built by devcluster/image.py.

Everything lives under one state directory (default /var/tmp/mlgitops-node): containerd's root,
state and socket, runc's state, the CNI config and its address leases, the kubelet's root and pod
logs, the control plane's temp dir. `stop()` deletes the workloads, stops every component and
undoes what they did outside that directory (devcluster/host.py), then checks that nothing is left.

What this VM kind needs (see shared/k8s-real-node.md): `restrict_oom_score_adj` in containerd's CRI
config (root lacks CAP_SYS_RESOURCE), the node-lifecycle controller (removes the not-ready taint),
`makeIPTablesUtilChains: false`, `failCgroupV1: false`. Pods reach the bridge gateway
(`GATEWAY`), not the host's 127.0.0.1, so the apiserver listens there and a test's Git server must
too. Needs root, containerd, runc, containernetworking-plugins, umoci, gcc (the pause binary) and
the kubelet and kube-scheduler from tools/k8s/build.sh.

    with RealNode(bin_dir, image.build()) as node:
        node.cluster.kubeconfig_path   # admin kubeconfig; pods run `mlgitops:0.1.0`
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mlgitops.devcluster import host
from mlgitops.devcluster.cluster import TestCluster, free_port
from mlgitops.devcluster.component import _Component
from mlgitops.devcluster.image import cache_root

STATE_DIR = Path("/var/tmp/mlgitops-node")
LOCK = Path("/run/lock/mlgitops-node.lock")
NODE_NAME = "mlgitops-node"
SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
API_PORT = 443
# What `image: mlgitops:0.1.0` (manifests/install, core/k8s_objects.py) normalizes to in the CRI.
IMAGE_NAME = "docker.io/library/mlgitops"
PAUSE_IMAGE = "localhost/pause:local"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
NODE_BINARIES = ("kubelet", "kube-scheduler")
HOST_TOOLS = ("containerd", "ctr", "runc", "umoci", "gcc", "ip", "iptables")

PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction a = {0};
    a.sa_handler = stop; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
    a.sa_handler = reap; a.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &a, 0);
    for (;;) pause();
}
"""


def in_cluster_overrides() -> dict[str, Any]:
    """What a pod spec needs to reach the API server as in-cluster clients expect (merge into the
    pod spec and its container env): there is no cluster DNS and no kube-proxy on this node."""
    return {
        "hostAliases": [{"ip": GATEWAY, "hostnames": ["kubernetes.default.svc", "kubernetes.default",
                                                     "kubernetes"]}],
        "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": GATEWAY},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(API_PORT)}],
    }


class NodeStartError(RuntimeError):
    """A prerequisite is missing or a component did not come up; the message says which and why."""


def missing_prerequisites(bin_dir: Path) -> list[str]:
    """What this machine lacks to run a real node (empty: it can), as short phrases."""
    missing = [f"{b} in {bin_dir} (tools/k8s/build.sh)" for b in NODE_BINARIES
               if not os.access(bin_dir / b, os.X_OK)]
    missing += [f"{t} on PATH (apt-get install containerd runc containernetworking-plugins umoci)"
                for t in HOST_TOOLS if shutil.which(t) is None]
    if not Path(CNI_BIN_DIR, "bridge").exists():
        missing.append(f"the CNI plugins in {CNI_BIN_DIR} (apt-get install containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def pause_archive() -> Path:
    """The sandbox image: a static `pause` (sleeps, reaps, exits on TERM), cached like the image."""
    key = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:16]
    out = cache_root() / f"pause-{key}" / "pause.oci.tar"
    if out.exists():
        return out
    work = out.parent.with_name(out.parent.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    (work / "layer").mkdir(parents=True)
    (work / "pause.c").write_text(PAUSE_C)
    steps = [
        ["gcc", "-static", "-Os", "-s", "-o", str(work / "layer" / "pause"), str(work / "pause.c")],
        ["tar", "--numeric-owner", "-C", str(work / "layer"), "-cf", str(work / "layer.tar"), "pause"],
        ["umoci", "init", "--layout", str(work / "oci")],
        ["umoci", "new", "--image", f"{work / 'oci'}:local"],
        ["umoci", "raw", "add-layer", "--image", f"{work / 'oci'}:local", str(work / "layer.tar")],
        ["umoci", "config", "--image", f"{work / 'oci'}:local", "--config.entrypoint", "/pause",
         "--config.user", "65535:65535"],
        ["tar", "-C", str(work / "oci"), "-cf", str(work / "pause.oci.tar"), "."],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NodeStartError(f"building the pause image: `{' '.join(argv[:2])}` failed: "
                                 f"{done.stderr.strip()[-500:]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work / "pause.oci.tar", out)
    shutil.rmtree(work, ignore_errors=True)
    return out


class RealNode:
    """The control plane (`cluster`) and one real node named `NODE_NAME`; one per machine at a time."""

    def __init__(self, bin_dir: str | os.PathLike[str], image_archive: Path, *,
                 state_dir: Path = STATE_DIR, log: Callable[[str], None] | None = None) -> None:
        self.bin_dir = Path(bin_dir)
        self.image_archive = image_archive
        self.state_dir = state_dir
        self._log = log or (lambda msg: print(msg, flush=True))
        self.cluster: TestCluster | None = None
        self.before: host.Snapshot | None = None  # taken at start: what teardown restores
        self.timings: dict[str, float] = {}
        self._components: list[_Component] = []
        self._lock: IO[str] | None = None

    @property
    def socket(self) -> Path:
        return self.state_dir / "containerd" / "containerd.sock"

    def __enter__(self) -> RealNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start -------------------------------------------------------------------------------

    def start(self) -> RealNode:
        missing = missing_prerequisites(self.bin_dir)
        if missing:
            raise NodeStartError("a real node needs " + "; ".join(missing))
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        self._lock = LOCK.open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise NodeStartError(f"another real node is running on this machine (lock {LOCK}); "
                                 "stop it first") from None
        began = time.monotonic()
        try:
            self._sweep_previous()
            self.before = host.snapshot()
            self.state_dir.mkdir(parents=True)
            self.before.save(self.state_dir.parent / f"{self.state_dir.name}.before.json")
            self._start_all()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - began
        self._log(f"real node {NODE_NAME} Ready in {self.timings['total']:.1f} s "
                  f"({', '.join(f'{k} {v:.1f} s' for k, v in self.timings.items() if k != 'total')})")
        return self

    def _sweep_previous(self) -> None:
        """A node whose process was killed left its state dir and snapshot: undo it first."""
        saved = self.state_dir.parent / f"{self.state_dir.name}.before.json"
        if saved.exists():
            left = host.teardown(self.state_dir, host.Snapshot.load(saved))
            saved.unlink()
            if any(left.values()):
                raise NodeStartError(f"a previous node's leftovers could not be removed: {left}")
        elif self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def _timed(self, name: str, began: float) -> None:
        self.timings[name] = time.monotonic() - began

    def _start_all(self) -> None:
        sd = self.state_dir
        t = time.monotonic()
        host.make_bridge(f"{GATEWAY}/24")
        # 443 on the gateway: in-cluster clients (kopf) call https://kubernetes.default.svc, which
        # a pod resolves to the gateway through hostAliases (no cluster DNS, no kube-proxy here).
        self.cluster = TestCluster(self.bin_dir, bind_address=GATEWAY, real_node=True,
                                   api_port=API_PORT, parent_dir=sd, log=self._log)
        self.cluster.start()
        self._timed("control plane", t)
        t = time.monotonic()
        self._write_cni_config()
        (sd / "containerd.toml").write_text(self._containerd_config())
        self._spawn("containerd", ["containerd", "--config", str(sd / "containerd.toml")])
        self._wait("containerd", 30, lambda: self._ctr("version").returncode == 0)
        self._timed("containerd", t)
        t = time.monotonic()
        self._import(pause_archive(), PAUSE_IMAGE.rsplit(":", 1)[0])
        self._import(self.image_archive, IMAGE_NAME)
        self._timed("image import", t)
        t = time.monotonic()
        kubeconfig = str(self.cluster.kubeconfig_path)
        self._spawn("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={sd / 'scheduler'}", "--v=1"])
        (sd / "kubelet-config.json").write_text(json.dumps(self._kubelet_config(), indent=1))
        self._spawn("kubelet", [
            str(self.bin_dir / "kubelet"), f"--config={sd / 'kubelet-config.json'}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={sd / 'kubelet'}",
            f"--cert-dir={sd / 'kubelet' / 'pki'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={GATEWAY}", "--v=1"])
        self._wait("kubelet", 120, self._node_ready)
        self._timed("kubelet to node Ready", t)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.state_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        component = _Component(name, argv, log)
        self._components.append(component)
        component.start()

    def _wait(self, name: str, timeout: float, ready: Callable[[], bool]) -> None:
        component = next(c for c in self._components if c.name == name)
        deadline = time.monotonic() + timeout
        while not ready():
            code = component.exited()
            if code is not None:
                raise NodeStartError(f"{name} exited with {code}:\n{component.log_tail()}")
            if time.monotonic() > deadline:
                raise NodeStartError(f"{name} not ready after {timeout:.0f} s:\n{component.log_tail()}")
            time.sleep(0.2)

    def _ctr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, check=False, timeout=timeout)

    def _import(self, archive: Path, base_name: str) -> None:
        done = self._ctr("images", "import", "--base-name", base_name, str(archive))
        if done.returncode != 0:
            raise NodeStartError(f"importing {archive} into containerd failed: {done.stderr.strip()[-800:]}")

    def images(self) -> list[str]:
        return sorted(self._ctr("images", "ls", "-q").stdout.split())

    def _node_ready(self) -> bool:
        assert self.cluster is not None
        try:
            node = self.cluster.request(f"/api/v1/nodes/{NODE_NAME}", timeout=5)
        except (OSError, urllib.error.URLError):
            return False
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in node.get("status", {}).get("conditions", []))
        taints = [t["key"] for t in node.get("spec", {}).get("taints", []) or []]
        return ready and not any(k.startswith("node.kubernetes.io/") for k in taints)

    # -- configuration -----------------------------------------------------------------------

    def _containerd_config(self) -> str:
        sd = self.state_dir / "containerd"
        text = subprocess.run(["containerd", "config", "default"], capture_output=True, text=True,
                              check=True).stdout
        replacements = {
            'root = "/var/lib/containerd"': f'root = "{sd / "root"}"',
            'state = "/run/containerd"': f'state = "{sd / "state"}"',
            'address = "/run/containerd/containerd.sock"': f'address = "{self.socket}"',
            'path = "/opt/containerd"': f'path = "{sd / "opt"}"',
            "netns_mounts_under_state_dir = false": "netns_mounts_under_state_dir = true",
            # The VM's root lacks CAP_SYS_RESOURCE: runc cannot set oom_score_adj -998.
            "restrict_oom_score_adj = false": "restrict_oom_score_adj = true",
            'sandbox_image = "registry.k8s.io/pause:3.6"': f'sandbox_image = "{PAUSE_IMAGE}"',
            'bin_dir = "/opt/cni/bin"': f'bin_dir = "{CNI_BIN_DIR}"',
            'conf_dir = "/etc/cni/net.d"': f'conf_dir = "{self.state_dir / "cni" / "net.d"}"',
            'Root = ""': f'Root = "{sd / "runc"}"',
        }
        for old, new in replacements.items():
            if old not in text:
                raise NodeStartError(f"containerd's default config has no `{old}`: "
                                     "this containerd version is not supported (Debian's 1.6 is)")
            text = text.replace(old, new)
        return text

    def _write_cni_config(self) -> None:
        net_d = self.state_dir / "cni" / "net.d"
        net_d.mkdir(parents=True)
        config = {"cniVersion": "1.0.0", "name": "mlgitops", "plugins": [
            {"type": "bridge", "bridge": host.BRIDGE, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(self.state_dir / "cni" / "ipam"),
                      "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ]}
        (net_d / "10-mlgitops.conflist").write_text(json.dumps(config, indent=1))

    def _kubelet_config(self) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "failSwapOn": False, "failCgroupV1": False,
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "rotateCertificates": False, "serverTLSBootstrap": False,
            # The images exist only here: never collect them.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
        }

    # -- stop --------------------------------------------------------------------------------

    def delete_workloads(self, timeout: float = 30.0) -> None:
        """Every Deployment, ReplicaSet and Pod goes, and the kubelet stops their sandboxes."""
        cluster = self.cluster
        if cluster is None or cluster.workdir is None:
            return
        with contextlib.suppress(OSError, urllib.error.URLError):
            names = [n["metadata"]["name"] for n in cluster.request("/api/v1/namespaces")["items"]]
            for ns in names:
                for prefix, plural in (("/apis/apps/v1", "deployments"),
                                       ("/apis/apps/v1", "replicasets"), ("/api/v1", "pods")):
                    cluster.request(f"{prefix}/namespaces/{ns}/{plural}?gracePeriodSeconds=2",
                                    method="DELETE")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.socket.exists():
            if not self._ctr("tasks", "ls", "-q", timeout=10).stdout.split():
                break
            time.sleep(0.5)

    def stop(self) -> dict[str, list[str]]:
        """Stop everything and undo its changes to the host; returns what is left (all empty)."""
        if self._lock is None:
            return {}  # never started, or another node holds the machine: nothing of ours to undo
        with contextlib.suppress(Exception):
            self.delete_workloads()
        for component in reversed(self._components):
            component.stop()
        self._components = []
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        left: dict[str, list[str]] = {}
        if self.before is not None:
            left = host.teardown(self.state_dir, self.before)
            (self.state_dir.parent / f"{self.state_dir.name}.before.json").unlink(missing_ok=True)
        self._lock.close()
        self._lock = None
        if any(left.values()):
            self._log(f"real node teardown left: {left}")
        return left
