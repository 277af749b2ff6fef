"""The controller's one HTTP port: a stable endpoint per model, Git hooks, and status.

Routes
- ``/v2/models/{name}[/…]``       proxied to the server of ``name`` (KServe v2)
- ``/models/{name}/invocations``  proxied to that server's MLflow ``/invocations``
- ``/models/{name}/{path}``       any other path of that server (metrics, openapi.json)
- ``/v2/health/live|ready``       the gateway's own health (ready: every model serves)
- ``POST /hooks/git``             the bare remote's post-receive hook (loopback only)
- ``POST /hooks/github``          GitHub-compatible push webhook, HMAC-SHA256 verified
- ``GET /status``                 what ``mlgitops status --json`` prints
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlgitops.controller import reconciler as rec

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build(
    *,
    router: rec.Router,
    trigger: Callable[[str], None],
    statuses: Callable[[], list[dict[str, Any]]],
    webhook_secret: str | None,
) -> Starlette:
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=2.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
    )

    async def forward(request: Request, name: str, path: str) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        for _attempt in range(3):
            backend = router.get(name)
            if backend is None:
                return _error(
                    404 if name not in {s["name"] for s in statuses()} else 503,
                    f"no version of model {name!r} is serving here; "
                    "see `mlgitops status` for why",
                )
            router.inflight[backend.pid] = router.inflight.get(backend.pid, 0) + 1
            try:
                r = await client.request(
                    request.method,
                    f"{backend.url}{path}",
                    content=body,
                    headers=headers,
                    params=request.query_params,
                )
            except httpx.TransportError:
                # the server went away between lookup and send: a newer one may be routed now
                if router.get(name) is backend:
                    return _error(503, f"the server of model {name!r} is restarting; retry")
                continue
            finally:
                router.inflight[backend.pid] -= 1
            out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP}
            return Response(r.content, status_code=r.status_code, headers=out)
        return _error(503, f"the server of model {name!r} is being replaced; retry")

    async def v2_model(request: Request) -> Response:
        name = request.path_params["name"]
        rest = request.path_params.get("rest", "")
        return await forward(request, name, f"/v2/models/{name}" + (f"/{rest}" if rest else ""))

    async def model_path(request: Request) -> Response:
        return await forward(request, request.path_params["name"], "/" + request.path_params["rest"])

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

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
        trigger("post-receive")
        return JSONResponse({"accepted": True}, status_code=202)

    async def hook_github(request: Request) -> Response:
        body = await request.body()
        if webhook_secret is None:
            return _error(
                403, "webhooks are disabled: start the controller with MLGITOPS_WEBHOOK_SECRET set"
            )
        signature = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return _error(401, "X-Hub-Signature-256 does not match the body; check the secret")
        event = request.headers.get("x-github-event", "push")
        if event == "ping":
            return JSONResponse({"pong": True})
        if event != "push":
            return JSONResponse({"ignored": event}, status_code=202)
        try:
            json.loads(body or b"{}")
        except ValueError:
            return _error(400, "the webhook body is not JSON")
        trigger("webhook")
        return JSONResponse({"accepted": True}, status_code=202)

    async def status_route(request: Request) -> Response:
        return JSONResponse({"models": statuses()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    routes = [
        Route("/v2/models/{name}", v2_model, methods=["GET", "POST"]),
        Route("/v2/models/{name}/{rest:path}", v2_model, methods=["GET", "POST"]),
        Route("/models/{name}/{rest:path}", model_path, methods=["GET", "POST"]),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/hooks/git", hook_git, methods=["POST"]),
        Route("/hooks/github", hook_github, methods=["POST"]),
        Route("/status", status_route),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
