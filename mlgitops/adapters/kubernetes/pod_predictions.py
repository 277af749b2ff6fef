"""The prediction logs of a model's pods (``ports.PredictionSource`` on Kubernetes).

Each pod keeps its prediction log in its ``stats`` emptyDir, bounded as on the embedded
runtime (`server.predictions`). `PodPredictions.sync` lists every pod of the model that has
an address (ready or not, the replaced version's pods kept warm for a rollback included),
asks each for its segments (``GET /v2/models/{name}/predictions``, on the cluster network
only, with the API token when the pods guard their routes with it) and copies the segments
it does not have yet, byte for byte, under ``<root>/<model>/<pod>/predictions/``. Reads
join from that copy (`adapters.prediction_log.Directory`), so the rows of a pod that went away
stay as far as they were copied; the copy keeps, per pod, the rows and the age the pods keep
(``MLGITOPS_PREDICTION_LOG_ROWS`` and ``_MAX_AGE``). The operator syncs before each join,
every few seconds, and just before it deletes a version's pods (`copy_before_stop`); what a pod
writes after that (the rows it still held in memory, at most its flush interval's worth, written
as it stops) is lost with its emptyDir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mlgitops import errors
from mlgitops.adapters import prediction_log
from mlgitops.adapters.kubernetes.api import Cluster
from mlgitops.core import k8s_objects

if TYPE_CHECKING:
    import pandas as pd


class PodPredictions:
    """The prediction logs of the pods of one namespace, copied under ``root``."""

    def __init__(self, cluster: Cluster, namespace: str, root: Path, *, max_rows: int,
                 max_age_seconds: float, token: str | None = None, timeout: float = 10.0,
                 min_interval: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.root = root
        self.max_rows = max_rows
        self.max_age_seconds = max_age_seconds
        self.timeout = timeout
        self.min_interval = min_interval
        """A read syncs first unless the model was synced this recently (seconds)."""
        self.clock = clock
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._synced: dict[str, float] = {}
        self._lock = threading.Lock()
        self.copied = 0
        """Segments copied from pods so far (tests read it)."""

    def sync(self, name: str) -> int:
        """Copy the segments of ``name``'s pods not copied yet, then prune; how many were
        copied. ClusterError when the API server cannot list the pods."""
        pods = [k8s_objects.pod_view(p) for p in self.cluster.pods(self.namespace, name)]
        with self._lock:
            copied = 0
            for pod in pods:
                if pod.endpoint is not None:
                    copied += self._copy(name, pod.name, pod.endpoint)
            self._prune(name)
            self._synced[name] = self.clock()
            self.copied += copied
            return copied

    def _copy(self, name: str, pod: str, endpoint: str) -> int:
        base = f"{endpoint}/v2/models/{name}/predictions"
        try:
            r = httpx.get(base, headers=self._auth, timeout=self.timeout)
            if r.status_code != 200:
                return 0  # not a server of this model (yet), or an older image: nothing to copy
            listed = [str(s.get("name", "")) for s in r.json().get("segments") or ()]
        except (httpx.HTTPError, ValueError, AttributeError):
            return 0  # a pod going away or not up yet: the next sync asks again
        folder = prediction_log.directory(self.root / name / pod)
        have = {s.path.name for s in prediction_log.segments(folder)}
        copied = 0
        for segment in listed:
            if segment in have or not prediction_log.is_segment(segment):
                continue
            try:
                got = httpx.get(f"{base}/{segment}", headers=self._auth, timeout=self.timeout)
            except httpx.HTTPError:
                break
            if got.status_code != 200:
                continue  # pruned on the pod meanwhile
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{segment}.tmp"
            tmp.write_bytes(got.content)
            os.replace(tmp, folder / segment)
            copied += 1
        return copied

    def _prune(self, name: str) -> None:
        """Per pod: drop segments past the age, then the oldest over the row cap (the newest
        stays); a pod's folder goes with its last segment."""
        cutoff = self.clock() - self.max_age_seconds
        try:
            pods = [p for p in (self.root / name).iterdir() if p.is_dir()]
        except FileNotFoundError:
            return
        for pod in pods:
            folder = prediction_log.directory(pod)
            kept = []
            for seg in sorted(prediction_log.segments(folder), key=lambda s: s.newest):
                if seg.newest < cutoff:
                    seg.path.unlink(missing_ok=True)
                else:
                    kept.append(seg)
            total = sum(s.rows for s in kept)
            for seg in kept[:-1]:
                if total <= self.max_rows:
                    break
                seg.path.unlink(missing_ok=True)
                total -= seg.rows
            if not any(folder.glob("seg-*")):
                shutil.rmtree(pod, ignore_errors=True)

    def fingerprint(self, name: str) -> frozenset[str]:
        """What is copied of ``name`` now (its segments' paths): equal, nothing changed."""
        return frozenset(str(p.relative_to(self.root))
                         for p in (self.root / name).glob("*/*/seg-*.parquet"))

    def copy_before_stop(self, name: str) -> None:
        """`sync`, never raising: a version's pods are about to be deleted."""
        with contextlib.suppress(errors.MlgitopsError, OSError):
            self.sync(name)

    def read(self, name: str, *, since: float | None = None,
             ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Every copied row of ``name`` (synced first unless just synced; with the API server
        away, what was copied before)."""
        last = self._synced.get(name)
        if last is None or self.clock() - last >= self.min_interval:
            with contextlib.suppress(errors.ClusterError):  # API server away: the copy
                self.sync(name)
        return prediction_log.Directory(self.root).read(name, since=since, ids=ids)
