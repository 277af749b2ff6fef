"""Live statistics of a model's pods (``ports.LiveStatsSource``): every ready pod's stats route.

``GET /v2/models/{name}/stats`` of each ready pod of the serving version, on the cluster
network only, merged (each pod's workers counted from their own cursor). Idle pods answer 304
to the ETag of their last answer, and the merged snapshot is reused.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from mlgitops.adapters import stats_store
from mlgitops.adapters.kubernetes.api import Cluster
from mlgitops.core import stats


class PodStats:
    """Live statistics of a version, read from the stats route of each of its ready pods.

    Each pod is asked with the entity tag of its last answer: an idle pod answers 304 with no
    body, and when no pod's answer changed the merged snapshot is not built again (the monitor
    reads every model every second; most of a fleet is idle).
    """

    def __init__(self, cluster: Cluster, namespace: str, *, timeout: float = 5.0,
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
        runs = {p.name: p.runs for p in pods if p.runs and p.runs != version}
        exports = {pod: _as_version(doc, runs[pod], version) if pod in runs else doc
                   for pod, doc in exports.items()}
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


def _as_version(doc: Any, runs: str, version: str) -> Any:
    """A kept pod's export as ``version``'s: a replicas-only commit left the pod of its
    template running, so its workers, stamped with the commit it started at, serve ``version``."""
    if not isinstance(doc, dict):
        return doc
    workers = []
    for item in doc.get("workers") or ():
        wdoc = item.get("worker") if isinstance(item, dict) else None
        if isinstance(wdoc, dict) and str(wdoc.get("version", "")) == runs:
            item = {**item, "worker": {**wdoc, "version": version}}
        workers.append(item)
    return {**doc, "workers": workers}
