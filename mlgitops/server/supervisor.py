"""The server process: bind once, load once, fork workers that share the socket, supervise.

The supervisor imports everything and loads and warms the model *before* forking, so a
worker costs a ``fork()`` (copy-on-write memory), not seconds of imports. Workers share the
listening socket (the kernel spreads connections), each runs uvicorn (uvloop, httptools with
the head, body and size limits of `adapters.http_server`) on the app of `app.build`. A worker
that dies is restarted in its slot (back-off when it keeps dying); SIGTERM or SIGINT stops
every worker gracefully (SIGKILL after a grace period) and the supervisor exits 0. Workers ask
the kernel for SIGTERM when the supervisor dies, so no worker outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import warnings
from typing import IO, TYPE_CHECKING, Any

from mlgitops import errors
from mlgitops.core import trust
from mlgitops.core.serve_spec import ServeSpec
from mlgitops.server.standby import emit

if TYPE_CHECKING:
    from mlgitops.server import app

log = logging.getLogger("mlgitops.server")

_GRACE = 10.0
_PR_SET_PDEATHSIG = 1


_PRELOAD = (
    "numpy",
    "pandas",
    "sklearn",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.tree",
    "sklearn.compose",
    "sklearn.impute",
    "skops.io",
    "threadpoolctl",
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvloop",
    "mlgitops.adapters.http_server",
    "mlgitops.adapters.mlflow_models",
    "mlgitops.adapters.stats_store",
    "mlgitops.server.app",
    # lazy in `mlgitops serve` (a pod's start: gRPC only with --grpc-port); eager here
    "mlgitops.server.grpc_service",
)


def preload() -> None:
    """Import everything serving needs (the slow part: scikit-learn, pandas, uvicorn, ...)."""
    import importlib

    for module in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )


def load_runtime(spec: ServeSpec) -> app.Runtime:
    """Load and warm the model (raises ModelError with a sentence)."""
    import numpy as np

    from mlgitops.adapters import mlflow_models
    from mlgitops.server import app, metrics, predictor, recorder, v2_protocol

    # the policy the controller deployed under (read again on each pass), else the environment's
    policy = None if spec.trust_allow is None else trust.Policy(allow=frozenset(spec.trust_allow))
    model = mlflow_models.load(spec.model_dir, trusted_types=spec.trusted_types, policy=policy)
    baseline = recorder.load_baseline(spec.model_dir, [c.name for c in model.columns])
    # a column whose reference data had missing values takes them at serving time too
    missing_ok = [c.name for c in baseline.columns if c.missing > 0] if baseline else []
    pred = predictor.Predictor(model, missing_ok=missing_ok)
    predictor.configure_sklearn()
    reference = recorder.reference_row(baseline)
    out = None
    try:
        out = np.asarray(pred.predict(pred.example_row(reference)))
    except Exception as exc:
        if reference:
            raise errors.ModelError(
                f"{spec.model_dir}: the model fails to predict a row of its own baseline "
                f"({type(exc).__name__}: {exc}); fix or republish the model"
            ) from exc
        log.warning("warm-up on a synthetic row failed (%s); the first request warms up", exc)
    output_datatype = (
        v2_protocol.v2_datatype(out)
        if out is not None
        else v2_protocol.V2_FOR_TYPE.get(model.info.output_type or "", "FP64")
    )
    if not spec.record_stats:
        baseline = None
    workers = spec.worker_count
    shared = metrics.SharedMetrics(
        workers + 1,
        labels={"name": spec.name, "version": spec.version, "digest": spec.digest},
        workers=workers,
    )
    return app.Runtime(
        spec=spec,
        predictor=pred,
        output_datatype=output_datatype,
        metrics=shared,
        baseline=baseline,
        server_version=_server_version(),
    )


def _server_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlgitops")
    except Exception:
        return "0"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one); RuntimeFailure when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise errors.RuntimeFailure(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or "
            "stop the process using it"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """The gRPC port, bound (not listening) with SO_REUSEPORT so that every worker's gRPC
    server can bind it after the fork; RuntimeFailure when another process uses it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:  # refuse a port in use, even by a socket that shares it with SO_REUSEPORT
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise _port_in_use(host, port, exc) from exc
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _port_in_use(host, port, exc) from exc
    return sock


def _port_in_use(host: str, port: int, exc: OSError) -> errors.RuntimeFailure:
    return errors.RuntimeFailure(
        f"cannot serve gRPC on {host}:{port} ({exc.strerror or exc}); pick another "
        "--grpc-port or stop the process using it"
    )


def run(spec: ServeSpec, *, announce: bool = False) -> int:
    """Bind, load, fork and supervise until SIGTERM/SIGINT; the process exit status.

    With ``announce`` (standby mode), prints the ready/error event line on stdout.
    """
    setup_logging()
    # Importing scikit-learn and loading a model allocate much and free little: the cyclic
    # collector's passes meanwhile are ~10% of a cold start. `Supervisor.loop` freezes it all.
    gc.disable()
    sock = grpc_sock = None
    try:
        # Listen first, load after: a probe (a kubelet's startup probe) that connects while the
        # model loads waits in the listen backlog and is answered the moment a worker accepts,
        # instead of being refused and tried again a probe period later (up to 1 s of a start).
        sock = bind(spec.host, spec.port)
        grpc_sock = None if spec.grpc_port is None else reserve(spec.host, spec.grpc_port)
        runtime = load_runtime(spec)
    except errors.MlgitopsError as exc:
        gc.enable()
        for s in (sock, grpc_sock):
            if s is not None:
                s.close()  # a waiting probe is refused now, not after its timeout
        if announce:
            emit({"event": "error", "message": str(exc)})
        else:
            log.error("%s", exc)
        return 2
    port = sock.getsockname()[1]
    ready: dict[str, Any] = {"event": "ready", "port": port, "pid": os.getpid()}
    if grpc_sock is not None:
        runtime.grpc_port = ready["grpc_port"] = grpc_sock.getsockname()[1]
        log.info("serving the v2 gRPC API on %s:%d", spec.host, runtime.grpc_port)
    if announce:
        emit(ready)
    log.info(
        "serving %s version %s on http://%s:%d with %d worker(s)",
        spec.name,
        spec.version,
        spec.host,
        port,
        spec.worker_count,
    )
    return Supervisor(runtime, sock).loop()  # it enables the collector again


def standby(stdin: IO[str] | None = None) -> int:
    """Run the standby protocol in this process (``python -m mlgitops.server --standby``; the
    protocol is described in `mlgitops.server.standby`)."""
    preload()
    emit({"event": "standby", "pid": os.getpid()})
    line = (stdin or sys.stdin).readline()
    if not line.strip():
        emit(
            {
                "event": "error",
                "message": "stdin closed before a serve spec arrived; nothing to serve",
            }
        )
        return 2
    try:
        spec = ServeSpec.from_json(json.loads(line))
    except ValueError as exc:
        emit({"event": "error", "message": f"the serve spec is invalid: {exc}; fix the JSON line"})
        return 2
    return run(spec, announce=True)


class Supervisor:
    """Forks and restarts workers; stops them all on SIGTERM/SIGINT."""

    def __init__(self, runtime: app.Runtime, sock: socket.socket) -> None:
        self.runtime = runtime
        self.sock = sock
        self.count = runtime.spec.worker_count
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.master_slot = runtime.metrics.slot(self.count)
        self._recent_deaths: list[float] = []

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def loop(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # GC's scans (and its pages shared copy-on-write with the workers). No full collection
        # first: loading leaves ~1,000 unreachable objects, and one pass over everything
        # scikit-learn loaded is ~0.15 s of a start.
        gc.freeze()
        gc.enable()
        for slot in range(self.count):
            self._spawn(slot)
        while not self.stopping:
            self._reap()
            if not self.stopping:
                time.sleep(0.1)
        self._stop_all()
        self.sock.close()
        return 0

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = _worker(self.runtime, self.sock, slot)
            except BaseException:
                log.exception("worker %d crashed", slot)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.children[pid] = slot

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is None or self.stopping:
                continue
            log.warning("worker %d (pid %d) died (%s); restarting it", slot, pid, _describe(status))
            now = time.monotonic()
            self._recent_deaths = [t for t in self._recent_deaths if now - t < 10.0] + [now]
            if len(self._recent_deaths) > 3 * self.count:
                time.sleep(1.0)  # crash loop: back off
            self.master_slot.restarted()
            self._spawn(slot)

    def _stop_all(self) -> None:
        log.info("stopping %d worker(s)", len(self.children))
        started = time.monotonic()
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _GRACE
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.02)
        for pid in list(self.children):
            log.warning("worker pid %d did not stop within %.0fs; killing it", pid, _GRACE)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()
        log.info("stopped in %.2fs", time.monotonic() - started)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _worker(runtime: app.Runtime, sock: socket.socket, slot: int) -> int:
    """Body of a forked worker: uvicorn on the shared socket until told to stop."""
    import uvicorn

    from mlgitops.adapters import http_server
    from mlgitops.server import app

    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died between fork and prctl
        return 0
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Per-request warnings are not actionable, and scikit-learn re-installs the warning
    # filters around every estimator of an ensemble on every predict: one filter keeps that
    # cheap (a 50-tree forest predicts ~20% faster).
    warnings.resetwarnings()
    warnings.simplefilter("ignore")
    with contextlib.suppress(Exception):
        import threadpoolctl  # type: ignore[import-untyped]

        threadpoolctl.threadpool_limits(1)
    worker_id = f"{slot}-{os.getpid()}-{secrets.token_hex(3)}"
    application = app.build(runtime, slot=slot, worker_id=worker_id)
    config = http_server.uvicorn_config(application, loop="uvloop")
    server = uvicorn.Server(config)
    # uvicorn re-raises a captured signal after a graceful stop; make that a no-op.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    server.run(sockets=[sock])
    return 0
