"""The drift monitor's report worker: HTML and Evidently reports built in the background (each
in a low-priority child process), never delaying or blocking a revert; placeholders when one
cannot be built.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import pandas as pd

from mlgitops import errors
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reports
from mlgitops.controller.monitor_base import MonitorBase, ReportJob, Sample, Track, iso
from mlgitops.controller.ports import H
from mlgitops.core import decisions


class Reports(MonitorBase[H]):
    def start_reports(self) -> None:
        """Start the background report worker (run() does; tests call it directly)."""
        if self._report_thread is None or not self._report_thread.is_alive():
            self._report_thread = threading.Thread(target=self._report_worker, name="drift-reports",
                                                   daemon=True)
            self._report_thread.start()

    def _placeholder(self, job: ReportJob, reason: str) -> None:
        with contextlib.suppress(OSError):
            reports.write_placeholder(job.target, reason=reason,
                                      details={"model": job.target.name,
                                               "version": job.target.version, **job.tags})

    # reports ---------------------------------------------------------------------------------
    def _queue_report(self, track: Track, sample: Sample, *, why: str, now: float,
                      wait_until_not: str | None, target: reports.Plan | None = None,
                      title: str | None = None) -> None:
        target = target or reports.plan(self.state_dir, name=track.name, version=track.version,
                                        now=now, why=why, title=title)
        job = ReportJob(target, sample if callable(sample) else sample.copy(), wait_until_not,
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

    def report_now(self, job: ReportJob) -> None:
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


