"""Prometheus metrics shared by all worker processes, in the text exposition format.

The supervisor maps one anonymous shared memory region before it forks; each worker owns
one row of float64 counters (single writer, so no locks) and ``GET /metrics`` on any worker
sums the rows: a scrape sees the whole server whichever worker answers it. A restarted
worker takes over its predecessor's row, so counters stay monotonic.

Series: ``mlgitops_requests_total{route,code}``, ``mlgitops_request_duration_seconds{route}``
(histogram), ``mlgitops_batch_size`` (rows per predict call, histogram),
``mlgitops_predict_duration_seconds`` (histogram), ``mlgitops_rows_scored_total``,
``mlgitops_worker_restarts_total``, ``mlgitops_stats_cpu_seconds_total`` (what recording
live statistics costs), ``mlgitops_prediction_log_cpu_seconds_total`` (what keeping scored
rows for labels costs), ``mlgitops_workers`` and
``mlgitops_model_info{name,version,digest} 1``. A gRPC call counts under the route
``grpc <Method>`` with the HTTP status of the same outcome (the status table of `problems`).
"""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

ROUTES = (
    "/v2/models/{name}/infer",
    "/v2/models/{name}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/stats",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2",
    "/invocations",
    "/ping",
    "/health",
    "/version",
    "/metrics",
    "/openapi.json",
    "/v2/models/{name}/versions/{version}/infer",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/versions/{version}/stats",
    "/v2/models/{name}/predictions",
    "/v2/models/{name}/predictions/{segment}",
    "grpc ModelInfer",
    "grpc ModelMetadata",
    "grpc ModelReady",
    "grpc ServerLive",
    "grpc ServerReady",
    "grpc ServerMetadata",
    "other",
)
ROUTE_INDEX = {r: i for i, r in enumerate(ROUTES)}
CODES = (200, 400, 404, 405, 413, 415, 422, 500, 503)
_CODE_INDEX = {c: i for i, c in enumerate(CODES)}
_OTHER_CODE = len(CODES)
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

_NC = len(CODES) + 1
_NL = len(LATENCY_BUCKETS) + 3  # buckets + +Inf + sum + count
_NB = len(BATCH_BUCKETS) + 3

# Offsets inside one worker's row.
_REQ = 0
_LAT = _REQ + len(ROUTES) * _NC
_BATCH = _LAT + len(ROUTES) * _NL
_PRED = _BATCH + _NB
_ROWS = _PRED + _NL
_RESTARTS = _ROWS + 1
_STATS_CPU = _RESTARTS + 1
_LOG_CPU = _STATS_CPU + 1
ROW = _LOG_CPU + 1


class SharedMetrics:
    """Counters of ``slots`` processes in shared memory (create before forking)."""

    def __init__(self, slots: int, *, labels: dict[str, str], workers: int) -> None:
        self.slots = slots
        self.labels = labels
        self.workers = workers
        self._mem = mmap.mmap(-1, max(1, slots * ROW * 8))
        self._all: npt.NDArray[np.float64] = np.frombuffer(self._mem, dtype=np.float64).reshape(
            slots, ROW
        )

    def slot(self, index: int) -> Slot:
        view: memoryview[Any] = memoryview(self._mem)[index * ROW * 8 : (index + 1) * ROW * 8]
        return Slot(view.cast("d"))

    def totals(self) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = self._all.sum(axis=0)
        return out

    def render(self) -> bytes:
        """The text exposition of the sum over all slots."""
        t = self.totals()
        out: list[str] = []
        add = out.append
        add("# HELP mlgitops_requests_total HTTP requests by route and status code.")
        add("# TYPE mlgitops_requests_total counter")
        for r, route in enumerate(ROUTES):
            for c in range(_NC):
                value = t[_REQ + r * _NC + c]
                if value:
                    code = str(CODES[c]) if c < len(CODES) else "other"
                    add(f'mlgitops_requests_total{{route="{route}",code="{code}"}} {value:.0f}')
        add("# HELP mlgitops_request_duration_seconds Time from request to response, by route.")
        add("# TYPE mlgitops_request_duration_seconds histogram")
        for r, route in enumerate(ROUTES):
            base = _LAT + r * _NL
            if t[base + _NL - 1]:
                _histogram(
                    add,
                    "mlgitops_request_duration_seconds",
                    t[base : base + _NL],
                    LATENCY_BUCKETS,
                    f'route="{route}"',
                )
        add(
            "# HELP mlgitops_batch_size Rows per predict call (requests coalesced by micro-batching)."
        )
        add("# TYPE mlgitops_batch_size histogram")
        _histogram(add, "mlgitops_batch_size", t[_BATCH : _BATCH + _NB], BATCH_BUCKETS, "")
        add("# HELP mlgitops_predict_duration_seconds Time of one batched predict call.")
        add("# TYPE mlgitops_predict_duration_seconds histogram")
        _histogram(
            add, "mlgitops_predict_duration_seconds", t[_PRED : _PRED + _NL], LATENCY_BUCKETS, ""
        )
        add("# HELP mlgitops_rows_scored_total Rows the model scored.")
        add("# TYPE mlgitops_rows_scored_total counter")
        add(f"mlgitops_rows_scored_total {t[_ROWS]:.0f}")
        add("# HELP mlgitops_worker_restarts_total Worker processes restarted after dying.")
        add("# TYPE mlgitops_worker_restarts_total counter")
        add(f"mlgitops_worker_restarts_total {t[_RESTARTS]:.0f}")
        add("# HELP mlgitops_stats_cpu_seconds_total CPU time spent recording live statistics "
            "(queueing scored rows, counting, sampling, writing them for the monitor).")
        add("# TYPE mlgitops_stats_cpu_seconds_total counter")
        add(f"mlgitops_stats_cpu_seconds_total {float(t[_STATS_CPU])!r}")
        add("# HELP mlgitops_prediction_log_cpu_seconds_total CPU time spent keeping scored rows "
            "for labels (queueing, class probabilities, writing the prediction log).")
        add("# TYPE mlgitops_prediction_log_cpu_seconds_total counter")
        add(f"mlgitops_prediction_log_cpu_seconds_total {float(t[_LOG_CPU])!r}")
        add("# HELP mlgitops_workers Worker processes this server runs.")
        add("# TYPE mlgitops_workers gauge")
        add(f"mlgitops_workers {self.workers}")
        add("# HELP mlgitops_model_info The model version being served.")
        add("# TYPE mlgitops_model_info gauge")
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels.items())
        add(f"mlgitops_model_info{{{labels}}} 1")
        return ("\n".join(out) + "\n").encode()


class Slot:
    """One process's counters (a view on the shared row)."""

    __slots__ = ("_m",)

    def __init__(self, view: memoryview[Any]) -> None:
        self._m = view

    def request(self, route: int, code: int, seconds: float) -> None:
        m = self._m
        m[_REQ + route * _NC + _CODE_INDEX.get(code, _OTHER_CODE)] += 1
        base = _LAT + route * _NL
        m[base + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        m[base + _NL - 2] += seconds
        m[base + _NL - 1] += 1

    def batch(self, rows: int, seconds: float) -> None:
        m = self._m
        m[_BATCH + bisect.bisect_left(BATCH_BUCKETS, rows)] += 1
        m[_BATCH + _NB - 2] += rows
        m[_BATCH + _NB - 1] += 1
        m[_PRED + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        m[_PRED + _NL - 2] += seconds
        m[_PRED + _NL - 1] += 1
        m[_ROWS] += rows

    def restarted(self) -> None:
        self._m[_RESTARTS] += 1

    def stats_cpu(self, seconds: float) -> None:
        self._m[_STATS_CPU] += seconds

    def log_cpu(self, seconds: float) -> None:
        self._m[_LOG_CPU] += seconds


def _histogram(
    emit: Callable[[str], None],
    name: str,
    cells: npt.NDArray[np.float64],
    bounds: Sequence[float],
    label: str,
) -> None:
    sep = "," if label else ""
    cumulative = 0.0
    for i, bound in enumerate(bounds):
        cumulative += cells[i]
        emit(f'{name}_bucket{{{label}{sep}le="{_num(bound)}"}} {cumulative:.0f}')
    cumulative += cells[len(bounds)]
    emit(f'{name}_bucket{{{label}{sep}le="+Inf"}} {cumulative:.0f}')
    braces = f"{{{label}}}" if label else ""
    emit(f"{name}_sum{braces} {float(cells[len(bounds) + 1])!r}")
    emit(f"{name}_count{braces} {cells[len(bounds) + 2]:.0f}")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and v >= 1 else repr(float(v))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
