"""The warm pool of standby server processes (one model each, own process)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

from mlgitops.adapters.local_runtime.ledger import Ledger
from mlgitops.adapters.local_runtime.processes import kill
from mlgitops.adapters.local_runtime.spawn import Spawner


class Standby:
    """A ``python -m mlgitops.server --standby`` process and the events it prints."""

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

    def drain(self) -> None:
        """Read (and drop) what it prints until it exits (a full pipe would block it)."""
        while self.next_event(timeout=3600) is not None:
            pass


class StandbyPool:
    """Standby processes that finished their imports, ready to be handed a model."""

    def __init__(self, spawner: Spawner, ledger: Ledger) -> None:
        self.spawner = spawner
        self.ledger = ledger
        self._pool: list[Standby] = []
        self._lock = threading.Lock()
        self.closed = False

    def _spawn(self) -> Standby:
        s = self.spawner.start("mlgitops.server", "--standby", prefix="server", role="standby",
                               what="a server process")
        return Standby(s.proc, s.log, s.token, s.start_time)

    def fill(self, count: int) -> None:
        """Top the pool up to ``count`` processes."""
        with self._lock:
            self._prune()
            while not self.closed and len(self._pool) < count:
                self._pool.append(self._spawn())

    def _prune(self) -> None:
        dead = [s for s in self._pool if s.proc.poll() is not None]
        if dead:
            self._pool = [s for s in self._pool if s not in dead]
            self.ledger.drop(*(s.token for s in dead))

    def take(self) -> Standby:
        """A warm standby (or a new one when the pool is empty)."""
        with self._lock:
            self._prune()
            return self._pool.pop(0) if self._pool else self._spawn()

    def warm(self) -> bool:
        """True when the pool holds a live process."""
        with self._lock:
            self._prune()
            return bool(self._pool)

    def close(self) -> None:
        """Stop the pool's processes; none is started after."""
        with self._lock:
            self.closed = True
            pool, self._pool = self._pool, []
        for sb in pool:
            kill(sb.proc, grace=2.0)
            self.ledger.drop(sb.token)
