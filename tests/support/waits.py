"""Waiting on a condition instead of sleeping: poll, and on time-out say what was awaited."""

from __future__ import annotations

import asyncio
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


async def wait_until_async(check: Callable[[], object], *, timeout: float = 10,
                           what: str = "condition", every: float = 0.001) -> None:  # fmt: skip
    """`wait_until` inside an event loop: polls with ``asyncio.sleep`` so the loop runs on."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)
