"""The controller's one HTTP port: a stable endpoint per model, Git hooks, and status.

Routes
- ``/v2/models/{name}[/…]``       proxied to the server of ``name`` (KServe v2: metadata,
                                  ``infer``, ``ready``, under ``versions/{v}`` too)
- ``/models/{name}/invocations``  proxied to that server's MLflow ``/invocations``
- ``/models/{name}/{path}``       the server's other public paths (``v2/…`` as above, metrics,
                                  openapi.json, ping, health, version)
- ``/v2/health/live|ready``       the gateway's own health (ready: every model serves)
- ``GET /v2``                     server metadata (a serving model's server's, extensions too)
- ``POST /hooks/git``             the bare remote's post-receive hook (loopback only)
- ``POST /hooks/github``          GitHub-compatible push webhook, HMAC-SHA256 verified
- ``GET /status``                 what ``mlgitops status --json`` prints (bearer token)
- ``GET /reports/[{name}/]``      a page of decisions (HTML, or JSON with ``?format=json``;
                                 ``?kind= &page= &limit=``, JSON ``page.next`` to follow)
- ``GET /reports/{name}/{id}``    one decision's page; ``{file}`` one report file (.html/.json)

No data leaves through this port: only the server paths `public_path` lists are forwarded
(an allow-list, matched on the normalized path), so a server's live statistics and sample
(``/v2/models/{name}/stats``) are a 404 here whatever the spelling; the monitor reads them
from the stats files. With ``MLGITOPS_API_TOKEN`` set, ``/status`` (and ``/reports/`` with
``MLGITOPS_REPORTS_PRIVATE=1``) answer only ``Authorization: Bearer <token>``.

Bounded input (with the limits of `adapters.http_server` on the connection itself):
- inference bodies: at most ``max_body_bytes`` (default 10 MiB, the servers' own
  ``--max-body-bytes`` default; ``MLGITOPS_MAX_BODY_BYTES``). A larger ``Content-Length`` is
  refused with 413 before a byte of the body is read; a chunked body is cut with 413 when it
  passes the limit. Bodies up to `_BUFFERED` are read whole (a request can then be retried on
  the next server when a version switches under it); larger ones stream to the server.
- ``/hooks/github``: at most ``webhook_max_bytes`` (default 1 MiB, ``MLGITOPS_WEBHOOK_MAX_BYTES``).
  A push event's payload is a few KB (GitHub caps payloads at 25 MB); a larger one gets 413,
  GitHub shows the failed delivery and polling still finds the commit. The limit is checked
  before the signature, and the body is hashed as it arrives, never kept: memory does not grow
  with the limit. Only the signature matters: the body is not otherwise read.
- ``/hooks/git``: loopback callers only, at most `_GIT_HOOK_MAX_BYTES` (the ref updates).
- error messages quote client input cut to a few dozen characters.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mlgitops.adapters import http_server
from mlgitops.controller import reconciler as rec
from mlgitops.controller import report_files
from mlgitops.controller.mirror import Copy, Mirror
from mlgitops.controller.ports import H
from mlgitops.core import manifest

if TYPE_CHECKING:
    from mlgitops.controller.feedback import Feedback

_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "content-encoding",
}
_BUFFERED = 1024 * 1024
_GIT_HOOK_MAX_BYTES = 1024 * 1024
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": http_server.clip(message)}, status_code=status)


def _too_large(exc: http_server.BodyTooLarge, *, what: str, setting: str) -> JSONResponse:
    size = f"has {exc.declared} bytes" if exc.declared is not None else f"exceeds {exc.limit} bytes"
    return _error(
        413,
        f"The {what} {size}; the gateway accepts at most {exc.limit} ({setting}): "
        + ("split the rows over several requests." if what == "body" else "raise the setting."),
    )


class _Upload:
    """A request body on its way to a server: bytes (can be sent again) or a one-shot stream."""

    def __init__(self, head: bytes, rest: AsyncIterator[bytes] | None) -> None:
        self.head = head
        self.rest = rest
        self.started = False

    @property
    def replayable(self) -> bool:
        return self.rest is None or not self.started

    def content(self) -> bytes | AsyncIterator[bytes]:
        return self.head if self.rest is None else self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        assert self.rest is not None
        self.started = True
        yield self.head
        async for chunk in self.rest:
            yield chunk


VERSION_HEADER = "x-mlgitops-version"
"""The response header naming the version (commit) that answered a forwarded request."""

_SEGMENT = r"[^/]+"
_PUBLIC = re.compile(
    rf"/invocations|/v2|/v2/health/(?:live|ready)|/ping|/health|/version|/metrics|/openapi\.json"
    rf"|/v2/models/{_SEGMENT}(?:/versions/{_SEGMENT})?(?:/infer|/ready)?"
)


def public_path(path: str) -> str | None:
    """``path`` of a model server (decoded) normalized (no empty or dot segments) and
    re-encoded, when it is one of the server's public routes (inference, metadata, health,
    metrics); None for anything else, its live statistics and sample above all."""
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    normal = "/" + "/".join(parts)
    if not _PUBLIC.fullmatch(normal):
        return None
    # each segment re-encoded: the server sees exactly the segments checked here
    return "/" + "/".join(urllib.parse.quote(p, safe="!$&'()*+,;=:@-._~") for p in parts)


def build(
    *,
    router: rec.Router[H],
    trigger: Callable[[str], None],
    statuses: Callable[[], list[dict[str, Any]]],
    webhook_secret: str | None,
    max_body_bytes: int = 10 * 1024 * 1024,
    webhook_max_bytes: int = 1024 * 1024,
    reports_root: Path | None = None,
    api_token: str | None = None,
    reports_private: bool = False,
    feedback: Feedback | None = None,
    mirror_budget: float = 0.05,
) -> Starlette:
    """The gateway app; ``api_token`` guards ``/status`` (and ``/reports/`` when
    ``reports_private``)."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=2.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
    )
    mirror = Mirror(client, router, budget=mirror_budget)

    async def forward(request: Request, name: str, path: str) -> Response:
        public = public_path(path)
        if public is None:
            return _error(
                404,
                f"no route {http_server.quote(request.url.path)} here: the gateway forwards a "
                "model's inference, metadata, health and metrics routes only",
            )
        path = public
        try:
            head, rest = await http_server.prefetch(request, limit=max_body_bytes, keep=_BUFFERED)
        except http_server.BadLength as exc:
            return _error(400, str(exc))
        except http_server.BodyTooLarge as exc:
            return _too_large(exc, what="body", setting="MLGITOPS_MAX_BODY_BYTES")
        except ClientDisconnect:
            return _error(400, "the client went away before sending the whole body")
        upload = _Upload(head, rest)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        declared = request.headers.get("content-length")
        if rest is not None and declared is not None:
            headers["content-length"] = declared  # checked by the parser against what arrives
        key_header = None
        split = router.split(name)
        if split is not None and split.key:
            key_header = request.headers.get(split.key)
        for _attempt in range(3):
            backend, role, other, counters = router.choose(name, key_header)
            if backend is None:
                return _error(
                    404 if name not in {s["name"] for s in statuses()} else 503,
                    f"no version of model {http_server.quote(name)} is serving here; "
                    "see `mlgitops status` for why",
                )
            if not upload.replayable:
                break
            router.inflight[backend.key] = router.inflight.get(backend.key, 0) + 1
            started = time.perf_counter()
            try:
                r = await client.request(
                    request.method,
                    f"{backend.url}{path}",
                    content=upload.content(),
                    headers=headers,
                    params=request.query_params,
                )
            except http_server.BodyTooLarge as exc:
                return _too_large(exc, what="body", setting="MLGITOPS_MAX_BODY_BYTES")
            except ClientDisconnect:
                return _error(400, "the client went away before sending the whole body")
            except httpx.TransportError:
                if counters is not None:
                    counters.answered(role, ok=False, seconds=time.perf_counter() - started)
                # the server went away between lookup and send: a newer one may be routed now
                if router.get(name) is backend:
                    return _error(
                        503, f"the server of model {http_server.quote(name)} is restarting; retry"
                    )
                continue
            finally:
                router.inflight[backend.key] -= 1
            out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP}
            out[VERSION_HEADER] = backend.version
            router.served[(name, backend.version)] += 1
            if counters is not None:
                counters.answered(role, ok=r.status_code < 500,
                                  seconds=time.perf_counter() - started)
                if other is not None and r.status_code < 400 and upload.rest is None:
                    mirror.offer(Copy(name=name, url=f"{other.url}{path}", version=other.version,
                                      role="stable" if role == "candidate" else "candidate",
                                      counters=counters, method=request.method,
                                      body=upload.head, headers=headers,
                                      params=request.query_params, answer=r.content),
                                 busy=router.inflight.get(backend.key, 0) > 0)
            return Response(r.content, status_code=r.status_code, headers=out)
        return _error(
            503, f"the server of model {http_server.quote(name)} is being replaced; retry"
        )

    async def v2_model(request: Request) -> Response:
        name = request.path_params["name"]
        rest = request.path_params.get("rest", "")
        return await forward(request, name, f"/v2/models/{name}" + (f"/{rest}" if rest else ""))

    async def model_path(request: Request) -> Response:
        return await forward(
            request, request.path_params["name"], "/" + request.path_params["rest"]
        )

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def server_metadata(request: Request) -> Response:
        """``GET /v2``: a serving model's server answers (its extensions are what every model
        here offers); the gateway's own name when no model serves."""
        for status in statuses():
            backend = router.get(status["name"])
            if backend is None:
                continue
            with contextlib.suppress(httpx.HTTPError):
                r = await client.get(f"{backend.url}/v2", timeout=5.0)
                if r.status_code == 200:
                    return Response(r.content, media_type="application/json")
        return JSONResponse({"name": "mlgitops", "version": "", "extensions": []})

    async def ready(request: Request) -> Response:
        names = [s["name"] for s in statuses()]
        missing = [n for n in names if router.get(n) is None]
        if missing:
            return JSONResponse({"ready": False, "missing": missing}, status_code=503)
        return JSONResponse({"ready": True, "models": names})

    async def hook_git(request: Request) -> Response:
        host = request.client.host if request.client else ""
        if host not in ("127.0.0.1", "::1", "localhost"):
            return _error(403, "the git hook endpoint only accepts loopback callers")
        try:
            async for _chunk in http_server.chunks(request, _GIT_HOOK_MAX_BYTES):
                pass  # the ref updates: a fetch finds them anyway
        except http_server.BadLength as exc:
            return _error(400, str(exc))
        except http_server.BodyTooLarge as exc:
            return _too_large(exc, what="hook body", setting="the post-receive hook's limit")
        except ClientDisconnect:
            return _error(400, "the hook went away before sending the whole body")
        trigger("post-receive")
        return JSONResponse({"accepted": True}, status_code=202)

    async def hook_github(request: Request) -> Response:
        if webhook_secret is None:
            return _error(
                403, "webhooks are disabled: start the controller with MLGITOPS_WEBHOOK_SECRET set"
            )
        try:
            http_server.check_declared(request, webhook_max_bytes)
        except http_server.BadLength as exc:
            return _error(400, str(exc))
        except http_server.BodyTooLarge as exc:
            return _too_large(exc, what="webhook body", setting="MLGITOPS_WEBHOOK_MAX_BYTES")
        signature = request.headers.get("x-hub-signature-256", "")
        if not _SIGNATURE.fullmatch(signature):
            return _error(401, "X-Hub-Signature-256 is missing or malformed; check the secret")
        mac = hmac.new(webhook_secret.encode(), digestmod=hashlib.sha256)
        try:
            async for chunk in http_server.chunks(request, webhook_max_bytes):
                mac.update(chunk)
        except http_server.BodyTooLarge as exc:
            return _too_large(exc, what="webhook body", setting="MLGITOPS_WEBHOOK_MAX_BYTES")
        except ClientDisconnect:
            return _error(400, "the client went away before sending the whole body")
        if not hmac.compare_digest(signature, "sha256=" + mac.hexdigest()):
            return _error(401, "X-Hub-Signature-256 does not match the body; check the secret")
        event = request.headers.get("x-github-event", "push")
        if event == "ping":
            return JSONResponse({"pong": True})
        if event != "push":
            return JSONResponse({"ignored": http_server.clip(event, 100)}, status_code=202)
        trigger("webhook")
        return JSONResponse({"accepted": True}, status_code=202)

    def _wants_json(request: Request) -> bool:
        if request.query_params.get("format") == "json":
            return True
        accept = request.headers.get("accept", "")
        return "application/json" in accept and "text/html" not in accept

    async def reports_index(request: Request) -> Response:
        name = request.path_params.get("name")
        if name is not None and not manifest.valid_name(name):
            return _error(404, "No such model: see GET /reports/ for the reports there are.")
        try:
            query = report_files.listing(request.query_params)
        except report_files.BadQuery as exc:
            return _error(400, str(exc))
        if reports_root is None:
            return (JSONResponse({"decisions": [], "reports": []}) if _wants_json(request)
                    else HTMLResponse(report_files.index_html([], name=name)))
        if _wants_json(request):
            return JSONResponse(await run_in_threadpool(report_files.json_index, reports_root,
                                                        name, query))
        return HTMLResponse(await run_in_threadpool(report_files.index_page, reports_root, name,
                                                    query))

    async def report_file(request: Request) -> Response:
        if reports_root is None:
            return _error(404, "This gateway serves no reports.")
        try:
            data, media_type = await run_in_threadpool(
                report_files.read,
                reports_root,
                request.path_params["name"],
                request.path_params["file"],
            )
        except report_files.NotServed as exc:
            return _error(404, str(exc))
        headers = {"X-Content-Type-Options": "nosniff"}
        if media_type.startswith("text/html"):
            # the report runs its own scripts, in an origin of its own
            headers["Content-Security-Policy"] = (
                "sandbox allow-scripts allow-popups allow-downloads"
            )
        return Response(data, media_type=media_type, headers=headers)

    async def report_unknown(request: Request) -> Response:
        return _error(
            404,
            "No such report: reports are at /reports/<model>/<file>.html or .json; "
            "see GET /reports/ for the reports there are.",
        )

    def refused(request: Request) -> Response | None:
        """401 unless the request carries the API token (None: it may pass)."""
        if http_server.bearer_ok(request.headers.get("authorization"), api_token):
            return None
        return JSONResponse({"error": http_server.UNAUTHORIZED}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    def private(route: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def guarded(request: Request) -> Response:
            denied = refused(request)
            if denied is not None:
                return denied
            response: Response = await route(request)
            return response

        return guarded

    async def status_route(request: Request) -> Response:
        return JSONResponse({"models": statuses()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await mirror.close()
        await client.aclose()

    routes = [
        Route("/v2/models/{name}", v2_model, methods=["GET", "POST"]),
        Route("/v2/models/{name}/{rest:path}", v2_model, methods=["GET", "POST"]),
        Route("/models/{name}/{rest:path}", model_path, methods=["GET", "POST"]),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/hooks/git", hook_git, methods=["POST"]),
        Route("/hooks/github", hook_github, methods=["POST"]),
        Route("/status", private(status_route)),
    ]
    reports = [
        Route("/reports", reports_index),
        Route("/reports/", reports_index),
        Route("/reports/{name}/", reports_index),
        Route("/reports/{name}/{file}", report_file),
        Route("/reports/{rest:path}", report_unknown),
    ]
    if reports_private:
        reports = [Route(r.path, private(r.endpoint)) for r in reports]
    routes += reports
    if feedback is not None:  # POST /v2/models/{name}/feedback and GET /metrics (labels back)
        routes[:0] = feedback.routes(lambda: {s["name"] for s in statuses()})
    return Starlette(routes=routes, lifespan=lifespan)
