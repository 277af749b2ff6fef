"""Copies of user requests for a rollout's other version, sent after the user was answered.

`Mirror.offer` never waits: a copy goes into a bounded queue, or is dropped (and counted) when
the queue is full; one worker task (``workers``) sends the copies one at a time. While the model
is busy (other user requests are waiting on the version that answered), copies are kept within
``budget`` of the requests offered (a token bucket per model version): on a saturated machine
the other version's scoring would otherwise take CPU from users. When the model is not busy,
every request is copied. The step's `router.StepCounters` get the other
version's latency and failures and how its answer compares with the one the user got (`core.rollout.compare`). The copy's answer is never returned to
anyone. In a shadow the copy goes to the candidate; in a canary, a request the candidate
answered is copied to the stable version so that both answers of the same rows compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from mlgitops.controller.router import Role, Router, StepCounters
from mlgitops.core import rollout


@dataclass(frozen=True)
class Copy:
    name: str
    url: str
    version: str
    role: Role
    """The role of the version the copy goes to."""
    counters: StepCounters
    method: str
    body: bytes
    headers: Mapping[str, str]
    params: Any
    answer: bytes
    """What the user got (from the other version)."""


class Mirror:
    def __init__(self, client: httpx.AsyncClient, router: Router[Any], *, size: int = 64,
                 workers: int = 1, budget: float = 0.05) -> None:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"the mirror's budget must be in (0, 1], not {budget}")
        self.client = client
        self.router = router
        self.size = size
        self.workers = workers
        self.budget = budget
        """The share of offered requests copied while the model is busy."""
        self.tokens: dict[tuple[str, str], float] = {}
        self.queue: asyncio.Queue[Copy] | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def offer(self, copy: Copy, *, busy: bool = False) -> bool:
        """Queue ``copy`` (False: it is dropped and counted: the queue was full, or the model
        is ``busy`` and its copies have used their budget)."""
        key = (copy.name, copy.version)
        tokens = min(1.0, self.tokens.get(key, 1.0) + self.budget)
        if busy and tokens < 1.0:
            self.tokens[key] = tokens
            return self._dropped(copy)
        self.tokens[key] = tokens - 1.0 if busy else tokens
        if self.queue is None:
            self.queue = asyncio.Queue(maxsize=self.size)
            self.tasks = [asyncio.get_running_loop().create_task(self._work())
                          for _ in range(self.workers)]
        try:
            self.queue.put_nowait(copy)
        except asyncio.QueueFull:
            return self._dropped(copy)
        return True

    @staticmethod
    def _dropped(copy: Copy) -> bool:
        with copy.counters.lock:
            copy.counters.dropped += 1
        return False

    async def _work(self) -> None:
        assert self.queue is not None
        while True:
            copy = await self.queue.get()
            with contextlib.suppress(Exception):  # a copy must never take the worker down
                await self._send(copy)

    async def _send(self, copy: Copy) -> None:
        started = time.perf_counter()
        try:
            r = await self.client.request(copy.method, copy.url, content=copy.body,
                                          headers=copy.headers, params=copy.params)
            ok, content = r.status_code < 500, r.content
        except httpx.HTTPError:
            ok, content = False, b""
        copy.counters.answered(copy.role, ok=ok, seconds=time.perf_counter() - started)
        self.router.mirrored[(copy.name, copy.version)] += 1
        with copy.counters.lock:
            copy.counters.mirrored += 1
        if not ok:
            return
        mine, theirs = _predictions(content), _predictions(copy.answer)
        if mine is None or theirs is None:
            return
        if copy.role == "candidate":
            copy.counters.compared(rollout.compare(mine, theirs))
        else:
            copy.counters.compared(rollout.compare(theirs, mine))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _predictions(content: bytes) -> list[Any] | None:
    try:
        return rollout.predictions(json.loads(content))
    except ValueError:
        return None
