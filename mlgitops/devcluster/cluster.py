"""A real, throw-away Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager.

No kubelet, no scheduler, no network plugin: pods never run. What it gives is the real API server
(validation, CRDs, admission, dry-run, watches, RBAC, server-side apply) and the controllers that
turn Deployments into ReplicaSets and Pods, delete namespaces and collect garbage through
ownerReferences. A test that needs "running" pods pre-binds them (`nodeName` in the pod template)
and patches `pods/status` itself, playing kubelet.

Binaries come from tools/k8s/build.sh. Everything lives in one temporary directory (certificates,
token file, etcd data, logs, kubeconfig) that `stop()` removes. It imports only the standard
library and devcluster/pki.py (`cryptography`, a dependency of google-auth, which the kubernetes
client needs). With `real_node=True` it is the control plane of devcluster/node.py's real kubelet.

    with TestCluster(bin_dir) as cluster:
        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlgitops.devcluster.component import _Component
from mlgitops.devcluster.pki import make_pki

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
)
# What a real kubelet needs besides (devcluster/node.py): the node-lifecycle controller removes the
# not-ready taint; the serviceaccount controller and the root CA publisher give every namespace the
# `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap of a pod's projected token.
NODE_CONTROLLERS = (
    "node-lifecycle-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
)
# What in-cluster clients (kopf's service-account login) call the API server.
IN_CLUSTER_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local")


class ClusterStartError(RuntimeError):
    """A component exited or never became ready; the message carries the tail of its log."""


class _PortRace(ClusterStartError):
    """A component lost the race for a port picked as free; `start()` retries with new ports."""


WORKDIR_PREFIX = "mlgitops-k8s-"
OWNER_FILE = "owner.pid"


def _sweep_stale_workdirs(parent: Path) -> None:
    """Remove the temp dirs of clusters whose test process died without cleaning up (SIGKILL).

    Their components are already gone: each one gets SIGTERM when its parent dies.
    """
    for workdir in parent.glob(f"{WORKDIR_PREFIX}*"):
        try:
            pid = int((workdir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(workdir, ignore_errors=True)
        except OSError:
            pass  # alive, owned by someone else


def free_port() -> int:
    """A loopback port that was free a moment ago (bind to 0, then close: racy, hence the retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestCluster:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports in a temp dir.

    Start it from a thread that outlives it (normally the main thread): on Linux each component
    gets SIGTERM when the thread that started it exits, so a killed test run leaves none behind.

    After `start()`: `server` (https URL), `token` (static bearer token of user `admin` in
    `system:masters`), `ca_path` (CA that signed the serving certificate), `kubeconfig_path`
    (admin kubeconfig using both), `workdir` (logs: `<component>.log`), `startup_seconds`.
    """

    __test__ = False  # not a test class, despite its name

    def __init__(
        self,
        bin_dir: str | os.PathLike[str],
        *,
        startup_timeout: float = 180.0,
        attempts: int = 3,
        parent_dir: str | os.PathLike[str] | None = None,
        log: Callable[[str], None] | None = None,
        bind_address: str = "127.0.0.1",
        real_node: bool = False,
        api_port: int | None = None,
    ) -> None:
        """`bind_address`: where the apiserver listens (a real node's pods reach the bridge
        gateway, not 127.0.0.1). `real_node`: also run `NODE_CONTROLLERS` and the ServiceAccount
        admission plugin, so pods get their ServiceAccount's token as on any cluster, and serve
        as `kubernetes.default.svc` too. `api_port`: the apiserver's port (default: a free one)."""
        self.bin_dir = Path(bin_dir)
        self.bind_address = bind_address
        self.real_node = real_node
        self.api_port = api_port
        missing = [b for b in BINARIES if not os.access(self.bin_dir / b, os.X_OK)]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} not found in {self.bin_dir}")
        self.startup_timeout = startup_timeout
        self.attempts = attempts
        self._parent_dir = parent_dir
        self._log = log or (lambda msg: print(msg, flush=True))
        self.workdir: Path | None = None
        self.server = ""
        self.token = ""
        self.ca_path = Path()
        self.kubeconfig_path = Path()
        self.startup_seconds = 0.0
        self._components: list[_Component] = []
        self._supervising = threading.Event()
        self.restarts: dict[str, int] = {}
        """Component -> how often it exited and was restarted (the controller-manager)."""

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> TestCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> TestCluster:
        if self.workdir is not None:
            raise RuntimeError("cluster already started")
        began = time.monotonic()
        _sweep_stale_workdirs(Path(self._parent_dir or tempfile.gettempdir()))
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=self._parent_dir))
        (self.workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        atexit.register(self.stop)  # interpreter exit without fixture teardown
        try:
            self.token = secrets.token_hex(24)
            self._write_credentials()
            for attempt in range(1, self.attempts + 1):
                try:
                    self._start_components(attempt)
                    break
                except _PortRace as race:
                    self._stop_components()
                    if attempt == self.attempts:
                        raise ClusterStartError(
                            f"gave up after {attempt} port races: {race}"
                        ) from race
                    self._log(f"k8s test cluster: {race}; retrying with new ports")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self._log(
            f"k8s test cluster ready at {self.server} in {self.startup_seconds:.1f} s ({self.workdir})"
        )
        return self

    def stop(self) -> None:
        """Stop the components (SIGTERM, then SIGKILL after 10 s) and remove the temp dir. Idempotent."""
        self._stop_components()
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        atexit.unregister(self.stop)

    def stop_apiserver(self) -> None:
        """Stop the kube-apiserver alone (an outage; etcd and the controller-manager stay)."""
        self._component("kube-apiserver").stop()

    def start_apiserver(self, timeout: float = 60.0) -> float:
        """Start the stopped kube-apiserver again on its port; seconds until it is ready."""
        component = self._component("kube-apiserver")
        began = time.monotonic()
        component.start()
        while not self._api_ok("/readyz"):
            if component.exited() is not None or time.monotonic() - began > timeout:
                raise ClusterStartError(f"kube-apiserver did not come back:\n{component.log_tail()}")
            time.sleep(0.1)
        return time.monotonic() - began

    def _component(self, name: str) -> _Component:
        found = [c for c in self._components if c.name == name]
        if not found:
            raise RuntimeError(f"the cluster runs no {name}: start it first")
        return found[0]

    def _stop_components(self) -> None:
        self._supervising.set()
        components, self._components = self._components, []
        for component in reversed(components):  # controller-manager, apiserver, etcd
            component.stop()

    # -- setup -------------------------------------------------------------------------------

    def _write_credentials(self) -> None:
        assert self.workdir is not None
        pki = self.workdir / "pki"
        pki.mkdir()
        extra = () if self.bind_address == "127.0.0.1" else (self.bind_address,)
        names = IN_CLUSTER_NAMES if self.real_node else ()
        ca_key, ca_cert, serving_key, serving_cert, sa_key = make_pki(extra, names)
        self.ca_path = pki / "ca.crt"
        self.ca_path.write_bytes(ca_cert)
        (pki / "ca.key").write_bytes(ca_key)
        (pki / "apiserver.crt").write_bytes(serving_cert)
        (pki / "apiserver.key").write_bytes(serving_key)
        (pki / "sa.key").write_bytes(sa_key)
        for key in ("ca.key", "apiserver.key", "sa.key"):
            (pki / key).chmod(0o600)
        # token,user,uid,"group1,group2"
        (pki / "tokens.csv").write_text(f'{self.token},admin,admin-uid,"system:masters"\n')

    def _start_components(self, attempt: int) -> None:
        assert self.workdir is not None
        wd, pki, bins = self.workdir, self.workdir / "pki", self.bin_dir
        etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
        api_port = self.api_port or api_port
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.server = f"https://{self.bind_address}:{api_port}"
        self._write_kubeconfig()
        data_dir = wd / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        deadline = time.monotonic() + self.startup_timeout

        etcd = self._spawn(
            "etcd",
            [
                str(bins / "etcd"),
                "--name=default",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            attempt,
        )
        self._wait(
            etcd,
            deadline,
            lambda: '"health":"true"' in _http_get(f"{etcd_url}/health").replace(" ", ""),
        )

        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.bind_address}",
                # Without it the apiserver looks for a default route and exits on machines with none.
                f"--advertise-address={self.bind_address}",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.key'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # Without a real node no serviceaccount controller runs, so nothing creates the
                # `default` ServiceAccount that the admission plugin would require.
                *([] if self.real_node else ["--disable-admission-plugins=ServiceAccount"]),
                "--allow-privileged=true",
                # Do not publish the loopback address as the `kubernetes` Service's endpoint.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
            attempt,
        )
        self._wait(apiserver, deadline, lambda: self._api_ok("/readyz"))

        controllers = CONTROLLERS + (NODE_CONTROLLERS if self.real_node else ())
        controller_manager = self._spawn(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig_path}",
                f"--controllers={','.join(controllers)}",
                *([f"--root-ca-file={pki / 'ca.crt'}"] if self.real_node else []),
                # As a cluster runs it (the defaults, spelled out): an instance that cannot
                # renew its lease for 10 s (the API server is away) exits, and is restarted
                # (`_supervise`, as the kubelet restarts a static pod). Without it, after an
                # outage its informers wait out client-go's reflector back-off (up to 30-60 s)
                # before they see a Deployment; a fresh one lists at once.
                "--leader-elect=true",
                "--leader-elect-lease-duration=15s",
                "--leader-elect-renew-deadline=10s",
                "--leader-elect-retry-period=2s",
                "--use-service-account-credentials=false",
                # Served only for its /healthz (an always-allowed path), the readiness probe below.
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={wd / 'kcm-pki'}",
                "--profiling=false",
                "--v=1",
            ],
            attempt,
        )
        self._wait(
            controller_manager,
            deadline,
            lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", context=_insecure_context()),
        )
        self._supervising.clear()
        threading.Thread(target=self._supervise, args=(controller_manager,), daemon=True,
                         name="kcm-supervisor").start()

    def _supervise(self, component: _Component) -> None:
        """Restart the controller-manager whenever it exits (it does when it loses its lease)."""
        while not self._supervising.wait(0.5):
            code = component.exited()
            if code is None or self._supervising.is_set():
                continue
            with open(component.log_path, "a") as log:
                log.write(f"--- exited with {code}; restarted (as a kubelet restarts a static pod)\n")
            component.stop(grace=1.0)
            component.start()
            self.restarts[component.name] = self.restarts.get(component.name, 0) + 1

    def _spawn(self, name: str, argv: list[str], attempt: int) -> _Component:
        assert self.workdir is not None
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "a") as log:
            log.write(f"--- attempt {attempt}: {' '.join(argv)}\n")
        component = _Component(name, argv, log_path)
        self._components.append(component)
        component.start()
        return component

    def _wait(self, component: _Component, deadline: float, ready: Callable[[], bool]) -> None:
        while True:
            code = component.exited()
            if code is not None:
                message = f"{component.name} exited with {code}:\n{component.log_tail()}"
                raise (_PortRace if component.port_race() else ClusterStartError)(message)
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{component.name} not ready after {self.startup_timeout:.0f} s:\n{component.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.2)

    def _write_kubeconfig(self) -> None:
        assert self.workdir is not None
        self.kubeconfig_path = self.workdir / "admin.kubeconfig"
        config = {  # JSON is YAML: no yaml dependency needed to write it
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "test",
        }
        self.kubeconfig_path.write_text(json.dumps(config, indent=2) + "\n")
        self.kubeconfig_path.chmod(0o600)

    # -- API access without a client library -------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def request(
        self, path: str, *, method: str = "GET", body: Any = None, timeout: float = 10.0
    ) -> Any:
        """A JSON request as admin; raises urllib.error.HTTPError on a non-2xx answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    def _api_ok(self, path: str) -> bool:
        try:
            self.request(path, timeout=5)
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False
        return True


def _http_get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode(errors="replace"))
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return ""


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def _insecure_context() -> ssl.SSLContext:
    """For the controller-manager's self-signed /healthz on loopback only."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
