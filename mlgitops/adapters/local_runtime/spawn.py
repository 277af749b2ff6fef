"""Starting a server or host process: recorded in the ledger before it exists."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlgitops import errors
from mlgitops.adapters.local_runtime.ledger import Ledger
from mlgitops.adapters.local_runtime.processes import TOKEN_ENV, start_time


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

    def start(self, *module: str, prefix: str, role: str, what: str) -> Spawned:
        """Start ``module``, recorded as ``role`` first (a crash right after Popen still leaves
        a trace to follow); RuntimeFailure naming ``what`` when it cannot start."""
        with self._lock:
            self._counter += 1
            counter = self._counter
        log = self.logs / f"{prefix}-{int(time.time())}-{os.getpid()}-{counter}.log"
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
                )
        except OSError as exc:
            self.ledger.drop(token)
            raise errors.RuntimeFailure(
                f"cannot start {what} ({exc}); check {sys.executable} runs"
            ) from exc
        started = start_time(proc.pid)
        self.ledger.put(token, pid=proc.pid, startTime=started)
        return Spawned(proc, token, log, started)
