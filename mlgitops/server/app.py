"""The ASGI app of one worker: thin routes over the protocols, the batcher and the metrics.

Every route goes through `_endpoint`, which times it, counts it, and turns any exception
into a response through the one table in `problems.STATUS` (anything else is a 500 and is
logged: a bug of the server, never the client's fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mlgitops import settings
from mlgitops.adapters import http_server, prediction_log, stats_store
from mlgitops.core import stats
from mlgitops.core.serve_spec import ServeSpec
from mlgitops.server import (
    batching,
    inference,
    metrics,
    mlflow_protocol,
    openapi,
    predictions,
    predictor,
    problems,
    protocols,
    recorder,
    schema,
    tensors,
    v2_protocol,
)

if TYPE_CHECKING:
    from mlgitops.server import grpc_service

#: `grpc_service.RELAY`, here so that a server without gRPC does not load grpc to route it
#: (grpc and protobuf load on the first relayed call, or at the start with ``--grpc-port``).
GRPC_RELAY = "/v2/grpc/inference.GRPCInferenceService"

log = logging.getLogger("mlgitops.server")

JSON = "application/json"
OCTETS = "application/octet-stream"
PROTOBUF = "application/x-protobuf"
#: Triton's binary tensor data extension: the length of the JSON header at the body's start.
HEADER_LENGTH = "inference-header-content-length"
# Routes take every method so that a wrong one gets a 405 through the one status table.
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Runtime:
    """What one worker serves: the spec, the warm predictor and the shared metrics."""

    spec: ServeSpec
    predictor: predictor.Predictor
    output_datatype: str
    metrics: metrics.SharedMetrics
    baseline: stats.Baseline | None
    server_version: str
    #: the gRPC port every worker serves (SO_REUSEPORT; the supervisor reserved it), or None
    grpc_port: int | None = None


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type=JSON)


def error_response(exc: BaseException) -> Response:
    """The response for ``exc`` by the one status table."""
    status = problems.status_of(exc)
    if status >= 500 and status != 503:
        log.error("request failed", exc_info=exc)
        message = (
            f"The server failed on this request ({type(exc).__name__}); this is a bug of the "
            "server, not of the request: see the server log."
        )
    else:
        message = http_server.clip(str(exc) or type(exc).__name__)
    headers = None
    if isinstance(exc, problems.MethodNotAllowed) and exc.allow:
        headers = {"Allow": exc.allow}
    elif isinstance(exc, problems.Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return Response(
        protocols.error_body(message), status_code=status, media_type=JSON, headers=headers
    )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def looks_like_json(body: bytes) -> bool:
    """The body starts like a JSON object or array (what a JSON body sent with another
    content type, such as curl's default form type, is parsed as)."""
    return body.lstrip()[:1] in (b"{", b"[")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or PayloadTooLarge before reading it when ``Content-Length`` is over
    ``limit``, and as soon as the bytes received pass ``limit`` (chunked bodies)."""
    try:
        return await http_server.read_capped(request, limit)
    except http_server.BadLength as exc:
        raise problems.BadRequest(str(exc)) from None
    except ClientDisconnect:
        raise problems.BadRequest("The client went away before sending the whole body.") from None
    except http_server.BodyTooLarge as exc:
        if exc.declared is not None:
            raise problems.PayloadTooLarge(
                f"The body has {exc.declared} bytes; this server accepts at most {limit} "
                "(--max-body-bytes): split the rows over several requests."
            ) from None
        raise problems.PayloadTooLarge(
            f"The body exceeds {limit} bytes, the most this server accepts "
            "(--max-body-bytes): split the rows over several requests."
        ) from None


def prediction_logger(spec: ServeSpec, pred: predictor.Predictor, *, worker_id: str,
                      on_cpu: Callable[[float], None] | None = None
                      ) -> predictions.PredictionLog | None:
    """The worker's prediction log, in its stats directory (None: no stats directory, nothing
    recorded (``--no-stats``), or ``MLGITOPS_PREDICTION_LOG=off``)."""
    cfg = settings.prediction_log()
    if spec.stats_dir is None or not spec.record_stats or not cfg.enabled:
        return None
    per_worker = max(1, cfg.max_rows // spec.worker_count)
    writer = prediction_log.Writer(prediction_log.directory(Path(spec.stats_dir)),
                                   worker_id=worker_id, max_rows=per_worker,
                                   max_age_seconds=cfg.max_age_seconds)
    return predictions.PredictionLog(writer, pred, version=spec.version,
                                     interval=cfg.interval_seconds, on_cpu=on_cpu)


def build(runtime: Runtime, *, slot: int, worker_id: str) -> Starlette:
    """The Starlette app of one worker process (slot = its row in the shared metrics)."""
    spec = runtime.spec
    pred = runtime.predictor
    sig = pred.signature
    counters = runtime.metrics.slot(slot)
    api_token = settings.access().api_token
    rec: recorder.Recorder | None = None
    publisher: recorder.Publisher | None = None
    if spec.record_stats and runtime.baseline is not None:
        rec = recorder.Recorder(runtime.baseline)
        if spec.stats_dir is not None:
            publisher = recorder.Publisher(
                rec,
                spec.stats_dir,
                worker_id=worker_id,
                name=spec.name,
                version=spec.version,
                digest=spec.digest,
                on_cpu=counters.stats_cpu,
            )

    def after_predict(batch: schema.Batch, out: Any) -> None:
        assert rec is not None
        rec.record(batch, out)

    batcher = batching.MicroBatcher(
        pred.predict,
        max_batch_size=spec.max_batch_size,
        max_delay_ms=spec.max_delay_ms,
        in_thread=spec.predict_in_thread,
        after_predict=after_predict if rec is not None else None,
        on_batch=counters.batch,
        thread_init=predictor.configure_sklearn,
    )
    served = inference.Served(
        spec=spec,
        sig=sig,
        batcher=batcher,
        output_datatype=runtime.output_datatype,
        server_version=runtime.server_version,
        log=prediction_logger(spec, pred, worker_id=worker_id, on_cpu=counters.log_cpu),
    )
    limit = spec.max_body_bytes
    doc = orjson.dumps(
        openapi.document(
            name=spec.name, version=spec.version, sig=sig, output_datatype=runtime.output_datatype
        )
    )
    model_meta = orjson.dumps(served.model_metadata())
    server_meta = orjson.dumps(served.server_metadata())
    version_doc = orjson.dumps(
        {
            "name": spec.name,
            "version": spec.version,
            "digest": spec.digest,
            "server": runtime.server_version,
        }
    )

    def endpoint(route: str, methods: tuple[str, ...], fn: Handler) -> Route:
        index = metrics.ROUTE_INDEX[route]
        allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())
        allow_header = ", ".join(sorted(allowed))

        async def handler(request: Request) -> Response:
            started = time.perf_counter()
            try:
                if request.method not in allowed:
                    raise problems.MethodNotAllowed(
                        f"{request.method} is not allowed on {route}; use {' or '.join(methods)}.",
                        allow=allow_header,
                    )
                response = await fn(request)
            except Exception as exc:
                response = error_response(exc)
            counters.request(index, response.status_code, time.perf_counter() - started)
            return response

        return Route(route, handler, methods=_ANY_METHOD)  # 405 comes from `handler`

    def check_name(request: Request) -> None:
        served.check(request.path_params.get("name"), request.path_params.get("version"))

    async def infer(request: Request) -> Response:
        check_name(request)
        ctype = media_type(request)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise problems.UnsupportedMediaType(
                f"Content-Encoding {problems.shown(encoding)} is not supported; send the body "
                "uncompressed (tritonclient: leave request_compression_algorithm unset)."
            )
        with served.decoding():
            body = await read_body(request, limit)
            header = tensors.header_length(
                request.headers.get(HEADER_LENGTH), body_size=len(body)
            )
            # another content type (curl -d sends application/x-www-form-urlencoded) is read
            # as JSON when the body is JSON, as Triton and KServe do
            if ctype not in ("", JSON, OCTETS) and header is None and not looks_like_json(body):
                raise problems.UnsupportedMediaType(
                    f"Content type {problems.shown(ctype)} is not supported here and the body "
                    "is not JSON; send application/json (or application/octet-stream with the "
                    "binary tensor data extension's Inference-Header-Content-Length)."
                )
            if header is None:
                decoded = v2_protocol.v2_request(protocols.parse_json(body), sig)
            else:
                view = memoryview(body)
                decoded = v2_protocol.v2_request(
                    protocols.parse_json(view[:header].tobytes()), sig, binary=view[header:]
                )
        if decoded.model_name not in (None, spec.name):
            raise problems.BadRequest(
                f"The body names model {problems.shown(decoded.model_name)}, the path "
                f"{spec.name!r}; leave 'model_name' out or make them agree."
            )
        served.check(spec.name, decoded.model_version)
        rid = inference.request_id(
            decoded.request_id or request.headers.get(inference.REQUEST_ID_HEADER))
        out = await served.predict(decoded.batch, rid)
        content, header_size = v2_protocol.v2_response(
            out,
            model_name=spec.name,
            model_version=spec.version,
            request_id=rid,
            binary=decoded.binary_output,
        )
        if header_size is None:
            return Response(content, media_type=JSON, headers={inference.REQUEST_ID_HEADER: rid})
        return Response(
            content, media_type=OCTETS, headers={"Inference-Header-Content-Length": str(header_size),
                                                 inference.REQUEST_ID_HEADER: rid}
        )

    async def invocations(request: Request) -> Response:
        ctype = media_type(request)
        with served.decoding():
            body = await read_body(request, limit)
            if ctype == "text/csv":
                batch = mlflow_protocol.mlflow_csv(body, sig)
            elif ctype == JSON or looks_like_json(body):
                batch = mlflow_protocol.mlflow_json(protocols.parse_json(body), sig)
            else:
                shown = problems.shown(ctype) if ctype else "missing"
                raise problems.UnsupportedMediaType(
                    f"Content type {shown} is not supported and the body is not JSON; send "
                    "application/json or text/csv."
                )
        rid = inference.request_id(request.headers.get(inference.REQUEST_ID_HEADER))
        out = await served.predict(batch, rid)
        return Response(mlflow_protocol.mlflow_response(out), media_type=JSON,
                        headers={inference.REQUEST_ID_HEADER: rid})

    relays: dict[str, grpc_service.Method] = {}

    def relay_methods() -> dict[str, grpc_service.Method]:
        if not relays:
            from mlgitops.server import grpc_service

            relays.update(grpc_service.methods(served))
        return relays

    async def grpc_relay(request: Request) -> Response:
        """A gRPC call relayed over HTTP by the controller's gRPC gateway: the serialized
        request in, the serialized response out; a refused call is the usual error body
        with the gRPC code in ``Grpc-Code``."""
        started = time.perf_counter()
        method = relay_methods().get(request.path_params["method"])
        index = metrics.ROUTE_INDEX[f"grpc {method.name}" if method else "other"]
        try:
            if method is None:
                raise problems.NotFound(
                    f"No gRPC method {problems.shown(request.path_params['method'])}; the "
                    f"service has {', '.join(relays)}."
                )
            if request.method != "POST":
                raise problems.MethodNotAllowed(
                    f"{request.method} is not allowed on {request.url.path}; use POST.",
                    allow="POST",
                )
            data, rid = await method.relay(
                await read_body(request, limit),
                request_id=request.headers.get(inference.REQUEST_ID_HEADER),
            )
            response = Response(
                data,
                media_type=PROTOBUF,
                headers={inference.REQUEST_ID_HEADER: rid} if rid else None,
            )
        except Exception as exc:
            response = error_response(exc)
            from mlgitops.server import grpc_service

            response.headers["Grpc-Code"] = grpc_service.message(exc)[1]
        counters.request(index, response.status_code, time.perf_counter() - started)
        return response

    async def model_metadata(request: Request) -> Response:
        check_name(request)
        return Response(model_meta, media_type=JSON)

    async def model_ready(request: Request) -> Response:
        check_name(request)
        served.check_ready()
        return _json({"name": spec.name, "ready": True})

    async def live_stats(request: Request) -> Response:
        """Every worker's live statistics and reservoir sample: what a monitor merges across
        replicas (the Kubernetes operator reads it from each ready pod; the gateway never
        forwards it). With ``MLGITOPS_API_TOKEN`` set, only a request bearing it is answered.
        With an ``ETag``: an unchanged directory answers ``If-None-Match`` with 304."""
        if not http_server.bearer_ok(request.headers.get("authorization"), api_token):
            raise problems.Unauthorized(http_server.UNAUTHORIZED)
        check_name(request)
        if spec.stats_dir is None:
            raise problems.NotFound(f"Model {spec.name!r} records no live statistics here.")
        tag = stats_store.etag(Path(spec.stats_dir))  # before the export: never newer than it
        headers = {"ETag": tag, "Cache-Control": "no-cache"} if tag else None
        if tag and request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return Response(orjson.dumps(stats_store.export(Path(spec.stats_dir))), media_type=JSON,
                        headers=headers)

    async def prediction_log_export(request: Request) -> Response:
        """The prediction log's segments (a listing, or one segment as written): what the
        Kubernetes operator copies from each pod; guarded like the stats route."""
        if not http_server.bearer_ok(request.headers.get("authorization"), api_token):
            raise problems.Unauthorized(http_server.UNAUTHORIZED)
        check_name(request)
        segment = request.path_params.get("segment")
        if segment is None:
            return _json(predictions.listing(spec.stats_dir, spec.name, spec.version))
        data = await asyncio.to_thread(predictions.segment_bytes, spec.stats_dir, str(segment))
        return Response(data, media_type="application/vnd.apache.parquet")

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        if not served.ready:
            raise problems.NotReady("The server is not ready (it is stopping).")
        return _json({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return Response(server_meta, media_type=JSON)

    async def ping(request: Request) -> Response:
        return _json({"status": "ok"})

    async def version(request: Request) -> Response:
        return Response(version_doc, media_type=JSON)

    async def metrics_text(request: Request) -> Response:
        return Response(
            runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi_doc(request: Request) -> Response:
        return Response(doc, media_type=JSON)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            response = error_response(
                problems.NotFound(
                    f"No route {problems.shown(request.url.path)}; see GET /openapi.json for this "
                    "server's routes."
                )
            )
        elif isinstance(exc, HTTPException) and 400 <= status < 500:
            detail = exc.detail if isinstance(exc.detail, str) else ""
            response = Response(
                protocols.error_body(
                    http_server.clip(
                        f"{detail or 'The request was refused'} ({problems.shown(request.url.path)})."
                    )
                ),
                status_code=status,
                media_type=JSON,
                headers=exc.headers,
            )
        else:
            response = error_response(exc)
        counters.request(metrics.ROUTE_INDEX["other"], response.status_code, 0.0)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        predictor.configure_sklearn()
        batcher.start()
        if publisher is not None:
            publisher.start()
        if served.log is not None:
            served.log.start()
        grpc_server = None
        if runtime.grpc_port is not None:
            from mlgitops.server import grpc_service

            grpc_server = await grpc_service.start(
                served, host=spec.host, port=runtime.grpc_port, counters=counters
            )
        served.ready = True
        try:
            yield
        finally:
            served.ready = False
            if grpc_server is not None:
                await grpc_server.stop(grace=3.0)
            await batcher.close()
            if publisher is not None:
                await publisher.close()
            if served.log is not None:
                await asyncio.to_thread(served.log.close)

    routes = [  # matched in order: the scoring routes first
        endpoint("/invocations", ("POST",), invocations),
        endpoint("/v2/models/{name}/infer", ("POST",), infer),
        endpoint("/v2/models/{name}/versions/{version}/infer", ("POST",), infer),
        endpoint("/v2/models/{name}/ready", ("GET",), model_ready),
        endpoint("/v2/models/{name}/versions/{version}/ready", ("GET",), model_ready),
        endpoint("/v2/models/{name}/stats", ("GET",), live_stats),
        endpoint("/v2/models/{name}/versions/{version}/stats", ("GET",), live_stats),
        endpoint("/v2/models/{name}/predictions", ("GET",), prediction_log_export),
        endpoint("/v2/models/{name}/predictions/{segment}", ("GET",), prediction_log_export),
        endpoint("/v2/models/{name}", ("GET",), model_metadata),
        endpoint("/v2/models/{name}/versions/{version}", ("GET",), model_metadata),
        Route(GRPC_RELAY + "/{method}", grpc_relay, methods=_ANY_METHOD),
        endpoint("/v2/health/live", ("GET",), live),
        endpoint("/v2/health/ready", ("GET",), ready),
        endpoint("/v2", ("GET",), server_metadata),
        endpoint("/ping", ("GET",), ping),
        endpoint("/health", ("GET",), ping),
        endpoint("/version", ("GET",), version),
        endpoint("/metrics", ("GET",), metrics_text),
        endpoint("/openapi.json", ("GET",), openapi_doc),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found})
    app.state.batcher = batcher
    app.state.recorder = rec
    app.state.served = served
    return app
