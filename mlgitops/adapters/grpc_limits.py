"""Bounds of every gRPC server mlgitops runs (the controller's gateway, the model servers).

gRPC hands a unary call to its handler only once the request message arrived, and a sync
server holds a thread from the call's headers on: calls that send headers and never a message
would hold every thread, and the port would stop answering (``ServerLive`` included). So:

- every method is registered as *stream-unary* (the wire is the same as unary's: clients see
  no difference), and its handler reads the one request message within `RECEIVE_SECONDS`;
  a call that sends none by then is ended (`Watchdog` cancels it on a sync server; an async
  one answers DEADLINE_EXCEEDED);
- at most `MAX_CONCURRENT_RPCS` calls at once (more get RESOURCE_EXHAUSTED at once, never a
  queue that hangs), at most `MAX_STREAMS` per connection;
- connections: keepalive pings (and a cap on the pings a client may send), closed after
  `IDLE_MS` without calls and at `AGE_MS` of age (with a grace for calls in flight);
- messages: a request over the server's body limit is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds a call may take to send its request message after its headers.
RECEIVE_SECONDS = 10.0
#: Calls in flight on one server; the sync gateway runs one thread per call.
MAX_CONCURRENT_RPCS = 128
#: Concurrent calls on one connection (HTTP/2 streams).
MAX_STREAMS = 64
IDLE_MS = 5 * 60 * 1000
AGE_MS = 60 * 60 * 1000
AGE_GRACE_MS = 30 * 1000
#: Largest response message (predictions of at most a body's rows).
MAX_SEND_BYTES = 256 * 1024 * 1024


def options(*, max_receive_bytes: int, reuse_port: bool) -> list[tuple[str, Any]]:
    """The channel arguments of a gRPC server (see the module's docstring)."""
    return [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_concurrent_streams", MAX_STREAMS),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", IDLE_MS),
        ("grpc.max_connection_age_ms", AGE_MS),
        ("grpc.max_connection_age_grace_ms", AGE_GRACE_MS),
    ]


class Watchdog:
    """Runs an action (cancel a call) when its deadline passes, unless disarmed first: one
    thread for every call of a server, not a timer thread per call."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Callable[[], object]] = {}
        """Armed and not disarmed. `disarm` drops the action at once: an action holds its
        call's context, and a context kept alive holds the call's HTTP/2 stream, so a
        connection ran out of streams after `MAX_STREAMS` calls within `RECEIVE_SECONDS`."""
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, seconds: float, action: Callable[[], object]) -> int:
        """Run ``action`` in ``seconds`` unless `disarm` is called with the id returned."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="grpc-watchdog",
                                                daemon=True)
                self._thread.start()
            key = next(self._ids)
            self._actions[key] = action
            heapq.heappush(self._heap, (self._clock() + seconds, key))
            self._cond.notify()
            return key

    def disarm(self, key: int) -> None:
        with self._cond:
            self._actions.pop(key, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._heap:
                    self._cond.wait()
                if self._stopped:
                    return
                due, key = self._heap[0]
                if key not in self._actions:  # disarmed
                    heapq.heappop(self._heap)
                    continue
                wait = due - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                action = self._actions.pop(key)
            with contextlib.suppress(Exception):  # a call that ended meanwhile
                action()
