"""One pod under the kubelet stand-in: its volumes, processes, probes and status reports.

`PodWorker` runs a bound pod from start to deletion (see `mlgitops.devcluster.kubelet`). An
API-server outage does not end it: its processes keep running and being probed, a status that
could not be written is written again (with a bounded back-off) once the API server answers,
and a volume that could not be read is read again.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from mlgitops.devcluster.component import _die_with_parent
from mlgitops.devcluster.kubelet_net import (
    Addresses,
    Api,
    Backoff,
    http_get,
    now_rfc3339,
    transient,
)

VENV_BIN = Path(sys.executable).parent
TAIL_BYTES = 2048  # what a kubelet keeps of a log as the termination message


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




class PodHost(Protocol):
    """What a pod worker needs of the `Kubelet` that runs it."""

    api: Api
    namespace: str
    node_name: str
    workdir: Path
    backoff: tuple[float, float]
    addresses: Addresses
    log: Callable[[str], None]
    bin_dir: Path

    def confirm_deletion(self, name: str, uid: str) -> None: ...

    def done(self, uid: str) -> None: ...


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


class PodWorker(threading.Thread):
    """Runs one pod from binding to deletion (see `Kubelet`)."""

    def __init__(self, kubelet: PodHost, pod: Mapping[str, Any], record: PodRecord) -> None:
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
        self._report_backoff = Backoff(0.2, 2.0)
        self._report_retry_at: float | None = None
        """When a status the API server did not take is sent again (None: nothing pending)."""
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
                self.k.confirm_deletion(self.pod_name, self.uid)
            self.k.done(self.uid)

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
            retry = self._report_retry_at is not None and time.monotonic() >= self._report_retry_at
            if changed or retry:
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
                except Exception as exc:
                    if transient(exc):  # the API server is away: mount it when it is back
                        self._waiting_all("ContainerCreating", f"MountVolume.SetUp of volume {name!r}: "
                                          f"the API server does not answer ({type(exc).__name__})")
                        return False
                    if not isinstance(exc, urllib.error.HTTPError) or exc.code != 404:
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
            "PATH": f"{self.k.bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
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
            local = self.k.bin_dir / argv[0]
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
                c.ready = True  # reported with the next container's start: that is not delayed
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
                timeout=5.0, patience=0,  # the worker keeps tending its processes meanwhile
            )  # fmt: skip
            self._last_status = key
            if self._report_retry_at is not None:
                self.k.log(f"status of {self.pod_name}: written again, the API server answers")
            self._report_retry_at = None
            self._report_backoff.reset()
        except Exception as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code == 404:
                self._terminate.set()  # deleted meanwhile
            elif transient(exc):
                if self._report_retry_at is None:
                    self.k.log(f"status of {self.pod_name}: the API server does not answer "
                               f"({type(exc).__name__}); trying again")
                self._report_retry_at = time.monotonic() + self._report_backoff.next()
            elif isinstance(exc, urllib.error.HTTPError):
                self.k.log(f"status of {self.pod_name}: {exc.code} {exc.read()[:300]!r}")
            else:
                raise
