"""The kopf entry point: ``mlgitops operator`` (or ``kopf run --standalone -n NS <this file>``).

The only module that imports kopf. Handlers are thin: `sync.GitSync` keeps one ModelDeployment
per manifest (a background thread, every ``interval`` seconds), `deploy.Deployer` reconciles
each ModelDeployment on create, update, resume and on a timer while a rollout progresses.
Settings come from `mlgitops.settings.operator` (the ``mlgitops operator`` flags set them).
No finalizers: the Deployment and Service are owned by the resource and garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kopf
import uvicorn

from mlgitops import errors
from mlgitops import settings as mlgitops_settings
from mlgitops.adapters import http_server
from mlgitops.adapters import kubernetes as k8s
from mlgitops.controller import gateway
from mlgitops.controller import reconciler as rec
from mlgitops.controller import source as source_mod
from mlgitops.core import manifest
from mlgitops.operator import deploy, sync
from mlgitops.operator import monitor as monitor_mod

log = logging.getLogger("mlgitops.operator")

_state: dict[str, Any] = {}
_lock = threading.Lock()


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig (``$KUBECONFIG``)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
    cfg = mlgitops_settings.operator()
    settings.posting.enabled = False  # our own Events, one per transition
    cluster = k8s.Cluster.connect(cfg.kubeconfig)
    source = source_mod.Source(cfg.state_dir, url=cfg.repo_url, branch=cfg.branch,
                               policy=cfg.trust)
    stop, wake = threading.Event(), threading.Event()
    git_sync = sync.GitSync(cluster, source, namespace=cfg.namespace)
    drift = monitor_mod.OperatorMonitor(cluster, cfg, trigger=lambda why: wake.set())
    threads = [
        threading.Thread(target=_sync_loop, args=(git_sync, cfg.interval_seconds, stop, wake, logger),
                         name="git-sync", daemon=True),
        threading.Thread(target=drift.run, args=(stop,), name="drift-monitor", daemon=True),
    ]
    server = _http(cfg, trigger=lambda why: wake.set(), reports_root=drift.reports_root)
    _state.update(cfg=cfg, cluster=cluster, deployer=deploy.Deployer(cluster, source, cfg),
                  stop=stop, wake=wake, threads=threads, server=server)
    for thread in threads:
        thread.start()
    logger.info(f"mlgitops operator: {cfg.repo_url} ({cfg.branch}) -> namespace {cfg.namespace}")



def _sync_loop(git_sync: sync.GitSync, interval: float, stop: threading.Event,
               wake: threading.Event, logger: Any) -> None:
    backoff = interval
    while not stop.is_set():
        with _lock:  # the clone is shared with the deployer
            outcome, problem = sync.safe_sync(git_sync)
        if problem is not None:
            logger.warning(f"git sync failed, retrying in {backoff:.0f}s: {problem}")
            wake.wait(backoff)
            wake.clear()
            backoff = min(backoff * 2, 300.0)
            continue
        backoff = interval
        if outcome is not None and (outcome.deleted or outcome.held):
            logger.info(f"git sync at {str(outcome.head)[:12]}: held {sorted(outcome.held)}, "
                        f"deleted {outcome.deleted}")
        wake.wait(interval)  # a revert wakes it at once
        wake.clear()


def _http(cfg: mlgitops_settings.OperatorSettings, *, trigger: Callable[[str], None],
          reports_root: Path) -> uvicorn.Server | None:
    """The operator's port, bound on ``cfg.http_host`` (loopback unless told otherwise; the
    installed operator's pod binds 0.0.0.0 for its Service): the GitHub push webhook (HMAC,
    ``MLGITOPS_WEBHOOK_SECRET``) wakes the Git sync at once; ``/reports/`` serves the drift
    reports its revert commits link (private with ``MLGITOPS_REPORTS_PRIVATE``). It forwards
    nothing to the model pods: the monitor reads their statistics over the cluster network."""
    if not cfg.http_port:
        return None
    app = gateway.build(router=rec.Router(), trigger=trigger, statuses=list,
                        webhook_secret=cfg.webhook_secret, reports_root=reports_root,
                        api_token=cfg.access.api_token,
                        reports_private=cfg.access.reports_private)
    log.info("operator HTTP port on %s:%d (webhook, reports%s)", cfg.http_host, cfg.http_port,
             "; /status and /reports/ need the API token" if cfg.access.reports_private
             else "; /status needs the API token" if cfg.access.api_token else "")
    config = uvicorn.Config(app, host=cfg.http_host, port=cfg.http_port, log_level="warning",
                            access_log=False, lifespan="on", ws="none",
                            http=http_server.protocol(http_server.Limits()))
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, name="operator-http", daemon=True).start()
    return server


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    server = _state.get("server")
    if server is not None:
        server.should_exit = True
    stop, wake = _state.get("stop"), _state.get("wake")
    if stop is not None and wake is not None:
        stop.set()
        wake.set()
    for thread in _state.get("threads", ()):
        thread.join(timeout=10)
    cluster = _state.get("cluster")
    if cluster is not None:
        cluster.close()


def _reconcile(body: Mapping[str, Any]) -> None:
    deployer: deploy.Deployer = _state["deployer"]
    with _lock:  # one model at a time: the source clone is shared
        try:
            result = deployer.reconcile(body)
        except errors.Transient as exc:
            raise kopf.TemporaryError(str(exc), delay=10) from exc
        except errors.Stalled as exc:
            raise kopf.PermanentError(str(exc)) from exc
    if result.retry is not None and result.phase == "Waiting":
        raise kopf.TemporaryError(result.message, delay=result.retry)


_RESOURCE = (manifest.GROUP, "v1alpha1", manifest.PLURAL)


@kopf.on.resume(*_RESOURCE)
@kopf.on.create(*_RESOURCE)
@kopf.on.update(*_RESOURCE)
def on_change(body: kopf.Body, **_: Any) -> None:
    _reconcile(body)


@kopf.timer(*_RESOURCE, interval=deploy.ROLLOUT_POLL, initial_delay=deploy.ROLLOUT_POLL)
def on_timer(body: kopf.Body, **_: Any) -> None:
    _reconcile(body)


def run(namespace: str) -> None:
    """Run the operator in this process until SIGINT/SIGTERM (standalone: no peering)."""
    kopf.run(standalone=True, namespaces=[namespace], clusterwide=False)


@contextlib.contextmanager
def running(namespace: str, *, timeout: float = 60.0) -> Iterator[None]:
    """Run the operator in a thread of this process (standalone, one namespace) for a block.

    Settings come from the ``MLGITOPS_OPERATOR_*`` environment as for `run`; the kubeconfig from
    ``$KUBECONFIG``. Leaving the block stops it (kopf's cleanup handlers run) and joins the thread.
    """
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []
    quiet = _NoSignalsWarning()  # expected in a thread: the stop flag replaces the signals
    logging.getLogger("kopf._core.reactor.running").addFilter(quiet)

    def main() -> None:
        try:
            asyncio.run(kopf.operator(
                registry=kopf.get_default_registry(), standalone=True, clusterwide=False,
                namespaces=[namespace], stop_flag=stop, ready_flag=ready,
            ))  # fmt: skip
        except BaseException as exc:
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout) or failure:
            raise errors.RuntimeFailure(
                f"the operator did not start within {timeout:.0f} s"
                + (f": {failure[0]!r}" if failure else "")
            )
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        logging.getLogger("kopf._core.reactor.running").removeFilter(quiet)
    if thread.is_alive():
        raise errors.RuntimeFailure("the operator did not stop within 60 s")
    if failure:
        raise errors.RuntimeFailure(f"the operator stopped with {failure[0]!r}")


class _NoSignalsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "OS signals are ignored" not in record.getMessage()
