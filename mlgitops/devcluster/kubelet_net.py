"""The kubelet stand-in's network: JSON over HTTPS to the API server, retried with a bounded
back-off while the API server is away; the pods' loopback addresses; plain GETs to the pods.

An API server restarting (or stopped by a test) refuses connections, resets them, or answers
503 while etcd comes back; `Api.request` waits that out (`Backoff`: doubling from 0.1 s to at
most 2 s, with jitter) for up to ``patience`` seconds, then raises `Unreachable`. Anything the
API server does answer (404, 409, 422, …) is raised at once as ``urllib.error.HTTPError``.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import threading
import urllib.error
import urllib.request
from typing import Any

from mlgitops.adapters import clock as system_clock
from mlgitops.core import clock
from mlgitops.devcluster.cluster import TestCluster

#: Answers of an API server that is (re)starting or overloaded: worth asking again.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def now_rfc3339(source: clock.Clock = system_clock.SYSTEM) -> str:
    """The time as Kubernetes writes it in a status (RFC 3339, to the second)."""
    return clock.iso(source.wall())


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET without any proxy; (status, body), or (0, b"") when nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


class Unreachable(ConnectionError):
    """The API server did not answer (or answered only "try later") within the patience given."""


def transient(exc: BaseException) -> bool:
    """True for what an API server outage looks like: no connection, a reset, a timeout, a
    truncated answer, or a 429/5xx status; False for a real answer (404, 409, …)."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in RETRY_STATUS
    return isinstance(exc, (OSError, http.client.HTTPException))


class Backoff:
    """Delays that double from ``first`` to at most ``cap`` seconds (each with up to 20 % jitter),
    back to ``first`` after `reset`."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"a back-off needs 0 < first <= cap, not first={first} cap={cap}")
        self.first, self.cap = first, cap
        self._next = first
        self._rng = random.Random()

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * (1 + 0.2 * self._rng.random())

    def reset(self) -> None:
        self._next = self.first


class Api:
    """JSON over HTTPS as the cluster's admin, waiting out API-server outages (see module)."""

    def __init__(self, cluster: TestCluster, *, stop: threading.Event | None = None,
                 patience: float = 60.0, source: clock.Clock = system_clock.SYSTEM) -> None:
        self.server = cluster.server
        self.token = cluster.token
        self.ssl = ssl.create_default_context(cafile=str(cluster.ca_path))
        self.stop = stop or threading.Event()
        """Set: give up waiting at once (the harness stops)."""
        self.patience = patience
        self.clock = source

    def _once(self, method: str, path: str, data: bytes | None, content_type: str,
              timeout: float) -> Any:
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as resp:
            return json.loads(resp.read() or b"null")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 15.0,
        patience: float | None = None,
    ) -> Any:
        """One API call; an outage is retried with `Backoff` for ``patience`` seconds (the
        instance's by default; 0: once), then `Unreachable`."""
        data = None if body is None else json.dumps(body).encode()
        wait = self.patience if patience is None else patience
        deadline = self.clock.monotonic() + wait
        backoff = Backoff()
        while True:
            try:
                return self._once(method, path, data, content_type, timeout)
            except Exception as exc:
                if not transient(exc):
                    raise
                delay = backoff.next()
                if self.stop.is_set() or self.clock.monotonic() + delay > deadline:
                    raise Unreachable(f"{method} {path}: the API server did not answer within "
                                      f"{wait:.0f} s ({type(exc).__name__}: {exc})") from exc
                if self.stop.wait(delay):
                    raise Unreachable(f"{method} {path}: stopped while the API server was away") from exc

    def stream(self, path: str, *, timeout: float) -> Any:
        """An open watch response (the caller reads its lines and closes it); no retry."""
        req = urllib.request.Request(f"{self.server}{path}")
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        return urllib.request.urlopen(req, timeout=timeout, context=self.ssl)


class Addresses:
    """Loopback addresses 127.A.B.N, one per pod, never two pods on one while the harness runs."""

    def __init__(self, port: int = 8080) -> None:
        rng = random.Random()
        self.prefix = f"127.{rng.randint(100, 250)}.{rng.randint(1, 254)}"
        self.port = port
        self.next = 2
        self.lock = threading.Lock()

    def take(self, port: int) -> str:
        with self.lock:
            while self.next < 255:
                ip = f"{self.prefix}.{self.next}"
                self.next += 1
                with socket.socket() as s:
                    try:
                        s.bind((ip, port))
                    except OSError:
                        continue  # someone else's process holds it: skip
                return ip
        raise RuntimeError(f"no free loopback address left in {self.prefix}.0/24")
