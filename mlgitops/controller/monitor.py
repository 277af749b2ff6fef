"""The drift monitor: live statistics -> windows -> policy decisions -> alerts and reverts.

Every ``interval`` seconds, for each model the gateway routes, it reads the servers' cumulative
statistics through the `ports.LiveStatsSource` port (merged across workers and replicas; the
embedded runtime's are the files ``<state>/stats/<name>/<version>/``), and closes a *window* once ``windowRows``
rows arrived since the last one (or ``window_seconds`` passed with fewer rows: that window is
inconclusive below ``minRows``). A closed window is compared with the version's baseline
(`core.drift.compare_stats`) and, for attribution, with the previous version's baseline
(`core.policy.fit_share`: the same window counters against both references laid on the same
bins); `core.policy.decide` says what to do. The previous version is the content of the
model's two paths at the parent of its version. The servers' reservoir sample of live rows is
used only for the human-readable reports, never for a decision (it is written less often).

Events (``events.jsonl``): ``DriftWindow`` for every closed window, ``DriftAlert``,
``Reverted`` / ``RevertSkipped`` / ``RevertFailed``, ``RolledBack`` (the previous content
serves again, with ``breachToRollbackSeconds``), ``ReportWritten`` / ``ReportFailed``.
The model's status gets a ``Drift`` condition and the last window's numbers.

Reverts run in the monitor's thread (one at a time); reports are built afterwards by a
background worker (each in a low-priority child process) and never delay or block a revert.

Crash safety: a revert is recorded as pending (``state.json``) before it is pushed and counts
toward the cooldown and the cap only once it landed. When the controller starts again, a
pending revert is looked up on the remote by its ``Mlgitops-Reverts`` trailer (landed: it
counts; not landed: dropped), a version the remote already reverts is never reverted again, and
the report of every revert on the remote whose file is missing is rebuilt in the background
from the live sample in the stats store (`recover`). The ``Mlgitops-Report`` link is the URL
where the gateway serves the report (``{base}/reports/{name}/{file}``).

May NOT: deploy (the controller redeploys because Git changed), decide anything itself (the
pure policy does), or write to Git except through `revert.Writer`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic

import pandas as pd
import yaml

from mlgitops import errors, ui
from mlgitops.adapters import git, stats_store
from mlgitops.controller import decision_pages, ports, reports
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reconciler as rec
from mlgitops.controller import revert as revert_mod
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.controller.ports import H
from mlgitops.core import decisions, drift, layout, manifest, policy, quarantine, stats
from mlgitops.core import status as status_mod

PENDING = "pendingReverts"
"""``state.json`` extra: reverts recorded before their push (model -> record)."""

ReportBuilder = Callable[..., reports.Built]
"""``build(state_dir, clone, *, name, version, target, sample, tags)`` (see `reports.build_for`)."""


@dataclass
class _Track:
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
class _ReportJob:
    target: reports.Plan
    sample: Sample
    wait_until_not: str | None
    """Wait (bounded) until this version no longer serves before building (after a revert)."""
    tags: dict[str, str]


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Monitor(Generic[H]):
    """Watches every served model; ``run(stop_event)`` is the controller's background loop.

    Live statistics come through the ``live_stats`` port (default: the stats store files under
    ``<state_dir>/stats``, which cannot tell whether a replaced server still writes; the
    controller passes its runtime's source).
    """

    def __init__(
        self,
        *,
        store: state_mod.Store,
        router: rec.Router[H],
        source: source_mod.Source,
        state_dir: Path,
        url: str,
        trigger: Callable[[str], None],
        interval: float = 1.0,
        window_seconds: float = 120.0,
        alert_report_seconds: float = 300.0,
        branch: str = layout.BRANCH,
        writer: revert_mod.Writer | None = None,
        build_report: ReportBuilder | None = None,
        clock: Callable[[], float] = time.time,
        report_base: str | None = None,
        live_stats: ports.LiveStatsSource | None = None,
        dispatcher: decision_log.Dispatcher | None = None,
        sample_wait: float = 10.0,
        root: Path | None = None,
    ) -> None:
        self.store = store
        self.sample_wait = sample_wait
        """How long a closed window's reports wait for the servers to write its rows."""
        self.router = router
        self.source = source
        self.state_dir = state_dir
        #: report links without a base URL are paths relative to this (the model repository)
        self.root = root if root is not None else state_dir.parent
        self.stats_root = state_dir / "stats"
        self.live_stats: ports.LiveStatsSource = (
            live_stats if live_stats is not None else stats_store.Directory(self.stats_root)
        )
        self.trigger = trigger
        self.interval = interval
        self.window_seconds = window_seconds
        """A window with rows closes after this long even below ``windowRows`` rows."""
        self.alert_report_seconds = alert_report_seconds
        """Alerts repeat every window; their reports at most this often per version."""
        self._alerted: dict[tuple[str, str], float] = {}
        self.writer = writer or revert_mod.Writer(state_dir, url=url, branch=branch)
        self.build_report: ReportBuilder = build_report or reports.build_isolated
        self.clock = clock
        self.report_base = report_base
        """The controller's base URL: revert commits link ``{report_base}/reports/…``."""
        self.tracks: dict[str, _Track] = {}
        self.dispatcher = dispatcher or decision_log.Dispatcher(
            log=decision_log.Log(state_dir / reports.REPORTS), state_dir=state_dir,
            sinks=[decision_pages.Pages(state_dir / reports.REPORTS, clone=lambda: self.source.clone)],
        )
        """Every closed window and revert becomes a `decisions.Decision` given to this."""
        self.decisions: list[tuple[str, policy.Decision]] = []
        """Recent decisions (name, decision), newest last, bounded (tests and the bench read it)."""
        self._histories: dict[str, policy.History] = {
            name: policy.History.from_dict(data)
            for name, data in (store.extra.get("drift") or {}).items()
            if isinstance(data, dict)
        }
        self._unusable: dict[str, str] = {}
        self._pending: dict[str, tuple[str, float, str | None]] = {}
        self._last_error: dict[str, str] = {}
        self._reports: queue.Queue[_ReportJob | None] = queue.Queue(maxsize=16)
        self._report_thread: threading.Thread | None = None
        self._recovered = False
        self.lock = threading.Lock()

    # loop ------------------------------------------------------------------------------------
    def run(self, stop_event: threading.Event) -> None:
        self.start_reports()
        try:
            self.writer.prepare()  # the first revert should not wait for a clone
        except errors.MlgitopsError as exc:
            ui.console.print(f"[yellow]drift monitor:[/] cannot prepare its git clone yet: {exc}")
        try:
            while not stop_event.is_set():
                if not self._recovered:  # until the remote could be read once
                    try:
                        self.recover()
                    except errors.MlgitopsError as exc:
                        self._problem("*", "", f"cannot look for reverts left unfinished: {exc}")
                try:
                    self.tick()
                except Exception as exc:  # the monitor must outlive any one bad pass
                    ui.console.print(f"[red]drift monitor pass failed:[/] {type(exc).__name__}: {exc}")
                stop_event.wait(self.interval)
        finally:
            with contextlib.suppress(queue.Full):
                self._reports.put_nowait(None)

    def start_reports(self) -> None:
        """Start the background report worker (run() does; tests call it directly)."""
        if self._report_thread is None or not self._report_thread.is_alive():
            self._report_thread = threading.Thread(target=self._report_worker, name="drift-reports",
                                                   daemon=True)
            self._report_thread.start()

    def tick(self) -> list[tuple[str, policy.Decision]]:
        """Check every routed model once; the decisions of windows that closed."""
        out: list[tuple[str, policy.Decision]] = []
        with self.lock:
            routes = dict(self.router.routes)
            for name in [n for n in self.tracks if n not in routes]:
                del self.tracks[name]
            for name, backend in sorted(routes.items()):
                try:
                    decision = self._check(name, backend)
                except errors.MlgitopsError as exc:
                    self._problem(name, backend.version, str(exc))
                    continue
                except (ValueError, KeyError, OSError) as exc:
                    self._problem(name, backend.version, f"{type(exc).__name__}: {exc}")
                    continue
                if decision is not None:
                    out.append((name, decision))
        return out

    def _problem(self, name: str, version: str, message: str) -> None:
        if self._last_error.get(name) == message:
            return
        self._last_error[name] = message
        self.store.event("MonitorFailed", model=name, commit=version,
                         message=f"the drift monitor cannot check {name}: {message}")

    # the serving version ---------------------------------------------------------------------
    def _track(self, name: str, backend: H) -> _Track | None:
        track = self.tracks.get(name)
        if track is not None and track.version == backend.version:
            return track
        key = backend.version
        if self._unusable.get(name) == key:
            return None
        try:
            track = self._start(name, backend)
        except errors.MlgitopsError as exc:
            self._unusable[name] = key
            self.store.event("MonitorFailed", model=name, commit=backend.version,
                             message=f"the drift monitor does not watch {name} at "
                                     f"{backend.version[:12]}: {exc}")
            return None
        self._unusable.pop(name, None)
        self.tracks[name] = track
        self._histories[name] = self._history(name).for_new_version()
        return track

    def _start(self, name: str, backend: H) -> _Track:
        clone = self.source.clone
        version = backend.version
        dep = self._deployment(clone, name, version)
        if dep is None:
            raise errors.ManifestError(f"{layout.manifest_path(name)} is missing at {version[:12]}")
        baseline = self._baseline(clone, name, version)
        if baseline is None:
            raise errors.BaselineError(
                f"{layout.model_path(name)}/{layout.BASELINE} is missing at {version[:12]}"
            )
        parent = f"{version}^"
        prev_baseline: stats.Baseline | None = None
        prev_version: str | None = None
        prev_dep: manifest.ModelDeployment | None = None
        blocked: str | None = None
        if git.rev_parse(clone, parent) is None:
            blocked = "there is no previous version to return to"
        else:
            prev_dep = self._deployment(clone, name, parent)
            prev_version = git.last_change(clone, parent, layout.model_paths(name))
            try:
                prev_baseline = self._baseline(clone, name, parent)
            except errors.BaselineError:
                prev_baseline = None
            if prev_dep is None or prev_version is None:
                blocked = f"{name} did not exist before {version[:12]}: there is no previous version"
            elif prev_dep.digest == dep.digest:
                blocked = (f"the previous content of {name} has the same model digest (only the "
                           "manifest changed), so a revert would not change the model")
            else:
                head = self.store.head or version
                if quarantine.find(self.source.quarantined(head), model=name,
                                   digest=prev_dep.digest) is not None:
                    blocked = (f"the previous version's digest {prev_dep.digest[7:19]} is "
                               "quarantined too")
        try:
            # e.g. a controller killed right after its revert landed, before the redeploy
            already = self.writer.find_revert(version)
        except errors.GitError:
            already = None
        if already is None and blocked is None and prev_dep is not None:
            # what quarantine will match, read ahead: of this version (the revert commit's
            # entry) and of the previous one (checked against that entry on the way back);
            # else the revert and the redeploy read them then
            with contextlib.suppress(errors.MlgitopsError, OSError):  # never stops the watch
                self.source.remember_quarantine_keys(dep)
                self.source.remember_quarantine_keys(prev_dep)
        return _Track(
            name=name,
            version=version,
            digest=dep.digest,
            deployment=dep,
            baseline=baseline,
            previous_baseline=prev_baseline,
            previous_version=prev_version,
            blocked=blocked,
            opened=self.clock(),
            reverted=already is not None,
        )

    @staticmethod
    def _deployment(clone: Path, name: str, rev: str) -> manifest.ModelDeployment | None:
        raw = git.show(clone, rev, layout.manifest_path(name))
        if raw is None:
            return None
        try:
            return manifest.parse(yaml.safe_load(raw), source=layout.manifest_path(name))
        except yaml.YAMLError as exc:
            raise errors.ManifestError(f"{layout.manifest_path(name)} is not valid YAML ({exc})") from exc

    @staticmethod
    def _baseline(clone: Path, name: str, rev: str) -> stats.Baseline | None:
        raw = git.show(clone, rev, f"{layout.model_path(name)}/{layout.BASELINE}")
        if raw is None:
            return None
        try:
            return stats.Baseline.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.BaselineError(f"the baseline of {name} at {rev} is invalid ({exc})") from exc

    def _history(self, name: str) -> policy.History:
        return self._histories.get(name) or policy.History()

    def _remember(self, name: str, history: policy.History) -> None:
        old = self._histories.get(name)
        self._histories[name] = history
        if old is None or old.reverts != history.reverts:
            drift_state = dict(self.store.extra.get("drift") or {})
            drift_state[name] = {"reverts": list(history.reverts)}
            self.store.extra["drift"] = drift_state
            self.store.save()

    # windows ---------------------------------------------------------------------------------
    def _check(self, name: str, backend: H) -> policy.Decision | None:
        track = self._track(name, backend)
        if track is None or track.reverted:
            return None
        snap = self.live_stats.read(name, track.version, baseline=track.baseline)
        window = self.live_stats.window(snap, track.cursor, version=track.version,
                                        baseline=track.baseline)
        now = self.clock()
        rules = track.deployment.drift
        if window.rows < rules.window_rows and not (
            window.rows > 0 and now - track.opened >= self.window_seconds
        ):
            return None
        since, track.cursor = track.cursor, snap
        track.opened = now
        self._last_error.pop(name, None)
        return self.close(track, window, self.window_rows_of(track, snap, since), now=now)

    def window_rows_of(self, track: _Track, snap: stats_store.Snapshot,
                       since: stats_store.Snapshot | None) -> Callable[[], pd.DataFrame]:
        """The closed window's own rows (`stats_store.window_sample`), read when called: the
        servers write their recent rows within their sample interval, so the call waits up to
        ``sample_wait`` seconds for the rows the window counted (off the monitor's thread)."""
        name, version, baseline = track.name, track.version, track.baseline

        def rows() -> pd.DataFrame:
            got = stats_store.window_sample(snap, since, version=version)
            deadline = time.monotonic() + self.sample_wait
            while got.pending and time.monotonic() < deadline:
                time.sleep(0.2)
                try:
                    later = self.live_stats.read(name, version, baseline=baseline)
                except errors.MlgitopsError:
                    break
                got = stats_store.window_sample(snap, since, version=version, rows_from=later)
            return got.frame

        return rows

    @staticmethod
    def evidence(track: _Track, window: stats.LiveStats) -> policy.Evidence:
        """The numbers of one window: its drift, and its fit to both versions' references."""
        report = drift.compare_stats(track.baseline, window, share=track.deployment.drift.dataset_share)
        fit_current = fit_previous = None
        if window.rows >= track.deployment.drift.min_rows and track.previous_baseline is not None:
            fit_previous = policy.fit_share(track.previous_baseline, track.baseline, window)
            if fit_previous is not None:
                fit_current = policy.fit_share(track.baseline, track.baseline, window)
        return policy.Evidence.from_reports(
            report, fit_current=fit_current, fit_previous=fit_previous,
            revert_blocked=track.blocked,
        )

    def close(self, track: _Track, window: stats.LiveStats,
              sample: Sample, *, now: float) -> policy.Decision:
        """Decide on one closed window and act on the decision."""
        evidence = self.evidence(track, window)
        decision = policy.decide(evidence, self._history(track.name), track.deployment.drift, now=now)
        self._remember(track.name, decision.history_until_landed)
        track.windows += 1
        record = self.record_of(track, decision, window)
        self.decisions = [*self.decisions[-199:], (track.name, decision)]
        numbers = decision.to_dict()
        numbers.pop("reason", None)
        self.store.event("DriftWindow", model=track.name, commit=track.version,
                         message=decision.reason, **numbers)
        self._status(track.name, decision)
        if decision.verdict is policy.Verdict.ALERT:
            self.store.event("DriftAlert", model=track.name, commit=track.version,
                             message=decision.reason, **numbers)
            last = self._alerted.get((track.name, track.version))
            if last is None or now - last >= self.alert_report_seconds:
                # one report (and console line) per version per alert_report_seconds
                self._alerted[(track.name, track.version)] = now
                ui.console.print(f"[yellow]{track.name}[/]: drift alert — {decision.reason}")
                self._queue_report(track, sample, why="alert", now=now, wait_until_not=None,
                                   title=self._evidently_title(record))
            else:
                record = record.with_(evidently_file=None)
            self._submit(record, sample)
        elif decision.verdict is policy.Verdict.REVERT:
            self._revert(track, decision, sample, record)
        else:
            self._submit(record, sample)
        return decision

    def record_of(self, track: _Track, decision: policy.Decision,
                  window: stats.LiveStats) -> decisions.Decision:
        """The decision record of a closed window (both baselines per feature)."""
        record = decisions.of_window(
            decision, model=track.name, version=track.version, digest=track.digest,
            previous_version=track.previous_version, rules=track.deployment.drift,
            baseline=track.baseline, previous=track.previous_baseline, window=window,
            index=track.windows, base_url=self.report_base,
        )
        path = self.dispatcher.sample_path(track.name, record.id)
        return record.with_(sample_path=str(path),
                            report_url=record.report_url or self._page_link(record))

    def _page_link(self, record: decisions.Decision) -> str:
        """Without a base URL, the page's path relative to the repository."""
        page = decision_pages.page_file(self.state_dir / reports.REPORTS, record.model, record.id)
        try:
            return page.relative_to(self.root).as_posix()
        except ValueError:
            return str(page)

    @staticmethod
    def _evidently_title(record: decisions.Decision) -> str:
        return (record.evidently_file or f"{record.id}.evidently.html").removesuffix(".html")

    def _submit(self, record: decisions.Decision, sample: Sample | None) -> None:
        if sample is None or (isinstance(sample, pd.DataFrame) and sample.empty):
            self.dispatcher.submit(record.with_(sample_path=None))
        else:
            self.dispatcher.submit(record, sample)

    def _status(self, name: str, decision: policy.Decision, *, reason: str | None = None,
                message: str | None = None) -> None:
        with self.store._lock:
            st = status_mod.drift_window(self.store.status(name), verdict=decision.verdict.value,
                                         message=message or decision.reason, reason=reason,
                                         now=state_mod.now())
            self.store.set(replace(st, drift=decision.to_dict()))
        self.store.save()

    # the revert ------------------------------------------------------------------------------
    def _link(self, target: reports.Plan) -> str:
        """What a commit and events name for a report: its URL, or its path in the repository."""
        if self.report_base:
            return target.url(self.report_base)
        return target.link(self.root)

    def _pending_reverts(self) -> dict[str, dict[str, object]]:
        raw = self.store.extra.get(PENDING)
        return {str(k): dict(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _set_pending(self, name: str, record: dict[str, object] | None) -> None:
        pending = self._pending_reverts()
        if record is None:
            pending.pop(name, None)
        else:
            pending[name] = record
        self.store.extra[PENDING] = pending

    def _landed(self, name: str, at: float) -> None:
        """A revert decided at ``at`` is on the remote: it counts toward the cooldown and cap."""
        self._remember(name, self._history(name).with_revert(at))

    def _revert(self, track: _Track, decision: policy.Decision, sample: Sample,
                record: decisions.Decision) -> None:
        name = track.name
        target = reports.plan(self.state_dir, name=name, version=track.version, now=decision.at,
                              why="revert", title=self._evidently_title(record))
        link = record.report_url or self._link(target)
        plan = policy.revert_plan(decision, name=name, reverted=track.version, digest=track.digest,
                                  previous=track.previous_version, report=link, at=iso(decision.at),
                                  report_id=record.id)
        # logged before the push: a page exists for the link even if the controller stops now
        self.dispatcher.log_only(record.with_(outcome="the revert is being pushed"))
        self._pending[name] = (track.version, decision.at, None)
        # recorded before the push: a controller killed meanwhile finds out on restart whether
        # it landed (by the commit's Mlgitops-Reverts trailer) instead of guessing
        self._set_pending(name, {"reverted": track.version, "at": decision.at, "report": link,
                                 "reportFile": target.html.name, "digest": track.digest,
                                 "reason": decision.reason})
        self.store.save()
        outcome = self.writer.revert(plan)
        pushed_at = self.clock()
        numbers = decision.to_dict()
        numbers.pop("reason", None)
        common = {"reverted": track.version, "digest": track.digest, "report": link,
                  "attempts": outcome.attempts, "revertSeconds": round(outcome.seconds, 3),
                  "pushSeconds": round(outcome.push_seconds, 3),
                  "pushedAt": pushed_at, **numbers}
        self._set_pending(name, None)
        if outcome.ok:
            assert outcome.commit is not None
            track.reverted = True
            self._landed(name, decision.at)  # saves the state file
            self._pending[name] = (track.version, decision.at, outcome.commit)
            self.trigger(f"revert of {name}")
            self.store.event(
                "Reverted", model=name, commit=outcome.commit,
                message=(f"reverted {track.version[:12]} in {outcome.commit[:12]} "
                         f"(back to {str(outcome.previous or track.previous_version)[:12]}): "
                         f"{decision.reason}"),
                previous=outcome.previous, **common,
            )
            self._status(name, decision, reason="Reverted",
                         message=f"reverted {track.version[:12]} in {outcome.commit[:12]}: "
                                 f"{decision.reason}")
            ui.console.print(f"[red]{name}[/]: reverted {track.version[:12]} in "
                             f"{outcome.commit[:12]} — {decision.reason}")
            record = record.with_(commit=outcome.commit,
                                  previous_version=outcome.previous or track.previous_version,
                                  outcome=None)
        else:
            # nothing landed: it counts toward neither the cap nor the cooldown
            self._pending.pop(name, None)
            self.store.save()
            if outcome.already is not None:
                track.reverted = True
                self.trigger(f"{name} is already reverted")
            if outcome.skipped is not None:
                self.store.event("RevertSkipped", model=name, commit=track.version,
                                 message=outcome.skipped, **common)
                self._status(name, decision, reason="RevertSkipped", message=outcome.skipped)
                record = record.with_(outcome=f"no revert was pushed: {outcome.skipped}")
            else:
                message = f"could not revert {track.version[:12]}: {outcome.error}"
                self.store.event("RevertFailed", model=name, commit=track.version,
                                 message=message, **common)
                self._status(name, decision, reason="RevertFailed", message=message)
                ui.console.print(f"[red]{name}[/]: {message}")
                record = record.with_(outcome=message)
            if outcome.already is not None:
                record = record.with_(outcome=f"{track.version[:12]} was already reverted on the "
                                              "remote; nothing was pushed", evidently_file=None)
        self._submit(record, sample)
        if outcome.already is None:
            self._queue_report(track, sample, why="revert", now=decision.at, target=target,
                               wait_until_not=track.version if outcome.ok else None)

    # after a restart ---------------------------------------------------------------------
    def recover(self) -> None:
        """What a controller killed mid-way left: pending reverts, and reports never built.

        A pending revert that is on the remote counts (and gets its ``Reverted`` event); one
        that is not was never pushed and is dropped. Every revert on the remote whose report
        this controller should serve but does not have is rebuilt in the background.
        """
        with self.lock:
            for name, record in self._pending_reverts().items():
                reverted = str(record.get("reverted", ""))
                at = float(str(record.get("at", 0.0)))
                found = self.writer.find_revert(reverted) if reverted else None
                self._set_pending(name, None)
                if found is not None:
                    self._landed(name, at)
                    self.store.event(
                        "Reverted", model=name, commit=found.commit, reverted=reverted,
                        digest=record.get("digest"), report=record.get("report"), recovered=True,
                        message=(f"reverted {reverted[:12]} in {found.commit[:12]} (the push "
                                 "landed just before the controller stopped): "
                                 f"{record.get('reason', '')}"),
                    )
                    self.trigger(f"recovered revert of {name}")
                else:
                    self.store.event(
                        "RevertAbandoned", model=name, commit=reverted,
                        message=(f"a revert of {reverted[:12]} was under way when the controller "
                                 "stopped and never reached the remote; the monitor decides "
                                 "again on the next window"),
                    )
                self.store.save()
            self.start_reports()
            for entry in self.writer.reverts():
                self._rebuild_if_missing(entry)
            self._recovered = True

    def _rebuild_if_missing(self, entry: git.LogEntry) -> None:
        name = entry.trailers.get(layout.TRAILER_MODEL, "")
        reverted = entry.trailers.get(layout.TRAILER_REVERTS, "")
        link = entry.trailers.get(layout.TRAILER_REPORT, "")
        if not (name and reverted and link):
            return
        ours = bool(self.report_base) and link.startswith(f"{self.report_base}/")
        if not ours and not (self.stats_root / name / reverted).is_dir():
            return  # a revert this controller neither linked nor has live statistics of
        self._page_if_missing(entry, name=name, reverted=reverted, link=link)
        target = reports.plan_for_link(self.state_dir, link, name=name, version=reverted)
        if target is None or target.html.exists():
            return
        at = float(entry.timestamp)
        job = _ReportJob(target, pd.DataFrame(), None,
                         {"verdict": "revert", "closedAt": iso(at), "revertCommit": entry.commit,
                          "rebuilt": "true"})
        self.store.event("ReportRebuilding", model=name, commit=reverted, report=link,
                         message=f"the report {link} of revert {entry.commit[:12]} is missing; "
                                 "rebuilding it from the recorded live sample")
        try:
            self._reports.put_nowait(job)
        except queue.Full:
            self._placeholder(job, "too many drift reports were queued when the controller "
                                   "started")

    def _page_if_missing(self, entry: git.LogEntry, *, name: str, reverted: str,
                         link: str) -> None:
        """The decision page of a revert on the remote: from the log, else from the commit."""
        ident = entry.trailers.get(layout.TRAILER_REPORT_ID, "")
        if not decisions.valid_id(ident) or not manifest.valid_name(name):
            return
        reports_root = self.state_dir / reports.REPORTS
        record = decision_log.find(reports_root, name, ident)
        if record is not None and record.commit == entry.commit:
            if not decision_pages.page_file(reports_root, name, ident).exists():
                self.dispatcher.resend(record)
            return
        if record is not None:  # logged before its push; the push landed: finish the record
            self.dispatcher.submit(record.with_(commit=entry.commit, outcome=None))
            return
        # the state directory was lost: what the commit itself says
        self.dispatcher.resend(decisions.Decision(
            id=ident, model=name, kind=decisions.Kind.REVERT, at=float(entry.timestamp),
            version=reverted, previous_version=None, verdict=entry.subject,
            digest=entry.trailers.get(layout.TRAILER_DIGEST), commit=entry.commit,
            report_url=link,
            outcome=("rebuilt from the revert commit: the window's numbers were recorded by a "
                     "controller whose state directory is gone; the commit message has them"),
        ), log=True)

    def _placeholder(self, job: _ReportJob, reason: str) -> None:
        with contextlib.suppress(OSError):
            reports.write_placeholder(job.target, reason=reason,
                                      details={"model": job.target.name,
                                               "version": job.target.version, **job.tags})

    def on_deployed(self, name: str, backend: H) -> None:
        """Reconciler hook: the previous content serves again after a revert."""
        pending = self._pending.get(name)
        if pending is None:
            return
        reverted, closed_at, commit = pending
        if backend.version == reverted:
            return
        self._pending.pop(name, None)
        seconds = self.clock() - closed_at
        self.store.event(
            "RolledBack", model=name, commit=backend.version,
            message=(f"{backend.version[:12]} serves again {seconds:.2f}s after the breaching "
                     f"window of {reverted[:12]} closed"),
            reverted=reverted, revertCommit=commit, digest=backend.digest,
            breachToRollbackSeconds=round(seconds, 3),
        )

    # reports ---------------------------------------------------------------------------------
    def _queue_report(self, track: _Track, sample: Sample, *, why: str, now: float,
                      wait_until_not: str | None, target: reports.Plan | None = None,
                      title: str | None = None) -> None:
        target = target or reports.plan(self.state_dir, name=track.name, version=track.version,
                                        now=now, why=why, title=title)
        job = _ReportJob(target, sample if callable(sample) else sample.copy(), wait_until_not,
                         {"verdict": why, "closedAt": iso(now)})
        try:
            self._reports.put_nowait(job)
        except queue.Full:
            self.store.event("ReportFailed", model=track.name, commit=track.version,
                             message="too many drift reports are queued; this one was dropped",
                             report=self._link(target))
            if why == "revert":
                self._placeholder(job, "too many drift reports were queued")

    def _report_worker(self) -> None:
        while True:
            job = self._reports.get()
            try:
                if job is None:
                    return
                self.report_now(job)
            finally:
                self._reports.task_done()

    def report_now(self, job: _ReportJob) -> None:
        name, version = job.target.name, job.target.version
        if job.wait_until_not is not None:
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:
                backend = self.router.get(name)
                if backend is None or backend.version != job.wait_until_not:
                    break
                time.sleep(0.1)
            # the retired server writes its final sample on exit: give it a moment
            retire = time.monotonic() + 5.0
            while time.monotonic() < retire and self.live_stats.serves_elsewhere(name, version):
                time.sleep(0.1)
        link = self._link(job.target)
        path = job.target.link(self.root)
        try:
            sample = (job.sample() if callable(job.sample)  # the window's own rows
                      else self._freshest_sample(name, version, job.sample))
            built = self.build_report(self.state_dir, self.source.clone, name=name, version=version,
                                      target=job.target, sample=sample, tags=job.tags)
        except Exception as exc:  # a report never takes the monitor down
            if job.tags.get("verdict") == "revert":  # a revert commit links it: never a 404
                self._placeholder(job, str(exc))
            self.store.event("ReportFailed", model=name, commit=version, report=link,
                             reportPath=path,
                             message=f"the drift report {link} could not be built: {exc}")
            self._page_again(job.target)
            return
        self._page_again(job.target)
        self.store.event(
            "ReportWritten", model=name, commit=version, report=link, reportPath=path,
            snapshot=str(built.paths.snapshot), runId=built.run_id, rows=built.rows,
            referenceRows=built.reference_rows, seconds=round(built.seconds, 3),
            message=(f"drift report {link}"
                     + (f" (workspace: {built.workspace_error})" if built.workspace_error else "")),
        )

    def _page_again(self, target: reports.Plan) -> None:
        """The decision page of a report just written: again, now linking it."""
        ident = target.title.removesuffix(".evidently")
        if ident == target.title or not decisions.valid_id(ident):
            return
        record = decision_log.find(self.state_dir / reports.REPORTS, target.name, ident)
        if record is not None:
            self.dispatcher.resend(record)

    def _freshest_sample(self, name: str, version: str, known: pd.DataFrame) -> pd.DataFrame:
        """The reservoir sample on disk now, or ``known`` when that one is larger."""
        try:
            now = self.live_stats.read(name, version).sample
        except errors.MlgitopsError:
            return known
        return now if len(now) >= len(known) else known

    def wait_reports(self, timeout: float = 60.0) -> bool:
        """Block until queued reports are built (tests, the demo); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._reports.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

