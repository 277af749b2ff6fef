"""Inference server processes on this machine (the embedded runtime).

Importing scikit-learn takes seconds, so the runtime keeps warm *standby* processes
(``python -m mlgitops.server --standby``, imports done) and hands one a model to serve:
a new version answers in well under a second after the controller asks for it.
Processes run in their own session so Ctrl-C reaches only the controller, which stops them
in order; a controller killed with SIGKILL leaves them serving for its successor to adopt.

Every process is written to the ledger ``<state>/servers.json`` (atomically) *before* it is
started, under a random token that the process also carries in its environment
(``MLGITOPS_SERVER=<token>``), and again with its pid and start time once it runs. After a
crash, `LocalRuntime.recover` adopts the recorded servers that still serve and stops every
other process of the ledger (standbys, servers that were launching or draining), matched on
pid *and* start time, or on the token in the environment: a pid the kernel reused for someone
else's process is never signalled.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from mlgitops import errors
from mlgitops.adapters import files, local_hosts, stats_store
from mlgitops.core import plan

LEDGER = "servers.json"
TOKEN_ENV = "MLGITOPS_SERVER"
OWNER_ENV = "MLGITOPS_OWNER"


@dataclass
class Backend:
    """One server process serving one model version."""

    name: str
    version: str
    digest: str
    port: int
    pid: int
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = field(default_factory=time.time)
    #: the standby line it was launched with: enough to start the same version again
    spec: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the ledger token (also in the process's environment) and the process's start time
    token: str = ""
    start_time: str | None = None
    #: the admin port of the host process serving it; 0 when it has a process of its own
    admin: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> Hashable:
        """In-flight accounting: the process, or the port in a host (a relaunch is another)."""
        return (self.pid, self.port) if self.admin else self.pid

    @property
    def where(self) -> str:
        return f"port {self.port}"

    @property
    def label(self) -> str:
        if self.admin:
            return f"port {self.port} of host pid {self.pid}"
        return f"pid {self.pid} on port {self.port}"

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "port": self.port,
            "pid": self.pid,
            "log": str(self.log),
            "startedAt": self.started_at,
            "spec": self.spec,
            "token": self.token,
            "startTime": self.start_time,
            "admin": self.admin,
        }


class _Standby:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, token: str,
                 start_time: str | None) -> None:
        self.proc = proc
        self.log = log
        self.token = token
        self.start_time = start_time
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in stream:
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                self.lines.put(value)
        self.lines.put(None)

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "boot"


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (boot id and clock ticks since boot); None when it is gone.

    Together with the pid this names one process for good: a reused pid starts later.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{_boot_id()}:{ticks}"


def is_process(pid: int | None, started: str | None) -> bool:
    """True while ``pid`` runs and is the process that started at ``started`` (when known)."""
    if pid is None or not pid_alive(pid):
        return False
    return started is None or start_time(pid) == started


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def pids_with(markers: Iterable[str]) -> dict[int, list[str]]:
    """Live processes whose environment holds any of ``markers`` (``KEY=value``), with them."""
    wanted = {m.encode(): m for m in markers}
    out: dict[int, list[str]] = {}
    if not wanted:
        return out
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        pid = int(proc.name)
        hits = [wanted[e] for e in _environ(pid) if e in wanted]
        if hits and pid_alive(pid):
            out[pid] = hits
    return out


def owned_pids(state_dir: Path) -> set[int]:
    """Live processes started by a runtime for ``state_dir`` (via their environment marker)."""
    return set(pids_with([f"{OWNER_ENV}={state_dir}"]))


def server_tokens(state_dir: Path) -> dict[int, str | None]:
    """Live processes of ``state_dir``'s runtime and the ledger token each carries (None: none)."""
    owner = f"{OWNER_ENV}={state_dir}".encode()
    prefix = f"{TOKEN_ENV}=".encode()
    out: dict[int, str | None] = {}
    for pid in owned_pids(state_dir):
        env = _environ(pid)
        if owner not in env:
            continue
        token = next((e[len(prefix):].decode() for e in env if e.startswith(prefix)), None)
        out[pid] = token
    return out


def flock_holders(path: Path) -> set[int] | None:
    """Pids holding a ``flock`` on ``path`` (from ``/proc/locks``); None when that cannot be read."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    holders: set[int] = set()
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue  # "->" marks a waiter, not a holder
        try:
            pid, where = int(parts[4]), parts[5]
        except ValueError:
            continue
        if where.rsplit(":", 1)[-1] == str(inode):
            holders.add(pid)
    return holders


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal_verified(pid: int, sig: int, *, marker: bytes) -> bool:
    """Send ``sig`` to ``pid`` only if it still carries ``marker`` in its environment.

    A pidfd pins the process between the check and the signal, so a pid reused meanwhile is
    never hit. False when the process is gone (or is not ours).
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        if marker not in _environ(pid):
            return False
        if fd is not None:
            try:
                signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                return False
            return True
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    finally:
        if fd is not None:
            os.close(fd)


class Ledger:
    """Every process a runtime started, by token, persisted atomically in ``<state>/servers.json``.

    A record is written before its process starts (``pid`` None) and completed once it runs:
    ``{"token", "role": standby|launching|serving|draining, "pid", "startTime", "name",
    "version", "port", "recordedAt"}``. It is dropped once the process is known to be gone.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        data = files.read_json(path)
        raw = data.get("servers") if isinstance(data, dict) else None
        self._records: dict[str, dict[str, Any]] = {
            str(k): dict(v) for k, v in (raw or {}).items() if isinstance(v, dict)
        }

    def _save(self) -> None:
        files.write_json(self.path, {"servers": self._records})

    def put(self, token: str, **fields: Any) -> None:
        with self._lock:
            record = self._records.setdefault(token, {"token": token, "recordedAt": time.time()})
            record.update(fields)
            self._save()

    def drop(self, *tokens: str) -> None:
        with self._lock:
            if any(self._records.pop(t, None) is not None for t in tokens if t):
                self._save()

    def records(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._records.items()}

    def keep_only(self, tokens: Iterable[str]) -> None:
        keep = set(tokens)
        with self._lock:
            self._records = {k: v for k, v in self._records.items() if k in keep}
            self._save()


@dataclass(frozen=True)
class Recovery:
    """What `LocalRuntime.recover` found after a restart."""

    adopted: dict[str, Backend]
    """Servers left by the earlier controller that still serve what they say, by model."""
    lost: dict[str, str]
    """Recorded serving models whose server is gone or does not answer, with why."""
    stopped: list[dict[str, Any]]
    """Ledger records (and unrecorded processes of this runtime) whose processes were stopped."""
    cleared: list[dict[str, Any]]
    """Ledger records whose processes had already exited."""

    @property
    def leftovers(self) -> list[Leftover]:
        """The stopped processes, as the controller reports them."""
        return [Leftover.of(record) for record in self.stopped]


@dataclass(frozen=True)
class Leftover:
    """A process an earlier controller left, which `LocalRuntime.recover` stopped."""

    name: str
    version: str | None
    role: str
    pid: int | None
    #: a model unloaded from a host process that keeps serving others (None: a process)
    port: int | None = None

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Leftover:
        pid = record.get("pid")
        version = record.get("version")
        port = record.get("port") if record.get("unloaded") else None
        return cls(name=str(record.get("name") or ""),
                   version=None if version is None else str(version),
                   role=str(record.get("role", "unrecorded")),
                   pid=pid if isinstance(pid, int) else None,
                   port=port if isinstance(port, int) else None)

    @property
    def what(self) -> str:
        if self.port is not None:
            return f"model (port {self.port} of host pid {self.pid})"
        return f"server process (pid {self.pid})"

    @property
    def details(self) -> dict[str, Any]:
        return {"pid": self.pid} if self.port is None else {"pid": self.pid, "port": self.port}


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalRuntime:
    """Starts, watches and stops server processes; keeps ``standby`` warm ones ready.

    With ``hosting`` in shared mode (what ``mlgitops up`` runs), small models share host
    processes and the warm pool holds idle hosts; see `local_hosts` for who goes where.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        standby: int = 1,
        ready_timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
        stats_root: Path | None = None,
        hosting: local_hosts.Hosting | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.state_dir = state_dir
        #: server worker processes all models together may run (own processes' workers plus
        #: shared hosts); None: no cap
        self.max_workers = max_workers
        #: own-process servers running now: key -> (model, workers)
        self._own: dict[Hashable, tuple[str, int]] = {}
        self.hosting = hosting or local_hosts.Hosting(mode=local_hosts.PROCESS)
        #: serving hosts by token; idle (warm) hosts; the staging host (probes only)
        self._hosts: dict[str, local_hosts.HostProcess] = {}
        self._idle: list[local_hosts.HostProcess] = []
        self._staging: local_hosts.HostProcess | None = None
        self._place_lock = threading.RLock()
        self._staging_lock = threading.Lock()
        self.proven = local_hosts.Proven(state_dir / local_hosts.PROVEN)
        #: this runtime's identity towards its hosts (a successor's takes over)
        self.epoch = uuid.uuid4().hex
        #: servers record live statistics under ``<stats_root>/<name>/<version>/``
        self.stats_root = stats_root if stats_root is not None else state_dir / "stats"
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.standby_count = standby
        self.ready_timeout = ready_timeout
        # MLGITOPS_OWNER marks every process of this runtime (tests and operators can find them)
        self.env = {**os.environ, "DO_NOT_TRACK": "true", OWNER_ENV: str(state_dir),
                    **(env or {})}
        #: the trust policy's additions servers load under (None: the environment's); the
        #: controller sets it, and again when the policy changes
        self.trust_allow: frozenset[str] | None = None
        self.ledger = Ledger(state_dir / LEDGER)
        self._marker = f"{OWNER_ENV}={state_dir}".encode()
        self._pool: list[_Standby] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._closed = False

    # standby pool -----------------------------------------------------------------------
    def _spawn(self) -> _Standby:
        self._counter += 1
        log = self.logs / f"server-{int(time.time())}-{os.getpid()}-{self._counter}.log"
        token = uuid.uuid4().hex
        # recorded before it exists: a crash right after Popen still leaves a trace to follow
        self.ledger.put(token, role="standby", pid=None, startTime=None, log=str(log))
        try:
            with log.open("ab") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mlgitops.server", "--standby"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env={**self.env, TOKEN_ENV: token},
                    start_new_session=True,
                )
        except OSError as exc:
            self.ledger.drop(token)
            raise errors.RuntimeFailure(
                f"cannot start a server process ({exc}); check {sys.executable} runs"
            ) from exc
        started = start_time(proc.pid)
        self.ledger.put(token, pid=proc.pid, startTime=started)
        return _Standby(proc, log, token, started)

    def prepare(self) -> None:
        """Warm the standby pool (`fill`): the first deploy need not wait for imports."""
        self.fill()

    @property
    def shared(self) -> bool:
        return self.hosting.mode == local_hosts.HOSTED

    def fill(self) -> None:
        """Top the pool up to ``standby`` warm processes (idle hosts in shared mode)."""
        with self._lock:
            self._prune()
            if self.shared:
                while not self._closed and len(self._idle) < self.standby_count:
                    self._idle.append(self._spawn_host())
                return
            while not self._closed and len(self._pool) < self.standby_count:
                self._pool.append(self._spawn())

    def _prune(self) -> None:
        dead = [s for s in self._pool if s.proc.poll() is not None]
        if dead:
            self._pool = [s for s in self._pool if s not in dead]
            self.ledger.drop(*(s.token for s in dead))
        gone = [h for h in self._idle if h.exited()]
        if gone:
            self._idle = [h for h in self._idle if h not in gone]
            self.ledger.drop(*(h.token for h in gone))

    def _take(self) -> _Standby:
        with self._lock:
            self._prune()
            return self._pool.pop(0) if self._pool else self._spawn()

    # backends ---------------------------------------------------------------------------
    def spec(self, desired: plan.Desired, *, model_dir: Path) -> dict[str, Any]:
        """The standby line that serves ``desired`` from ``model_dir`` on a free local port."""
        dep = desired.deployment
        if dep is None:
            raise errors.ManifestError(desired.error or f"the manifest of {desired.name} is invalid")
        return {
            "model_dir": str(model_dir),
            "name": dep.name,
            "version": desired.version,
            "digest": dep.digest,
            "trusted_types": list(dep.trusted_types),
            "trust_allow": None if self.trust_allow is None else sorted(self.trust_allow),
            "host": "127.0.0.1",
            "port": 0,
            "workers": dep.serving.workers,
            "max_batch_size": dep.serving.batching.max_batch_size,
            "max_delay_ms": dep.serving.batching.max_delay_ms,
            "stats_dir": str(self.stats_root / dep.name / desired.version),
            "record_stats": True,
        }

    def deploy(self, desired: plan.Desired, *, model_dir: Path) -> Backend:
        """Serve ``desired`` from ``model_dir`` in the process `local_hosts` places it in
        (its own: see `launch`; else a shared host); returns once it answers."""
        spec = self.spec(desired, model_dir=model_dir)
        why = local_hosts.needs_own_process(self.hosting, spec,
                                            size=local_hosts.model_bytes(model_dir))
        self._check_cap(str(spec["name"]), int(spec["workers"]), own=bool(why))
        return self.launch(spec) if why else self.host(spec)

    def workers_in_use(self, *, besides: str | None = None) -> int:
        """Worker processes serving now: own servers' workers (of models other than ``besides``)
        plus one per shared host."""
        with self._place_lock:
            own = sum(w for n, w in self._own.values() if n != besides)
            return own + len(self._hosts)

    def _check_cap(self, name: str, workers: int, *, own: bool) -> None:
        """Refuse a deploy that would take the machine past `max_workers` worker processes.

        More than the cap alone: `errors.ConfigError` (held until the manifest or the setting
        changes). More than what other models leave free: `errors.RuntimeFailure`, retried with
        back-off (room may come when another model shrinks or goes); what serves keeps serving.
        """
        cap = self.max_workers
        if cap is None:
            return
        if workers > cap:
            raise errors.ConfigError(
                f"spec.serving.workers of {name} asks for {workers} worker processes, more than "
                f"this controller runs for all models together ({cap}, MLGITOPS_MAX_WORKERS); "
                f"lower spec.serving.workers to at most {cap} or raise MLGITOPS_MAX_WORKERS")
        with self._place_lock:
            used = self.workers_in_use(besides=name)
            if not own and any(len(h.models) < self.hosting.models_per_host
                               for h in self._hosts.values()):
                return  # it joins a host that runs already
        if used + (workers if own else 1) > cap:
            raise errors.RuntimeFailure(
                f"{name} needs {workers} worker process(es) but other models use {used} of the "
                f"{cap} this controller runs (MLGITOPS_MAX_WORKERS); it deploys when room frees "
                "up, or raise MLGITOPS_MAX_WORKERS")

    def relaunch(self, backend: Backend) -> Backend | None:
        """Start ``backend``'s version again from the line it was launched with (None: unknown)."""
        if not backend.spec:
            return None
        with self._place_lock:
            self._own.pop(backend.key, None)  # its process died
        return self.host(backend.spec) if backend.admin else self.launch(backend.spec)

    # shared hosts -----------------------------------------------------------------------
    def _spawn_host(self) -> local_hosts.HostProcess:
        self._counter += 1
        log = self.logs / f"host-{int(time.time())}-{os.getpid()}-{self._counter}.log"
        token = uuid.uuid4().hex
        self.ledger.put(token, role="idle", pid=None, startTime=None, log=str(log))
        try:
            with log.open("ab") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mlgitops.server.host"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    env={**self.env, TOKEN_ENV: token}, start_new_session=True,
                )
        except OSError as exc:
            self.ledger.drop(token)
            raise errors.RuntimeFailure(
                f"cannot start a host process ({exc}); check {sys.executable} runs"
            ) from exc
        host = local_hosts.HostProcess(proc=proc, pid=proc.pid, token=token,
                                       start_time=start_time(proc.pid), log=log)
        self.ledger.put(token, pid=proc.pid, startTime=host.start_time)
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write((json.dumps({"token": token}) + "\n").encode())
            proc.stdin.flush()
        threading.Thread(target=host.read_events, args=(proc.stdout,), daemon=True).start()
        threading.Thread(target=self._record_started, args=(host,), daemon=True).start()
        return host

    def _record_started(self, host: local_hosts.HostProcess) -> None:
        """Write a spare host's control port to the ledger once it listens."""
        with contextlib.suppress(errors.RuntimeFailure):
            host.wait_started(self.ready_timeout)
            if host.role == "idle" and not host.exited():
                self.ledger.put(host.token, adminPort=host.admin_port)

    def _take_host(self, role: str) -> local_hosts.HostProcess:
        """A warm idle host (or a new one), started, for ``role``; the pool refills after."""
        with self._lock:
            self._prune()
            host = self._idle.pop(0) if self._idle else self._spawn_host()
        try:
            host.wait_started(self.ready_timeout)
        except errors.RuntimeFailure:
            self._stop_host(host)
            raise
        host.role = role
        try:
            host.adopt(self.epoch, timeout=10.0)
        except errors.RuntimeFailure:
            self._stop_host(host)
            raise
        self.ledger.put(host.token, **host.record())
        threading.Thread(target=self.fill, daemon=True).start()
        return host

    def _host_alive(self, host: local_hosts.HostProcess) -> bool:
        if host.proc is not None:
            return host.proc.poll() is None
        return is_process(host.pid, host.start_time)

    def _stop_host(self, host: local_hosts.HostProcess, *, grace: float = 5.0) -> None:
        if host.proc is not None:
            self._kill(host.proc, grace=grace)
        else:
            self._stop_pids([host.pid], grace=grace)
        self._hosts.pop(host.token, None)
        self.ledger.drop(host.token)

    def probe(self, spec: Mapping[str, Any]) -> None:
        """Load and warm ``spec`` up in the staging host (never one that serves); ModelError
        with the reason when it does not load, crashes or hangs there."""
        with self._staging_lock:
            staging = self._staging
            if staging is None or not self._host_alive(staging):
                staging = self._staging = self._take_host("staging")
                staging.cap_memory()
                threading.Thread(target=self._retire_staging, args=(staging,),
                                 daemon=True).start()
            try:
                staging.probe({**spec, "stats_dir": None, "record_stats": False},
                              timeout=self.ready_timeout)
            except errors.RuntimeFailure as exc:  # it died or hung on this content
                self._staging = None
                self._stop_host(staging, grace=1.0)
                raise errors.ModelError(
                    f"{spec['name']} at {str(spec['version'])[:12]} did not load: the staging "
                    f"process that tried it crashed or hung ({exc}); fix or republish the model"
                ) from exc

    def _retire_staging(self, staging: local_hosts.HostProcess) -> None:
        """Stop the staging host once idle for a while (it costs a process)."""
        while self._staging is staging and not self._closed:
            time.sleep(1.0)
            with self._staging_lock:
                idle = time.monotonic() - staging.used_at
                if self._staging is staging and idle > local_hosts.STAGING_IDLE_SECONDS:
                    self._staging = None
                    self._stop_host(staging, grace=2.0)

    def host(self, spec: Mapping[str, Any]) -> Backend:
        """Serve ``spec`` in a shared host (probed first unless its digest loaded here before)."""
        digest = str(spec.get("digest") or "")
        if digest not in self.proven:
            self.probe(spec)
            self.proven.add(digest)
        with self._place_lock:
            for token, h in list(self._hosts.items()):
                if not self._host_alive(h):
                    self._hosts.pop(token, None)
                    self.ledger.drop(token)
            room = [h for h in self._hosts.values()
                    if len(h.models) < self.hosting.models_per_host]
            if room:
                chosen = min(room, key=lambda h: len(h.models))
            else:
                chosen = self._take_host("host")
                self._hosts[chosen.token] = chosen
            chosen.pending = (str(spec["name"]), str(spec["version"]))
            self.ledger.put(chosen.token, **chosen.record())
            try:
                port = chosen.load({**spec, "port": 0}, timeout=self.ready_timeout)
            finally:
                chosen.pending = None
                self.ledger.put(chosen.token, **chosen.record())
        return Backend(name=str(spec["name"]), version=str(spec["version"]),
                       digest=str(spec["digest"]), port=port, pid=chosen.pid, log=chosen.log,
                       proc=chosen.proc, spec=dict(spec), token=chosen.token,
                       start_time=chosen.start_time, admin=chosen.admin_port)

    def warm(self) -> bool:
        """True when the pool holds a process that finished its imports (shared mode: a host)."""
        with self._lock:
            self._prune()
            if self.shared:
                return any(h.started() for h in self._idle)
            return bool(self._pool)

    def hosts(self) -> list[local_hosts.HostProcess]:
        """The serving hosts now."""
        return list(self._hosts.values())

    def hosted_here(self, pid: int, *, name: str, version: str) -> bool | None:
        """Whether the host ``pid`` still serves ``name`` at ``version``; None: not a host."""
        for h in [*self._hosts.values(), *([self._staging] if self._staging else [])]:
            if h.pid == pid:
                return (name, version) in h.models.values()
        return None

    def launch(self, spec: Mapping[str, Any]) -> Backend:
        """Serve ``spec`` (the standby JSON line); RuntimeFailure/ModelError with the reason."""
        sb = self._take()
        self.ledger.put(sb.token, role="launching", name=str(spec.get("name")),
                        version=str(spec.get("version")))
        deadline = time.monotonic() + self.ready_timeout
        state = "wait-standby"
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.RuntimeFailure(
                        f"server for {spec['name']} did not become ready within "
                        f"{self.ready_timeout:.0f}s; see {sb.log}"
                    )
                event = sb.next_event(timeout=min(remaining, 1.0))
                if event is None:
                    if sb.proc.poll() is not None:
                        raise errors.RuntimeFailure(
                            f"server for {spec['name']} exited with status {sb.proc.returncode} "
                            f"before it was ready; see {sb.log}:\n{_tail(sb.log)}"
                        )
                    continue
                kind = event.get("event")
                if kind == "standby" and state == "wait-standby":
                    assert sb.proc.stdin is not None
                    sb.proc.stdin.write((json.dumps(dict(spec)) + "\n").encode())
                    sb.proc.stdin.flush()
                    state = "wait-ready"
                elif kind == "ready":
                    backend = Backend(
                        name=str(spec["name"]),
                        version=str(spec["version"]),
                        digest=str(spec["digest"]),
                        port=int(event["port"]),
                        pid=sb.proc.pid,
                        log=sb.log,
                        proc=sb.proc,
                        spec=dict(spec),
                        token=sb.token,
                        start_time=sb.start_time,
                    )
                    self.ledger.put(sb.token, role="serving", port=backend.port)
                    self._count(backend)
                    threading.Thread(target=self._drain, args=(sb,), daemon=True).start()
                    return backend
                elif kind == "error":
                    raise errors.ModelError(str(event.get("message", "the model did not load")))
        except BaseException:
            self._kill(sb.proc)
            self.ledger.drop(sb.token)
            raise
        finally:
            # refill after the launch: a new standby's imports would compete with this one's warmup
            threading.Thread(target=self.fill, daemon=True).start()

    @staticmethod
    def _drain(sb: _Standby) -> None:
        while sb.next_event(timeout=3600) is not None:
            pass

    def alive(self, backend: Backend) -> bool:
        if backend.admin:
            h = self._hosts.get(backend.token)
            return h is not None and backend.port in h.models and self._host_alive(h)
        if backend.proc is not None:
            return backend.proc.poll() is None
        return is_process(backend.pid, backend.start_time)

    def answers(self, backend: Backend, *, timeout: float = 2.0) -> bool:
        """True when the process serves ``backend``'s model at ``backend``'s version."""
        try:
            r = httpx.get(f"{backend.url}/v2/models/{backend.name}", timeout=timeout)
            return r.status_code == 200 and r.json().get("version") == backend.version
        except (httpx.HTTPError, ValueError):
            return False

    def draining(self, backend: Backend) -> None:
        """Record that ``backend`` was replaced and drains before it stops."""
        if backend.admin:  # after a crash, recovery unloads it with every model not adopted
            h = self._hosts.get(backend.token)
            if h is not None and backend.port in h.models:
                h.draining.add(backend.port)
                self.ledger.put(h.token, **h.record())
            return
        if backend.token:
            self.ledger.put(backend.token, role="draining")

    def _ours(self, pid: int | None, started: str | None, token: str | None) -> bool:
        """True when ``pid`` is the recorded process: same start time, and our marker."""
        if not is_process(pid, started) or pid is None:
            return False
        env = _environ(pid)
        if self._marker not in env:
            return False
        return not token or f"{TOKEN_ENV}={token}".encode() in env

    def adopt(self, record: Mapping[str, Any]) -> Backend | None:
        """A server left by an earlier controller, if it is that very process and still serves."""
        try:
            backend = Backend(
                name=str(record["name"]),
                version=str(record["version"]),
                digest=str(record["digest"]),
                port=int(record["port"]),
                pid=int(record["pid"]),
                log=Path(str(record.get("log", self.logs / "adopted.log"))),
                started_at=float(record.get("startedAt", time.time())),
                spec=dict(record.get("spec") or {}),
                token=str(record.get("token") or ""),
                start_time=record.get("startTime"),
                admin=int(record.get("admin") or 0),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if self._ours(backend.pid, backend.start_time, backend.token) and self.answers(backend):
            self._count(backend)
            return backend
        return None

    def _count(self, backend: Backend) -> None:
        """Remember an own-process server's workers for `workers_in_use`."""
        if not backend.admin:
            with self._place_lock:
                self._own[backend.key] = (backend.name, int(backend.spec.get("workers") or 1))

    def recover(self, serving: Mapping[str, Mapping[str, Any]], *, grace: float = 5.0) -> Recovery:
        """After a restart: adopt the ``serving`` records that still serve; stop the rest.

        ``serving`` is what the earlier controller routed (model -> `Backend.record`). Every
        other process of the ledger (standbys, servers launching or draining, servers of
        models no longer routed) and every unrecorded process carrying this runtime's marker
        is stopped: SIGTERM, then SIGKILL after ``grace`` seconds.
        """
        adopted: dict[str, Backend] = {}
        lost: dict[str, str] = {}
        for name, record in serving.items():
            backend = self.adopt(record)
            if backend is None:
                lost[name] = (f"pid {record.get('pid')} is gone or is no longer the server of "
                              f"{name} at {str(record.get('version'))[:12]}")
                continue
            if not backend.token:  # a record written before the ledger existed
                backend.token = uuid.uuid4().hex
            adopted[name] = backend
        keep = {b.token for b in adopted.values()}
        ledger = self.ledger.records()
        for b in adopted.values():
            if b.admin:
                continue
            self.ledger.put(b.token, role="serving", pid=b.pid, startTime=b.start_time
                            or start_time(b.pid), name=b.name, version=b.version, port=b.port)
        unloaded = self._adopt_hosts([b for b in adopted.values() if b.admin], ledger)
        stopped: dict[str, dict[str, Any]] = {}
        victims: list[int] = []
        groups = {b.pid for b in adopted.values()}  # an adopted server's workers share its group
        for pid, carried in server_tokens(self.state_dir).items():
            if carried in keep or pid == os.getpid() or _group(pid) in groups:
                continue
            key = carried or f"pid-{pid}"
            record = ledger.get(carried or "") or {"token": carried, "pid": pid,
                                                   "role": "unrecorded"}
            stopped.setdefault(key, {**record, "pid": record.get("pid") or _group(pid) or pid})
            victims.append(pid)
        self._stop_pids(victims, grace=grace)
        self.ledger.keep_only(keep)
        cleared = [r for t, r in ledger.items() if t not in keep and t not in stopped]
        return Recovery(adopted, lost, [*stopped.values(), *unloaded], cleared)

    def _adopt_hosts(self, backends: list[Backend],
                     ledger: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Take over the hosts serving ``backends``; unload every other model they hold
        (versions that were draining or launching when the earlier controller died): their
        ledger-like records, as `Recovery.stopped` lists them."""
        unloaded: list[dict[str, Any]] = []
        for b in backends:
            h = self._hosts.get(b.token)
            if h is None:
                record = ledger.get(b.token) or {}
                h = self._hosts[b.token] = local_hosts.HostProcess(
                    proc=None, pid=b.pid, token=b.token, start_time=b.start_time, log=b.log,
                    admin_port=b.admin, role="host")
                h.log = Path(str(record.get("log") or b.log))
            h.models[b.port] = (b.name, b.version)
        for h in self._hosts.values():
            known = (ledger.get(h.token) or {}).get("models") or {}
            with contextlib.suppress(errors.RuntimeFailure):
                for m in h.adopt(self.epoch, timeout=self.ready_timeout):
                    port = m.get("port")
                    if port in h.models or not isinstance(port, int):
                        continue
                    h.unload(port)
                    was = known.get(str(port)) or known.get("loading") or []
                    role = was[2] if len(was) > 2 and was[1] == m.get("version") else "unrecorded"
                    unloaded.append({"token": h.token, "role": role, "pid": h.pid, "port": port,
                                     "name": m.get("name"), "version": m.get("version"),
                                     "unloaded": True})
            self.ledger.put(h.token, pid=h.pid, startTime=h.start_time, log=str(h.log),
                            **h.record())
        return unloaded

    def _stop_pids(self, pids: Iterable[int], *, grace: float) -> None:
        """SIGTERM each (verified) process, SIGKILL those still alive after ``grace``."""
        left = [p for p in pids if _signal_verified(p, signal.SIGTERM, marker=self._marker)]
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in left):
            time.sleep(0.05)
        for pid in left:
            if pid_alive(pid):
                _signal_verified(pid, signal.SIGKILL, marker=self._marker)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in left):
            time.sleep(0.05)

    def stop(self, backend: Backend, *, grace: float = 5.0) -> None:
        """Stop a server: SIGTERM to its process group, SIGKILL after ``grace`` seconds.

        A model in a shared host is unloaded (its requests finish); a host left empty stops.
        """
        if backend.admin:
            with self._place_lock:
                h = self._hosts.get(backend.token)
                if h is None:
                    return
                if self._host_alive(h):
                    h.unload(backend.port, timeout=grace + 10.0)
                else:
                    h.models.pop(backend.port, None)
                if h.models:
                    self.ledger.put(h.token, **h.record())
                else:
                    self._stop_host(h, grace=grace)
            return
        with self._place_lock:
            self._own.pop(backend.key, None)
        if backend.proc is not None:
            self._kill(backend.proc, grace=grace)
        elif self._ours(backend.pid, backend.start_time, backend.token):
            self._signal_group(backend.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while is_process(backend.pid, backend.start_time) and time.monotonic() < deadline:
                time.sleep(0.05)
            if is_process(backend.pid, backend.start_time):
                self._signal_group(backend.pid, signal.SIGKILL)
        if backend.token:
            # forked workers whose leader is gone carry the token too
            orphans = [p for p, t in server_tokens(self.state_dir).items() if t == backend.token]
            if orphans:
                self._stop_pids(orphans, grace=1.0)
            self.ledger.drop(backend.token)

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)

    def _kill(self, proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
        if proc.poll() is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        else:
            # the leader is gone; its forked workers may not be
            self._signal_group(proc.pid, signal.SIGKILL)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        """Stop the standby processes, idle hosts and the staging host (backends are
        stopped by their owner)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
            idle, self._idle = self._idle, []
        for sb in pool:
            self._kill(sb.proc, grace=2.0)
            self.ledger.drop(sb.token)
        staging, self._staging = self._staging, None
        for h in [*idle, *([staging] if staging else [])]:
            self._stop_host(h, grace=2.0)

    def sweep(self, *, grace: float = 5.0) -> set[int]:
        """Stop any process of this runtime still alive (a last line of defence); their pids."""
        left = owned_pids(self.state_dir)
        for pid in left:
            self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in left):
            time.sleep(0.05)
        for pid in left:
            if pid_alive(pid):
                self._signal_group(pid, signal.SIGKILL)
        self.ledger.keep_only(())
        return left


class StatsFiles(stats_store.Directory):
    """Live statistics of this machine's servers: the stats store files their workers write.

    A version serves elsewhere while a process that wrote its statistics still runs (this
    process, which may read and write files in tests, does not count).
    """

    def __init__(self, root: Path, *, runtime: LocalRuntime | None = None) -> None:
        super().__init__(root)
        #: knows which versions its shared hosts still serve (a host outlives its models)
        self.runtime = runtime

    def serves_elsewhere(self, name: str, version: str) -> bool:
        snap = self.read(name, version)
        for w in snap.workers.values():
            if w.pid == os.getpid() or not pid_alive(w.pid):
                continue
            hosted = (None if self.runtime is None
                      else self.runtime.hosted_here(w.pid, name=name, version=version))
            if hosted is None or hosted:
                return True
        return False
