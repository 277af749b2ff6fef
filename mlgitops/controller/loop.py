"""The reconcile loop both runtimes run: when to call `Reconciler.reconcile`, and back-off.

A pass runs when something woke it (a hook, a webhook, a revert, a retry asked for), when the
poll period is due, when a deploy asked to be looked at again (`errors.Waiting`: after its
delay; `errors.Transient`: with back-off), or when a serving workload died. A pass that fails
as a whole (Git or the API server unreachable) is tried again with back-off doubling to
``max_backoff``; the first pass that succeeds resets it, so a commit made during an outage
waits no longer than the poll period once the outage ends. `answered` (told when the runtime's
API answers again, e.g. a watch event) resets it at once. A rollout under way is looked at
again after its delay, not after the next ``idle`` tick.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from mlgitops import errors
from mlgitops.controller import reconciler as rec


class Loop:
    """``run()`` blocks until ``stop`` is set; `trigger` makes the next pass fetch at once."""

    def __init__(
        self,
        reconciler: rec.Reconciler[Any],
        *,
        poll_seconds: float,
        stop: threading.Event | None = None,
        take_retry_requests: Callable[[], list[str]] = list,
        report: Callable[[rec.Outcome], None] = lambda outcome: None,
        failed: Callable[[errors.MlgitopsError, float], None] = lambda exc, backoff: None,
        clock: Callable[[], float] = time.monotonic,
        max_backoff: float = 30.0,
        idle: float = 0.5,
    ) -> None:
        self.reconciler = reconciler
        self.poll_seconds = poll_seconds
        self.stop = stop or threading.Event()
        self.wake = threading.Event()
        self.take_retry_requests = take_retry_requests
        self.report = report
        """Called with every pass's outcome."""
        self.failed = failed
        """Called when a pass failed as a whole, with the error and the seconds until the next."""
        self.clock = clock
        self.max_backoff = max_backoff
        self.idle = idle
        self.pending_fetch = True
        self.next_poll = -math.inf  # never polled: due at once
        self.backoff = 1.0
        self.retry_at = -math.inf
        self.look_at = math.inf
        self.failing = False
        """The last pass failed as a whole (the loop is backing off)."""

    def trigger(self, why: str = "") -> None:
        self.pending_fetch = True
        self.wake.set()

    def answered(self) -> None:
        """What the passes depend on answers again (the operator: the API server's watch is
        back): while backing off, reset the back-off and pass at once."""
        if self.failing:
            self.backoff = 1.0
            self.trigger("answered again")

    def once(self) -> float:
        """One turn of the loop; the seconds to wait before the next (at most ``idle``)."""
        asked = self.take_retry_requests()
        if asked:
            self.reconciler.retry(asked)
            self.pending_fetch = True
        now = self.clock()
        fetch = self.pending_fetch or now >= self.next_poll
        retry = (self.reconciler.retry_wanted and now >= self.retry_at) or now >= self.look_at
        if not (fetch or retry or self.reconciler.any_dead()):
            return self._idle(now)
        self.pending_fetch = False
        try:
            outcome = self.reconciler.reconcile(fetch=fetch)
        except (errors.Transient, errors.Waiting) as exc:
            wait = exc.delay if isinstance(exc, errors.Waiting) else self.backoff
            self.failed(exc, wait)
            if isinstance(exc, errors.Transient):
                self.backoff = min(self.backoff * 2, self.max_backoff)
            self.pending_fetch = True
            self.failing = True
            return wait
        self.failing = False
        if self.reconciler.retry_wanted:
            self.retry_at = self.clock() + self.backoff
            self.backoff = min(self.backoff * 2, self.max_backoff)
        else:
            self.backoff = 1.0  # the pass went through: Git and the runtime answer again
        after = self.reconciler.retry_after
        self.look_at = math.inf if after is None else self.clock() + after
        if fetch:
            self.next_poll = self.clock() + self.poll_seconds
        self.report(outcome)
        return self._idle(self.clock())

    def _idle(self, now: float) -> float:
        """Until the next look: ``idle``, or sooner when a rollout asked to be looked at."""
        return max(min(self.idle, self.look_at - now), 0.0)

    def run(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(self.once())
            self.wake.clear()

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
