"""The v2 gRPC API (``inference.GRPCInferenceService``) of one worker, beside its HTTP routes.

Six calls: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer.
They run on the worker's event loop and go through the same `inference.Served` as HTTP (the
same name and version checks, the same micro-batcher, live statistics and metrics) and the
same validation (`v2_protocol.v2_batch`; raw tensors through `tensors.decode`), and the bounds
of `adapters.grpc_limits` (receive deadline, concurrent calls, connection limits). A refused call
gets the gRPC code of the HTTP status the same problem gets (`problems.GRPC_CODE`) and the
same sentence. Inputs come as ``raw_input_contents`` (what Triton's client sends) or as typed
``contents``; the output always comes back as ``raw_output_contents``.

The controller's gRPC gateway reaches a model's server over HTTP: it relays each call's
serialized request to ``POST /v2/grpc/inference.GRPCInferenceService/<Method>`` (`RELAY`),
which runs the same `methods` and answers the serialized response (or the error body, with
the gRPC code in the ``Grpc-Code`` header).

Every worker serves the same port (SO_REUSEPORT: the kernel spreads connections, as it does
for the shared HTTP socket); the supervisor reserves the port before it forks, and each
worker creates its gRPC server after the fork (gRPC's threads do not survive a fork).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from mlgitops.adapters import grpc_limits, http_server
from mlgitops.server import grpc_predict_v2_pb2 as pb
from mlgitops.server import inference, metrics, problems, tensors, v2_protocol

log = logging.getLogger("mlgitops.server")

SERVICE = "inference.GRPCInferenceService"
#: The HTTP path prefix of the relay route: ``POST {RELAY}/{method}`` (see `Method.relay`).
RELAY = "/v2/grpc/" + SERVICE

# typed contents: the field each datatype's values arrive in, and its numpy dtype
_CONTENTS: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int8),
    "INT16": ("int_contents", np.int16),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint8),
    "UINT16": ("uint_contents", np.uint16),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", None),
}


def message(exc: BaseException) -> tuple[int, str, str]:
    """The HTTP status, gRPC code name and sentence for ``exc`` (what HTTP would answer)."""
    status = problems.status_of(exc)
    if status >= 500 and status != 503:
        log.error("gRPC call failed", exc_info=exc)
        return status, "INTERNAL", (
            f"The server failed on this call ({type(exc).__name__}); this is a bug of the "
            "server, not of the request: see the server log."
        )
    return status, problems.grpc_code(status), http_server.clip(str(exc) or type(exc).__name__)


def infer_tensors(request: pb.ModelInferRequest) -> list[v2_protocol.Tensor]:
    """The input tensors of a ModelInfer request, sizes checked before any allocation."""
    if not request.inputs:
        raise problems.BadRequest("'inputs' must be a non-empty list of tensors.")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise problems.BadRequest(
            f"The request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents; "
            "send one raw content per input, in order (or typed contents in each input)."
        )
    v2_protocol.check_outputs([o.name for o in request.outputs])
    out: list[v2_protocol.Tensor] = []
    for i, t in enumerate(request.inputs):
        shape = v2_protocol.check_shape(list(t.shape), where=f"inputs[{i}]")
        datatype = t.datatype.upper()
        if raw:
            if t.HasField("contents"):
                raise problems.BadRequest(
                    f"inputs[{i}] has typed contents, but the request carries "
                    "raw_input_contents; send every input one way."
                )
            values: Any = tensors.decode(raw[i], datatype=datatype, shape=shape, name=t.name)
        else:
            values = _typed(t, shape=shape, datatype=datatype)
        out.append(v2_protocol.Tensor(t.name, shape, datatype, values))
    return out


def _typed(t: Any, *, shape: list[int], datatype: str) -> Any:
    where = f"Tensor {problems.shown(t.name)}"
    entry = _CONTENTS.get(datatype)
    if entry is None:
        raise problems.Unprocessable(
            f"{where} has datatype {problems.shown(datatype)}, which has no typed contents; "
            "send it in raw_input_contents (FP16) or use one of "
            f"{', '.join(_CONTENTS)}."
        )
    field, dtype = entry
    values = getattr(t.contents, field)
    count = tensors.element_count(shape)
    if len(values) != count:
        raise problems.BadRequest(
            f"{where} has {len(values)} values in contents.{field}, but its shape "
            f"{problems.shown(shape)} needs {count}."
        )
    if dtype is None:
        try:
            return [bytes(v).decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise problems.Unprocessable(
                f"{where}: a BYTES element is not UTF-8 text; the model's string columns take text."
            ) from None
    if dtype is not np.bool_ and dtype is not np.float32 and dtype is not np.float64:
        info = np.iinfo(dtype)
        arr = np.asarray(values, dtype=np.int64 if info.min < 0 else np.uint64)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise problems.Unprocessable(f"{where} holds values outside the {datatype} range.")
        return arr.astype(dtype)
    return np.asarray(values, dtype=dtype)


def infer_response(
    out: Any, *, request: pb.ModelInferRequest, served: inference.Served, request_id: str
) -> pb.ModelInferResponse:
    datatype, raw = tensors.encode(np.asarray(out).reshape(-1))
    response = pb.ModelInferResponse(
        model_name=served.spec.name, model_version=served.spec.version, id=request_id
    )
    response.outputs.add(name="predict", datatype=datatype, shape=list(np.shape(out)))
    response.raw_output_contents.append(raw)
    return response


def metadata_response(served: inference.Served) -> pb.ModelMetadataResponse:
    meta = served.model_metadata()
    response = pb.ModelMetadataResponse(
        name=meta["name"], versions=meta["versions"], platform=meta["platform"]
    )
    for t in meta["inputs"]:
        response.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
    for t in meta["outputs"]:
        response.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
    return response


Call = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    """One call of the service: its handler and message types."""

    name: str
    call: Call
    request: Any
    response: Any

    async def relay(self, body: bytes, *, request_id: str | None = None) -> tuple[bytes, str | None]:
        """The call on serialized messages (the controller's gRPC gateway relays them over
        HTTP), and the response's id for an inference (``request_id``, the caller's
        ``x-request-id`` metadata, is the id when the message gives none); raises the
        `problems` exception a refused call gets."""
        try:
            request = self.request.FromString(body)
        except DecodeError:
            raise problems.BadRequest(
                f"The body is not a serialized inference.{self.request.__name__} message."
            ) from None
        if request_id and isinstance(request, pb.ModelInferRequest) and not request.id:
            request.id = request_id
        response = await self.call(request)
        data: bytes = response.SerializeToString()
        return data, response.id if isinstance(response, pb.ModelInferResponse) else None


def methods(served: inference.Served) -> dict[str, Method]:
    """The six calls, bound to what this worker serves, by method name."""

    async def model_infer(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        served.check(request.model_name, request.model_version)
        with served.decoding():
            batch = v2_protocol.v2_batch(infer_tensors(request), served.sig)
        rid = inference.request_id(request.id)
        out = await served.predict(batch, rid)
        return infer_response(out, request=request, served=served, request_id=rid)

    async def model_ready(request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        served.check(request.name, request.version)
        return pb.ModelReadyResponse(ready=served.ready)

    async def model_metadata(request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        served.check(request.name, request.version)
        return metadata_response(served)

    async def server_live(request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=served.ready)

    async def server_metadata(request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        meta = served.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    table = [
        Method("ModelInfer", model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        Method("ModelReady", model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        Method(
            "ModelMetadata", model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
        ),
        Method("ServerLive", server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        Method("ServerReady", server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        Method(
            "ServerMetadata", server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
        ),
    ]
    return {m.name: m for m in table}


def handlers(served: inference.Served, *, counters: metrics.Slot) -> grpc.GenericRpcHandler:
    """The generic handler of the service, bound to what this worker serves."""

    def handler(method: Method) -> Any:
        index = metrics.ROUTE_INDEX[f"grpc {method.name}"]

        async def handle(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            # served as stream-unary (the same wire as unary): the message must arrive within
            # the receive deadline, so calls that never send one are ended
            try:
                request = await asyncio.wait_for(context.read(), grpc_limits.RECEIVE_SECONDS)
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"No request message within {grpc_limits.RECEIVE_SECONDS:g} s of the "
                    "call's start; send the message with the call.",
                )
            if request is grpc.aio.EOF:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "The call sent no request message; send one."
                )
            if isinstance(request, pb.ModelInferRequest) and not request.id:
                given = dict(context.invocation_metadata() or ()).get(
                    inference.REQUEST_ID_HEADER.lower())
                request.id = given if isinstance(given, str) else ""
            started = time.perf_counter()
            try:
                response = await method.call(request)
            except Exception as exc:
                status, code, text = message(exc)
                counters.request(index, status, time.perf_counter() - started)
                await context.abort(getattr(grpc.StatusCode, code), text)
            counters.request(index, 200, time.perf_counter() - started)
            if isinstance(response, pb.ModelInferResponse):
                await context.send_initial_metadata(
                    ((inference.REQUEST_ID_HEADER.lower(), response.id),))
            return response

        return grpc.stream_unary_rpc_method_handler(
            handle,
            request_deserializer=method.request.FromString,
            response_serializer=method.response.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE, {name: handler(m) for name, m in methods(served).items()}
    )


async def start(
    served: inference.Served, *, host: str, port: int, counters: metrics.Slot
) -> grpc.aio.Server:
    """Start this worker's gRPC server on ``host:port`` (shared with the other workers)."""
    server = grpc.aio.server(
        options=grpc_limits.options(max_receive_bytes=served.spec.max_body_bytes, reuse_port=True),
        maximum_concurrent_rpcs=grpc_limits.MAX_CONCURRENT_RPCS,
    )
    server.add_generic_rpc_handlers([handlers(served, counters=counters)])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)
    await server.start()
    return server
