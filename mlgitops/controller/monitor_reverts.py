"""The drift monitor's reverts and recovery: the path-scoped revert commit (recorded as pending
before its push), and after a restart what a controller killed mid-way left (pending reverts,
reports never built); the ``RolledBack`` event once the previous content serves again.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

import pandas as pd

from mlgitops import ui
from mlgitops.adapters import git
from mlgitops.controller import decision_pages, reports
from mlgitops.controller import decisions as decision_log
from mlgitops.controller.monitor_base import PENDING, MonitorBase, ReportJob, Sample, Track, iso
from mlgitops.controller.ports import H
from mlgitops.core import decisions, layout, manifest, policy


class Reverts(MonitorBase[H]):
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

    def _revert(self, track: Track, decision: policy.Decision, sample: Sample,
                record: decisions.Decision, *, why: str | None = None,
                plan_with: Callable[[policy.RevertPlan], policy.RevertPlan] | None = None,
                set_status: Callable[..., None] | None = None) -> None:
        """Revert ``track``'s version on ``decision`` (``plan_with`` rewrites the planned
        commit's message, e.g. a performance revert's numbers; trailers and quarantine stay;
        ``set_status`` sets the condition instead of Drift's, e.g. Performance's)."""
        name = track.name
        status = set_status or self._status
        target = reports.plan(self.state_dir, name=name, version=track.version, now=decision.at,
                              why="revert", title=self._evidently_title(record))
        link = record.report_url or self._link(target)
        plan = policy.revert_plan(decision, name=name, reverted=track.version, digest=track.digest,
                                  previous=track.previous_version, report=link, at=iso(decision.at),
                                  report_id=record.id, why=why)
        if plan_with is not None:
            plan = plan_with(plan)
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
            status(name, decision, reason="Reverted",
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
                status(name, decision, reason="RevertSkipped", message=outcome.skipped)
                record = record.with_(outcome=f"no revert was pushed: {outcome.skipped}")
            else:
                message = f"could not revert {track.version[:12]}: {outcome.error}"
                self.store.event("RevertFailed", model=name, commit=track.version,
                                 message=message, **common)
                status(name, decision, reason="RevertFailed", message=message)
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
        job = ReportJob(target, pd.DataFrame(), None,
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

