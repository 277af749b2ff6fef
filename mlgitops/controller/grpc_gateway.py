"""The controller's gRPC port: the v2 gRPC API (``inference.GRPCInferenceService``) for every
model, routed by model name to the server of that model, as the HTTP gateway routes
``/v2/models/{name}/…``.

A generic proxy: messages stay bytes. The model-scoped calls (ModelInfer, ModelReady,
ModelMetadata) carry the model's name in field 1; the gateway reads that field and nothing
else, and relays the serialized request to the model's server over HTTP
(``POST /v2/grpc/inference.GRPCInferenceService/<Method>``), whose gRPC code path validates
it, batches it, records it and answers the serialized response, or an error sentence with the
gRPC code in ``Grpc-Code``, which the gateway answers with. The server-level calls are the
gateway's own: ServerLive (true), ServerReady (true when every model serves), ServerMetadata
(relayed to a serving model's server; the gateway's name alone when none serves).

During a progressive rollout a model-scoped call goes where the HTTP gateway would send it
(`router.Router.choose`: in a canary step, ``weight`` percent of calls to the candidate, chosen
by the rollout's key read from the call's metadata), and is counted as the HTTP gateway counts
it (`Router.served`, the step's `StepCounters`); the answer's trailing metadata names the
version (``x-mlgitops-version``). Copies are not made here: a shadow's copies, and the
comparison of both answers on the same rows, come from HTTP traffic.

Bounded (`adapters.grpc_limits`): a message over ``max_body_bytes`` is RESOURCE_EXHAUSTED
(gRPC's receive limit); a call that sends no request message within
`grpc_limits.RECEIVE_SECONDS` is cancelled, so calls that stall cannot hold the threads; at most
`grpc_limits.MAX_CONCURRENT_RPCS` calls run at once, each on its own thread (more are
RESOURCE_EXHAUSTED at once); keepalive, idle and age limits end abandoned connections.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx

from mlgitops import errors
from mlgitops.adapters import grpc_limits, http_server
from mlgitops.controller import reconciler as rec
from mlgitops.controller.ports import H

SERVICE = "inference.GRPCInferenceService"
VERSION_KEY = "x-mlgitops-version"
"""The trailing metadata naming the version that answered (as the HTTP gateway's header)."""
RELAY = "/v2/grpc/" + SERVICE
#: The metadata key (and relay header) of an inference's id, as the model servers use it.
REQUEST_ID = "x-request-id"
_MODEL_CALLS = ("ModelInfer", "ModelReady", "ModelMetadata")
_THREADS = grpc_limits.MAX_CONCURRENT_RPCS


# ------------------------------------------------------------------------ protobuf wire
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def model_name(message: bytes) -> str:
    """Field 1 (a string) of a serialized message: the model's name in a ModelInferRequest,
    ModelReadyRequest or ModelMetadataRequest ("" when absent); ValueError when the bytes
    are not a protobuf message."""
    pos, name = 0, ""
    while pos < len(message):
        key, pos = _varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(message, pos)
            if field == 1:
                name = message[pos : pos + size].decode("utf-8")
            pos += size
        else:
            raise ValueError(f"wire type {wire} is not one proto3 uses")
        if pos > len(message):
            raise ValueError("a field runs past the end of the message")
    return name


def _field(number: int, value: bytes) -> bytes:
    key, size = (number << 3) | 2, len(value)
    out = bytearray([key])
    while size > 0x7F:
        out.append((size & 0x7F) | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + value


def _bool_message(value: bool) -> bytes:
    """ServerLiveResponse / ServerReadyResponse: field 1, a bool."""
    return b"\x08\x01" if value else b""


# ------------------------------------------------------------------------------ gateway
class Gateway:
    """The gRPC service of the controller (`start` it; `stop` it)."""

    def __init__(
        self,
        *,
        router: rec.Router[H],
        statuses: Callable[[], list[dict[str, Any]]],
        max_body_bytes: int,
    ) -> None:
        self.router = router
        self.statuses = statuses
        self.max_body_bytes = max_body_bytes
        self.server_version = _version()
        self.client = httpx.Client(
            timeout=httpx.Timeout(60.0, connect=2.0),
            limits=httpx.Limits(max_connections=_THREADS, max_keepalive_connections=_THREADS),
        )
        self.server: grpc.Server | None = None
        self.port = 0
        self.watchdog = grpc_limits.Watchdog()

    def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); the port. ConfigError when it is taken."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="grpc-gateway"),
            options=grpc_limits.options(max_receive_bytes=self.max_body_bytes, reuse_port=False),
            maximum_concurrent_rpcs=grpc_limits.MAX_CONCURRENT_RPCS,
        )
        server.add_generic_rpc_handlers([self._handlers()])
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            bound = 0
            detail = f" ({exc})"
        else:
            detail = ""
        if not bound:
            raise errors.ConfigError(
                f"the gRPC gateway could not listen on {address}{detail}; is the port in use? "
                "pass another --grpc-port"
            )
        server.start()
        self.server, self.port = server, int(bound)
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            self.server.stop(grace).wait()
            self.server = None
        self.watchdog.stop()
        self.client.close()

    def _handlers(self) -> grpc.GenericRpcHandler:
        Call = Callable[[bytes, grpc.ServicerContext], bytes]

        def unary(fn: Call) -> Any:
            """A unary call served as stream-unary: its message is read within the receive
            deadline (the thread is not held by a call that never sends one)."""

            def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
                key = self.watchdog.arm(grpc_limits.RECEIVE_SECONDS, context.cancel)
                try:
                    request = next(requests, None)
                finally:
                    self.watchdog.disarm(key)
                if request is None:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  "The call sent no request message; send one.")
                assert request is not None
                return fn(request, context)

            return grpc.stream_unary_rpc_method_handler(handle)

        def model_call(method: str) -> Any:
            return unary(lambda request, context: self._relay(method, request, context))

        def own(fn: Callable[[], bytes]) -> Any:
            return unary(lambda request, context: fn())

        table = {m: model_call(m) for m in _MODEL_CALLS}
        table["ServerLive"] = own(lambda: _bool_message(True))
        table["ServerReady"] = own(lambda: _bool_message(self._all_serving()))
        table["ServerMetadata"] = unary(self._server_metadata)
        return grpc.method_handlers_generic_handler(SERVICE, table)

    def _all_serving(self) -> bool:
        return all(self.router.get(s["name"]) is not None for s in self.statuses())

    def _server_metadata(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        for status in self.statuses():
            if self.router.get(status["name"]) is not None:
                with contextlib.suppress(_Refused):
                    return self._send(status["name"], "ServerMetadata", request, context)
        return _field(1, b"mlgitops") + _field(2, self.server_version.encode())

    def _relay(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            name = model_name(request)
        except (ValueError, UnicodeDecodeError):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The request is not a serialized inference.{method}Request message.",
            )
        try:
            return self._send(name, method, request, context)
        except _Refused as exc:
            context.abort(exc.code, exc.message)
        raise AssertionError("unreachable")  # context.abort raises

    def _send(
        self, name: str, method: str, request: bytes, context: grpc.ServicerContext
    ) -> bytes:
        """The server of ``name`` answers the call (retried once on a server that a newer
        version replaced under it); `_Refused` with the code and sentence otherwise."""
        key = None
        split = self.router.split(name) if method in _MODEL_CALLS else None
        if split is not None and split.key:
            wanted = split.key.lower()
            key = next((str(v) for k, v in context.invocation_metadata() or ()
                        if k == wanted), None)
        for _attempt in range(3):
            if method in _MODEL_CALLS:
                backend, role, _other, counters = self.router.choose(name, key)
            else:
                backend, role, counters = self.router.get(name), "stable", None
            if backend is None:
                known = {s["name"] for s in self.statuses()}
                code = grpc.StatusCode.UNAVAILABLE if name in known else grpc.StatusCode.NOT_FOUND
                raise _Refused(
                    code,
                    f"no version of model {http_server.quote(name)} is serving here; see "
                    "`mlgitops status` for why",
                )
            remaining = context.time_remaining()
            timeout = 60.0 if remaining is None else max(0.001, min(remaining, 60.0))
            self.router.inflight[backend.key] = self.router.inflight.get(backend.key, 0) + 1
            started = time.perf_counter()
            try:
                r = self.client.post(
                    f"{backend.url}{RELAY}/{method}",
                    content=request,
                    headers={"content-type": "application/x-protobuf", **_request_id(context)},
                    timeout=timeout,
                )
            except httpx.TimeoutException:
                if counters is not None:
                    counters.answered(role, ok=False, seconds=time.perf_counter() - started)
                raise _Refused(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the server of model {http_server.quote(name)} did not answer in time",
                ) from None
            except httpx.TransportError:
                if counters is not None:
                    counters.answered(role, ok=False, seconds=time.perf_counter() - started)
                if self.router.get(name) is backend:
                    raise _Refused(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the server of model {http_server.quote(name)} is restarting; retry",
                    ) from None
                continue
            finally:
                self.router.inflight[backend.key] -= 1
            if method in _MODEL_CALLS:
                self.router.served[(name, backend.version)] += 1
                context.set_trailing_metadata(((VERSION_KEY, backend.version),))
            if counters is not None:
                counters.answered(role, ok=r.status_code < 500,
                                  seconds=time.perf_counter() - started)
            if r.status_code == 200:
                if rid := r.headers.get(REQUEST_ID):  # an inference's id, as the server says
                    context.send_initial_metadata(((REQUEST_ID, rid),))
                return r.content
            raise _Refused(_code(r.headers.get("grpc-code")), _sentence(r))
        raise _Refused(
            grpc.StatusCode.UNAVAILABLE,
            f"the server of model {http_server.quote(name)} is being replaced; retry",
        )


def _request_id(context: grpc.ServicerContext) -> dict[str, str]:
    """The caller's ``x-request-id`` metadata as the relay's header (none: nothing)."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID and isinstance(value, str) and value:
            return {REQUEST_ID: value}
    return {}


def _version() -> str:
    try:
        return importlib.metadata.version("mlgitops")
    except importlib.metadata.PackageNotFoundError:
        return "0"


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _code(name: str | None) -> grpc.StatusCode:
    code = getattr(grpc.StatusCode, (name or "").upper(), None)
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _sentence(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return http_server.clip(body["error"])
    return f"the model's server answered HTTP {r.status_code}"


@contextlib.contextmanager
def serving(gateway: Gateway, *, host: str, port: int) -> Iterator[int]:
    """The gateway listening on ``host:port`` for the duration; yields the bound port."""
    bound = gateway.start(host, port)
    try:
        yield bound
    finally:
        gateway.stop()
