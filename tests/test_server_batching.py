"""Micro-batching: idle dispatch, coalescing, limits, per-request results and failures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
from support import servers as support
from support.waits import wait_until_async

from mlgitops.server import batching, problems, schema

pytestmark = pytest.mark.fast


def batch(*values: float) -> schema.Batch:
    arr = np.asarray(values, dtype=np.float64)
    return schema.Batch(rows=len(arr), columns={"a": arr}, matrix=arr.reshape(-1, 1))


class FakeModel:
    """Doubles column ``a``; raises ValueError on a negative value; records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, b: schema.Batch) -> Any:
        with self.lock:
            self.sizes.append(b.rows)
        if self.delay:  # a predict that takes time, during which requests arrive
            time.sleep(self.delay)
        a = b.columns["a"]
        if (a < 0).any():
            raise ValueError(f"negative value {a[a < 0][0]}")
        if (a > 1e6).any():
            raise RuntimeError("the model is broken")
        return a * 2


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("in_thread", [True, False], ids=["thread", "inline"])
def test_idle_predictor_dispatches_at_once(in_thread: bool) -> None:
    model = FakeModel()

    async def main() -> float:
        b = batching.MicroBatcher(model, max_batch_size=64, max_delay_ms=500, in_thread=in_thread)
        b.start()
        started = time.perf_counter()
        out = await b.submit(batch(1.0, 2.0))
        elapsed = time.perf_counter() - started
        assert out.tolist() == [2.0, 4.0]
        await b.close()
        return elapsed

    assert run(main()) < 0.25  # far below max_delay: an idle predictor does not wait
    assert model.sizes == [2]


@pytest.mark.parametrize("in_thread", [True, False], ids=["thread", "inline"])
def test_arrivals_during_a_predict_form_the_next_batch(in_thread: bool) -> None:
    model = FakeModel(delay=0.05)

    async def main() -> list[list[float]]:
        b = batching.MicroBatcher(model, max_batch_size=64, max_delay_ms=1, in_thread=in_thread)
        b.start()
        first = asyncio.ensure_future(b.submit(batch(0.0)))
        await wait_until_async(lambda: model.sizes, what="the first predict running")
        rest = [
            asyncio.ensure_future(b.submit(batch(float(i), float(i) + 0.5))) for i in range(1, 11)
        ]
        results = await asyncio.gather(first, *rest)
        await b.close()
        return [r.tolist() for r in results]

    results = run(main())
    assert results[0] == [0.0]
    for i, r in enumerate(results[1:], start=1):  # every caller gets its own rows back
        assert r == [2.0 * i, 2.0 * i + 1.0]
    if model.sizes[:1] == [1]:
        assert model.sizes == [1, 20]  # ten requests of two rows: one batch
    else:  # inline: the loop was blocked, so the first request may have company
        assert sum(model.sizes) == 21 and len(model.sizes) <= 2


def test_max_batch_size_caps_rows_and_a_large_request_goes_alone() -> None:
    model = FakeModel(delay=0.02)

    async def main() -> None:
        b = batching.MicroBatcher(model, max_batch_size=8, max_delay_ms=1, in_thread=True)
        b.start()
        blocker = asyncio.ensure_future(b.submit(batch(0.0)))
        await wait_until_async(lambda: model.sizes, what="the blocking predict running")
        small = [asyncio.ensure_future(b.submit(batch(1.0, 1.0, 1.0))) for _ in range(5)]
        big = asyncio.ensure_future(b.submit(batch(*([3.0] * 20))))
        await asyncio.gather(blocker, *small, big)
        assert big.result().tolist() == [6.0] * 20
        await b.close()

    run(main())
    assert sum(model.sizes) == 1 + 15 + 20
    assert 20 in model.sizes
    assert all(s <= 8 for s in model.sizes if s != 20)


def test_a_failing_row_fails_only_its_own_request() -> None:
    model = FakeModel(delay=0.02)

    async def main() -> list[Any]:
        b = batching.MicroBatcher(model, max_batch_size=64, max_delay_ms=1, in_thread=True)
        b.start()
        blocker = asyncio.ensure_future(b.submit(batch(0.0)))
        await wait_until_async(lambda: model.sizes, what="the blocking predict running")
        futures = [
            asyncio.ensure_future(b.submit(batch(1.0))),
            asyncio.ensure_future(b.submit(batch(-1.0))),
            asyncio.ensure_future(b.submit(batch(2.0, 3.0))),
            asyncio.ensure_future(b.submit(batch(1e9))),
        ]
        out = await asyncio.gather(blocker, *futures, return_exceptions=True)
        await b.close()
        return out

    _, good1, bad, good2, broken = run(main())
    assert good1.tolist() == [2.0]
    assert good2.tolist() == [4.0, 6.0]
    assert isinstance(bad, problems.PredictionFailed)
    assert "negative value" in str(bad)
    assert problems.status_of(bad) == 422
    assert isinstance(broken, RuntimeError)  # a model bug is a 500, not the client's fault
    assert problems.status_of(broken) == 500


def test_after_predict_sees_each_scored_batch_and_its_errors_are_contained() -> None:
    model = FakeModel()
    seen: list[int] = []

    def after(b: schema.Batch, out: Any) -> None:
        seen.append(b.rows)
        raise RuntimeError("stats are broken")

    async def main() -> None:
        b = batching.MicroBatcher(
            model, max_batch_size=64, max_delay_ms=1, in_thread=True, after_predict=after
        )
        b.start()
        assert (await b.submit(batch(1.0, 2.0))).tolist() == [2.0, 4.0]
        await b.close()

    run(main())
    assert seen == [2]


def test_closed_batcher_refuses_with_503() -> None:
    async def main() -> None:
        b = batching.MicroBatcher(FakeModel(), max_batch_size=4, max_delay_ms=1, in_thread=False)
        b.start()
        await b.close()
        with pytest.raises(problems.NotReady):
            await b.submit(batch(1.0))

    run(main())


# ------------------------------------------------------------------- live server, coalescing
def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


@pytest.mark.process
def test_concurrent_requests_share_predicts_and_get_their_own_rows(
    numeric_server: support.Server,
) -> None:
    model = support.numeric_model()
    frame = support.numeric_frame(n=128, seed=7)
    expected = model.expected(frame)
    with numeric_server.client() as c:
        before = c.get("/metrics").text
    count0 = _metric(before, "mlgitops_batch_size_count")
    rows0 = _metric(before, "mlgitops_batch_size_sum")

    async def main() -> list[Any]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=numeric_server.url, timeout=30, limits=limits
        ) as client:

            async def one(i: int) -> Any:
                row = {k: float(v) for k, v in frame.iloc[i].items()}
                r = await client.post(
                    "/invocations",
                    content=json.dumps({"dataframe_records": [row]}),
                    headers={"content-type": "application/json"},
                )
                assert r.status_code == 200, r.text
                return r.json()["predictions"][0]

            return await asyncio.gather(*(one(i) for i in range(len(frame))))

    got = asyncio.run(main())
    assert got == expected
    with numeric_server.client() as c:
        after = c.get("/metrics").text
    batches = _metric(after, "mlgitops_batch_size_count") - count0
    rows = _metric(after, "mlgitops_batch_size_sum") - rows0
    assert rows == len(frame)
    assert batches < len(frame), "no two concurrent requests were coalesced"
