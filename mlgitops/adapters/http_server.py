"""HTTP from untrusted clients: uvicorn's protocol with time and size limits, bounded bodies.

uvicorn (0.54) bounds neither the time a client may take to send a request's head nor the
head's size (httptools buffers a header of any length), a body that stops half-way keeps its
connection open for ever, and after an early answer (a 413 sent before the body was read) it
reads the rest of the body for as long as the client sends it. `protocol` closes those gaps
for the controller's gateway and for the model servers alike:

- **head**: the request line and headers must arrive within `Limits.header_timeout` seconds
  (counted from the connection, or from the first byte of a later request on a kept-alive
  connection) and within `Limits.max_header_bytes`; otherwise the client gets a 408 or 431
  and the connection closes (a connection that sent nothing is closed silently);
- **body**: a body that pauses for `Limits.body_timeout` seconds while the application waits
  for it closes the connection (the application sees the client disconnect);
- **early answer**: when the application answered before the whole body arrived, the rest is
  read and thrown away for at most `Limits.linger_seconds` and `Limits.linger_bytes` (most
  clients send their whole body before reading, and would otherwise see a reset instead of
  the 413), then the connection closes; a client that sent ``Expect: 100-continue`` never
  sends that body, so its connection closes at once.

Bodies themselves are bounded by the application with `chunks` / `read_capped` / `prefetch`:
``Content-Length`` first (refused before a byte of the body is read), then a running count
over the stream, for chunked bodies and for clients that send more than they declared.

`quote` and `clip` keep client input out of error messages beyond a few dozen characters.

May NOT import the controller, the server or the CLI.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import reprlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


@dataclass(frozen=True)
class Limits:
    """How long and how much a client may take before its request is dropped."""

    header_timeout: float = 5.0
    """Seconds to send the request line and all headers."""
    body_timeout: float = 5.0
    """Seconds a body may pause while the application waits for more of it."""
    max_header_bytes: int = 32 * 1024
    """Request line plus headers (nginx allows 32 KiB, Node.js 16 KiB)."""
    linger_seconds: float = 5.0
    """After an early answer: how long the rest of the body is read and discarded."""
    linger_bytes: int = 64 * 1024 * 1024
    """After an early answer: how much of the rest of the body is read and discarded."""


# ---------------------------------------------------------------------------- bodies
class BadLength(ValueError):
    """``Content-Length`` is not a non-negative whole number."""


class BodyTooLarge(Exception):
    """The body is (or says it is) larger than the limit; ``declared`` when it said so."""

    def __init__(self, *, limit: int, declared: int | None) -> None:
        self.limit = limit
        self.declared = declared
        size = f"has {declared} bytes" if declared is not None else f"exceeds {limit} bytes"
        super().__init__(f"The body {size}; at most {limit} bytes are accepted here.")


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` a request declares, or None (chunked or no body)."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 19:
        raise BadLength(f"The Content-Length header {quote(raw)} is not a number of bytes.")
    return int(text)


def check_declared(request: Request, limit: int) -> None:
    """BodyTooLarge at once when the request declares more than ``limit`` bytes."""
    declared = declared_length(request.headers)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit=limit, declared=declared)


async def chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives; BodyTooLarge before reading a declared oversized body, or
    as soon as the bytes received pass ``limit``."""
    check_declared(request, limit)
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit=limit, declared=None)
        if chunk:
            yield chunk


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, never more than ``limit`` bytes of it in memory (else BodyTooLarge)."""
    body = bytearray()
    async for chunk in chunks(request, limit):
        body += chunk
    return bytes(body)


async def prefetch(
    request: Request, *, limit: int, keep: int
) -> tuple[bytes, AsyncIterator[bytes] | None]:
    """Read up to about ``keep`` bytes: ``(body, None)`` when that was all of it, else
    ``(head, rest)`` where ``rest`` streams the remainder, still capped at ``limit`` in all."""
    stream = chunks(request, limit)
    head = bytearray()
    async for chunk in stream:
        head += chunk
        if len(head) > keep:
            return bytes(head), stream
    return bytes(head), None


# --------------------------------------------------------------------- error messages
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 6
_REPR.maxdict = 4
_REPR.maxlevel = 2

MAX_MESSAGE = 1024
"""Longest error message sent to a client, in characters."""


def quote(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters: how client input appears in an error."""
    return _REPR.repr(value)


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut to ``limit`` characters (with a note that it was cut)."""
    if len(message) <= limit:
        return message
    return message[: limit - 20] + " … (message cut)"


def bearer_ok(authorization: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` names ``token`` (compared in constant time); every
    request passes when no token is set."""
    if token is None:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


UNAUTHORIZED = (
    "This route needs the API token: send Authorization: Bearer <token> with the value of "
    "MLGITOPS_API_TOKEN."
)


# ------------------------------------------------------------------------------- protocol
_IDLE, _HEAD, _BODY, _DONE = range(4)


def protocol(limits: Limits) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class (``uvicorn.Config(http=...)``) that enforces ``limits``."""

    class Protocol(GuardedHttpTools):
        LIMITS = limits

    return Protocol


def uvicorn_config(application: Any, *, loop: str) -> uvicorn.Config:
    """How every mlgitops server runs uvicorn: httptools with `Limits`, no access log, quiet."""
    return uvicorn.Config(
        application,
        loop=loop,
        # httptools with a deadline for the head, an idle limit for the body and a cap on
        # the head's size (uvicorn itself has none of them)
        http=protocol(Limits()),
        ws="none",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        date_header=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
        backlog=2048,
    )


def _refusal(status: int, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    phrase = http.HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head/body/linger limits of `LIMITS`."""

    LIMITS: ClassVar[Limits] = Limits()

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase = _IDLE
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._discarded = 0
        self._head_size = 0  # request line and headers as parsed
        self._too_large = False
        self._head_started = 0.0  # when the head's deadline started
        self._last_data = 0.0  # when bytes last arrived

    # asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = self.loop.time()
        self._head_timer = self.loop.call_later(self.LIMITS.header_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing() or self.parser is None:
            return
        before = self._phase
        self._last_data = self.loop.time()
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > self.LIMITS.linger_bytes:
                self.transport.close()
                return
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._too_large:  # a complete head, over the limit
            self._refuse_large_head()
        elif self._phase == _HEAD:  # a head still incomplete after this read
            # httptools keeps it in memory, so count what arrived. A chunk where a request
            # began after another one's body (pipelining) is not counted: the count is short
            # by at most one read, never too high.
            if before in (_IDLE, _HEAD):
                self._head_bytes += len(data)
                if self._head_bytes > self.LIMITS.max_header_bytes:
                    self._refuse_large_head()
                    return
            if self._head_timer is None:
                left = self.LIMITS.header_timeout - (self._last_data - self._head_started)
                self._head_timer = self.loop.call_later(max(left, 0.0), self._head_late)
        elif self._phase == _BODY and self._body_timer is None:  # a body still incomplete
            self._body_timer = self.loop.call_later(self.LIMITS.body_timeout, self._body_late)

    # httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEAD
        self._head_bytes = self._head_size = 0
        if self._head_timer is None:  # not the first request: its deadline starts now
            self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._head_size > self.LIMITS.max_header_bytes:
            self._too_large = True  # refused once the parser returns; no application sees it
            return
        self._phase = _BODY
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._too_large:
            return
        super().on_message_complete()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        answered = self.cycle is not None and self.cycle.response_complete
        self._phase = _IDLE if answered else _DONE
        if self._lingering:
            self._lingering = False
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None
            if not self.transport.is_closing() and self.cycle.keep_alive:
                # the whole body came after all: keep the connection, with uvicorn's idle timeout
                self._unset_keepalive_if_required()
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._phase == _DONE:
            self._phase = _IDLE
        elif self._phase == _BODY:  # answered before the body arrived
            if self.expect_100_continue:
                self.transport.close()  # the client waits for a "100 Continue" that never comes
                return
            self._lingering = True
            self._discarded = 0
            self._linger_timer = self.loop.call_later(
                self.LIMITS.linger_seconds, self.transport.close
            )

    # timers (armed only when a head or body is still incomplete after a read) ------------
    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._phase == _HEAD:
            self._refuse(
                408,
                f"The request line and headers did not arrive within "
                f"{self.LIMITS.header_timeout:g} seconds.",
            )
        elif self._phase == _IDLE and self.cycle is None:
            self.transport.close()  # connected, sent nothing

    def _body_late(self) -> None:
        self._body_timer = None
        if self._phase != _BODY or self.transport.is_closing():
            return
        idle = self.loop.time() - self._last_data
        if self.flow is not None and self.flow.read_paused:
            # the application is not reading: not the client's delay
            wait = self.LIMITS.body_timeout
        elif idle < self.LIMITS.body_timeout:
            wait = self.LIMITS.body_timeout - idle  # bytes came meanwhile
        else:
            self.transport.close()
            return
        self._body_timer = self.loop.call_later(wait, self._body_late)

    def _refuse_large_head(self) -> None:
        self._refuse(
            431,
            f"The request line and headers exceed {self.LIMITS.max_header_bytes} bytes; "
            "send shorter headers.",
        )

    def _refuse(self, status: int, message: str) -> None:
        self.transport.write(_refusal(status, message))
        self.transport.close()
