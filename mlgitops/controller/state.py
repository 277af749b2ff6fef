"""The controller's memory across restarts: statuses, live backends, failures, events.

``state.json`` is rewritten atomically after every transition; ``events.jsonl`` is appended
one line per transition, each carrying the commit it concerns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlgitops import logs
from mlgitops.adapters import clock as system_clock
from mlgitops.adapters import files
from mlgitops.controller import ports
from mlgitops.core import clock, plan, status
from mlgitops.core.status import ModelStatus

log = logging.getLogger("mlgitops.events")

#: ``<state>/retry/<model>``: one file per retry asked for and not yet picked up.
RETRY_DIR = "retry"


def now(source: clock.Clock = system_clock.SYSTEM) -> str:
    """The time of a state record: ``core.clock.iso`` to the millisecond (state.json's format)."""
    return system_clock.now_iso(source, ms=True)


class Store:
    """Statuses, backend records and failures of one controller, persisted under ``state_dir``."""

    def __init__(self, state_dir: Path, *, mirror: ports.StatusMirror | None = None) -> None:
        self.dir = state_dir
        self.path = state_dir / "state.json"
        self.events_path = state_dir / "events.jsonl"
        self._lock = threading.RLock()
        data = files.read_json(self.path) or {}
        self.head: str | None = data.get("head")
        self.models: dict[str, status.ModelStatus] = {
            n: status.ModelStatus.from_dict(s) for n, s in (data.get("models") or {}).items()
        }
        self.backends: dict[str, dict[str, Any]] = dict(data.get("backends") or {})
        self.failures: dict[str, plan.Failure] = {
            n: plan.Failure(f["digest"], f["version"], f["reason"], str(f.get("inputs") or ""))
            for n, f in (data.get("failures") or {}).items()
        }
        self.extra: dict[str, Any] = dict(data.get("extra") or {})
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Called with every event after it is recorded (e.g. decision records of deploys)."""
        self.mirror = mirror
        """Also publishes every status (the Kubernetes runtime: the resources' status)."""
        if mirror is not None:
            for name, (st, failure) in mirror.load().items():
                self.models[name] = st
                if failure is not None:
                    self.failures[name] = failure

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock for a read-modify-write of several of its parts."""
        with self._lock:
            yield

    def _publish(self, names: Iterable[str]) -> None:
        if self.mirror is None:
            return
        for name in names:
            st = self.models.get(name)
            if st is not None:
                self.mirror.publish(st, self.failures.get(name))

    def save(self) -> None:
        with self._lock:
            files.write_json(
                self.path,
                {
                    "head": self.head,
                    "models": {n: s.to_dict() for n, s in sorted(self.models.items())},
                    "backends": self.backends,
                    "failures": {
                        n: {"digest": f.digest, "version": f.version, "reason": f.reason,
                            "inputs": f.inputs}
                        for n, f in self.failures.items()
                    },
                    "extra": self.extra,
                },
            )
            self._publish(sorted(self.models))

    def status(self, name: str) -> ModelStatus:
        with self._lock:
            return self.models.get(name) or ModelStatus(name=name)

    def update(self, name: str, **changes: Any) -> ModelStatus:
        with self._lock:
            new = replace(self.status(name), **changes)
            self.models[name] = new
            return new

    def set(self, value: ModelStatus) -> None:
        with self._lock:
            self.models[value.name] = value
            self._publish([value.name])

    def forget(self, name: str) -> None:
        with self._lock:
            self.models.pop(name, None)
            self.backends.pop(name, None)
            self.failures.pop(name, None)

    def event(self, kind: str, *, model: str, commit: str | None, message: str, **extra: Any) -> None:
        """Record one transition (``kind`` like Deployed, DeployFailed, Retired, Reverted)."""
        record = {"time": now(), "type": kind, "model": model, "commit": commit, "message": message,
                  **extra}
        files.append_jsonl(self.events_path, record)
        log.info(message, extra=logs.record_fields(record))
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception:  # a listener never breaks the transition it hears about
                continue

    def events(self, model: str | None = None) -> Iterator[dict[str, Any]]:
        for e in files.read_jsonl(self.events_path):
            if model is None or e.get("model") == model:
                yield e

    # retry requests (`mlgitops retry NAME`) ---------------------------------------------------
    @property
    def requests_dir(self) -> Path:
        return self.dir / RETRY_DIR

    def request_retry(self, name: str) -> Path:
        """Ask the controller to try ``name``'s held version again (a file it picks up)."""
        path = self.requests_dir / name
        files.write_json(path, {"model": name, "time": now()})
        return path

    def take_retry_requests(self) -> list[str]:
        """The models a retry was asked for since the last call (their request files go)."""
        try:
            found = sorted(p for p in self.requests_dir.iterdir() if not p.name.startswith("."))
        except OSError:
            return []
        names = []
        for p in found:
            p.unlink(missing_ok=True)
            names.append(p.name)
        return names
