"""Host processes of the embedded runtime: many models per process, and where each model goes.

A *host* (``python -m mlgitops.server.host``, see `mlgitops.server.host`) serves many model
versions, each on its own loopback port with its own app, metrics and statistics, so the
gateway and the monitor see the same thing as with one process per model, for a fraction
of the memory: a process with scikit-learn imported costs ~150 MB, a small model a few MB, and
hosts are forked from one zygote (`local_runtime.spawn.Zygote`), so that even those ~150 MB are
mostly shared between them.

Where a model version serves (`placement`), in this order:

1. **Its own process** (the classic server of `server.supervisor`) when the runtime runs in
   ``process`` mode (``MLGITOPS_HOSTING=process``, the baseline), when the model asks for more
   than one worker (``spec.serving.workers``: forked workers need a process of their own), or
   when its files are larger than ``dedicated_bytes`` (``MLGITOPS_DEDICATED_BYTES``, default
   64 MiB): a large model gets a core and its memory to itself, and its crash or its memory
   never touches the small ones.
2. Otherwise **a shared host**, the one with the fewest models below ``models_per_host``
   (``MLGITOPS_MODELS_PER_HOST``, default 20: that bounds what one crash takes down and how
   long bringing them back takes), else a fresh host forked from the zygote.

Content that has not loaded on this machine yet never shares a process with serving models:
before its first load into a shared host, the version is *probed* (loaded, warmed up with a
row of its baseline, dropped) in a separate **staging** host, with the sandbox's memory cap.
A crash, a hang or a memory bomb there costs no serving model anything, and the version is
held with the reason. A staging host never serves; it stops after 20 s idle. Digests that
passed are remembered in ``<state>/proven.json``, so a rollback or a restart after a crash
loads directly.

A host that dies takes its models with it; the controller's loop sees them dead within half a
second and restarts each (already proven) in a host: `tests/test_hosting.py` times it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import resource
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from mlgitops import errors
from mlgitops.adapters import files, sandbox
from mlgitops.core.serve_spec import ServeSpec

HOSTED = "shared"
PROCESS = "process"
MODES = (HOSTED, PROCESS)
DEDICATED_BYTES = 64 * 1024 * 1024
MODELS_PER_HOST = 20
STAGING_IDLE_SECONDS = 20.0
PROVEN = "proven.json"


@dataclass(frozen=True)
class Hosting:
    """How the runtime places models (see the module docstring)."""

    mode: str = HOSTED
    models_per_host: int = MODELS_PER_HOST
    dedicated_bytes: int = DEDICATED_BYTES

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise errors.ConfigError(f"hosting mode {self.mode!r} is unknown; use "
                                     f"{' or '.join(MODES)}")
        if self.models_per_host < 1:
            raise errors.ConfigError("models per host must be at least 1")


def model_bytes(model_dir: Path) -> int:
    """Bytes of the files under ``model_dir``."""
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())


def needs_own_process(hosting: Hosting, spec: ServeSpec, *, size: int) -> str | None:
    """Why ``spec`` gets a process of its own, or None when it may share a host."""
    if hosting.mode == PROCESS:
        return "the runtime runs one process per model"
    if spec.workers != 1:
        return f"it asks for {spec.workers} workers"
    if size > hosting.dedicated_bytes:
        return (f"its files are {size / 2**20:.0f} MiB, over "
                f"{hosting.dedicated_bytes / 2**20:.0f} MiB")
    return None


@dataclass
class HostProcess:
    """One host process and what it serves (port -> name, version)."""

    proc: subprocess.Popen[bytes] | None
    pid: int
    token: str
    start_time: str | None
    log: Path
    admin_port: int = 0
    role: str = "idle"  # idle (in the pool) | host (serves) | staging (probes only)
    models: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: ports of models replaced by a newer version, finishing their requests
    draining: set[int] = field(default_factory=set)
    #: the model being loaded now (name, version), if any
    pending: tuple[str, str] | None = None
    used_at: float = field(default_factory=time.monotonic)
    #: the owning runtime's identity, sent with every load (see `adopt`)
    epoch: str = ""
    lines: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def exited(self) -> bool:
        """True once the process we started has exited (False for an adopted one: the
        runtime checks those by pid and start time)."""
        return self.proc is not None and self.proc.poll() is not None

    def read_events(self, stream: IO[bytes] | None) -> None:
        """Reader thread: the stdout events (one JSON object a line) into ``lines``."""
        if stream is not None:
            for raw in stream:
                with contextlib.suppress(ValueError):
                    value = json.loads(raw)
                    if isinstance(value, dict):
                        self.lines.put(value)
        self.lines.put(None)

    def started(self) -> bool:
        """True once the host announced its admin port (never blocks)."""
        while not self.admin_port:
            try:
                event = self.lines.get_nowait()
            except queue.Empty:
                return False
            if event is None:
                self.lines.put(None)  # keep the end for `wait_started` to report
                return False
            if event.get("event") == "host":
                self.admin_port = int(event["admin_port"])
        return True

    def wait_started(self, timeout: float) -> None:
        """Block until the host announced its admin port; RuntimeFailure when it did not."""
        deadline = time.monotonic() + timeout
        while not self.admin_port:  # another thread may read the event: look again often
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.RuntimeFailure(f"a host process did not start within {timeout:.0f}s;"
                                            f" see {self.log}")
            try:
                event = self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if event is None or event.get("event") == "error":
                self.lines.put(event)  # for any other waiter
                why = event.get("message") if event else "it exited"
                raise errors.RuntimeFailure(f"a host process did not start ({why}); see {self.log}")
            if event.get("event") == "host":
                self.admin_port = int(event["admin_port"])

    def call(self, op: str, body: Mapping[str, Any] | None = None, *,
             timeout: float = 120.0) -> dict[str, Any]:
        """One admin request. ModelError for a refused load; RuntimeFailure when the host
        does not answer (it died, or the load hung past ``timeout``)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            if body is None:
                r = httpx.get(f"{self.admin}/{op}", headers=headers, timeout=timeout)
            else:
                r = httpx.post(f"{self.admin}/{op}", json=dict(body), headers=headers,
                               timeout=timeout)
            data = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise errors.RuntimeFailure(
                f"the host process pid {self.pid} did not answer {op} ({type(exc).__name__}"
                f"{': ' + str(exc) if str(exc) else ''}); see {self.log}") from exc
        if r.status_code == 422:
            raise errors.ModelError(str(data.get("error")))
        if r.status_code != 200 or not isinstance(data, dict):
            raise errors.RuntimeFailure(f"the host process pid {self.pid} refused {op}: "
                                        f"{data.get('error') if isinstance(data, dict) else data}")
        self.used_at = time.monotonic()
        return data

    def load(self, spec: ServeSpec, *, timeout: float) -> int:
        port = int(self.call("load", {"spec": spec.to_json(), "epoch": self.epoch},
                             timeout=timeout)["port"])
        self.models[port] = (spec.name, spec.version)
        return port

    def unload(self, port: int, *, timeout: float = 15.0) -> None:
        self.models.pop(port, None)
        self.draining.discard(port)
        with contextlib.suppress(errors.RuntimeFailure):
            self.call("unload", {"port": port}, timeout=timeout)

    def probe(self, spec: ServeSpec, *, timeout: float) -> None:
        self.call("probe", {"spec": spec.to_json()}, timeout=timeout)

    def listing(self) -> list[dict[str, Any]]:
        models = self.call("models", timeout=5.0).get("models")
        return [m for m in models or [] if isinstance(m, dict)]

    def adopt(self, epoch: str, *, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Own this host as ``epoch`` (loads of any other controller are refused from now
        on); the models it holds once a load under way finished."""
        self.epoch = epoch
        models = self.call("adopt", {"epoch": epoch}, timeout=timeout).get("models")
        return [m for m in models or [] if isinstance(m, dict)]

    def cap_memory(self) -> None:
        """The sandbox's memory cap (a staging host loads content nobody ran here yet)."""
        with contextlib.suppress(OSError, AttributeError, ValueError):
            resource.prlimit(self.pid, resource.RLIMIT_AS,
                             (sandbox.MEMORY_BYTES, sandbox.MEMORY_BYTES))

    def record(self) -> dict[str, Any]:
        """Its ledger fields: models by port as ``[name, version, serving|draining]`` (and
        ``"loading": [name, version, "launching"]`` while a load is under way)."""
        models: dict[str, list[str]] = {
            str(p): [*m, "draining" if p in self.draining else "serving"]
            for p, m in self.models.items()}
        if self.pending is not None:
            models["loading"] = [*self.pending, "launching"]
        return {"role": self.role, "adminPort": self.admin_port, "models": models}


class Proven:
    """Digests that loaded and warmed up on this machine (``<state>/proven.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = files.read_json(path)
        raw = data.get("digests") if isinstance(data, dict) else None
        self._digests = {str(d) for d in raw or [] if d}
        self._lock = threading.Lock()

    def __contains__(self, digest: object) -> bool:
        return bool(digest) and digest in self._digests

    def add(self, digest: str) -> None:
        with self._lock:
            if digest and digest not in self._digests:
                self._digests.add(digest)
                files.write_json(self.path, {"digests": sorted(self._digests)})
