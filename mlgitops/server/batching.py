"""Adaptive micro-batching: concurrent requests share one ``predict`` call.

One dispatcher task per worker owns the predictor. When it is idle, a request is dispatched
at once (no waiting for company); while a predict runs, arrivals queue, and the queue is the
next batch (up to ``max_batch_size`` rows; a single larger request goes alone). The only
added delay: when the predictor is free but requests are already being read off their
connections (``inbound``), the dispatcher waits for them at most ``max_delay_ms``.

Each caller gets its own rows back. If a batched predict raises, each request of the batch
is predicted alone, so a row that fails fails only its own request.

``predict`` runs in one dedicated thread (the event loop keeps reading and answering while
the model computes) or inline in the loop; ``bench/serving.py`` measures both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from mlgitops.server import predictor, problems, schema

Array = npt.NDArray[Any]
log = logging.getLogger("mlgitops.server")

#: Exceptions of a model on validated rows that mean "these rows", not "this server".
_ROW_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError)


@dataclass
class _Item:
    batch: schema.Batch
    future: asyncio.Future[Array]
    arrived: float


class MicroBatcher:
    """Coalesces `submit` calls into batched predicts on one predictor."""

    def __init__(
        self,
        predict: Callable[[schema.Batch], Array],
        *,
        max_batch_size: int,
        max_delay_ms: float,
        in_thread: bool,
        after_predict: Callable[[schema.Batch, Array], None] | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay = max(0.0, max_delay_ms) / 1000.0
        self._after = after_predict
        self._on_batch = on_batch
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="predict", initializer=thread_init)
            if in_thread
            else None
        )
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._wake = asyncio.Event()
        self._arrival = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Requests whose bodies are being read (they will submit soon).
        self.inbound = 0

    # --------------------------------------------------------------------- client side
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    def begin(self) -> None:
        """A request started reading its body."""
        self.inbound += 1

    def end(self) -> None:
        """A request finished reading (and submitted, or failed validation)."""
        self.inbound -= 1
        self._arrival.set()

    async def submit(self, batch: schema.Batch) -> Array:
        """Predictions for ``batch``'s rows (scheduled with other requests' rows)."""
        if self._closed:
            raise problems.NotReady("The server is shutting down; retry on another replica.")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Array] = loop.create_future()
        self._pending.append(_Item(batch, future, time.monotonic()))
        self._pending_rows += batch.rows
        self._wake.set()
        self._arrival.set()
        return await future

    async def close(self) -> None:
        """Finish queued work, then stop the dispatcher and the predict thread."""
        self._closed = True
        deadline = time.monotonic() + 10.0
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(problems.NotReady("The server is shutting down."))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ----------------------------------------------------------------- dispatcher side
    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.inbound > 0 and self.max_delay > 0 and self._pending_rows < self.max_batch_size:
                await self._gather()
            items = self._take()
            try:
                await self._dispatch(items)
            except asyncio.CancelledError:
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(problems.NotReady("The server is shutting down."))
                raise
            except Exception as exc:  # never let the dispatcher die
                log.exception("batch dispatch failed")
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _gather(self) -> None:
        """Wait (at most max_delay after the oldest arrival) for requests being read."""
        deadline = self._pending[0].arrived + self.max_delay
        while self.inbound > 0 and self._pending_rows < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
        items = [self._pending.popleft()]
        rows = items[0].batch.rows
        while self._pending and rows + self._pending[0].batch.rows <= self.max_batch_size:
            item = self._pending.popleft()
            rows += item.batch.rows
            items.append(item)
        self._pending_rows -= rows
        return [i for i in items if not i.future.cancelled()] or items[:0]

    async def _dispatch(self, items: list[_Item]) -> None:
        if not items:
            return
        started = time.perf_counter()
        batch = predictor.merge([i.batch for i in items])
        try:
            out = await self._call(batch)
        except Exception as exc:
            if len(items) == 1:
                self._fail(items[0], exc)
                return
            log.info(
                "a batch of %d requests failed (%s); predicting them one by one", len(items), exc
            )
            for item in items:
                try:
                    one = await self._call(item.batch)
                except Exception as exc_one:
                    self._fail(item, exc_one)
                else:
                    self._finish_batch(item.batch.rows, started)
                    if not item.future.done():
                        item.future.set_result(one)
            return
        self._finish_batch(batch.rows, started)
        for item, part in zip(
            items, predictor.split(out, [i.batch.rows for i in items]), strict=True
        ):
            if not item.future.done():
                item.future.set_result(part)

    def _finish_batch(self, rows: int, started: float) -> None:
        if self._on_batch is not None:
            self._on_batch(rows, time.perf_counter() - started)

    async def _call(self, batch: schema.Batch) -> Array:
        if self._executor is None:
            return self._job(batch)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._job, batch)

    def _job(self, batch: schema.Batch) -> Array:
        out = self._predict(batch)
        if self._after is not None:
            try:
                self._after(batch, out)
            except Exception:  # recording statistics never fails a request
                log.exception("recording live statistics failed")
        return out

    @staticmethod
    def _fail(item: _Item, exc: Exception) -> None:
        if item.future.done():
            return
        if isinstance(exc, problems.RequestProblem):
            item.future.set_exception(exc)
        elif isinstance(exc, _ROW_ERRORS):
            item.future.set_exception(
                problems.PredictionFailed(
                    f"The model could not score these rows ({type(exc).__name__}: {exc})."
                )
            )
        else:
            item.future.set_exception(exc)
