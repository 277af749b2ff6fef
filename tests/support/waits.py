"""Waiting on a condition instead of sleeping: poll, and on time-out say what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], object], *, timeout: float = 60, what: str = "condition",
               every: float = 0.05, detail: Callable[[], str] | None = None) -> None:  # fmt: skip
    """Poll ``check`` every ``every`` seconds until it returns something truthy; after ``timeout``
    seconds fail the test with ``what`` (and ``detail()``, e.g. a log tail, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    more = f"\n{detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{more}")
