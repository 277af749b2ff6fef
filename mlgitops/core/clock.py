"""One clock and one way to write a time.

Code that compares times takes a ``Clock`` (``wall()`` for records, ``monotonic()`` for
intervals and deadlines) instead of calling ``time.*`` itself; the real one is
``mlgitops.adapters.clock.SYSTEM``, tests pass a ``ManualClock``. A "never happened yet" is
``NEVER`` (minus infinity), not ``0.0``: a freshly booted machine's monotonic clock is small.

Pure: formats a number of seconds it is given; never reads the clock itself.

Formats (contracts, see DESIGN.md): ``iso(at)`` is RFC 3339 in UTC to the second
(``2026-12-07T12:15:00Z``: decision records, Kubernetes timestamps, closed windows);
``iso(at, ms=True)`` to the millisecond (``state.json``/``events.jsonl`` of the local
controller); ``compact(at)`` is the same instant for file names and ids (``20261207T121500``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Protocol

NEVER = -math.inf
"""The time of something that has not happened yet: older than any reading of any clock."""


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (UTC): what records and timestamps carry."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (any origin): intervals and deadlines."""
        ...


@dataclass
class ManualClock:
    """A clock that moves only when told (``advance``): tests compare times without sleeping."""

    at: float = 1_800_000_000.0
    """Wall time, seconds since the epoch."""
    mono: float = 1_000.0

    def wall(self) -> float:
        return self.at

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"a clock moves forward by a finite number of seconds, not {seconds!r}")
        self.at += seconds
        self.mono += seconds


def _utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, dt.UTC)


def iso(at: float, *, ms: bool = False) -> str:
    """``at`` (seconds since the epoch) as RFC 3339 UTC: ``…T12:15:00Z`` or ``…T12:15:00.123Z``."""
    spec = "milliseconds" if ms else "seconds"
    return _utc(at).isoformat(timespec=spec).replace("+00:00", "Z")


def compact(at: float, *, ms: bool = False) -> str:
    """``at`` as ``20261207T121500`` (``…121500123`` with ``ms``): file names and ids, UTC."""
    when = _utc(at)
    stamp = when.strftime("%Y%m%dT%H%M%S")
    return stamp + f"{when.microsecond // 1000:03d}" if ms else stamp
