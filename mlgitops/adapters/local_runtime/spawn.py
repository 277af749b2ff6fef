"""Starting a server or host process: recorded in the ledger before it exists.

Hosts are forked from a *zygote* (`Zygote`, ``python -m mlgitops.server.host --zygote``) when
one runs: a host then shares the imported libraries' memory with every other host and starts
in milliseconds (see `mlgitops.server.host`). A forked host is not the controller's child: it
is watched through a pidfd (`Forked`), and stopped like any process of the runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlgitops import errors
from mlgitops.adapters.local_runtime.ledger import Ledger
from mlgitops.adapters.local_runtime.processes import TOKEN_ENV, kill, start_time


@dataclass(frozen=True)
class Spawned:
    """A process just started, with its ledger token, log and start time."""

    proc: subprocess.Popen[bytes]
    token: str
    log: Path
    start_time: str | None


class Spawner:
    """Starts ``python -m <module> [args]`` in its own session, stdin and stdout piped, stderr to a
    log under ``logs``, with ``env`` and its ledger token in the environment."""

    def __init__(self, ledger: Ledger, *, logs: Path, env: Mapping[str, str]) -> None:
        self.ledger = ledger
        self.logs = logs
        self.env = dict(env)
        self._counter = 0
        self._lock = threading.Lock()

    def start(self, *module: str, prefix: str, role: str, what: str,
              pass_fds: tuple[int, ...] = ()) -> Spawned:
        """Start ``module``, recorded as ``role`` first (a crash right after Popen still leaves
        a trace to follow); RuntimeFailure naming ``what`` when it cannot start."""
        log = self._log(prefix)
        token = uuid.uuid4().hex
        self.ledger.put(token, role=role, pid=None, startTime=None, log=str(log))
        try:
            with log.open("ab") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", *module],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env={**self.env, TOKEN_ENV: token},
                    start_new_session=True,
                    pass_fds=pass_fds,
                )
        except OSError as exc:
            self.ledger.drop(token)
            raise errors.RuntimeFailure(
                f"cannot start {what} ({exc}); check {sys.executable} runs"
            ) from exc
        started = start_time(proc.pid)
        self.ledger.put(token, pid=proc.pid, startTime=started)
        return Spawned(proc, token, log, started)

    def fork(self, zygote: Zygote, *, prefix: str, role: str) -> Spawned:
        """A host forked by ``zygote``, recorded as ``role`` first, as `start` does."""
        log, token = self._log(prefix), uuid.uuid4().hex
        self.ledger.put(token, role=role, pid=None, startTime=None, log=str(log))
        try:
            proc = zygote.fork(token, log)
        except errors.RuntimeFailure:
            self.ledger.drop(token)
            raise
        started = start_time(proc.pid)
        self.ledger.put(token, pid=proc.pid, startTime=started)
        return Spawned(proc, token, log, started)

    def _log(self, prefix: str) -> Path:
        with self._lock:
            self._counter += 1
            counter = self._counter
        return self.logs / f"{prefix}-{int(time.time())}-{os.getpid()}-{counter}.log"


class Forked(subprocess.Popen[bytes]):
    """A process forked by the zygote, with the `subprocess.Popen` surface the pools use
    (``pid``, ``stdin``, ``stdout``, ``poll``, ``wait``, signals). Not our child, so it is
    watched through a pidfd; its exit status is not known here (``returncode`` -1)."""

    def __init__(self, pid: int, *, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        # no Popen.__init__: the process exists already
        self.args = ["mlgitops.server.host", f"forked:{pid}"]
        self.pid = pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, None
        self.returncode: Any = None
        self._child_created = False  # Popen.__del__ then leaves it alone
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # already gone
            self._pidfd = None
            self.returncode = -1

    def _exited(self, timeout: float) -> bool:
        if self.returncode is not None:
            return True
        assert self._pidfd is not None
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        if ready:
            self.returncode = -1
            os.close(self._pidfd)
            self._pidfd = None
        return bool(ready)

    def poll(self) -> int | None:
        self._exited(0)
        return self.returncode  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited(86400.0 if timeout is None else timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return -1

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def __del__(self) -> None:
        if getattr(self, "_pidfd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)  # type: ignore[arg-type]


class Zygote:
    """The zygote process of a runtime's hosts: started once, then `fork` asks it for a host."""

    def __init__(self, spawner: Spawner, *, ready_timeout: float) -> None:
        self.spawner = spawner
        self.ready_timeout = ready_timeout
        self._spawned: Spawned | None = None
        self._conn: socket.socket | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.closed = False

    @property
    def pid(self) -> int | None:
        s = self._spawned
        return s.proc.pid if s is not None and s.proc.poll() is None else None

    def start(self) -> None:
        """Start the zygote unless it runs (it imports while nothing waits for it)."""
        with self._lock:
            self._ensure()

    def ready(self) -> bool:
        """True once the zygote finished its imports (never blocks)."""
        return self._ready.is_set() and self.pid is not None

    def _ensure(self) -> Spawned:
        if self._spawned is not None and self._spawned.proc.poll() is None:
            return self._spawned
        if self.closed:
            raise errors.RuntimeFailure("the host zygote is closed")
        self._drop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            spawned = self.spawner.start("mlgitops.server.host", "--zygote", str(theirs.fileno()),
                                         prefix="zygote", role="zygote", what="the host zygote",
                                         pass_fds=(theirs.fileno(),))
        except errors.RuntimeFailure:
            ours.close()
            raise
        finally:
            theirs.close()
        self._spawned, self._conn = spawned, ours
        self._ready = ready = threading.Event()
        threading.Thread(target=self._watch, args=(spawned.proc.stdout, ready), daemon=True,
                         name="zygote-events").start()
        return spawned

    @staticmethod
    def _watch(stream: IO[bytes] | None, ready: threading.Event) -> None:
        if stream is None:
            return
        for raw in stream:
            with contextlib.suppress(ValueError):
                if json.loads(raw).get("event") == "zygote":
                    ready.set()

    def fork(self, token: str, log: Path) -> Forked:
        """A new host process (its stderr to ``log``, ``token`` its ledger token);
        RuntimeFailure when the zygote cannot fork one."""
        with self._lock:
            spawned = self._ensure()
            conn = self._conn
            assert conn is not None
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                request = json.dumps({"token": token, "log": str(log)}).encode()
                socket.send_fds(conn, [request], [in_r, out_w, err])
                conn.settimeout(self.ready_timeout)
                answer = json.loads(conn.recv(65536) or b"{}")
            except (OSError, ValueError) as exc:
                for fd in (in_w, out_r):
                    os.close(fd)
                self._stop(spawned)
                raise errors.RuntimeFailure(
                    f"the host zygote did not fork a host ({type(exc).__name__}: {exc}); see "
                    f"{spawned.log}") from exc
            finally:
                for fd in (in_r, out_w, err):
                    os.close(fd)
            pid = answer.get("pid") if isinstance(answer, dict) else None
            if not isinstance(pid, int) or pid <= 0:
                for fd in (in_w, out_r):
                    os.close(fd)
                raise errors.RuntimeFailure(f"the host zygote refused to fork: {answer}")
            return Forked(pid, stdin=os.fdopen(in_w, "wb"), stdout=os.fdopen(out_r, "rb"))

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def _stop(self, spawned: Spawned) -> None:
        self._drop()
        kill(spawned.proc, grace=2.0)
        self.spawner.ledger.drop(spawned.token)
        if self._spawned is spawned:
            self._spawned = None

    def close(self) -> None:
        """Stop the zygote (the hosts it forked keep running)."""
        with self._lock:
            self.closed = True
            spawned, self._spawned = self._spawned, None
            if spawned is not None:
                self._stop(spawned)
