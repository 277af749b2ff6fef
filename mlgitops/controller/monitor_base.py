"""What the drift monitor's parts share: the state of one served version, report jobs, and the
fields `monitor.Monitor` sets (typed here for its parts: `monitor_reverts`, `monitor_reports`).

May NOT: import a runtime adapter.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic

import pandas as pd

from mlgitops.adapters import stats_store
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import ports, reports
from mlgitops.controller import reconciler as rec
from mlgitops.controller import revert as revert_mod
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.controller.ports import H
from mlgitops.core import decisions, manifest, policy, stats

PENDING = "pendingReverts"
"""``state.json`` extra: reverts recorded before their push (model -> record)."""

ReportBuilder = Callable[..., reports.Built]
"""``build(state_dir, clone, *, name, version, target, sample, tags)`` (see `reports.build_for`)."""


@dataclass
class Track:
    """What the monitor knows about the version of one model that serves now."""

    name: str
    version: str
    digest: str
    deployment: manifest.ModelDeployment
    baseline: stats.Baseline
    previous_baseline: stats.Baseline | None
    previous_version: str | None
    blocked: str | None
    opened: float
    cursor: stats_store.Snapshot | None = None
    reverted: bool = False
    windows: int = 0
    """Windows closed for this version (the decision records number them)."""


Sample = pd.DataFrame | Callable[[], pd.DataFrame]
"""Live rows for a window's reports: a frame, or a call that reads the window's own rows."""


@dataclass(frozen=True)
class ReportJob:
    target: reports.Plan
    sample: Sample
    wait_until_not: str | None
    """Wait (bounded) until this version no longer serves before building (after a revert)."""
    tags: dict[str, str]


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class MonitorBase(Generic[H]):
    """The fields and the cross-part calls of `monitor.Monitor` (declared, not implemented)."""

    store: state_mod.Store
    router: rec.Router[H]
    source: source_mod.Source
    state_dir: Path
    root: Path
    stats_root: Path
    live_stats: ports.LiveStatsSource
    trigger: Callable[[str], None]
    writer: revert_mod.Writer
    build_report: ReportBuilder
    clock: Callable[[], float]
    report_base: str | None
    dispatcher: decision_log.Dispatcher
    sample_wait: float
    lock: threading.Lock
    _pending: dict[str, tuple[str, float, str | None]]
    _reports: queue.Queue[ReportJob | None]
    _report_thread: threading.Thread | None
    _recovered: bool
    tracks: dict[str, Track]

    def _history(self, name: str) -> policy.History:
        raise NotImplementedError

    def _remember(self, name: str, history: policy.History) -> None:
        raise NotImplementedError

    def _revert(self, track: Track, decision: policy.Decision, sample: Sample,
                record: decisions.Decision, *, why: str | None = None,
                plan_with: Callable[[policy.RevertPlan], policy.RevertPlan] | None = None,
                set_status: Callable[..., None] | None = None
                ) -> None:
        raise NotImplementedError

    def _submit(self, record: decisions.Decision, sample: Sample | None) -> None:
        raise NotImplementedError

    def _status(self, name: str, decision: policy.Decision, *, reason: str | None = None,
                message: str | None = None) -> None:
        raise NotImplementedError

    def _evidently_title(self, record: decisions.Decision) -> str:
        raise NotImplementedError

    def _link(self, target: reports.Plan) -> str:
        raise NotImplementedError

    def start_reports(self) -> None:
        raise NotImplementedError

    def _placeholder(self, job: ReportJob, reason: str) -> None:
        raise NotImplementedError

    def _queue_report(self, track: Track, sample: Sample, *, why: str, now: float,
                      wait_until_not: str | None, target: reports.Plan | None = None,
                      title: str | None = None) -> None:
        raise NotImplementedError
