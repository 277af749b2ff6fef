"""In-memory implementations of the controller's ports, shipped beside them (`ports`).

As httpx ships ``MockTransport`` beside its transports: reconciler and monitor tests run
against these in milliseconds, with no process, port or cluster. Each fake keeps what was
asked of it in plain lists and dicts for tests to assert on, and can be told to fail.

- `FakeWorkloads` (``ports.Workloads``): a deploy serves at once, unless `refuse` said
  otherwise; `kill` makes a workload die; `recover` adopts the records that still run here.
- `FakeLiveStats` (``ports.LiveStatsSource``): statistics a test `publish`-es per worker.
- `FakeStatus` (``ports.StateStore``): statuses, records, failures and events in memory.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlgitops import errors
from mlgitops.adapters import stats_store
from mlgitops.controller import ports
from mlgitops.core import plan, stats
from mlgitops.core.status import ModelStatus


@dataclass(frozen=True)
class FakeHandle:
    """One fake workload: a model version in a numbered slot."""

    name: str
    version: str
    digest: str
    serial: int

    @property
    def url(self) -> str:
        return f"http://fake.invalid/{self.serial}"

    @property
    def key(self) -> int:
        return self.serial

    @property
    def where(self) -> str:
        return f"fake slot {self.serial}"

    @property
    def label(self) -> str:
        return f"fake workload {self.serial}"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest,
                "serial": self.serial}


@dataclass(frozen=True)
class FakeLeftover:
    name: str
    version: str | None
    role: str
    serial: int

    @property
    def what(self) -> str:
        return f"fake workload {self.serial}"

    @property
    def details(self) -> dict[str, Any]:
        return {"serial": self.serial}


@dataclass(frozen=True)
class FakeRecovery:
    adopted: dict[str, FakeHandle]
    lost: dict[str, str]
    leftovers: list[FakeLeftover]


@dataclass
class _Refusal:
    error: errors.MlgitopsError
    version: str | None
    times: int | None


class FakeWorkloads:
    """``ports.Workloads`` in memory. Everything it was asked is recorded for assertions."""

    def __init__(self) -> None:
        self._serials = itertools.count(1)
        self._lock = threading.Lock()
        self._refusals: dict[str, _Refusal] = {}
        self.running: dict[int, FakeHandle] = {}
        """Workloads that run now, by key."""
        self.deployed: list[FakeHandle] = []
        """Every workload started (deploys and relaunches), in order."""
        self.attempts: list[tuple[str, str]] = []
        """Every (name, version) a deploy was asked for, refused or not."""
        self.model_dirs: dict[int, Path] = {}
        self.drained: list[FakeHandle] = []
        self.stopped: list[FakeHandle] = []
        self.prepared = 0
        self.closed = 0

    # what a test does ----------------------------------------------------------------------
    def refuse(self, name: str, error: errors.MlgitopsError, *, version: str | None = None,
               times: int | None = None) -> None:
        """Deploys of ``name`` (at ``version``, when given) raise ``error`` (``times`` times)."""
        self._refusals[name] = _Refusal(error, version, times)

    def allow(self, name: str) -> None:
        self._refusals.pop(name, None)

    def kill(self, handle: FakeHandle) -> None:
        """The workload dies on its own (`alive` says False from now on)."""
        with self._lock:
            self.running.pop(handle.key, None)

    def serving(self, name: str) -> list[FakeHandle]:
        """The running workloads of model ``name``."""
        return [h for h in self.running.values() if h.name == name]

    # ports.Workloads -----------------------------------------------------------------------
    def _start(self, name: str, version: str, digest: str) -> FakeHandle:
        with self._lock:
            handle = FakeHandle(name, version, digest, next(self._serials))
            self.running[handle.key] = handle
            self.deployed.append(handle)
            return handle

    def deploy(self, desired: plan.Desired, *, model_dir: Path) -> FakeHandle:
        self.attempts.append((desired.name, desired.version))
        refusal = self._refusals.get(desired.name)
        if refusal is not None and refusal.version in (None, desired.version):
            if refusal.times is not None:
                refusal.times -= 1
                if refusal.times <= 0:
                    self.allow(desired.name)
            raise refusal.error
        if desired.deployment is None:
            raise errors.ManifestError(desired.error or f"the manifest of {desired.name} is invalid")
        handle = self._start(desired.name, desired.version, desired.deployment.digest)
        self.model_dirs[handle.key] = model_dir
        return handle

    def relaunch(self, handle: FakeHandle) -> FakeHandle | None:
        return self._start(handle.name, handle.version, handle.digest)

    def alive(self, handle: FakeHandle) -> bool:
        return handle.key in self.running

    def draining(self, handle: FakeHandle) -> None:
        self.drained.append(handle)

    def stop(self, handle: FakeHandle, *, grace: float = 5.0) -> None:
        with self._lock:
            self.running.pop(handle.key, None)
            self.stopped.append(handle)

    def recover(self, records: Mapping[str, Mapping[str, Any]]) -> FakeRecovery:
        """Adopt the recorded workloads that still run here; stop every other one."""
        adopted: dict[str, FakeHandle] = {}
        lost: dict[str, str] = {}
        for name, record in records.items():
            handle = self.running.get(int(record.get("serial", -1)))
            if handle is not None and handle.version == record.get("version"):
                adopted[name] = handle
            else:
                lost[name] = f"fake workload {record.get('serial')} is gone"
        keep = {h.key for h in adopted.values()}
        leftovers = []
        for handle in [h for h in self.running.values() if h.key not in keep]:
            self.stop(handle)
            leftovers.append(FakeLeftover(handle.name, handle.version, "serving", handle.serial))
        return FakeRecovery(adopted, lost, leftovers)

    def prepare(self) -> None:
        self.prepared += 1

    def close(self) -> None:
        self.closed += 1

    def sweep(self) -> set[int]:
        left = set(self.running)
        for handle in list(self.running.values()):
            self.stop(handle)
        return left


class FakeLiveStats:
    """``ports.LiveStatsSource`` in memory: cumulative statistics a test publishes per worker."""

    def __init__(self) -> None:
        self.workers: dict[tuple[str, str], dict[str, stats_store.WorkerStats]] = {}
        self.elsewhere: set[tuple[str, str]] = set()
        """(name, version) pairs for which `serves_elsewhere` says True."""

    def publish(self, name: str, version: str, live: stats.LiveStats, *, worker_id: str = "w1",
                digest: str = "", sample: pd.DataFrame | None = None) -> None:
        """What worker ``worker_id`` would publish: its cumulative ``live`` statistics."""
        self.workers.setdefault((name, version), {})[worker_id] = stats_store.WorkerStats(
            worker_id=worker_id, version=version, digest=digest, pid=0, updated_at=0.0,
            live=live.copy(), sample=sample if sample is not None else pd.DataFrame(),
            seen=live.rows,
        )

    def read(self, name: str, version: str, *,
             baseline: stats.Baseline | None = None) -> stats_store.Snapshot:
        workers = dict(self.workers.get((name, version), {}))
        samples = [w.sample for w in workers.values() if len(w.sample)]
        return stats_store.Snapshot(
            workers=workers,
            sample=pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(),
            versions=frozenset({version} if workers else ()),
        )

    def window(self, current: stats_store.Snapshot, since: stats_store.Snapshot | None, *,
               version: str, baseline: stats.Baseline) -> stats.LiveStats:
        return stats_store.window(current, since, version=version, baseline=baseline)

    def serves_elsewhere(self, name: str, version: str) -> bool:
        return (name, version) in self.elsewhere


class FakePredictions:
    """`ports.PredictionSource` in memory: frames appended per model, read like the files."""

    def __init__(self) -> None:
        self.frames: dict[str, list[pd.DataFrame]] = {}

    def add(self, name: str, frame: pd.DataFrame) -> None:
        self.frames.setdefault(name, []).append(frame)

    def read(self, name: str, *, since: float | None = None,
             ids: Sequence[str] | None = None) -> pd.DataFrame:
        parts = self.frames.get(name) or [pd.DataFrame({"id": pd.Series(dtype=str),
                                                        "version": pd.Series(dtype=str),
                                                        "time": pd.Series(dtype=float)})]
        frame = pd.concat(parts, ignore_index=True)
        if since is not None:
            frame = frame[frame["time"] >= since]
        if ids is not None:
            frame = frame[frame["id"].isin(set(ids))]
        return frame.sort_values("time", kind="stable", ignore_index=True)


class FakeLabels:
    """`ports.LabelSource` in memory: the latest label per id."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, Any]] = {}

    def add(self, name: str, ids: Sequence[str], labels: Sequence[Any]) -> None:
        self.labels.setdefault(name, {}).update(zip(ids, labels, strict=True))

    def read(self, name: str) -> pd.DataFrame:
        got = self.labels.get(name, {})
        return pd.DataFrame({"id": list(got), "label": list(got.values()), "received": 0.0})


@dataclass
class FakeStatus:
    """``ports.StateStore`` in memory: nothing is written anywhere."""

    head: str | None = None
    failures: dict[str, plan.Failure] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, ModelStatus] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    saves: int = 0

    def status(self, name: str) -> ModelStatus:
        return self.models.get(name) or ModelStatus(name=name)

    def set(self, value: ModelStatus) -> None:
        self.models[value.name] = value

    def update(self, name: str, **changes: Any) -> ModelStatus:
        new = replace(self.status(name), **changes)
        self.models[name] = new
        return new

    def event(self, kind: str, *, model: str, commit: str | None, message: str,
              **extra: Any) -> None:
        self.events.append({"type": kind, "model": model, "commit": commit, "message": message,
                            **extra})

    def save(self) -> None:
        self.saves += 1

    def forget(self, name: str) -> None:
        self.models.pop(name, None)
        self.backends.pop(name, None)
        self.failures.pop(name, None)

    def kinds(self, model: str | None = None) -> list[str]:
        """The event types recorded (of ``model``, when given), in order."""
        return [e["type"] for e in self.events if model is None or e["model"] == model]


if TYPE_CHECKING:  # the fakes implement the ports (checked by mypy)
    def _workloads(w: FakeWorkloads) -> ports.Workloads[FakeHandle]:
        return w

    def _live_stats(s: FakeLiveStats) -> ports.LiveStatsSource:
        return s

    def _status(s: FakeStatus) -> ports.StateStore:
        return s
