"""The ledger of server processes, and what recovery after a crash found.

Every process is written to ``<state>/servers.json`` (atomically) *before* it is started,
under a random token that the process also carries in its environment, and again with its
pid and start time once it runs; `LocalRuntime.recover` reads it back after a crash.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgitops.adapters import files
from mlgitops.core.serve_spec import ServeSpec

LEDGER = "servers.json"


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
    #: what it was launched with: enough to start the same version again (None: unknown)
    spec: ServeSpec | None = field(default=None, repr=False)
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

    @property
    def workers(self) -> int:
        """Worker processes it runs (as launched; 1 when unknown)."""
        return (self.spec.workers if self.spec is not None else 0) or 1

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "port": self.port,
            "pid": self.pid,
            "log": str(self.log),
            "startedAt": self.started_at,
            "spec": {} if self.spec is None else self.spec.to_json(),
            "token": self.token,
            "startTime": self.start_time,
            "admin": self.admin,
        }

    @classmethod
    def of(cls, record: Mapping[str, Any], *, log: Path) -> Backend:
        """The backend a `record` describes (``log`` when it names none); KeyError, TypeError
        or ValueError when it is not one. A spec that does not parse is left out."""
        spec = None
        if record.get("spec"):
            with contextlib.suppress(ValueError):
                spec = ServeSpec.from_json(record["spec"])
        return cls(
            name=str(record["name"]),
            version=str(record["version"]),
            digest=str(record["digest"]),
            port=int(record["port"]),
            pid=int(record["pid"]),
            log=Path(str(record.get("log", log))),
            started_at=float(record.get("startedAt", time.time())),
            spec=spec,
            token=str(record.get("token") or ""),
            start_time=record.get("startTime"),
            admin=int(record.get("admin") or 0),
        )


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
