"""Live statistics of one worker: counters on the baseline's bins plus a bounded sample.

Every scored batch updates a `stats.LiveStats` (feature columns and predictions, vectorized),
a reservoir sample of at most ``capacity`` rows (Algorithm R, vectorized per batch) and the
most recent ``recent`` rows in order (a ring: the drift monitor cuts a closed window's own rows
out of it, `stats_store.window_sample`), so memory does not grow with traffic. `Publisher`
writes the cumulative state through `adapters.stats_store` at most every ``interval`` seconds
when it changed (the sample and the recent rows, which are larger, every ``sample_interval``
seconds, or sooner once half the recent rows are unwritten, so none is skipped), and both on
exit. The CPU time all of
this takes (thread CPU time of `Recorder.record`, `Recorder.flush` and the writes) is counted
and reported as ``mlgitops_stats_cpu_seconds_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.adapters import stats_store
from mlgitops.core import stats
from mlgitops.server import schema

Array = npt.NDArray[Any]
log = logging.getLogger("mlgitops.server")

PREDICTION = "prediction"


class Recorder:
    """Thread-safe live statistics and reservoir sample of the rows one worker scored.

    `record` only queues the scored batch (about a microsecond, whatever its size): counting
    happens off the request path, when the publisher's thread calls `flush` before each
    write (every ~0.5 s while traffic flows), in one vectorized step over all queued rows
    (about half a microsecond of CPU per row for 20 numeric features). Only when
    ``flush_rows`` rows wait (no publisher, or it fell behind) does `record` fold in the
    caller's thread, which bounds the queue's memory.
    """

    def __init__(
        self,
        baseline: stats.Baseline,
        *,
        capacity: int = stats_store.DEFAULT_SAMPLE_SIZE,
        seed: int | None = None,
        flush_rows: int = 32768,
        recent: int = stats_store.RECENT_ROWS,
    ) -> None:
        self.live = stats.LiveStats.empty(baseline)
        self.capacity = capacity
        self.recent = recent
        self.flush_rows = flush_rows
        self.changes = 0
        self._lock = threading.Lock()  # guards the queue
        self._fold_lock = threading.Lock()  # guards the counters and the reservoir
        self._rng = np.random.default_rng(seed)
        self._seen = 0
        self._store: dict[str, Array] = {}
        self._ring: dict[str, Array] = {}  # row i of the stream at i % recent
        self._queue: list[tuple[schema.Batch, Array | None]] = []
        self._queued_rows = 0
        self._queue_cpu = 0.0  # thread CPU seconds of `record` (under _lock)
        self._fold_cpu = 0.0  # ... of folding and publishing (under _fold_lock)

    @property
    def seen(self) -> int:
        """Rows folded into the statistics so far."""
        return self._seen

    @property
    def queued(self) -> int:
        """Rows recorded but not folded yet."""
        return self._queued_rows

    @property
    def cpu_seconds(self) -> float:
        """Thread CPU time spent recording so far (queueing, folding, `spent` by writers)."""
        return self._queue_cpu + self._fold_cpu

    def spent(self, seconds: float) -> None:
        """Count ``seconds`` of CPU spent on these statistics elsewhere (writing them)."""
        with self._fold_lock:
            self._fold_cpu += seconds

    def record(self, batch: schema.Batch, predictions: Array | None) -> None:
        """Queue one scored batch (folded in by the next `flush`)."""
        started = time.thread_time()
        preds = predictions if predictions is not None and predictions.ndim == 1 else None
        with self._lock:
            self._queue.append((batch, preds))
            self._queued_rows += batch.rows
            self.changes += 1
            full = self._queued_rows >= self.flush_rows
            self._queue_cpu += time.thread_time() - started
        if full:
            self.flush()

    def flush(self) -> None:
        """Fold the queued batches into the counters and the reservoir."""
        with self._fold_lock:
            started = time.thread_time()
            self._fold()
            self._fold_cpu += time.thread_time() - started

    def _fold(self) -> None:
        with self._lock:
            queue, self._queue = self._queue, []
            self._queued_rows = 0
        if not queue:
            return
        columns, rows = _merge([b for b, _ in queue])
        parts = [p for _, p in queue]
        preds = None
        if all(p is not None for p in parts):
            preds = np.concatenate([p for p in parts if p is not None])
        self.live.update(columns, preds)
        self._keep_recent(columns, preds, rows)
        self._offer(columns, preds, rows)

    def _keep_recent(self, columns: Mapping[str, Array], preds: Array | None, rows: int) -> None:
        cap = self.recent
        if cap <= 0 or rows == 0:
            return
        take = min(rows, cap)
        slots = np.arange(self._seen + rows - take, self._seen + rows) % cap
        _store_columns(self._ring, columns, preds, cap=cap, slots=slots,
                       picks=np.arange(rows - take, rows))

    def _offer(self, columns: Mapping[str, Array], preds: Array | None, rows: int) -> None:
        cap = self.capacity
        seen = self._seen
        self._seen = seen + rows
        if cap <= 0 or rows == 0:
            return
        fill = max(0, min(rows, cap - seen))
        slots = np.arange(seen, seen + fill)
        picks = np.arange(fill)
        if fill < rows:
            t = np.arange(seen + fill, seen + rows)
            j = self._rng.integers(0, t + 1)
            keep = j < cap
            slots = np.concatenate([slots, j[keep]])
            picks = np.concatenate([picks, np.nonzero(keep)[0] + fill])
        if len(slots) == 0:
            return
        _store_columns(self._store, columns, preds, cap=cap, slots=slots, picks=picks)

    def snapshot(
        self, *, with_sample: bool = True
    ) -> tuple[stats.LiveStats, dict[str, Array], int]:
        """A consistent copy (after a flush): cumulative stats, the filled sample, rows seen."""
        live, sample, _, seen = self.snapshot_with_recent(with_sample=with_sample)
        return live, sample, seen

    def snapshot_with_recent(
        self, *, with_sample: bool = True
    ) -> tuple[stats.LiveStats, dict[str, Array], dict[str, Array], int]:
        """As `snapshot`, and the most recent rows in order (the last is row ``seen - 1``)."""
        self.flush()
        with self._fold_lock:
            filled = min(self._seen, self.capacity)
            sample = {k: v[:filled].copy() for k, v in self._store.items()} if with_sample else {}
            recent: dict[str, Array] = {}
            if with_sample and self.recent > 0:
                n = min(self._seen, self.recent)
                order = np.arange(self._seen - n, self._seen) % self.recent
                recent = {k: v[order] for k, v in self._ring.items()}
            return self.live.copy(), sample, recent, self._seen


def _store_columns(stores: dict[str, Array], columns: Mapping[str, Array], preds: Array | None,
                   *, cap: int, slots: Array, picks: Array) -> None:
    """Write rows ``picks`` of each column (and the prediction) at ``slots`` of its fixed-size
    store of ``cap`` rows; a store turns to objects once its column holds anything not numeric."""
    values = dict(columns)
    if preds is not None:
        values[PREDICTION] = preds
    for name, arr in values.items():
        store = stores.get(name)
        if store is None:
            dtype = arr.dtype if arr.dtype.kind in "fiub" else np.dtype(object)
            store = stores[name] = np.empty(cap, dtype=dtype)
        elif arr.dtype.kind not in "fiub" and store.dtype != object:
            store = stores[name] = store.astype(object)
        store[slots] = arr[picks]


def _merge(batches: Sequence[schema.Batch]) -> tuple[dict[str, Array], int]:
    """The columns of the rows of ``batches`` in order, and their number.

    Batches with a matrix are copied into one (columns x rows) matrix, each column then one
    contiguous row: the statistics read column by column, which from the (rows x columns)
    matrices would be strided reads (twice as slow for 20 columns).
    """
    rows = sum([b.rows for b in batches])
    matrices = [b.matrix for b in batches if b.matrix is not None]
    if len(matrices) == len(batches):
        names = batches[0].names
        merged = np.empty((len(names), rows))
        at = 0
        for m in matrices:
            merged[:, at : at + len(m)] = m.T
            at += len(m)
        return {n: merged[j] for j, n in enumerate(names)}, rows
    parts = [b.columns for b in batches]
    return {n: np.concatenate([c[n] for c in parts]) for n in batches[0].names}, rows


class Publisher:
    """Writes a recorder's state to the stats directory periodically and on exit."""

    def __init__(
        self,
        recorder: Recorder,
        stats_dir: Path,
        *,
        worker_id: str,
        name: str,
        version: str,
        digest: str,
        interval: float = 0.5,
        sample_interval: float = 5.0,
        on_cpu: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recorder = recorder
        self.clock = clock
        """Seconds on a monotonic clock (``time.monotonic`` counts from boot: it may be small)."""
        self.on_cpu = on_cpu
        """Told the recorder's CPU seconds since the last write (after each write)."""
        self._cpu_told = 0.0
        self.stats_dir = stats_dir
        self.worker_id = worker_id
        self.name = name
        self.version = version
        self.digest = digest
        self.interval = interval
        self.sample_interval = sample_interval
        self._published = -1
        self._sample_published = -1
        self._sample_seen = 0  # rows the sample file covers
        self._sample_at = -math.inf  # never written: the first sample is due at once
        self._task: asyncio.Task[None] | None = None
        self._writing = threading.Lock()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stats-publisher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            changes = self.recorder.changes
            sample_due = changes != self._sample_published and self._sample_due()
            if changes != self._published or sample_due:
                try:
                    await asyncio.to_thread(self.publish)
                except Exception:
                    log.exception("publishing live statistics failed")

    def publish(self, *, with_sample: bool | None = None) -> None:
        """Write the current state now (from any thread; one write at a time).

        The statistics file every time; the sample (larger) at most every ``sample_interval``
        seconds unless ``with_sample`` forces it. Writes are serialized: a periodic write still
        running in its thread when `close` cancels the task cannot interleave with the final one
        (the counters of one and the sample of the other).
        """
        with self._writing:
            self._publish(with_sample)

    def _publish(self, with_sample: bool | None) -> None:
        self.recorder.flush()  # counts its own CPU time
        started = time.thread_time()
        changes = self.recorder.changes
        now = self.clock()
        if with_sample is None:
            with_sample = self._sample_due()
        with_sample = with_sample and changes != self._sample_published
        live, sample, recent, seen = self.recorder.snapshot_with_recent(with_sample=with_sample)
        frame = recent_frame = None
        if with_sample:
            import pandas as pd

            frame = pd.DataFrame(sample)
            recent_frame = pd.DataFrame(recent)
        stats_store.write_worker(
            self.stats_dir,
            worker_id=self.worker_id,
            version=self.version,
            digest=self.digest,
            live=live,
            sample_frame=frame,
            recent_frame=recent_frame,
            seen=seen,
            name=self.name,
            pid=os.getpid(),
        )
        self._published = changes
        if with_sample:
            self._sample_published = changes
            self._sample_seen = seen
            if seen:  # an empty reservoir starts no interval: the first rows are written at once
                self._sample_at = now
        self.recorder.spent(time.thread_time() - started)
        if self.on_cpu is not None:
            total = self.recorder.cpu_seconds
            self.on_cpu(total - self._cpu_told)
            self._cpu_told = total

    def _sample_due(self) -> bool:
        """Every ``sample_interval`` seconds, or sooner when half the recent rows are not written
        yet (so the file's recent rows never skip any)."""
        if self.clock() - self._sample_at >= self.sample_interval:
            return True
        return self.recorder.recent > 0 and (
            self.recorder.seen + self.recorder.queued - self._sample_seen >= self.recorder.recent // 2)

    async def close(self) -> None:
        """Stop the periodic task and write the final state."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            self.publish(with_sample=True)
        except Exception:
            log.exception("publishing the final live statistics failed")


def load_baseline(model_dir: Path, names: Sequence[str]) -> stats.Baseline | None:
    """The model's baseline.json, or None (no recording) with a log line saying why."""
    import orjson

    path = model_dir / "baseline.json"
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        log.warning("%s: no baseline.json; live statistics are not recorded", model_dir)
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("%s: unreadable (%s); live statistics are not recorded", path, exc)
        return None
    try:
        baseline = stats.Baseline.from_dict(data)
    except ValueError as exc:
        log.warning("%s: %s; live statistics are not recorded", path, exc)
        return None
    unknown = [n for n in baseline.names if n not in names]
    if unknown:
        log.warning(
            "%s: profiles column(s) %s that the model's signature lacks; live statistics are "
            "not recorded",
            path,
            ", ".join(unknown),
        )
        return None
    return baseline


def reference_row(baseline: stats.Baseline | None) -> dict[str, Any]:
    """One plausible row from the baseline's samples (for warm-up), column -> value."""
    if baseline is None:
        return {}
    row: dict[str, Any] = {}
    for col in baseline.columns:
        if col.sample:
            row[col.name] = col.sample[len(col.sample) // 2]
    return row
