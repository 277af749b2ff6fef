"""The drift monitor in the operator: the controller's own `controller.monitor.Monitor`, fed by pods.

The same windows, policy, attribution and path-scoped revert commit as the embedded controller;
only the ports differ:

- live statistics (`PodStats`, a ``LiveStatsSource``): ``GET /v2/models/{name}/stats`` of every
  ready pod of the serving version, merged (each pod's workers counted from their own cursor);
- what serves (`PodHandle` in a `Router`): the custom resources' ``status.servedCommit``;
- status and events (`ResourceStore`, a ``StatusSink``): the verdict goes to the resource's
  ``status.drift``, and reverts, alerts and rollbacks become Kubernetes Events (the operator's
  local ``state.json`` keeps drift histories and pending reverts across passes);
- decisions (`controller.sinks`): the same records as the embedded controller's — every window,
  revert, deploy (a new ``status.servedCommit``) and hold (a resource annotated with a held
  commit) — go to the decision pages the operator's port serves, the outgoing webhook, the
  Evidently workspace and the MLflow store under its state directory.

No duplicate revert after a restart: the revert writer refuses a version the remote already
reverts (its ``Mlgitops-Reverts`` trailer), and a revert recorded as pending is resolved from Git.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from mlgitops import errors, settings, ui
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters import stats_store
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import monitor as monitor_mod
from mlgitops.controller import reconciler as rec
from mlgitops.controller import reports, sinks
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.core import decisions, k8s_objects, stats
from mlgitops.core.status import ModelStatus
from mlgitops.operator import sync

#: Monitor events that become Kubernetes Events on the model's resource (type by kind).
K8S_EVENTS = {"Reverted": "Warning", "DriftAlert": "Warning", "RevertFailed": "Warning",
              "RolledBack": "Normal", "RevertSkipped": "Normal"}


@dataclass(frozen=True)
class PodHandle:
    """A serving version as the operator sees it: its Service's address, not a process."""

    name: str
    version: str
    digest: str
    url: str

    @property
    def key(self) -> Hashable:
        return (self.name, self.version)

    @property
    def where(self) -> str:
        return self.url

    @property
    def label(self) -> str:
        return f"Deployment {k8s_objects.object_name(self.name)}"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest, "url": self.url}


class PodStats:
    """Live statistics of a version, read from the stats route of each of its ready pods.

    Each pod is asked with the entity tag of its last answer: an idle pod answers 304 with no
    body, and when no pod's answer changed the merged snapshot is not built again (the monitor
    reads every model every second; most of a fleet is idle).
    """

    def __init__(self, cluster: k8s.Cluster, namespace: str, *, timeout: float = 5.0,
                 token: str | None = None) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        """The API token, for pods that guard their stats route with it."""
        self._answers: dict[str, tuple[str, str, str, Any]] = {}
        """pod name -> (model, version, ETag, export document) of its last 200 answer."""
        self._lock = threading.Lock()  # the monitor's loop and its report thread both read
        self._merged = stats_store.SnapshotCache()
        self.fetched = 0
        """Stats bodies received (200 answers); 304 answers are not counted (tests read it)."""

    def read(self, name: str, version: str, *,
             baseline: stats.Baseline | None = None) -> stats_store.Snapshot:
        exports: dict[str, Any] = {}
        tags: list[tuple[str, str | None]] = []
        pods = [p for p in self.cluster.list_pods(self.namespace, name)
                if p.commit == version and p.ready and p.endpoint is not None]
        for pod in pods:
            with self._lock:
                known = self._answers.get(pod.name)
            if known is not None and known[:2] != (name, version):
                known = None
            try:
                r = httpx.get(f"{pod.endpoint}/v2/models/{name}/stats", timeout=self.timeout,
                              headers={**self._auth, **({"If-None-Match": known[2]} if known else {})})
            except httpx.HTTPError:
                continue  # a pod going away: the next read counts it again from its cursor
            if r.status_code == 304 and known is not None:
                exports[pod.name] = known[3]
                tags.append((pod.name, known[2]))
            elif r.status_code == 200:
                doc, tag = r.json(), r.headers.get("etag")
                exports[pod.name] = doc
                tags.append((pod.name, tag))
                with self._lock:
                    self.fetched += 1
                    if tag:
                        self._answers[pod.name] = (name, version, tag, doc)
                    else:
                        self._answers.pop(pod.name, None)
        with self._lock:
            live = {p.name for p in pods}
            for gone in [n for n, a in self._answers.items() if a[0] == name and n not in live]:
                self._answers.pop(gone, None)  # a pod of this model gone (or of another version)
        source = tuple(sorted(tags, key=lambda t: t[0]))
        if any(tag is None for _, tag in source):  # an answer without a tag: nothing to compare
            return stats_store.from_exports(exports, version=version, baseline=baseline)
        snap = self._merged.get(name, version, source=source, baseline=baseline)
        if snap is None:
            snap = stats_store.from_exports(exports, version=version, baseline=baseline)
            self._merged.put(name, version, snap, source=source, baseline=baseline)
        return snap

    def window(self, current: stats_store.Snapshot, since: stats_store.Snapshot | None, *,
               version: str, baseline: stats.Baseline) -> stats.LiveStats:
        return stats_store.window(current, since, version=version, baseline=baseline)

    def serves_elsewhere(self, name: str, version: str) -> bool:
        return any(p.commit == version for p in self.cluster.list_pods(self.namespace, name))


class ResourceStore(state_mod.Store):
    """`state.Store` on the operator's disk, mirroring drift verdicts and monitor events to the
    custom resource (``status.drift``) and to Kubernetes Events."""

    def __init__(self, state_dir: Path, cluster: k8s.Cluster, namespace: str) -> None:
        super().__init__(state_dir)
        self.cluster = cluster
        self.namespace = namespace

    def set(self, value: ModelStatus) -> None:
        super().set(value)
        if value.drift is not None:
            try:
                self.cluster.patch_status(self.namespace, value.name, {"drift": value.drift})
            except errors.MlgitopsError as exc:
                ui.console.print(f"[yellow]drift status of {value.name} not written:[/] {exc}")

    def event(self, kind: str, *, model: str, commit: str | None, message: str, **extra: Any) -> None:
        super().event(kind, model=model, commit=commit, message=message, **extra)
        if kind not in K8S_EVENTS:
            return
        try:
            cr = self.cluster.get_resource(self.namespace, model)
            if cr is not None:
                self.cluster.record_event(cr, reason=kind, message=message, type=K8S_EVENTS[kind])
        except errors.MlgitopsError as exc:
            ui.console.print(f"[yellow]event {kind} of {model} not recorded:[/] {exc}")


class OperatorMonitor:
    """Runs `controller.monitor.Monitor` over the namespace's serving ModelDeployments."""

    def __init__(self, cluster: k8s.Cluster, cfg: settings.OperatorSettings, *,
                 trigger: Callable[[str], None], interval: float = 1.0) -> None:
        state = cfg.state_dir / "monitor"
        self.cluster = cluster
        self.namespace = cfg.namespace
        self.store = ResourceStore(state, cluster, cfg.namespace)
        self.source = source_mod.Source(state, url=cfg.repo_url, branch=cfg.branch, policy=cfg.trust)
        self.router: rec.Router[PodHandle] = rec.Router()
        self.public_url = cfg.public_url
        self.decisions = sinks.dispatcher(state, clone=lambda: self.source.clone,
                                          notify=cfg.notify, track=cfg.tracking)
        self.monitor: monitor_mod.Monitor[PodHandle] = monitor_mod.Monitor(
            store=self.store, router=self.router, source=self.source, state_dir=state,
            url=cfg.repo_url, trigger=trigger, interval=interval, branch=cfg.branch,
            live_stats=PodStats(cluster, cfg.namespace, token=cfg.access.api_token),
            report_base=cfg.public_url,
            dispatcher=self.decisions,
        )
        self.reports_root = state / reports.REPORTS
        self._rollouts: set[tuple[decisions.Kind, str, str]] | None = None
        """(kind, model, version) of the deploys and holds already recorded (read from the log
        once: a restarted operator records none twice)."""

    def refresh(self) -> None:
        """Git's head, and what serves: every resource whose status says a version is Ready."""
        self.store.head = self.source.sync()
        seen = set()
        for cr in self.cluster.list_resources(self.namespace):
            name = str(cr["metadata"]["name"])
            self._held(name, cr)
            st = cr.get("status") or {}
            served, digest = st.get("servedCommit"), st.get("servedDigest")
            if not served or not digest:
                continue
            seen.add(name)
            old = self.router.get(name)
            if old is not None and old.version == served:
                continue
            handle = PodHandle(name, str(served), str(digest),
                               f"http://{k8s_objects.object_name(name)}.{self.namespace}.svc")
            self.router.set(name, handle)
            with self.store._lock:
                self.store.set(replace(self.store.status(name), served_commit=str(served)))
            self._rollout(decisions.Kind.DEPLOY, name, str(served), digest=str(digest),
                          previous=old.version if old is not None else None,
                          verdict=(f"{handle.label} serves {str(served)[:12]}: every pod of the "
                                   "version is Ready"))
            self.monitor.on_deployed(name, handle)
        for name in set(self.router.routes) - seen:
            self.router.drop(name)

    def _held(self, name: str, cr: dict[str, Any]) -> None:
        """A resource Git sync held at its last good version: one hold record per held commit."""
        notes = cr["metadata"].get("annotations") or {}
        held = notes.get(sync.ANNOTATION_HELD_COMMIT)
        if held:
            serving = self.router.get(name)
            self._rollout(decisions.Kind.HOLD, name, str(held), digest=None,
                          previous=serving.version if serving is not None else None,
                          verdict=str(notes.get(sync.ANNOTATION_HELD_REASON) or "the manifest is invalid"))

    def _rollout(self, kind: decisions.Kind, name: str, version: str, *, digest: str | None,
                 previous: str | None, verdict: str) -> None:
        if self._rollouts is None:
            self._rollouts = {(d.kind, d.model, str(d.version))
                              for d in decision_log.read(self.reports_root)
                              if d.kind in (decisions.Kind.DEPLOY, decisions.Kind.HOLD)}
        if (kind, name, version) in self._rollouts:
            return
        self._rollouts.add((kind, name, version))
        self.decisions.submit(decisions.of_rollout(
            kind=kind, model=name, at=time.time(), version=version, previous_version=previous,
            verdict=verdict, digest=digest, base_url=self.public_url))

    def run(self, stop: threading.Event) -> None:
        sinks.start(self.decisions)
        self.monitor.start_reports()
        try:
            self.monitor.writer.prepare()
        except errors.MlgitopsError as exc:
            ui.console.print(f"[yellow]drift monitor:[/] cannot prepare its git clone yet: {exc}")
        try:
            while not stop.is_set():
                try:
                    self.refresh()
                    if not self.monitor._recovered:
                        self.monitor.recover()
                    self.monitor.tick()
                except Exception as exc:  # the monitor outlives any one bad pass
                    ui.console.print(f"[red]drift monitor pass failed:[/] "
                                     f"{type(exc).__name__}: {exc}")
                stop.wait(self.monitor.interval)
        finally:
            sinks.stop(self.decisions)
