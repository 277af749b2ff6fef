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
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml

from mlgitops import errors, ui
from mlgitops.adapters import git, prediction_log, prediction_log_labels, stats_store
from mlgitops.controller import decision_pages, performance, ports, reports
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reconciler as rec
from mlgitops.controller import revert as revert_mod
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.controller.monitor_base import (  # noqa: F401  (re-exported names)
    PENDING,
    ReportBuilder,
    ReportJob,
    Sample,
    Track,
    iso,
)
from mlgitops.controller.monitor_performance import PerformanceChecks, PreviousScorer, SandboxScorer
from mlgitops.controller.monitor_reports import Reports
from mlgitops.controller.monitor_rollouts import Candidate, RolloutChecks
from mlgitops.controller.ports import H
from mlgitops.core import decisions, drift, layout, manifest, policy, quarantine, stats
from mlgitops.core import status as status_mod
from mlgitops.core.performance import policy as perf_policy


class Monitor(RolloutChecks[H], Reports[H], PerformanceChecks[H]):
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
        predictions: ports.PredictionSource | None = None,
        labels: ports.LabelSource | None = None,
        scorer: PreviousScorer | None = None,
        performance_interval: float = 30.0,
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
        self.tracks: dict[str, Track] = {}
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
        self._reports: queue.Queue[ReportJob | None] = queue.Queue(maxsize=16)
        self._report_thread: threading.Thread | None = None
        self._recovered = False
        self._candidates: dict[str, Candidate] = {}
        self.lock = threading.Lock()
        # spec.performance (monitor_performance): labels joined with the prediction log
        self.predictions: ports.PredictionSource = (
            predictions or prediction_log.Directory(state_dir / performance.STATS))
        self.labels: ports.LabelSource = (
            labels or prediction_log_labels.Labels(state_dir / performance.LABELS))
        self.scorer: PreviousScorer = scorer or SandboxScorer(source)
        self.performance_interval = performance_interval
        self._performance_seen: dict[str, tuple[str, int, float]] = {}
        self._performance_alerted: dict[tuple[str, str], float] = {}
        self.performance_decisions: list[tuple[str, perf_policy.Decision]] = []

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
            self.rollout_tick()
            self.performance_tick()
        return out

    def _problem(self, name: str, version: str, message: str) -> None:
        if self._last_error.get(name) == message:
            return
        self._last_error[name] = message
        self.store.event("MonitorFailed", model=name, commit=version,
                         message=f"the drift monitor cannot check {name}: {message}")

    # the serving version ---------------------------------------------------------------------
    def _track(self, name: str, backend: H) -> Track | None:
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

    def _start(self, name: str, backend: H) -> Track:
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
        return Track(
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

    def window_rows_of(self, track: Track, snap: stats_store.Snapshot,
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
    def evidence(track: Track, window: stats.LiveStats) -> policy.Evidence:
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

    def close(self, track: Track, window: stats.LiveStats,
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

    def record_of(self, track: Track, decision: policy.Decision,
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
        with self.store.locked():
            st = status_mod.drift_window(self.store.status(name), verdict=decision.verdict.value,
                                         message=message or decision.reason, reason=reason,
                                         now=state_mod.now())
            self.store.set(replace(st, drift=decision.to_dict()))
        self.store.save()

