"""A host process: many model versions in one process (multi-model serving).

``python -m mlgitops.server.host`` imports everything once (like a standby), then serves any
number of model versions, each with the app of `app.build` on *its own* loopback port: the
endpoints, ``/metrics`` (labels name, version, digest) and the live statistics under the
version's ``stats_dir`` are those of a process-per-model server, so the gateway, the monitor
and the stats store see no difference. One process, no forked workers: a model costs its
estimator, its app and one predict thread, not an interpreter with scikit-learn (~150 MB).
This is how MLServer's multi-model serving and KServe ModelMesh pack models.

Protocol
1. The controller writes ONE line on stdin: ``{"token": "<secret>"}``.
2. The host binds an admin port on 127.0.0.1 and prints
   ``{"event": "host", "pid": <pid>, "admin_port": <port>}`` on stdout (flushed).
3. Admin routes (``Authorization: Bearer <token>``, JSON bodies, loopback only):
   - ``POST /load {"spec": <ServeSpec JSON>}``: load, warm up, bind a port, serve; answers
     ``{"port": p}`` once the model answers, or 422 ``{"error": sentence}`` (the model does
     not load: nothing changed), 400 for a bad spec.
   - ``POST /unload {"port": p}``: graceful stop of that model (requests in flight finish).
   - ``POST /probe {"spec": …}``: load and warm up, then discard: proves content loads.
   - ``GET /models``: ``{"models": [{"name", "version", "digest", "port"}, …]}``.
   - ``POST /adopt {"epoch": e}``: the controller ``e`` owns this host from now on: loads
     that carry another epoch are refused (409); answers the models once a load under way
     finished, so that a controller taking over after a crash sees every model there is.
     ``load`` and ``probe`` bodies carry ``"epoch"``.
4. SIGTERM/SIGINT stops every model gracefully and exits 0. A closed stdin changes nothing:
   a host outlives a controller killed with SIGKILL, for its successor to adopt.

Which process a model gets is the runtime's decision (`adapters.local_runtime`): content
that has not loaded yet on this machine is probed in a separate *staging* host first.

**The zygote** (``python -m mlgitops.server.host --zygote FD``): imports everything once, then
forks a host per request on the Unix socket ``FD`` (one message: ``{"token", "log"}`` with the
new host's stdin, stdout and stderr as passed descriptors; the answer ``{"pid": n}``). A forked
host shares the imported libraries' pages with the zygote and every other host copy-on-write
(``gc.freeze`` first, so the collector does not touch them) instead of holding its own
~150 MB, and starts in milliseconds. It runs in a session of its own and follows the protocol
above from step 1; the kernel shows it with the zygote's environment, in which the host
rewrites its ledger token in place (`_own_token`), so ``/proc/<pid>/environ`` names it. The
zygote exits when its stdin closes (its controller is gone); the hosts it forked do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlgitops import errors
from mlgitops.core.serve_spec import ServeSpec
from mlgitops.server import supervisor
from mlgitops.server.standby import emit

log = logging.getLogger("mlgitops.server")

_STOP_GRACE = 10.0


class Superseded(Exception):
    """A request of a controller that no longer owns this host."""


@dataclass
class Hosted:
    """One model version served by this host."""

    spec: ServeSpec
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]


def _config(application: Any) -> uvicorn.Config:
    from mlgitops.adapters import http_server

    return http_server.uvicorn_config(application, loop="none")


def _trim() -> None:
    """Give freed memory back to the system (an unloaded model's arrays)."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Host:
    """The models of this process, by port; load, unload and probe them."""

    def __init__(self) -> None:
        self.models: dict[int, Hosted] = {}
        self._lock = asyncio.Lock()  # one load at a time: loads compete for the same core
        #: the controller that owns this host ("" until one adopts it)
        self.epoch = ""

    async def load(self, spec: ServeSpec, *, epoch: str = "") -> int:
        """Serve ``spec``; its port once it answers. ModelError: it does not load;
        Superseded: the host belongs to another controller now."""
        from mlgitops.server import app

        if spec.worker_count != 1:
            raise ValueError("a hosted model has one worker; serve it in its own process")
        async with self._lock:
            if self.epoch and epoch != self.epoch:
                raise Superseded("another controller owns this host now; load refused")
            runtime = await asyncio.to_thread(supervisor.load_runtime, spec)
            sock = supervisor.bind(spec.host, spec.port)
            port = int(sock.getsockname()[1])
            worker_id = f"h{os.getpid()}-{port}-{secrets.token_hex(3)}"
            server = uvicorn.Server(_config(app.build(runtime, slot=0, worker_id=worker_id)))
            task = asyncio.create_task(server._serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.005)
            if task.done():
                sock.close()
                raise errors.ModelError(f"{spec.name} did not start serving: "
                                        f"{task.exception() or 'its app refused to start'}")
            self.models[port] = Hosted(spec, port, server, task)
            log.info("serving %s version %s on port %d (%d model(s) here)",
                     spec.name, spec.version[:12], port, len(self.models))
            return port

    async def unload(self, port: int) -> bool:
        """Stop the model on ``port`` once its requests finished; False when none is there."""
        hosted = self.models.pop(port, None)
        if hosted is None:
            return False
        hosted.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(hosted.task, timeout=_STOP_GRACE)
        log.info("unloaded %s version %s (port %d)", hosted.spec.name,
                 hosted.spec.version[:12], port)
        del hosted
        _trim()
        return True

    async def probe(self, spec: ServeSpec) -> None:
        """Load and warm ``spec`` up, then drop it (ModelError when it does not load)."""
        async with self._lock:
            runtime = await asyncio.to_thread(supervisor.load_runtime, spec)
            del runtime
            _trim()

    def idle(self) -> asyncio.Lock:
        """Held while a model loads or is probed (``async with`` waits for it to finish)."""
        return self._lock

    def listing(self) -> list[dict[str, Any]]:
        return [{"name": h.spec.name, "version": h.spec.version, "digest": h.spec.digest,
                 "port": port} for port, h in sorted(self.models.items())]

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.unload(p) for p in list(self.models)),
                             return_exceptions=True)


def _answer(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def admin_app(host: Host, token: str) -> Starlette:
    """The control routes (see the module docstring); every answer is JSON."""

    async def guarded(request: Request, op: str) -> Response:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _answer({"error": "missing or wrong bearer token; this port is the host's "
                                     "control channel"}, 401)
        if op == "models":  # after the load under way, if any: a listing says what stays
            async with host.idle():
                return _answer({"models": host.listing(), "pid": os.getpid()})
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            epoch = body.get("epoch") or ""
            if not isinstance(epoch, str):
                raise ValueError("'epoch' must be a string")
            if op == "adopt":
                if not epoch:
                    raise ValueError("'epoch' names the controller that adopts this host")
                async with host.idle():
                    host.epoch = epoch
                    return _answer({"models": host.listing(), "pid": os.getpid()})
            if op == "unload":
                port = body.get("port")
                if not isinstance(port, int):
                    raise ValueError("'port' must be the model's port (an integer)")
                return _answer({"unloaded": await host.unload(port)})
            spec = ServeSpec.from_json(body.get("spec"))
        except ValueError as exc:
            return _answer({"error": f"bad request: {exc}"}, 400)
        started = time.perf_counter()
        try:
            if op == "probe":
                await host.probe(spec)
                return _answer({"probed": True, "seconds": time.perf_counter() - started})
            port = await host.load(spec, epoch=epoch)
        except Superseded as exc:
            return _answer({"error": str(exc)}, 409)
        except (errors.MlgitopsError, ValueError, MemoryError) as exc:
            return _answer({"error": str(exc) or type(exc).__name__}, 422)
        except Exception as exc:  # unexpected content: say so, never take the host down
            log.exception("loading %s failed", spec.name)
            return _answer({"error": f"{spec.name} did not load ({type(exc).__name__}: {exc})"},
                           422)
        return _answer({"port": port, "seconds": time.perf_counter() - started})

    def route(path: str, op: str, method: str) -> Route:
        async def handler(request: Request) -> Response:
            return await guarded(request, op)

        return Route(path, handler, methods=[method])

    return Starlette(routes=[route("/load", "load", "POST"), route("/unload", "unload", "POST"),
                             route("/probe", "probe", "POST"), route("/models", "models", "GET"),
                             route("/adopt", "adopt", "POST")])


async def serve(token: str) -> int:
    """Run the host until SIGTERM/SIGINT; the exit status."""
    host = Host()
    sock = supervisor.bind("127.0.0.1", 0)
    admin = uvicorn.Server(_config(admin_app(host, token)))
    admin.config.lifespan = "off"
    admin_task = asyncio.create_task(admin._serve(sockets=[sock]))
    while not admin.started:
        if admin_task.done():
            emit({"event": "error", "message": "the host's control port did not start"})
            return 2
        await asyncio.sleep(0.005)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    emit({"event": "host", "pid": os.getpid(), "admin_port": sock.getsockname()[1]})
    await stop.wait()
    log.info("stopping %d model(s)", len(host.models))
    await host.stop_all()
    admin.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(admin_task, timeout=_STOP_GRACE)
    return 0


def _read_token() -> str | None:
    line = sys.stdin.readline()
    try:
        value = json.loads(line)
    except ValueError:
        return None
    token = value.get("token") if isinstance(value, dict) else None
    return token if isinstance(token, str) and len(token) >= 16 else None


def _limits() -> None:
    # as in a forked worker: per-request warnings are noise, one BLAS thread per process
    warnings.resetwarnings()
    warnings.simplefilter("ignore")
    with contextlib.suppress(Exception):
        import threadpoolctl  # type: ignore[import-untyped]

        threadpoolctl.threadpool_limits(1)


TOKEN_ENV = "MLGITOPS_SERVER"  # = adapters.local_runtime.processes.TOKEN_ENV


def _own_token(token: str) -> bool:
    """Write ``token`` over the zygote's ``MLGITOPS_SERVER`` value where the kernel reads this
    process's environment from (its initial stack: ``env_start`` of ``/proc/self/stat``), so
    that ``/proc/<pid>/environ`` names this host's ledger record, as for a spawned one.
    False when the old value is missing or not as long."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        env_start = int(fields[47])  # field 50 of proc(5)
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
    except (OSError, IndexError, ValueError):
        return False
    key = TOKEN_ENV.encode() + b"="
    at = 0 if block.startswith(key) else block.find(b"\0" + key) + 1
    if at <= 0 and not block.startswith(key):
        return False
    start = at + len(key)
    end = block.find(b"\0", start)
    value = token.encode()
    if end - start != len(value):
        return False
    ctypes.memmove(env_start + start, value, len(value))
    os.environ[TOKEN_ENV] = token
    return True


def _forked(conn_fd: int, fds: list[int], request: dict[str, Any]) -> None:
    """In the forked child: become a host on the passed descriptors (never returns)."""
    code = 1
    try:
        os.setsid()
        os.close(conn_fd)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdin
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        token = str(request.get("token") or "")
        if not _own_token(token):
            log.warning("could not write the host token into the environment shown by /proc")
        code = _serve_host()
    except BaseException:
        log.exception("a forked host failed")
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def zygote(conn_fd: int) -> int:
    """``--zygote FD``: preload once, then fork a host per request on socket ``FD``.

    Single-threaded (a fork copies only the calling thread: nothing may hold a lock), reaps
    its children through ``SIGCHLD`` ignored, exits when stdin closes.
    """
    import selectors
    import socket

    supervisor.setup_logging()
    supervisor.preload()
    _limits()
    import uvloop  # noqa: F401 - imported once, shared by every host

    conn = socket.socket(fileno=conn_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    gc.collect()
    gc.freeze()
    emit({"event": "zygote", "pid": os.getpid()})
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ)
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj != conn:
                if not os.read(sys.stdin.fileno(), 4096):
                    return 0  # the controller is gone
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 8)
            except OSError:
                return 0
            if not data:
                return 0
            try:
                request = json.loads(data)
                if not isinstance(request, dict) or len(fds) != 3:
                    raise ValueError("a fork request is a JSON object with 3 descriptors")
            except ValueError as exc:
                for fd in fds:
                    os.close(fd)
                conn.sendall(orjson.dumps({"error": str(exc)}))
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _forked(conn.fileno(), fds, request)
            for fd in fds:
                os.close(fd)
            conn.sendall(orjson.dumps({"pid": pid}))


def _serve_host() -> int:
    token = _read_token()
    if token is None:
        emit({"event": "error", "message": 'the first stdin line must be {"token": "<secret of '
                                            'at least 16 characters>"}'})
        return 2
    _limits()
    import uvloop

    gc.collect()
    gc.freeze()
    return uvloop.run(serve(token))


def main() -> int:
    """``python -m mlgitops.server.host``: preload, read the token line, serve
    (``--zygote FD``: fork hosts instead, see the module docstring)."""
    if sys.argv[1:2] == ["--zygote"] and len(sys.argv) == 3:
        return zygote(int(sys.argv[2]))
    supervisor.setup_logging()
    supervisor.preload()
    return _serve_host()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown (seconds with scikit-learn loaded)

