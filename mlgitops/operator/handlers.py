"""The kopf entry point: ``mlgitops operator`` (or ``kopf run --standalone -n NS <this file>``).

The only module that imports kopf, and wiring only: every repository the operator serves runs
the controller's own reconciler, loop and drift monitor (`runtime.RepositoryRuntime`) in a
thread of its own. Which repositories: each ``ModelRepository`` resource of the namespace (a
kopf daemon per resource; its status says Ready with the commit reconciled, or Stalled with
why; deleting it deletes its models, behind kopf's finalizer), and the one the flags name
(``--repo-url``), if any. A ModelDeployment's ``mlgitops.io/retry`` annotation, set to a new
value, tries its held version again. A model pod turning Ready wakes the loops of its namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
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
from mlgitops.adapters.kubernetes import MODEL_REPOSITORY, Cluster
from mlgitops.adapters.kubernetes.workloads import LABEL_SOURCE, source_label
from mlgitops.controller import gateway, reports
from mlgitops.core import manifest, source_spec
from mlgitops.core.k8s_labels import LABEL_MANAGED_BY, MANAGER
from mlgitops.operator import ground_truth
from mlgitops.operator.runtime import Repository, RepositoryRuntime
from mlgitops.operator.traffic import Traffic

log = logging.getLogger("mlgitops.operator")

#: Set to any new value to try a held version again (``kubectl annotate md NAME
#: mlgitops.io/retry=$(date +%s) --overwrite``), as ``flux reconcile --force``.
ANNOTATION_RETRY = "mlgitops.io/retry"
_MODELS = (manifest.GROUP, "v1alpha1", manifest.PLURAL)
_REPOSITORIES = (source_spec.GROUP, source_spec.VERSION, source_spec.PLURAL)

_state: dict[str, Any] = {}
_runtimes: dict[str, tuple[RepositoryRuntime, threading.Event, threading.Thread]] = {}
_lock = threading.Lock()


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig (``$KUBECONFIG``)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    cfg = mlgitops_settings.operator()
    settings.posting.enabled = False  # our own Events, one per transition
    # a watch event is handled 20 ms after it arrives, not kopf's 100 ms (a pod ready -> Ready)
    settings.batching.batch_window = 0.02
    # every watch event runs `retry_asked`: kopf's "succeeded" line for each is noise
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    cluster = Cluster.connect(cfg.kubeconfig)
    _state.update(cfg=cfg, cluster=cluster, traffic=Traffic(), traffic_stop=threading.Event())
    _state["traffic"].start(_state["traffic_stop"])  # the gateway's pod addresses
    if cfg.repo_url:
        _start(Repository("flags", cfg.repo_url, cfg.namespace, cfg.branch, cfg.interval_seconds,
                          cfg.secret_name))
        log.info("mlgitops operator: %s (%s) -> namespace %s", cfg.repo_url, cfg.branch,
                 cfg.namespace)
    _state["server"] = _http(cfg, trigger=_wake_all, reports_root=cfg.state_dir / reports.REPORTS)


def _start(repo: Repository) -> RepositoryRuntime:
    runtime = RepositoryRuntime(_state["cluster"], _state["cfg"], repo)
    _state["traffic"].add(repo.key, runtime.router, _state["cluster"], repo.namespace)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run_forever, args=(stop,), daemon=True,
                              name=f"repository-{repo.key}")
    with _lock:
        _runtimes[repo.key] = (runtime, stop, thread)
    thread.start()
    return runtime


def _stop(key: str) -> None:
    with _lock:
        found = _runtimes.pop(key, None)
    if found is not None:
        _state["traffic"].remove(key)
        runtime, stop, thread = found
        runtime.loop.close()
        stop.set()
        thread.join(timeout=30)


def _wake_all(why: str) -> None:
    with _lock:
        for runtime, _, _ in _runtimes.values():
            runtime.loop.trigger(why)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    server = _state.get("server")
    if server is not None:
        server.should_exit = True
    for key in list(_runtimes):
        _stop(key)
    if "traffic_stop" in _state:
        _state["traffic_stop"].set()
    cluster = _state.get("cluster")
    if cluster is not None:
        cluster.close()


# -- ModelRepository: the operator's configuration ---------------------------------------------

class _RepositoryStatus:
    """A ModelRepository's status: Ready with the commit reconciled, or Stalled with why."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, url: str) -> None:
        self.cluster, self.namespace, self.name, self.url = cluster, namespace, name, url
        self.last: tuple[str | None, str | None] | None = None

    def __call__(self, commit: str | None, problem: str | None) -> None:
        if (commit, problem) == self.last or (commit is None and problem is None):
            return
        kept = self.last[0] if self.last is not None else None
        ready = problem is None
        condition = {"type": "Ready", "status": "True" if ready else "False",
                     "reason": "Succeeded" if ready else "Stalled",
                     "message": f"reconciled {str(commit)[:12]}" if ready else str(problem),
                     "lastTransitionTime": _now()}
        stalled = {"type": "Stalled", "status": "False" if ready else "True",
                   "reason": "Succeeded" if ready else "FetchFailed",
                   "message": "" if ready else str(problem), "lastTransitionTime": _now()}
        doc = {"url": self.url, "commit": commit or kept, "conditions": [condition, stalled]}
        try:
            self.cluster.patch_status(self.namespace, self.name, doc, kind=MODEL_REPOSITORY)
            if self.last is None or (self.last[1] is None) != ready:
                cr = self.cluster.get_resource(self.namespace, self.name, kind=MODEL_REPOSITORY)
                if cr is not None:
                    self.cluster.record_event(
                        cr, reason="Ready" if ready else "Stalled",
                        message=condition["message"], type="Normal" if ready else "Warning")
        except errors.MlgitopsError as exc:
            log.warning("status of ModelRepository %s/%s not written: %s", self.namespace,
                        self.name, exc)
            return
        self.last = (commit or kept, problem)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _repository(namespace: str, name: str, uid: str, spec: Mapping[str, Any],
                report: _RepositoryStatus) -> Repository:
    src = source_spec.parse({"apiVersion": source_spec.API_VERSION, "kind": source_spec.KIND,
                             "metadata": {"name": name}, "spec": dict(spec)},
                            source=f"ModelRepository {namespace}/{name}")
    target = src.target_namespace or namespace
    owner = ({"apiVersion": source_spec.API_VERSION, "kind": source_spec.KIND, "name": name,
              "uid": uid} if target == namespace else None)
    return Repository(f"{namespace}.{name}", src.url, target, src.branch, src.interval_seconds,
                      src.secret_name, src.paths, namespace, owner, on_status=report)


@kopf.daemon(*_REPOSITORIES, cancellation_timeout=60)
def repository(body: kopf.Body, name: str, namespace: str | None, stopped: kopf.DaemonStopped,
               **_: Any) -> None:
    """Runs one ModelRepository until it is deleted (or the operator stops); rebuilt when its
    spec changes."""
    namespace = namespace or "default"  # namespaced: kopf always gives one
    key = f"{namespace}.{name}"
    built: dict[str, Any] | None = None
    try:
        while not stopped:
            spec = dict(body.get("spec") or {})
            if spec != built:
                _stop(key)
                built = spec
                report = _RepositoryStatus(_state["cluster"], namespace, name,
                                           str(spec.get("url", "")))
                try:
                    repo = _repository(namespace, name, str(body["metadata"]["uid"]), spec, report)
                except errors.ManifestError as exc:
                    report(None, str(exc))
                else:
                    _start(repo)
                    log.info("ModelRepository %s/%s: %s (%s) -> namespace %s", namespace, name,
                             repo.url, repo.branch, repo.namespace)
            stopped.wait(1.0)
    finally:
        _stop(key)


@kopf.on.delete(*_REPOSITORIES)
def repository_deleted(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> None:
    """Its models go with it (and what they own, by garbage collection)."""
    namespace = namespace or "default"
    _stop(f"{namespace}.{name}")
    cluster: Cluster = _state["cluster"]
    target = spec.get("targetNamespace") or namespace
    selector = f"{LABEL_SOURCE}={source_label(str(spec.get('url', '')))}"
    for cr in cluster.list_resources(target, label_selector=selector):
        cluster.delete_resource(target, str(cr["metadata"]["name"]))


# -- ModelDeployment: a retry asked for --------------------------------------------------------

_retry_seen: dict[str, str | None] = {}
"""uid -> the ModelDeployment's retry annotation when last seen (from the first watch event)."""


@kopf.on.event(*_MODELS)
def retry_asked(name: str, uid: str, annotations: kopf.Annotations, type: str | None,
                labels: kopf.Labels, **_: Any) -> None:
    """Every watch event says the API server answers (a loop backing off passes at once); a new
    value of ``mlgitops.io/retry``: its held version is tried again at once. Read from the watch
    itself (no stored diff base): the first sight of each resource sets the baseline."""
    with _lock:  # the API server answers: a loop backing off from an outage passes at once
        running = [entry[0] for entry in _runtimes.values()]
    for each in running:
        each.loop.answered()
    value = annotations.get(ANNOTATION_RETRY)
    if type == "DELETED":
        _retry_seen.pop(uid, None)
        return
    known = uid in _retry_seen
    before = _retry_seen.get(uid)
    _retry_seen[uid] = value
    if not known or not value or value == before:
        return
    with _lock:
        found = [r for r, _, _ in _runtimes.values()
                 if labels.get(LABEL_SOURCE) == source_label(r.repo.url)]
    for runtime in found:
        runtime.retry([name])


# -- model pods: a rollout completes when its pod is ready, not at the next look ---------------

_ready_pods: set[str] = set()
"""uids of the model pods seen Ready (each wakes the loops once)."""


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER})
def pod_ready(uid: str, namespace: str | None, status: kopf.Status, type: str | None,
              **_: Any) -> None:
    """A model pod of this namespace became Ready: the loops deploying here look at once (a
    rollout waiting for it is marked Ready now, not at its next look); the look stays the
    fallback (a pod of another target namespace, a watch reconnecting)."""
    if type == "DELETED":
        _ready_pods.discard(uid)
        return
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ())
    if not ready or uid in _ready_pods:
        if not ready:
            _ready_pods.discard(uid)
        return
    _ready_pods.add(uid)
    with _lock:
        found = [r for r, _, _ in _runtimes.values() if r.repo.namespace == namespace]
    for runtime in found:
        runtime.loop.trigger("a model pod is ready")


def _http(cfg: mlgitops_settings.OperatorSettings, *, trigger: Callable[[str], None],
          reports_root: Path) -> uvicorn.Server | None:
    """The operator's port, bound on ``cfg.http_host`` (loopback unless told otherwise; the
    installed operator's pod binds 0.0.0.0 for its Service): the GitHub push webhook (HMAC,
    ``MLGITOPS_WEBHOOK_SECRET``) wakes the Git sync at once; ``/reports/`` serves the drift
    reports its revert commits link (private with ``MLGITOPS_REPORTS_PRIVATE``). It forwards
    ``/v2/models/{name}/…`` to a ready pod of the version serving, splitting and mirroring a
    progressive rollout's traffic (`traffic.Traffic`); the model pods' statistics routes are
    not forwarded (the monitor reads them over the cluster network). ``/status`` lists every
    repository's models and ``/v2/health/ready`` waits on each (`_statuses`)."""
    if not cfg.http_port:
        return None
    app = gateway.build(router=_state["traffic"], trigger=trigger, statuses=_statuses,
                        webhook_secret=cfg.webhook_secret, reports_root=reports_root,
                        api_token=cfg.access.api_token,
                        reports_private=cfg.access.reports_private,
                        feedback=_feedback(cfg))
    log.info("operator HTTP port on %s:%d (webhook, reports%s)", cfg.http_host, cfg.http_port,
             "; /status and /reports/ need the API token" if cfg.access.reports_private
             else "; /status needs the API token" if cfg.access.api_token else "")
    config = uvicorn.Config(app, host=cfg.http_host, port=cfg.http_port, log_level="warning",
                            access_log=False, lifespan="on", ws="none",
                            http=http_server.protocol(http_server.Limits()))
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, name="operator-http", daemon=True).start()
    return server


def _statuses() -> list[dict[str, Any]]:
    """Every repository's models as its store knows them, with the namespace each deploys to:
    the port's ``/status`` and ``/v2/health/ready``, and a model's 503 (known, nothing
    serving) against an unknown one's 404."""
    with _lock:
        found = [r for r, _, _ in _runtimes.values()]
    return [{**st.to_dict(), "namespace": r.repo.namespace, "repository": r.repo.key}
            for r in sorted(found, key=lambda r: r.repo.key)
            for _, st in sorted(r.store.models.items())]


def _feedback(cfg: mlgitops_settings.OperatorSettings) -> ground_truth.OperatorFeedback:
    """``POST /v2/models/{name}/feedback`` on the operator's port (labels for the monitors)."""

    def members() -> list[tuple[Any, Any]]:
        with _lock:
            return [(r.router, r.predictions) for r, _, _ in _runtimes.values()]

    return ground_truth.OperatorFeedback(
        ground_truth.labels(cfg.state_dir), ground_truth.Predictions(members),
        webhook_secret=cfg.webhook_secret, api_token=cfg.access.api_token)


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
