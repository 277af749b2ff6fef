"""The mirror's budget: while a model is busy, a rollout copies at most its share of requests;
when it is not, every request is copied (the gateway's `controller.mirror`)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mlgitops.controller.mirror import Copy, Mirror
from mlgitops.controller.router import Router, StepCounters

pytestmark = pytest.mark.fast


def copy(counters: StepCounters, version: str = "v2") -> Copy:
    return Copy(name="credit", url="http://127.0.0.1:9/v2/models/credit/infer", version=version,
                role="candidate", counters=counters, method="POST", body=b"{}", headers={},
                params=None, answer=b"{}")


def offers(busy: list[bool], *, budget: float = 0.05, version: str = "v2") -> tuple[int, int]:
    """(copies queued, copies dropped) for offers made while the model was ``busy`` or not."""
    async def run() -> tuple[int, int]:
        async with httpx.AsyncClient() as client:
            mirror = Mirror(client, Router(), size=1000, budget=budget)
            counters = StepCounters(version, 0)
            queued = sum(mirror.offer(copy(counters, version), busy=b) for b in busy)
            await mirror.close()
            return queued, counters.dropped
    return asyncio.run(run())


def test_a_model_that_is_not_busy_has_every_request_copied() -> None:
    assert offers([False] * 300) == (300, 0)


def test_a_busy_model_has_its_copies_kept_within_the_budget() -> None:
    queued, dropped = offers([True] * 1000, budget=0.05)
    assert queued + dropped == 1000
    assert 50 <= queued <= 51  # the first copy, then one per 20 offers
    queued, _ = offers([True] * 1000, budget=0.25)
    assert 250 <= queued <= 251


def test_the_budget_refills_while_idle_copies_go_free() -> None:
    # quiet requests are copied and refill the bucket: the first busy one after them goes too
    queued, dropped = offers([False] * 30 + [True] + [True] * 19)
    assert (queued, dropped) == (31, 19)


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5])
def test_a_budget_outside_0_1_is_refused(budget: float) -> None:
    with pytest.raises(ValueError, match="budget"):
        offers([False], budget=budget)
