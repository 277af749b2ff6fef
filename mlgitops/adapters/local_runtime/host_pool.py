"""The pool of shared host processes: serving hosts, the zygote they fork from, the staging host.

Who goes where is `local_hosts`' decision; this keeps the processes: it forks hosts from the
zygote (`spawn.Zygote`: the warm pool is the zygote itself, a host costs a fork and shares the
libraries' memory; with ``zygote=False``, or when the zygote cannot fork, a host is a fresh
interpreter and warm ones wait idle), places a model in the host with the fewest models below
the limit, probes content never loaded here in a separate staging host first, and takes the
hosts of an earlier controller over after a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlgitops import errors
from mlgitops.adapters import local_hosts
from mlgitops.adapters.local_runtime.ledger import Backend, Ledger
from mlgitops.adapters.local_runtime.processes import is_process, kill, stop_pids
from mlgitops.adapters.local_runtime.spawn import Spawner, Zygote
from mlgitops.core.serve_spec import ServeSpec


class HostPool:
    """Host processes of one runtime (``epoch`` is its identity towards them)."""

    def __init__(self, *, spawner: Spawner, ledger: Ledger, hosting: local_hosts.Hosting,
                 proven: local_hosts.Proven, epoch: str, ready_timeout: float, marker: bytes,
                 place_lock: threading.RLock, refill: Callable[[], None],
                 zygote: bool = True) -> None:
        self.spawner = spawner
        self.ledger = ledger
        self.hosting = hosting
        self.proven = proven
        self.epoch = epoch
        self.ready_timeout = ready_timeout
        self._marker = marker
        #: placement and accounting (shared with the runtime's own-process accounting)
        self.place_lock = place_lock
        #: tops the warm pool up again (in a thread) after a host was taken from it
        self._refill = refill
        #: serving hosts by token; idle (warm) hosts; the staging host (probes only)
        self.serving: dict[str, local_hosts.HostProcess] = {}
        self._idle: list[local_hosts.HostProcess] = []
        self._staging: local_hosts.HostProcess | None = None
        self._lock = threading.Lock()
        self._staging_lock = threading.Lock()
        self.closed = False
        self.zygote = Zygote(spawner, ready_timeout=ready_timeout) if zygote else None

    # the warm pool ------------------------------------------------------------------------
    def fill(self, count: int) -> None:
        """Top the idle hosts up to ``count`` (with a zygote: start it, it is the warm pool)."""
        if self.zygote is not None and count > 0 and not self.closed:
            with contextlib.suppress(errors.RuntimeFailure):
                self.zygote.start()
                return
        with self._lock:
            self._prune()
            while not self.closed and len(self._idle) < count:
                self._idle.append(self._spawn())

    def _prune(self) -> None:
        gone = [h for h in self._idle if h.exited()]
        if gone:
            self._idle = [h for h in self._idle if h not in gone]
            self.ledger.drop(*(h.token for h in gone))

    def warm(self) -> bool:
        """True when the zygote or an idle host finished its imports."""
        if self.zygote is not None and self.zygote.ready():
            return True
        with self._lock:
            self._prune()
            return any(h.started() for h in self._idle)

    def _spawn(self) -> local_hosts.HostProcess:
        s = None
        if self.zygote is not None and not self.closed:
            with contextlib.suppress(errors.RuntimeFailure):  # else a fresh interpreter
                s = self.spawner.fork(self.zygote, prefix="host", role="idle")
        if s is None:
            s = self.spawner.start("mlgitops.server.host", prefix="host", role="idle",
                                   what="a host process")
        proc = s.proc
        host = local_hosts.HostProcess(proc=proc, pid=proc.pid, token=s.token,
                                       start_time=s.start_time, log=s.log)
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write((json.dumps({"token": s.token}) + "\n").encode())
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

    def _take(self, role: str) -> local_hosts.HostProcess:
        """A warm idle host (or a new one), started, for ``role``; the pool refills after."""
        with self._lock:
            self._prune()
            host = self._idle.pop(0) if self._idle else self._spawn()
        try:
            host.wait_started(self.ready_timeout)
        except errors.RuntimeFailure:
            self.stop_host(host)
            raise
        host.role = role
        try:
            host.adopt(self.epoch, timeout=10.0)
        except errors.RuntimeFailure:
            self.stop_host(host)
            raise
        self.ledger.put(host.token, **host.record())
        threading.Thread(target=self._refill, daemon=True).start()
        return host

    # hosts ---------------------------------------------------------------------------------
    def alive(self, host: local_hosts.HostProcess) -> bool:
        if host.proc is not None:
            return host.proc.poll() is None
        return is_process(host.pid, host.start_time)

    def stop_host(self, host: local_hosts.HostProcess, *, grace: float = 5.0) -> None:
        if host.proc is not None:
            kill(host.proc, grace=grace)
        else:
            stop_pids([host.pid], marker=self._marker, grace=grace)
        self.serving.pop(host.token, None)
        self.ledger.drop(host.token)

    def has_room(self) -> bool:
        """True when a serving host takes one more model."""
        return any(len(h.models) < self.hosting.models_per_host for h in self.serving.values())

    def probe(self, spec: ServeSpec) -> None:
        """Load and warm ``spec`` up in the staging host (never one that serves); ModelError
        with the reason when it does not load, crashes or hangs there."""
        with self._staging_lock:
            staging = self._staging
            if staging is None or not self.alive(staging):
                staging = self._staging = self._take("staging")
                staging.cap_memory()
                threading.Thread(target=self._retire_staging, args=(staging,),
                                 daemon=True).start()
            try:
                staging.probe(dataclasses.replace(spec, stats_dir=None, record_stats=False),
                              timeout=self.ready_timeout)
            except errors.RuntimeFailure as exc:  # it died or hung on this content
                self._staging = None
                self.stop_host(staging, grace=1.0)
                raise errors.ModelError(
                    f"{spec.name} at {spec.version[:12]} did not load: the staging "
                    f"process that tried it crashed or hung ({exc}); fix or republish the model"
                ) from exc

    def _retire_staging(self, staging: local_hosts.HostProcess) -> None:
        """Stop the staging host once idle for a while (it costs a process)."""
        while self._staging is staging and not self.closed:
            time.sleep(1.0)
            with self._staging_lock:
                idle = time.monotonic() - staging.used_at
                if self._staging is staging and idle > local_hosts.STAGING_IDLE_SECONDS:
                    self._staging = None
                    self.stop_host(staging, grace=2.0)

    def host(self, spec: ServeSpec) -> Backend:
        """Serve ``spec`` in a shared host (probed first unless its digest loaded here before)."""
        if spec.digest not in self.proven:
            self.probe(spec)
            self.proven.add(spec.digest)
        with self.place_lock:
            for token, h in list(self.serving.items()):
                if not self.alive(h):
                    self.serving.pop(token, None)
                    self.ledger.drop(token)
            room = [h for h in self.serving.values()
                    if len(h.models) < self.hosting.models_per_host]
            if room:
                chosen = min(room, key=lambda h: len(h.models))
            else:
                chosen = self._take("host")
                self.serving[chosen.token] = chosen
            chosen.pending = (spec.name, spec.version)
            self.ledger.put(chosen.token, **chosen.record())
            try:
                port = chosen.load(dataclasses.replace(spec, port=0), timeout=self.ready_timeout)
            finally:
                chosen.pending = None
                self.ledger.put(chosen.token, **chosen.record())
        return Backend(name=spec.name, version=spec.version, digest=spec.digest, port=port,
                       pid=chosen.pid, log=chosen.log, proc=chosen.proc, spec=spec,
                       token=chosen.token, start_time=chosen.start_time, admin=chosen.admin_port)

    def hosts(self) -> list[local_hosts.HostProcess]:
        """The serving hosts now."""
        return list(self.serving.values())

    def hosted_here(self, pid: int, *, name: str, version: str) -> bool | None:
        """Whether the host ``pid`` still serves ``name`` at ``version``; None: not a host."""
        for h in [*self.serving.values(), *([self._staging] if self._staging else [])]:
            if h.pid == pid:
                return (name, version) in h.models.values()
        return None

    # a model in a host ---------------------------------------------------------------------
    def serves(self, backend: Backend) -> bool:
        """True while ``backend``'s host runs and holds it."""
        h = self.serving.get(backend.token)
        return h is not None and backend.port in h.models and self.alive(h)

    def draining(self, backend: Backend) -> None:
        """Record that ``backend`` drains (after a crash, recovery unloads it)."""
        h = self.serving.get(backend.token)
        if h is not None and backend.port in h.models:
            h.draining.add(backend.port)
            self.ledger.put(h.token, **h.record())

    def unload(self, backend: Backend, *, grace: float) -> None:
        """Unload ``backend`` from its host (its requests finish); a host left empty stops."""
        with self.place_lock:
            h = self.serving.get(backend.token)
            if h is None:
                return
            if self.alive(h):
                h.unload(backend.port, timeout=grace + 10.0)
            else:
                h.models.pop(backend.port, None)
            if h.models:
                self.ledger.put(h.token, **h.record())
            else:
                self.stop_host(h, grace=grace)

    # after a crash -------------------------------------------------------------------------
    def adopt(self, backends: list[Backend],
              ledger: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Take over the hosts serving ``backends``; unload every other model they hold
        (versions that were draining or launching when the earlier controller died): their
        ledger-like records, as `Recovery.stopped` lists them."""
        unloaded: list[dict[str, Any]] = []
        for b in backends:
            h = self.serving.get(b.token)
            if h is None:
                record = ledger.get(b.token) or {}
                h = self.serving[b.token] = local_hosts.HostProcess(
                    proc=None, pid=b.pid, token=b.token, start_time=b.start_time, log=b.log,
                    admin_port=b.admin, role="host")
                h.log = Path(str(record.get("log") or b.log))
            h.models[b.port] = (b.name, b.version)
        for h in self.serving.values():
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

    def close(self) -> None:
        """Stop the idle hosts and the staging host (serving ones stop with their models)."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        staging, self._staging = self._staging, None
        for h in [*idle, *([staging] if staging else [])]:
            self.stop_host(h, grace=2.0)
        if self.zygote is not None:
            self.zygote.close()
