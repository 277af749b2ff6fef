"""`LocalRuntime`: launch, watch, stop and adopt the server processes of this machine.

Where each piece lives: process identity and signals in `processes`, the ledger and the
records of a recovery in `ledger`, the warm standby processes in `standby`, the shared hosts
in `host_pool`; this module places a model (its own process or a host), launches, stops and,
after a crash, adopts what still serves and stops the rest.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from mlgitops import errors
from mlgitops.adapters import local_hosts
from mlgitops.adapters.local_runtime.host_pool import HostPool
from mlgitops.adapters.local_runtime.ledger import LEDGER, Backend, Ledger, Recovery
from mlgitops.adapters.local_runtime.processes import (
    OWNER_ENV,
    TOKEN_ENV,
    environ,
    group,
    is_process,
    kill,
    owned_pids,
    pid_alive,
    server_tokens,
    signal_group,
    start_time,
    stop_pids,
    tail,
)
from mlgitops.adapters.local_runtime.spawn import Spawner
from mlgitops.adapters.local_runtime.standby import Standby, StandbyPool
from mlgitops.core import plan
from mlgitops.core.serve_spec import ServeSpec


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
        self._place_lock = threading.RLock()
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
        spawner = Spawner(self.ledger, logs=self.logs, env=self.env)
        self._standbys = StandbyPool(spawner, self.ledger)
        self._hosts = HostPool(spawner=spawner, ledger=self.ledger, hosting=self.hosting,
                               proven=self.proven, epoch=self.epoch,
                               ready_timeout=ready_timeout, marker=self._marker,
                               place_lock=self._place_lock, refill=self.fill)

    # warm pool ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Warm the standby pool (`fill`): the first deploy need not wait for imports."""
        self.fill()

    @property
    def shared(self) -> bool:
        return self.hosting.mode == local_hosts.HOSTED

    def fill(self) -> None:
        """Top the pool up to ``standby`` warm processes (idle hosts in shared mode)."""
        if self.shared:
            self._hosts.fill(self.standby_count)
        else:
            self._standbys.fill(self.standby_count)

    def warm(self) -> bool:
        """True when the pool holds a process that finished its imports (shared mode: a host)."""
        return self._hosts.warm() if self.shared else self._standbys.warm()

    # placing a model ------------------------------------------------------------------------
    def spec(self, desired: plan.Desired, *, model_dir: Path) -> ServeSpec:
        """What serves ``desired`` from ``model_dir`` on a free local port."""
        dep = desired.deployment
        if dep is None:
            raise errors.ManifestError(desired.error or f"the manifest of {desired.name} is invalid")
        return ServeSpec(
            model_dir=model_dir,
            name=dep.name,
            version=desired.version,
            digest=dep.digest,
            trusted_types=tuple(dep.trusted_types),
            trust_allow=None if self.trust_allow is None else tuple(sorted(self.trust_allow)),
            host="127.0.0.1",
            port=0,
            workers=dep.serving.workers,
            max_batch_size=dep.serving.batching.max_batch_size,
            max_delay_ms=dep.serving.batching.max_delay_ms,
            stats_dir=self.stats_root / dep.name / desired.version,
            record_stats=True,
        )

    def deploy(self, desired: plan.Desired, *, model_dir: Path) -> Backend:
        """Serve ``desired`` from ``model_dir`` in the process `local_hosts` places it in
        (its own: see `launch`; else a shared host); returns once it answers."""
        spec = self.spec(desired, model_dir=model_dir)
        why = local_hosts.needs_own_process(self.hosting, spec,
                                            size=local_hosts.model_bytes(model_dir))
        self._check_cap(spec.name, spec.workers, own=bool(why))
        return self.launch(spec) if why else self.host(spec)

    def workers_in_use(self, *, besides: str | None = None) -> int:
        """Worker processes serving now: own servers' workers (of models other than ``besides``)
        plus one per shared host."""
        with self._place_lock:
            own = sum(w for n, w in self._own.values() if n != besides)
            return own + len(self._hosts.serving)

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
            if not own and self._hosts.has_room():
                return  # it joins a host that runs already
        if used + (workers if own else 1) > cap:
            raise errors.RuntimeFailure(
                f"{name} needs {workers} worker process(es) but other models use {used} of the "
                f"{cap} this controller runs (MLGITOPS_MAX_WORKERS); it deploys when room frees "
                "up, or raise MLGITOPS_MAX_WORKERS")

    def relaunch(self, backend: Backend) -> Backend | None:
        """Start ``backend``'s version again from the spec it was launched with (None: unknown)."""
        if backend.spec is None:
            return None
        with self._place_lock:
            self._own.pop(backend.key, None)  # its process died
        return self.host(backend.spec) if backend.admin else self.launch(backend.spec)

    # shared hosts ---------------------------------------------------------------------------
    def probe(self, spec: ServeSpec) -> None:
        """Load and warm ``spec`` up in the staging host (see `HostPool.probe`)."""
        self._hosts.probe(spec)

    def host(self, spec: ServeSpec) -> Backend:
        """Serve ``spec`` in a shared host (probed first unless its digest loaded here before)."""
        return self._hosts.host(spec)

    def hosts(self) -> list[local_hosts.HostProcess]:
        """The serving hosts now."""
        return self._hosts.hosts()

    def hosted_here(self, pid: int, *, name: str, version: str) -> bool | None:
        """Whether the host ``pid`` still serves ``name`` at ``version``; None: not a host."""
        return self._hosts.hosted_here(pid, name=name, version=version)

    # own processes --------------------------------------------------------------------------
    def launch(self, spec: ServeSpec) -> Backend:
        """Serve ``spec`` in a process of its own; RuntimeFailure/ModelError with the reason."""
        sb = self._standbys.take()
        self.ledger.put(sb.token, role="launching", name=spec.name, version=spec.version)
        deadline = time.monotonic() + self.ready_timeout
        state = "wait-standby"
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.RuntimeFailure(
                        f"server for {spec.name} did not become ready within "
                        f"{self.ready_timeout:.0f}s; see {sb.log}"
                    )
                event = sb.next_event(timeout=min(remaining, 1.0))
                if event is None:
                    if sb.proc.poll() is not None:
                        raise errors.RuntimeFailure(
                            f"server for {spec.name} exited with status {sb.proc.returncode} "
                            f"before it was ready; see {sb.log}:\n{tail(sb.log)}"
                        )
                    continue
                kind = event.get("event")
                if kind == "standby" and state == "wait-standby":
                    assert sb.proc.stdin is not None
                    sb.proc.stdin.write((json.dumps(spec.to_json()) + "\n").encode())
                    sb.proc.stdin.flush()
                    state = "wait-ready"
                elif kind == "ready":
                    return self._ready(sb, spec, port=int(event["port"]))
                elif kind == "error":
                    raise errors.ModelError(str(event.get("message", "the model did not load")))
        except BaseException:
            kill(sb.proc)
            self.ledger.drop(sb.token)
            raise
        finally:
            # refill after the launch: a new standby's imports would compete with this one's warmup
            threading.Thread(target=self.fill, daemon=True).start()

    def _ready(self, sb: Standby, spec: ServeSpec, *, port: int) -> Backend:
        backend = Backend(name=spec.name, version=spec.version, digest=spec.digest, port=port,
                          pid=sb.proc.pid, log=sb.log, proc=sb.proc, spec=spec, token=sb.token,
                          start_time=sb.start_time)
        self.ledger.put(sb.token, role="serving", port=backend.port)
        self._count(backend)
        threading.Thread(target=sb.drain, daemon=True).start()
        return backend

    def _count(self, backend: Backend) -> None:
        """Remember an own-process server's workers for `workers_in_use`."""
        if not backend.admin:
            with self._place_lock:
                self._own[backend.key] = (backend.name, backend.workers)

    # watching -------------------------------------------------------------------------------
    def alive(self, backend: Backend) -> bool:
        if backend.admin:
            return self._hosts.serves(backend)
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
            self._hosts.draining(backend)
            return
        if backend.token:
            self.ledger.put(backend.token, role="draining")

    # recovery -------------------------------------------------------------------------------
    def _ours(self, pid: int | None, started: str | None, token: str | None) -> bool:
        """True when ``pid`` is the recorded process: same start time, and our marker."""
        if not is_process(pid, started) or pid is None:
            return False
        env = environ(pid)
        if self._marker not in env:
            return False
        return not token or f"{TOKEN_ENV}={token}".encode() in env

    def adopt(self, record: Mapping[str, Any]) -> Backend | None:
        """A server left by an earlier controller, if it is that very process and still serves."""
        try:
            backend = Backend.of(record, log=self.logs / "adopted.log")
        except (KeyError, TypeError, ValueError):
            return None
        if self._ours(backend.pid, backend.start_time, backend.token) and self.answers(backend):
            self._count(backend)
            return backend
        return None

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
        unloaded = self._hosts.adopt([b for b in adopted.values() if b.admin], ledger)
        stopped: dict[str, dict[str, Any]] = {}
        victims: list[int] = []
        groups = {b.pid for b in adopted.values()}  # an adopted server's workers share its group
        for pid, carried in server_tokens(self.state_dir).items():
            if carried in keep or pid == os.getpid() or group(pid) in groups:
                continue
            key = carried or f"pid-{pid}"
            record = ledger.get(carried or "") or {"token": carried, "pid": pid,
                                                   "role": "unrecorded"}
            stopped.setdefault(key, {**record, "pid": record.get("pid") or group(pid) or pid})
            victims.append(pid)
        self._stop_pids(victims, grace=grace)
        self.ledger.keep_only(keep)
        cleared = [r for t, r in ledger.items() if t not in keep and t not in stopped]
        return Recovery(adopted, lost, [*stopped.values(), *unloaded], cleared)

    def _stop_pids(self, pids: Iterable[int], *, grace: float) -> None:
        """SIGTERM each (verified) process, SIGKILL those still alive after ``grace``."""
        stop_pids(pids, marker=self._marker, grace=grace)

    # stopping -------------------------------------------------------------------------------
    def stop(self, backend: Backend, *, grace: float = 5.0) -> None:
        """Stop a server: SIGTERM to its process group, SIGKILL after ``grace`` seconds.

        A model in a shared host is unloaded (its requests finish); a host left empty stops.
        """
        if backend.admin:
            self._hosts.unload(backend, grace=grace)
            return
        with self._place_lock:
            self._own.pop(backend.key, None)
        if backend.proc is not None:
            kill(backend.proc, grace=grace)
        elif self._ours(backend.pid, backend.start_time, backend.token):
            signal_group(backend.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while is_process(backend.pid, backend.start_time) and time.monotonic() < deadline:
                time.sleep(0.05)
            if is_process(backend.pid, backend.start_time):
                signal_group(backend.pid, signal.SIGKILL)
        if backend.token:
            # forked workers whose leader is gone carry the token too
            orphans = [p for p, t in server_tokens(self.state_dir).items() if t == backend.token]
            if orphans:
                self._stop_pids(orphans, grace=1.0)
            self.ledger.drop(backend.token)

    def close(self) -> None:
        """Stop the standby processes, idle hosts and the staging host (backends are
        stopped by their owner)."""
        self._standbys.close()
        self._hosts.close()

    def sweep(self, *, grace: float = 5.0) -> set[int]:
        """Stop any process of this runtime still alive (a last line of defence); their pids."""
        left = owned_pids(self.state_dir)
        for pid in left:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in left):
            time.sleep(0.05)
        for pid in left:
            if pid_alive(pid):
                signal_group(pid, signal.SIGKILL)
        self.ledger.keep_only(())
        return left
