"""A test harness that plays the kubelet (and the scheduler's one act, binding) for one namespace.

The test cluster has no kubelet and no scheduler, so pods would stay Pending forever. `Kubelet`
does for pods what those two do, with real processes and nothing else faked:

- **binds** every unscheduled pod of its namespace to node ``fake-node`` by POSTing a Binding
  (``pods/binding``), as the scheduler would. The operator's Deployments need no test-only
  ``nodeName``: what the tests apply is what a cluster gets.
- **runs** each bound pod: its volumes become directories (``emptyDir``; ``secret`` and
  ``configMap`` written from the API, as the kubelet mounts them), its init containers run in
  order to completion (restarted with back-off on failure, ``CrashLoopBackOff``), then its
  containers start. A container is its ``command`` + ``args`` run as a local process: ``mlgitops``
  is the venv's real command, mount paths are rewritten to the pod's directories, ``$(VAR)`` is
  expanded from its env, and a listen address of ``0.0.0.0`` becomes the pod's own loopback
  address (127.X.Y.N, unique per pod; the pod's network namespace). Its env is only what the pod
  spec gives (plus PATH, HOME and HOSTNAME), never the test process's.
- **probes** like a kubelet: startup, readiness and liveness ``httpGet`` probes at their periods
  and thresholds against the pod's address; a failed liveness probe or an exited process restarts
  the container.
- **reports** to ``pods/status`` what a kubelet would: phase, ``podIP``, conditions
  (PodScheduled, Initialized, ContainersReady, Ready), init and container statuses with restart
  counts, exit codes and the termination message (the log's tail: ``FallbackToLogsOnError``).
- **deletes**: a pod marked for deletion gets SIGTERM on every process, SIGKILL after its grace
  period, and is then removed for good (``gracePeriodSeconds=0``), as the kubelet confirms a
  deletion.

`stop()` (or leaving the ``with`` block) kills every process it started and leaves the API
alone. Timings of each pod's life are kept in `records` for the tests' figures.

Plain HTTP to the API server (urllib, the cluster's token), no client library: the harness is
independent of what it tests.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlgitops.devcluster.cluster import TestCluster, _die_with_parent

NODE = "fake-node"
VENV_BIN = Path(sys.executable).parent
TAIL_BYTES = 2048  # what a kubelet keeps of a log as the termination message


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET without any proxy; (status, body), or (0, b"") when nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


@dataclass
class PodRecord:
    """One pod's life as the harness saw it (``time.monotonic()`` values; None: not yet)."""

    name: str
    uid: str
    ip: str = ""
    seen: float = 0.0
    bound: float | None = None
    initialized: float | None = None
    started: float | None = None
    ready: float | None = None
    terminating: float | None = None
    """When the harness saw the pod marked for deletion (SIGTERM follows)."""
    deleted: float | None = None
    init_failures: int = 0
    restarts: int = 0
    log_dir: Path | None = None


class _Api:
    """JSON over HTTPS as the cluster's admin."""

    def __init__(self, cluster: TestCluster) -> None:
        self.server = cluster.server
        self.token = cluster.token
        self.ssl = ssl.create_default_context(cafile=str(cluster.ca_path))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 15.0,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as resp:
            return json.loads(resp.read() or b"null")

    def stream(self, path: str, *, timeout: float) -> Any:
        req = urllib.request.Request(f"{self.server}{path}")
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        return urllib.request.urlopen(req, timeout=timeout, context=self.ssl)


class _Addresses:
    """Loopback addresses 127.A.B.N, one per pod, never two pods on one while the harness runs."""

    def __init__(self, port: int = 8080) -> None:
        rng = random.Random()
        self.prefix = f"127.{rng.randint(100, 250)}.{rng.randint(1, 254)}"
        self.port = port
        self.next = 2
        self.lock = threading.Lock()

    def take(self, port: int) -> str:
        with self.lock:
            while self.next < 255:
                ip = f"{self.prefix}.{self.next}"
                self.next += 1
                with socket.socket() as s:
                    try:
                        s.bind((ip, port))
                    except OSError:
                        continue  # someone else's process holds it: skip
                return ip
        raise RuntimeError(f"no free loopback address left in {self.prefix}.0/24")


class Kubelet:
    """Plays kubelet + binding for ``namespace`` of ``cluster`` (see the module docstring)."""

    def __init__(
        self,
        cluster: TestCluster,
        namespace: str,
        *,
        workdir: Path,
        node_name: str = NODE,
        backoff: tuple[float, float] = (10.0, 300.0),
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.api = _Api(cluster)
        self.namespace = namespace
        self.workdir = workdir
        self.node_name = node_name
        self.backoff = backoff
        self.log = log or (lambda msg: print(f"[kubelet] {msg}", flush=True))
        self.records: dict[str, PodRecord] = {}
        self.addresses = _Addresses()
        self._workers: dict[str, _PodWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Kubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._watch, name="kubelet-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop watching and kill every process this harness started (the API is left alone)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._response.close()
        if self._thread is not None:
            self._thread.join(timeout=15)
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.shutdown(grace)
        for w in workers:
            w.join(timeout=grace + 15)
        alive = [w.name for w in workers if w.is_alive()]
        if alive:
            raise RuntimeError(f"kubelet harness: pod workers did not stop: {alive}")

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests ask ----------------------------------------------------------------------

    def record(self, pod_name: str) -> PodRecord | None:
        return next((r for r in self.records.values() if r.name == pod_name), None)

    def logs(self, pod_name: str, container: str) -> str:
        rec = self.record(pod_name)
        if rec is None or rec.log_dir is None:
            return ""
        path = rec.log_dir / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def running_processes(self) -> int:
        with self._lock:
            return sum(w.live_processes() for w in self._workers.values())

    # -- watching pods -----------------------------------------------------------------------

    def _watch(self) -> None:
        base = f"/api/v1/namespaces/{self.namespace}/pods"
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listing = self.api.request("GET", base)
                    rv = listing["metadata"]["resourceVersion"]
                    for pod in listing.get("items") or []:
                        self._on_pod("ADDED", pod)
                self._response = self.api.stream(
                    f"{base}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2",
                    timeout=10,
                )
                with self._response as resp:
                    for line in resp:
                        if self._stop.is_set():
                            break
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            rv = None  # 410 Gone: the resource version expired; list again
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if event.get("type") != "BOOKMARK":
                            self._on_pod(str(event.get("type")), obj)
            except Exception as exc:  # the API server restarting, a test tearing down
                if self._stop.is_set():
                    return
                self.log(f"watch interrupted ({type(exc).__name__}: {exc}); watching again")
                rv = None
                time.sleep(0.5)

    def _on_pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid, name = str(meta.get("uid")), str(meta.get("name"))
        deleting = meta.get("deletionTimestamp") is not None
        with self._lock:
            worker = self._workers.get(uid)
            if uid not in self.records:
                self.records[uid] = PodRecord(name=name, uid=uid, seen=time.monotonic())
        if kind == "DELETED":
            if worker is not None:
                worker.shutdown(0.0)
            return
        node = spec.get("nodeName")
        if not node:
            if not deleting and spec.get("schedulerName", "default-scheduler") == "default-scheduler":
                self._bind(name, uid)
            return
        if node != self.node_name:
            return
        if worker is None:
            if deleting:
                self._confirm_deletion(name, uid)
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return
            worker = _PodWorker(self, pod, self.records[uid])
            with self._lock:
                self._workers[uid] = worker
            worker.start()
        elif deleting:
            worker.terminate(float(meta.get("deletionGracePeriodSeconds") or 0))

    def _bind(self, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.api.request("POST", f"/api/v1/namespaces/{self.namespace}/pods/{name}/binding", body)
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 409):  # gone, or bound meanwhile
                self.log(f"binding {name} failed: {exc.code} {exc.read()[:300]!r}")
            return
        self.records[uid].bound = time.monotonic()

    def _confirm_deletion(self, name: str, uid: str) -> None:
        """What the kubelet does once a pod's processes are gone: delete it for good."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{name}", body)
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 409):
                self.log(f"deleting {name} failed: {exc.code}")
        rec = self.records.get(uid)
        if rec is not None and rec.deleted is None:
            rec.deleted = time.monotonic()

    def _done(self, uid: str) -> None:
        with self._lock:
            self._workers.pop(uid, None)


# -- one pod -------------------------------------------------------------------------------------


@dataclass
class _Container:
    spec: Mapping[str, Any]
    init: bool
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    log_offset: int = 0
    restarts: int = 0
    ready: bool = False
    started: bool = False
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "PodInitializing"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    probe_due: dict[str, float] = field(default_factory=dict)
    probe_failures: dict[str, int] = field(default_factory=dict)
    backoff_until: float = -math.inf  # time.monotonic(); never backed off

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self, pod_uid: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"fake://{pod_uid[:8]}-{self.name}-{self.restarts}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }


class _PodWorker(threading.Thread):
    """Runs one pod from binding to deletion (see `Kubelet`)."""

    def __init__(self, kubelet: Kubelet, pod: Mapping[str, Any], record: PodRecord) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['name']}", daemon=True)
        self.k = kubelet
        self.pod = pod
        self.rec = record
        self.pod_name = str(meta["name"])
        self.uid = str(meta["uid"])
        spec = pod.get("spec") or {}
        self.inits = [_Container(c, True) for c in spec.get("initContainers") or []]
        self.mains = [_Container(c, False) for c in spec.get("containers") or []]
        self.grace = float(spec.get("terminationGracePeriodSeconds", 30))
        self.dir = kubelet.workdir / f"{self.pod_name}-{self.uid[:8]}"
        self.rec.log_dir = self.dir / "logs"
        ports = [p.get("containerPort") for c in self.mains for p in c.spec.get("ports") or []]
        self.ip = kubelet.addresses.take(int(ports[0]) if ports else 8080)
        self.rec.ip = self.ip
        self.mounts: dict[str, Path] = {}  # volume name -> directory
        self.initialized = False
        self.start_time = now_rfc3339()
        self._terminate = threading.Event()
        self._shutdown = threading.Event()
        self._last_status: str | None = None
        self._transitions: dict[str, tuple[bool | None, str]] = {}

    # -- control from the watch thread -------------------------------------------------------

    def terminate(self, grace: float) -> None:
        """The pod was marked for deletion: stop within ``grace`` and confirm the deletion."""
        self.grace = grace
        if self.rec.terminating is None:
            self.rec.terminating = time.monotonic()
        self._terminate.set()

    def shutdown(self, grace: float) -> None:
        """The harness stops (or the pod vanished): kill the processes, leave the API alone."""
        self.grace = grace
        self._shutdown.set()
        self._terminate.set()

    def live_processes(self) -> int:
        return sum(1 for c in (*self.inits, *self.mains) if c.proc is not None and c.proc.poll() is None)

    # -- the pod's life ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            self.k.log(f"pod {self.pod_name}: harness error\n{traceback.format_exc()}")
        finally:
            self._kill_all(self.grace)
            for c in (*self.inits, *self.mains):
                if c.log is not None:
                    c.log.close()
            if not self._shutdown.is_set():
                self.k._confirm_deletion(self.pod_name, self.uid)
            self.k._done(self.uid)

    def _run(self) -> None:
        self.rec.log_dir = self.dir / "logs"
        self.rec.log_dir.mkdir(parents=True, exist_ok=True)
        while not self._prepare_volumes():
            if self._terminate.wait(1.0):
                return
        self._report()
        for c in self.inits:
            if not self._run_to_completion(c):
                return
        self.initialized = True
        self.rec.initialized = time.monotonic()
        for c in self.mains:
            self._start(c)
        self._report()
        while not self._terminate.is_set():
            changed = False
            for c in self.mains:
                changed |= self._tend(c)
            if changed:
                self._report()
            self._terminate.wait(0.05)

    def _prepare_volumes(self) -> bool:
        """Directories for the pod's volumes; False while a Secret or ConfigMap is missing."""
        for vol in (self.pod.get("spec") or {}).get("volumes") or []:
            name = vol["name"]
            path = self.dir / "volumes" / name
            if name in self.mounts:
                continue
            if "emptyDir" in vol:
                path.mkdir(parents=True, exist_ok=True)
            elif "secret" in vol or "configMap" in vol:
                kind, ref = ("secrets", vol["secret"]["secretName"]) if "secret" in vol else (
                    "configmaps", vol["configMap"]["name"])  # fmt: skip
                try:
                    obj = self.k.api.request("GET", f"/api/v1/namespaces/{self.k.namespace}/{kind}/{ref}")
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:
                        raise
                    self._waiting_all("ContainerCreating", f"MountVolume.SetUp failed for volume {name!r}: {kind[:-1]} {ref!r} not found")
                    return False
                path.mkdir(parents=True, exist_ok=True)
                for key, value in (obj.get("data") or {}).items():
                    raw = base64.b64decode(value) if kind == "secrets" else str(value).encode()
                    (path / key).write_bytes(raw)
                    (path / key).chmod(0o400 if kind == "secrets" else 0o444)
            else:
                self._waiting_all("ContainerCreating", f"volume {name!r}: this test kubelet mounts only emptyDir, secret and configMap")
                return False
            self.mounts[name] = path
        (self.dir / "rootfs").mkdir(parents=True, exist_ok=True)
        return True

    def _waiting_all(self, reason: str, message: str) -> None:
        for c in (*self.inits, *self.mains):
            c.state = {"waiting": {"reason": reason, "message": message}}
        self._report()

    # -- processes ---------------------------------------------------------------------------

    def _rewrite(self, value: str, c: _Container, env: Mapping[str, str]) -> str:
        """Mount paths -> the pod's directories, $(VAR) -> env, 0.0.0.0 -> the pod's address."""
        value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)
        if value in ("0.0.0.0", "::"):
            return self.ip
        mounts = sorted(c.spec.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))
        for m in mounts:
            mp = m["mountPath"].rstrip("/")
            host = str(self.mounts[m["name"]])
            if value == mp or value.startswith(mp + "/"):
                return host + value[len(mp):]
            if "=" in value:  # --flag=/path
                flag, _, rest = value.partition("=")
                if rest == mp or rest.startswith(mp + "/"):
                    return f"{flag}={host}{rest[len(mp):]}"
        return value

    def _env(self, c: _Container) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOSTNAME": self.pod_name,
            "HOME": str(self.dir / "rootfs"),
            "LANG": "C.UTF-8",
        }
        fields = {"metadata.name": self.pod_name, "metadata.namespace": self.k.namespace,
                  "status.podIP": self.ip, "spec.nodeName": self.k.node_name}  # fmt: skip
        for item in c.spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = self._rewrite(str(item["value"]), c, env)
            elif "fieldRef" in (item.get("valueFrom") or {}):
                env[item["name"]] = fields.get(item["valueFrom"]["fieldRef"]["fieldPath"], "")
        return env

    def _argv(self, c: _Container, env: Mapping[str, str]) -> list[str]:
        command = list(c.spec.get("command") or ["mlgitops"])  # the image's entrypoint
        argv = [self._rewrite(str(a), c, env) for a in [*command, *(c.spec.get("args") or [])]]
        if "/" not in argv[0]:
            local = VENV_BIN / argv[0]
            argv[0] = str(local) if local.exists() else (shutil.which(argv[0]) or argv[0])
        return argv

    def _spawn(self, c: _Container) -> None:
        env = self._env(c)
        argv = self._argv(c, env)
        assert self.rec.log_dir is not None
        if c.log is None:
            c.log = open(self.rec.log_dir / f"{c.name}.log", "ab")  # noqa: SIM115 - closed in run()
        c.log.write(f"--- {now_rfc3339()} {' '.join(argv)}\n".encode())
        c.log.flush()
        c.log_offset = c.log.tell()
        c.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=c.log, stderr=subprocess.STDOUT, env=env,
            cwd=self.dir / "rootfs", start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip
        c.state = {"running": {"startedAt": now_rfc3339()}}

    def _tail(self, c: _Container) -> str:
        assert self.rec.log_dir is not None
        path = self.rec.log_dir / f"{c.name}.log"
        data = path.read_bytes()[c.log_offset:] if path.exists() else b""  # this run's output only
        return data[-TAIL_BYTES:].decode(errors="replace").strip()

    def _exited(self, c: _Container, code: int) -> None:
        """Record an exit like the kubelet: lastState terminated, back-off before the restart."""
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "finishedAt": now_rfc3339()}  # fmt: skip
        if code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            term["message"] = self._tail(c)
        c.proc = None
        c.ready = c.started = False
        c.last_state = {"terminated": term}
        delay = min(self.k.backoff[0] * 2 ** c.restarts, self.k.backoff[1])
        c.restarts += 1
        c.backoff_until = time.monotonic() + delay
        c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
            f"back-off {delay:.0f}s restarting failed container={c.name} pod={self.pod_name}")}}  # fmt: skip

    def _run_to_completion(self, c: _Container) -> bool:
        """An init container: run until it exits 0 (restarting with back-off); False if stopped."""
        while not self._terminate.is_set():
            self._spawn(c)
            self._report()
            assert c.proc is not None
            while (code := c.proc.poll()) is None:
                if self._terminate.wait(0.05):
                    return False
            if code == 0:
                c.proc = None
                c.state = {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now_rfc3339()}}
                c.ready = True
                self._report()
                return True
            self._exited(c, code)
            self.rec.init_failures += 1
            self._report()
            if self._terminate.wait(max(0.0, c.backoff_until - time.monotonic())):
                return False
        return False

    def _start(self, c: _Container) -> None:
        self._spawn(c)
        c.probe_due = {k: time.monotonic() + float((c.spec.get(f"{k}Probe") or {}).get("initialDelaySeconds", 0))
                       for k in ("startup", "readiness", "liveness")}  # fmt: skip
        c.probe_failures = {}
        if self.rec.started is None:
            self.rec.started = time.monotonic()

    def _probe(self, c: _Container, kind: str) -> bool | None:
        """Run ``kind``'s probe when due: True/False, or None when not due or not defined."""
        spec = c.spec.get(f"{kind}Probe")
        if not spec or time.monotonic() < c.probe_due.get(kind, -math.inf):
            return None
        c.probe_due[kind] = time.monotonic() + float(spec.get("periodSeconds", 10))
        get = spec.get("httpGet")
        if not get:
            return True  # exec / tcp probes are not played: count them as passing
        port = get.get("port")
        if isinstance(port, str) and not port.isdigit():
            port = next(p["containerPort"] for p in c.spec.get("ports") or [] if p.get("name") == port)
        status, _ = http_get(f"http://{self.ip}:{port}{get.get('path', '/')}",
                             timeout=float(spec.get("timeoutSeconds", 1)))  # fmt: skip
        ok = 200 <= status < 400
        c.probe_failures[kind] = 0 if ok else c.probe_failures.get(kind, 0) + 1
        return ok

    def _tend(self, c: _Container) -> bool:
        """One step of a running container: exits, restarts, probes. True when status changed."""
        before = (c.ready, c.started, c.restarts, json.dumps(c.state, sort_keys=True))
        if c.proc is None:
            if time.monotonic() >= c.backoff_until:
                self._start(c)
                self.rec.restarts += 1
        elif (code := c.proc.poll()) is not None:
            self._exited(c, code)
        else:
            if not c.started:
                res = self._probe(c, "startup")
                if res or not c.spec.get("startupProbe"):
                    c.started = True
                    c.probe_due["readiness"] = c.probe_due["liveness"] = time.monotonic()
                elif res is False and c.probe_failures["startup"] >= int(c.spec["startupProbe"].get("failureThreshold", 3)):
                    self._restart(c, "startup probe failed")
            if c.started:
                ready = self._probe(c, "readiness")
                if ready is True:
                    c.ready = True
                    if self.rec.ready is None and all(m.ready for m in self.mains):
                        self.rec.ready = time.monotonic()
                elif ready is False and c.probe_failures["readiness"] >= int(c.spec["readinessProbe"].get("failureThreshold", 3)):
                    c.ready = False
                live = self._probe(c, "liveness")
                if live is False and c.probe_failures["liveness"] >= int(c.spec["livenessProbe"].get("failureThreshold", 3)):
                    self._restart(c, "liveness probe failed")
        return before != (c.ready, c.started, c.restarts, json.dumps(c.state, sort_keys=True))

    def _restart(self, c: _Container, why: str) -> None:
        assert c.log is not None
        c.log.write(f"--- {now_rfc3339()} kubelet: {why}, killing\n".encode())
        self._kill(c, self.grace)
        self._exited(c, 137)

    def _kill(self, c: _Container, grace: float) -> None:
        proc = c.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):  # the whole group: forked workers too
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def _kill_all(self, grace: float) -> None:
        live = [c for c in (*self.inits, *self.mains) if c.proc is not None and c.proc.poll() is None]
        for c in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace
        for c in live:
            self._kill(c, max(0.0, deadline - time.monotonic()))
            c.proc = None

    # -- reporting -------------------------------------------------------------------------

    def _report(self) -> None:
        """Write pods/status as a kubelet would (only when something changed)."""
        if self._shutdown.is_set():
            return
        t = now_rfc3339()
        ready = self.initialized and all(c.ready for c in self.mains)
        phase = "Running" if self.initialized and any(c.proc is not None for c in self.mains) else "Pending"
        conditions = [
            ("PodScheduled", True, ""),
            ("Initialized", self.initialized, "" if self.initialized else "ContainersNotInitialized"),
            ("ContainersReady", ready, "" if ready else "ContainersNotReady"),
            ("Ready", ready, "" if ready else "ContainersNotReady"),
        ]
        for kind, ok, _ in conditions:
            if self._transitions.get(kind, (None, ""))[0] != ok:
                self._transitions[kind] = (ok, t)
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": [
                {"type": kind, "status": "True" if ok else "False",
                 "lastTransitionTime": self._transitions[kind][1],
                 **({"reason": why} if why else {})}
                for kind, ok, why in conditions
            ],
            "initContainerStatuses": [c.status(self.uid) for c in self.inits],
            "containerStatuses": [c.status(self.uid) for c in self.mains],
        }
        key = json.dumps({**status, "conditions": [(c["type"], c["status"]) for c in status["conditions"]]}, sort_keys=True)
        if key == self._last_status:
            return
        try:
            self.k.api.request(
                "PATCH", f"/api/v1/namespaces/{self.k.namespace}/pods/{self.pod_name}/status",
                {"status": status}, content_type="application/merge-patch+json",
            )  # fmt: skip
            self._last_status = key
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                self._terminate.set()  # deleted meanwhile
            else:
                self.k.log(f"status of {self.pod_name}: {exc.code} {exc.read()[:300]!r}")
