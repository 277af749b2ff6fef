"""Inference server processes on this machine (the embedded runtime).

Importing scikit-learn takes seconds, so the runtime keeps warm *standby* processes
(``python -m mlgitops.server --standby``, imports done) and hands one a model to serve:
a new version answers in well under a second after the controller asks for it.
Processes run in their own session so Ctrl-C reaches only the controller, which stops them
in order; a controller killed with SIGKILL leaves them serving for its successor to adopt.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from mlgitops import errors


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        }


class _Standby:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
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


def owned_pids(state_dir: Path) -> set[int]:
    """Live processes started by a runtime for ``state_dir`` (via their environment marker)."""
    marker = f"MLGITOPS_OWNER={state_dir}".encode()
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") and pid_alive(int(proc.name)):
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalRuntime:
    """Starts, watches and stops server processes; keeps ``standby`` warm ones ready."""

    def __init__(
        self,
        state_dir: Path,
        *,
        standby: int = 1,
        ready_timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.standby_count = standby
        self.ready_timeout = ready_timeout
        # MLGITOPS_OWNER marks every process of this runtime (tests and operators can find them)
        self.env = {**os.environ, "DO_NOT_TRACK": "true", "MLGITOPS_OWNER": str(state_dir),
                    **(env or {})}
        self._pool: list[_Standby] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._closed = False

    # standby pool -----------------------------------------------------------------------
    def _spawn(self) -> _Standby:
        self._counter += 1
        log = self.logs / f"server-{int(time.time())}-{os.getpid()}-{self._counter}.log"
        with log.open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlgitops.server", "--standby"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        return _Standby(proc, log)

    def fill(self) -> None:
        """Top the pool up to ``standby`` warm processes."""
        with self._lock:
            self._pool = [s for s in self._pool if s.proc.poll() is None]
            while not self._closed and len(self._pool) < self.standby_count:
                self._pool.append(self._spawn())

    def _take(self) -> _Standby:
        with self._lock:
            self._pool = [s for s in self._pool if s.proc.poll() is None]
            return self._pool.pop(0) if self._pool else self._spawn()

    # backends ---------------------------------------------------------------------------
    def launch(self, spec: Mapping[str, Any]) -> Backend:
        """Serve ``spec`` (the standby JSON line); RuntimeFailure/ModelError with the reason."""
        sb = self._take()
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
                    )
                    threading.Thread(target=self._drain, args=(sb,), daemon=True).start()
                    return backend
                elif kind == "error":
                    raise errors.ModelError(str(event.get("message", "the model did not load")))
        except BaseException:
            self._kill(sb.proc)
            raise
        finally:
            # refill after the launch: a new standby's imports would compete with this one's warmup
            threading.Thread(target=self.fill, daemon=True).start()

    @staticmethod
    def _drain(sb: _Standby) -> None:
        while sb.next_event(timeout=3600) is not None:
            pass

    def alive(self, backend: Backend) -> bool:
        if backend.proc is not None:
            return backend.proc.poll() is None
        return pid_alive(backend.pid)

    def answers(self, backend: Backend, *, timeout: float = 2.0) -> bool:
        """True when the process serves ``backend``'s model at ``backend``'s version."""
        try:
            r = httpx.get(f"{backend.url}/v2/models/{backend.name}", timeout=timeout)
            return r.status_code == 200 and r.json().get("version") == backend.version
        except (httpx.HTTPError, ValueError):
            return False

    def adopt(self, record: Mapping[str, Any]) -> Backend | None:
        """A server left by an earlier controller, if it still serves what it says."""
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
            )
        except (KeyError, TypeError, ValueError):
            return None
        if pid_alive(backend.pid) and self.answers(backend):
            return backend
        if pid_alive(backend.pid):
            self._signal_group(backend.pid, signal.SIGTERM)
        return None

    def stop(self, backend: Backend, *, grace: float = 5.0) -> None:
        """Stop a server: SIGTERM to its process group, SIGKILL after ``grace`` seconds."""
        if backend.proc is not None:
            self._kill(backend.proc, grace=grace)
            return
        self._signal_group(backend.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(backend.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(backend.pid):
            self._signal_group(backend.pid, signal.SIGKILL)

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
        """Stop the standby processes (backends are stopped by their owner)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for sb in pool:
            self._kill(sb.proc, grace=2.0)

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
        return left
