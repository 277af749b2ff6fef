"""The machine's clock behind ``core.clock.Clock``: the only place that reads the time for it."""

from __future__ import annotations

import time

from mlgitops.core import clock


class SystemClock:
    """``time.time`` and ``time.monotonic``."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM: clock.Clock = SystemClock()


def now_iso(source: clock.Clock = SYSTEM, *, ms: bool = False) -> str:
    """The time now as ``core.clock.iso`` writes it (``ms``: to the millisecond)."""
    return clock.iso(source.wall(), ms=ms)
