"""The gateway's table, shared by both runtimes: model name -> the handle answering for it.

The reconciler writes it (a deploy swaps a route atomically), the gateways (HTTP and gRPC) and
the drift monitor read it. Locally a handle is a server process; on Kubernetes it is the
model's Service.

During a rollout (``spec.rollout``) a model also has a `Split`: a candidate beside the stable
route, in a shadow (the candidate gets a copy of each request; users get the stable answer) or a
canary step (the candidate answers ``weight`` percent of user requests, chosen by a hash of the
request key header, so one client stays on one version). `StepCounters` hold what the current
step measured (requests, failures, latencies, the agreement of both answers on the same rows);
`served` counts the user requests each version answered.
"""

from __future__ import annotations

import collections
import random
import threading
import zlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Literal

from mlgitops.controller.ports import H
from mlgitops.core import manifest, rollout

Role = Literal["stable", "candidate"]
_LATENCIES = 2000


@dataclass(frozen=True)
class Split(Generic[H]):
    """The candidate of one model and how traffic reaches it now."""

    candidate: H
    mode: rollout.Mode
    weight: int
    step: int
    key: str | None = None
    """The request header whose value keeps one client on one version (None: random)."""
    frozen: bool = False
    """The rollout is being aborted: nothing reaches the candidate any more."""


class StepCounters:
    """What one rollout step measured at the gateway. Updated on the gateway's event loop,
    read by the monitor's thread (`snapshot`)."""

    def __init__(self, version: str, step: int) -> None:
        self.version = version
        self.step = step
        self.lock = threading.Lock()
        self.requests = {"stable": 0, "candidate": 0}
        self.errors = {"stable": 0, "candidate": 0}
        self.latencies: dict[str, collections.deque[float]] = {
            "stable": collections.deque(maxlen=_LATENCIES),
            "candidate": collections.deque(maxlen=_LATENCIES)}
        self.comparison = rollout.Comparison()
        self.mirrored = 0
        self.dropped = 0
        """Copies not sent: the mirror queue was full (mirroring never waits), or the model was
        busy and its copies had used their budget (`mirror.Mirror`)."""

    def answered(self, role: Role, *, ok: bool, seconds: float) -> None:
        with self.lock:
            self.requests[role] += 1
            self.errors[role] += not ok
            self.latencies[role].append(seconds)

    def compared(self, c: rollout.Comparison) -> None:
        with self.lock:
            old = self.comparison
            self.comparison = rollout.Comparison(
                old.compared + c.compared, old.agreed + c.agreed, old.labels + c.labels,
                old.relative_error_sum + c.relative_error_sum)

    def snapshot(self, *, rows: int) -> rollout.Counters:
        with self.lock:
            c = self.comparison
            return rollout.Counters(
                rows=rows, requests=self.requests["candidate"], errors=self.errors["candidate"],
                stable_requests=self.requests["stable"], stable_errors=self.errors["stable"],
                compared=c.compared, agreed=c.agreed, labels=c.labels,
                relative_error_sum=c.relative_error_sum,
                latency_p95=_p95(self.latencies["candidate"]),
                stable_latency_p95=_p95(self.latencies["stable"]))


def _p95(values: collections.deque[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class Router(Generic[H]):
    """Model name -> handle. Swaps are atomic (the whole table is replaced)."""

    def __init__(self) -> None:
        self.routes: dict[str, H] = {}
        self.inflight: dict[Hashable, int] = {}
        self.splits: dict[str, Split[H]] = {}
        self.counters: dict[str, StepCounters] = {}
        #: model -> its rollout's policy and state (the last one's, once promoted or aborted)
        self.rollouts: dict[str, tuple[manifest.Rollout, rollout.State]] = {}
        #: (model, version) -> user requests that version answered (a shadow answers none)
        self.served: collections.Counter[tuple[str, str]] = collections.Counter()
        #: (model, version) -> copies of user requests that version answered (never returned)
        self.mirrored: collections.Counter[tuple[str, str]] = collections.Counter()

    def get(self, name: str) -> H | None:
        return self.routes.get(name)

    def set(self, name: str, handle: H) -> H | None:
        old = self.routes.get(name)
        self.routes = {**self.routes, name: handle}
        return old

    def drop(self, name: str) -> H | None:
        old = self.routes.get(name)
        self.routes = {k: v for k, v in self.routes.items() if k != name}
        return old

    def busy(self, handle: H) -> int:
        return self.inflight.get(handle.key, 0)

    # rollouts ---------------------------------------------------------------------------------
    def split(self, name: str) -> Split[H] | None:
        return self.splits.get(name)

    def set_split(self, name: str, split: Split[H]) -> None:
        """Start or change ``name``'s split; a new step (or candidate) starts new counters."""
        counters = self.counters.get(name)
        if (counters is None or counters.version != split.candidate.version
                or counters.step != split.step):
            self.counters = {**self.counters,
                             name: StepCounters(split.candidate.version, split.step)}
        self.splits = {**self.splits, name: split}

    def freeze(self, name: str) -> None:
        """Send nothing more to ``name``'s candidate (its rollout is being aborted)."""
        split = self.splits.get(name)
        if split is not None and not split.frozen:
            self.splits = {**self.splits, name: Split(split.candidate, split.mode, 0, split.step,
                                                      split.key, frozen=True)}

    def end_split(self, name: str) -> Split[H] | None:
        old = self.splits.get(name)
        self.splits = {k: v for k, v in self.splits.items() if k != name}
        self.counters = {k: v for k, v in self.counters.items() if k != name}
        return old

    def choose(self, name: str, key: str | None = None
               ) -> tuple[H | None, Role, H | None, StepCounters | None]:
        """Who answers a user request for ``name`` (and its role), who gets a copy (a shadow's
        candidate, or a canary's stable version to compare with), and the step's counters."""
        stable = self.routes.get(name)
        split = self.splits.get(name)
        if split is None or stable is None or split.frozen:
            return stable, "stable", None, None
        counters = self.counters.get(name)
        if split.mode == "shadow":
            return stable, "stable", split.candidate, counters
        bucket = (zlib.crc32(key.encode()) if key else random.getrandbits(32)) % 100
        if bucket < split.weight:
            return split.candidate, "candidate", stable, counters
        return stable, "stable", None, counters
