"""One model repository on Kubernetes, wired: the controller's own reconciler, loop and monitor.

The same `controller.reconciler.Reconciler`, `controller.loop.Loop` and
`controller.monitor.Monitor` as ``mlgitops up``, with the Kubernetes runtime behind the ports:
`adapters.kubernetes.KubernetesWorkloads` (Deployments, Services, one ModelDeployment per model
Git declares), `PodStats` (the pods' stats route) and `ResourceStatus` (the resources' status
and Events). Desired state is computed once per commit, from Git, by `controller.source.Source`.
A `ModelRepository` resource, or the operator's flags, says which repository.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlgitops import errors, logs, settings
from mlgitops.adapters.kubernetes import Cluster
from mlgitops.adapters.kubernetes.pod_stats import PodStats
from mlgitops.adapters.kubernetes.resource_status import ResourceStatus
from mlgitops.adapters.kubernetes.routes import Routes
from mlgitops.adapters.kubernetes.workloads import KubernetesWorkloads, PodHandle, Renderer
from mlgitops.controller import loop as loop_mod
from mlgitops.controller import monitor as monitor_mod
from mlgitops.controller import reconciler as rec
from mlgitops.controller import rollouts, sinks
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.core import k8s_objects as ko
from mlgitops.core import plan, source_spec
from mlgitops.operator import ground_truth, progressive
from mlgitops.server import fetch

log = logging.getLogger("mlgitops.operator")
ALLOWED_SECRET_KEYS = (source_spec.SECRET_USERNAME, source_spec.SECRET_PASSWORD,
                       source_spec.SECRET_SSH_KEY, source_spec.SECRET_KNOWN_HOSTS)


@dataclass(frozen=True)
class Repository:
    """Which repository, where its models go, and how often to look (a ModelRepository, or
    the operator's flags)."""

    key: str
    """Names its state directory: ``flags``, or ``<namespace>.<name>`` of the resource."""
    url: str
    namespace: str
    branch: str = "main"
    interval_seconds: float = 10.0
    secret_name: str | None = None
    paths: tuple[str, ...] = ()
    """Globs of manifest paths it deploys (``manifests/credit-*.yaml``); empty: every one."""
    secret_namespace: str | None = None
    """Where ``secret_name`` is (the ModelRepository's namespace; default: ``namespace``)."""
    owner: Mapping[str, Any] | None = None
    """An ownerReference to the ModelRepository, when its models live in its namespace."""
    on_status: Callable[[str | None, str | None], None] = field(
        default=lambda commit, problem: None, compare=False)
    """Told after every pass: the commit reconciled, or why the pass failed."""


def run_id() -> str:
    return uuid.uuid4().hex[:12]


class RepositoryRuntime:
    """Everything one repository runs; `run(stop)` blocks until ``stop`` is set."""

    def __init__(self, cluster: Cluster, cfg: settings.OperatorSettings, repo: Repository) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.repo = repo
        self.state_dir = cfg.state_dir if repo.key == "flags" else (
            cfg.state_dir / "repositories" / re.sub(r"[^A-Za-z0-9._-]", "_", repo.key))
        self.source = source_mod.Source(self.state_dir, url=repo.url, branch=repo.branch,
                                        policy=cfg.trust, paths=repo.paths)
        options = ko.PodOptions(image=cfg.image, trust_allow=tuple(sorted(cfg.trust.allow)),
                                progress_deadline_seconds=cfg.progress_deadline_seconds,
                                grpc_port=cfg.grpc_port, requests=dict(cfg.pod_requests),
                                limits=dict(cfg.pod_limits),
                                api_token_secret=cfg.api_token_secret,
                                env=ground_truth.pod_env())
        self.mirror = ResourceStatus(cluster, repo.namespace, log=log.warning)
        self.workloads = KubernetesWorkloads(
            cluster, repo.namespace, url=repo.url, owner=repo.owner, record=self.mirror.record,
            seen=self.mirror.seen,
            render=Renderer(ko.Source(repo.url, secret_name=repo.secret_name), options,
                            admits=lambda t: self.source.policy.admits(t)))
        self.mirror.selector = self.workloads.selector
        self.store = state_mod.Store(self.state_dir, mirror=self.mirror)
        self.store.listeners.append(self.mirror.event)
        self.router: rec.Router[PodHandle] = rec.Router()
        self.run = run_id()
        trust = hashlib.sha256(",".join(sorted(cfg.trust.allow)).encode()).hexdigest()[:12]
        # progressive: a rollout's candidate runs beside the stable version (`progressive`)
        self.reconciler = progressive.Reconciler(
            routes=Routes(cluster, repo.namespace),
            source=self.source, workloads=self.workloads, store=self.store, router=self.router,
            endpoint=self.workloads.endpoint, drain_seconds=0.0,
            inputs=lambda: f"{trust}:{self.run}", declare=self.workloads.declare,
            keep_previous_seconds=math.inf)  # each manifest's scaleDownDelaySeconds says
        # a rollback to a version kept warm: its Service selects its pods again
        self.reconciler.on_deployed.append(self.workloads.route)
        self.decisions = sinks.dispatcher(self.state_dir, clone=lambda: self.source.clone,
                                          notify=cfg.notify, track=cfg.tracking)
        self.store.listeners.append(rollouts.RolloutRecorder(
            self.state_dir, self.decisions, self.router, base_url=lambda: cfg.public_url))
        # ground truth: the pods' prediction logs, copied; the labels of the operator's port
        self.predictions = ground_truth.pod_predictions(cluster, repo.namespace, self.state_dir,
                                                        token=cfg.access.api_token)
        self.labels = ground_truth.labels(cfg.state_dir)
        self.workloads.before_stop.append(self.predictions.copy_before_stop)
        self.loop = loop_mod.Loop(self.reconciler, poll_seconds=repo.interval_seconds,
                                  report=self._passed, failed=self._failed, max_backoff=300.0)
        self.monitor: monitor_mod.Monitor[PodHandle] = monitor_mod.Monitor(
            store=self.store, router=self.router, source=self.source, state_dir=self.state_dir,
            url=repo.url, trigger=self.loop.trigger, branch=repo.branch,
            report_base=cfg.public_url, dispatcher=self.decisions,
            live_stats=PodStats(cluster, repo.namespace, token=cfg.access.api_token),
            predictions=self.predictions, labels=self.labels)
        self.reconciler.on_deployed.append(self.monitor.on_deployed)
        self._said: dict[str, tuple[plan.Action, str | None, str]] = {}
        self._api_away = False

    def _passed(self, outcome: rec.Outcome) -> None:
        for step in outcome.steps:
            said = (step.action, step.desired.version if step.desired else None, step.reason)
            if self._said.get(step.name) == said:
                continue
            self._said[step.name] = said
            if step.action.changes_live or step.action is plan.Action.HOLD:
                version = step.desired.version if step.desired else None
                log.info("%s: %s at %s — %s", step.name, step.action.value,
                         (version or "-")[:12], step.reason,
                         extra=logs.fields(model=step.name, commit=version,
                                           namespace=self.repo.namespace,
                                           event=step.action.value))
        self.repo.on_status(outcome.head, None)

    def _failed(self, exc: errors.MlgitopsError, wait: float) -> None:
        log.warning("%s: reconcile failed, retrying in %.0f s: %s", self.repo.key, wait, exc)
        self._api_away = isinstance(exc, errors.ClusterError)
        self.repo.on_status(None, str(exc))

    def _watch_api(self, stop: threading.Event) -> None:
        """While passes fail because the API server is away, ask it every second whether it
        answers again; when it does, the loop's back-off is reset (`Loop.answered`): a commit
        pushed during the outage reaches its ModelDeployment at once, not after the back-off
        or kopf's own reconnect back-off."""
        while not stop.wait(1.0):
            if self.loop.failing and self._api_away and self.cluster.answers():
                self._api_away = False
                self.loop.answered()

    def retry(self, names: list[str]) -> None:
        """Try the held versions of ``names`` again (the ``mlgitops.io/retry`` annotation)."""
        self.reconciler.retry(names)
        self.loop.trigger("retry")

    def credentials(self) -> None:
        """The Git credentials of ``secretRef`` for the operator's own fetches: written under
        its state directory (owner-only) and given to git as `fetch.credential_options` does
        in the pods. ConfigError when the Secret is missing or holds neither kind."""
        if not self.repo.secret_name:
            return
        where = self.repo.secret_namespace or self.repo.namespace
        data = self.cluster.read_secret(where, self.repo.secret_name)
        if data is None:
            raise errors.ConfigError(
                f"the Git credentials Secret {where}/{self.repo.secret_name} does not exist; "
                "create it (username and password, or ssh-privatekey and known_hosts)")
        folder = self.state_dir / "credentials"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for key, value in data.items():
            if key in ALLOWED_SECRET_KEYS:
                path = folder / key
                path.write_bytes(value)
                path.chmod(0o600)
        self.source.git_options = tuple(fetch.credential_options(folder, folder))

    def run_forever(self, stop: threading.Event) -> None:
        """Adopt what serves, then reconcile and watch for drift until ``stop`` is set."""
        self.loop.stop = stop
        sinks.start(self.decisions)
        watcher = threading.Thread(target=self.monitor.run, args=(stop,), daemon=True,
                                   name=f"drift-{self.repo.key}")
        try:
            while not stop.is_set():
                try:
                    self.credentials()
                    self.reconciler.adopt()
                    break
                except errors.MlgitopsError as exc:
                    self._failed(exc, 2.0)
                    stop.wait(2.0)
            watcher.start()
            threading.Thread(target=self._watch_api, args=(stop,), daemon=True,
                             name=f"api-{self.repo.key}").start()
            threading.Thread(target=self.reconciler.keep_routes, args=(stop,), daemon=True,
                             name=f"routes-{self.repo.key}").start()  # HTTPRoutes follow steps
            threading.Thread(target=ground_truth.publish_performance, daemon=True,
                             args=(self.cluster, self.repo.namespace, self.router,
                                   self.predictions, self.labels, stop),
                             name=f"performance-{self.repo.key}").start()
            self.loop.run()
        finally:
            stop.set()
            self.loop.wake.set()
            if watcher.is_alive():
                watcher.join(timeout=10)
            sinks.stop(self.decisions)

