"""The prediction log of one worker: each scored row with its id, kept to join labels later.

`PredictionLog.record` runs on the request path and only queues the request's id, rows,
predictions and time (no copy, no encoding). `PredictionLog.flush`, on the log's own thread
once `FLUSH_ROWS` rows wait or the oldest has waited ``interval`` seconds (and on exit), turns
the queue into one segment: the row ids (a one-row request's
id is the request's; row ``i`` of a larger one is ``<id>:<i>``), the inputs, the predictions
and, for a classifier with ``predict_proba``, the class probabilities, computed there in one
vectorized call over every queued row (off the request path). `adapters.prediction_log`
writes the segment and keeps the log within its row and age bounds. The thread CPU time all
of this takes is counted (`cpu_seconds`) and reported as
``mlgitops_prediction_log_cpu_seconds_total``. Rows that find the queue full (``max_queued_rows``: the
writer fell behind) are not logged and are counted in `dropped`. `listing` and `segment_bytes`
are the export routes' (``GET /v2/models/{name}/predictions[/<segment>]``: what the Kubernetes
operator copies from each pod).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.adapters import prediction_log
from mlgitops.server import predictor, problems, schema

Array = npt.NDArray[Any]
log = logging.getLogger("mlgitops.server")


#: Rows that make the writer thread write at once (else it waits ``interval`` seconds).
FLUSH_ROWS = 8192


def row_ids(request_id: str, rows: int) -> list[str]:
    """The ids of a request's rows: the request's id for one row, ``<id>:<i>`` otherwise."""
    return [request_id] if rows == 1 else [f"{request_id}:{i}" for i in range(rows)]


def listing(stats_dir: str | Path | None, name: str, version: str) -> dict[str, Any]:
    """The segments of the log in ``stats_dir`` (name and rows, oldest first per worker)."""
    if stats_dir is None:
        raise problems.NotFound(f"Model {name!r} keeps no prediction log here.")
    found = prediction_log.segments(prediction_log.directory(Path(stats_dir)))
    return {"version": version,
            "segments": [{"name": s.path.name, "rows": s.rows} for s in found]}


def segment_bytes(stats_dir: str | Path | None, segment: str) -> bytes:
    """One segment as written; `problems.NotFound` for any other name, or one pruned."""
    if stats_dir is None or not prediction_log.is_segment(segment):
        raise problems.NotFound(f"No prediction log segment {problems.shown(segment)} here.")
    try:
        return (prediction_log.directory(Path(stats_dir)) / segment).read_bytes()
    except FileNotFoundError:
        raise problems.NotFound(
            f"The segment {problems.shown(segment)} is gone (pruned); list them again.") from None


class PredictionLog:
    """Queues scored requests; `flush` writes them as one segment with their probabilities."""

    def __init__(self, writer: prediction_log.Writer, pred: predictor.Predictor, *,
                 version: str, interval: float = 30.0, max_queued_rows: int = 65536,
                 on_cpu: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``on_cpu`` is told the CPU seconds spent since it was last told, after each write."""
        self.writer = writer
        self.predictor = pred
        self.version = version
        self.interval = interval
        self.max_queued_rows = max_queued_rows
        self.clock = clock
        self.on_cpu = on_cpu
        self._told = 0.0
        self.dropped = 0
        """Rows not logged because the queue was full (the writer fell behind)."""
        self._queue: list[tuple[str, schema.Batch, Array, float]] = []
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._cpu = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        estimator = pred.model.estimator
        self._proba = callable(getattr(estimator, "predict_proba", None)) and hasattr(
            estimator, "classes_")

    @property
    def cpu_seconds(self) -> float:
        return self._cpu

    def record(self, request_id: str, batch: schema.Batch, predictions: Array) -> None:
        """Queue one scored request (about a microsecond); dropped, and counted, when full."""
        started = time.thread_time()
        with self._lock:
            if self._queued_rows + batch.rows > self.max_queued_rows:
                self.dropped += batch.rows
            else:
                self._queue.append((request_id, batch, predictions, self.clock()))
                self._queued_rows += batch.rows
            self._cpu += time.thread_time() - started

    def flush(self) -> None:
        """Write the queued rows as one segment (with their probabilities)."""
        started = time.thread_time()
        with self._lock:
            queue, self._queue = self._queue, []
            self._queued_rows = 0
        try:
            if queue:
                self.writer.append(self._frame(queue))
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self._cpu += spent
                total = self._cpu
            if self.on_cpu is not None:
                self.on_cpu(total - self._told)
                self._told = total

    def _frame(self, queue: list[tuple[str, schema.Batch, Array, float]]) -> dict[str, Any]:
        import pyarrow as pa

        request_ids, batches, preds, times = zip(*queue, strict=True)
        batch = predictor.merge(batches)
        sizes = np.fromiter((b.rows for b in batches), np.int32, len(batches))
        starts = np.cumsum(sizes) - sizes
        # per row, vectorized: its request (a dictionary of the request ids), its index in the
        # request and the request's size; `adapters.prediction_log.read` makes the row ids
        request = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(queue), dtype=np.int32), sizes)),
            pa.array(request_ids, pa.string()))
        data: dict[str, Any] = {
            prediction_log.REQUEST: request,
            prediction_log.ROW: np.arange(batch.rows, dtype=np.int32) - np.repeat(starts, sizes),
            prediction_log.ROWS: np.repeat(sizes, sizes),
            "version": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(batch.rows, dtype=np.int32)), pa.array([self.version])),
            "time": np.repeat(np.array(times), sizes)}
        columns = (np.ascontiguousarray(batch.matrix.T) if batch.matrix is not None else None)
        for j, name in enumerate(batch.names):
            data[prediction_log.INPUT + name] = (columns[j] if columns is not None
                                                 else batch.columns[name])
        if all(p.ndim == 1 for p in preds):
            data["prediction"] = np.concatenate(preds)
        if self._proba:
            proba = self._predict_proba(batch)
            if proba is not None:
                for j, cls in enumerate(self.predictor.model.estimator.classes_):
                    data[prediction_log.proba_column(cls)] = np.ascontiguousarray(proba[:, j])
        return data

    def _predict_proba(self, batch: schema.Batch) -> Array | None:
        estimator = self.predictor.model.estimator
        try:
            if self.predictor.matrix_path and batch.matrix is not None:
                return np.asarray(estimator.predict_proba(batch.matrix), dtype=np.float64)
            import pandas as pd  # only a model that takes a frame: not on a server's start

            names = list(self.predictor.signature.names)
            frame = pd.DataFrame({n: batch.columns[n] for n in names})
            return np.asarray(estimator.predict_proba(frame[names]), dtype=np.float64)
        except Exception:  # the log never fails: the rows are kept without probabilities
            log.exception("predict_proba failed; logging these rows without probabilities")
            return None

    # ------------------------------------------------------------------ the writer thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def due(self) -> bool:
        """Whether to write now: `FLUSH_ROWS` rows wait, or the oldest has waited ``interval``
        seconds (few, large segments: the fixed cost of a write is paid rarely)."""
        with self._lock:
            if not self._queue:
                return False
            return (self._queued_rows >= FLUSH_ROWS
                    or self.clock() - self._queue[0][3] >= self.interval)

    def _run(self) -> None:
        predictor.configure_sklearn()
        while not self._stop.wait(min(1.0, self.interval)):
            if self.due():
                self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("writing the prediction log failed")

    def close(self) -> None:
        """Stop the thread and write what is queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._flush_logged()
