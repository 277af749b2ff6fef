"""A test harness that plays the kubelet (and the scheduler's one act, binding) for one namespace.

The test cluster has no kubelet and no scheduler, so pods would stay Pending forever. `Kubelet`
does for pods what those two do, with real processes and nothing else faked:

- **binds** every unscheduled pod of its namespace to node ``fake-node`` by POSTing a Binding
  (``pods/binding``), as the scheduler would. The operator's Deployments need no test-only
  ``nodeName``: what the tests apply is what a cluster gets.
- **runs** each bound pod: its volumes become directories (``emptyDir``; ``secret`` and
  ``configMap`` written from the API, as the kubelet mounts them), its init containers run in
  order to completion (restarted with back-off on failure, ``CrashLoopBackOff``), then its
  containers start. A container is its ``command`` + ``args`` run as a local process: ``mlgitops``
  is the venv's real command, mount paths are rewritten to the pod's directories, ``$(VAR)`` is
  expanded from its env, and a listen address of ``0.0.0.0`` becomes the pod's own loopback
  address (127.X.Y.N, unique per pod; the pod's network namespace). Its env is only what the pod
  spec gives (plus PATH, HOME and HOSTNAME), never the test process's.
- **probes** like a kubelet: startup, readiness and liveness ``httpGet`` probes at their periods
  and thresholds against the pod's address; a failed liveness probe or an exited process restarts
  the container.
- **reports** to ``pods/status`` what a kubelet would: phase, ``podIP``, conditions
  (PodScheduled, Initialized, ContainersReady, Ready), init and container statuses with restart
  counts, exit codes and the termination message (the log's tail: ``FallbackToLogsOnError``).
- **deletes**: a pod marked for deletion gets SIGTERM on every process, SIGKILL after its grace
  period, and is then removed for good (``gracePeriodSeconds=0``), as the kubelet confirms a
  deletion.

- **survives an API-server outage**: every call to the API server is retried with a bounded
  back-off (`kubelet_net.Backoff`, at most 2 s apart); the watch lists again when the API server
  is back; processes keep running and being probed meanwhile, and each pod's status is written
  again once it answers (`outages` counts what was waited out, `resumed` says when).

`stop()` (or leaving the ``with`` block) kills every process it started and leaves the API
alone. Timings of each pod's life are kept in `records` for the tests' figures.

Plain HTTP to the API server (urllib, the cluster's token), no client library: the harness is
independent of what it tests. By concern: `kubelet_net` (API calls, back-off, addresses),
`kubelet_pod` (one pod's volumes, processes, probes and status), this module (watching,
binding, deletion).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.kubelet_net import Addresses, Api, Backoff, http_get, transient
from mlgitops.devcluster.kubelet_pod import VENV_BIN, PodRecord, PodWorker

__all__ = ["NODE", "Kubelet", "PodRecord", "http_get"]

NODE = "fake-node"


class Kubelet:
    """Plays kubelet + binding for ``namespace`` of ``cluster`` (see the module docstring)."""

    def __init__(
        self,
        cluster: TestCluster,
        namespace: str,
        *,
        workdir: Path,
        node_name: str = NODE,
        backoff: tuple[float, float] = (10.0, 300.0),
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._stop = threading.Event()
        self.api = Api(cluster, stop=self._stop)
        self.namespace = namespace
        self.workdir = workdir
        self.node_name = node_name
        self.backoff = backoff
        self.bin_dir = VENV_BIN
        """Where a container's command (``mlgitops``) is found, read at each start: this
        interpreter's venv; a bench points it at another checkout's for a same-run baseline."""
        self.log = log or (lambda msg: print(f"[kubelet] {msg}", flush=True))
        self.records: dict[str, PodRecord] = {}
        self.addresses = Addresses()
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self.outages = 0
        """API-server outages the watch waited out (a connection refused, reset or 5xx)."""
        self.resumed: float | None = None
        """``time.monotonic()`` when the watch last listed the pods again after an outage."""
        self._thread: threading.Thread | None = None
        self._response: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Kubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._watch, name="kubelet-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop watching and kill every process this harness started (the API is left alone)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._response.close()
        if self._thread is not None:
            self._thread.join(timeout=15)
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.shutdown(grace)
        for w in workers:
            w.join(timeout=grace + 15)
        alive = [w.name for w in workers if w.is_alive()]
        if alive:
            raise RuntimeError(f"kubelet harness: pod workers did not stop: {alive}")

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests ask ----------------------------------------------------------------------

    def record(self, pod_name: str) -> PodRecord | None:
        return next((r for r in self.records.values() if r.name == pod_name), None)

    def logs(self, pod_name: str, container: str) -> str:
        rec = self.record(pod_name)
        if rec is None or rec.log_dir is None:
            return ""
        path = rec.log_dir / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def running_processes(self) -> int:
        with self._lock:
            return sum(w.live_processes() for w in self._workers.values())

    # -- watching pods -----------------------------------------------------------------------

    def _watch(self) -> None:
        base = f"/api/v1/namespaces/{self.namespace}/pods"
        rv: str | None = None
        backoff = Backoff(0.1, 2.0)
        away = False  # the API server did not answer the last call
        while not self._stop.is_set():
            try:
                if rv is None:
                    listing = self.api.request("GET", base, patience=0)
                    rv = listing["metadata"]["resourceVersion"]
                    if away:
                        self.resumed = time.monotonic()
                        self.log("the API server answers again; pods listed")
                    away = False
                    backoff.reset()
                    for pod in listing.get("items") or []:
                        self._on_pod("ADDED", pod)
                self._response = self.api.stream(
                    f"{base}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2",
                    timeout=10,
                )
                with self._response as resp:
                    for line in resp:
                        if self._stop.is_set():
                            break
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            rv = None  # 410 Gone: the resource version expired; list again
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if event.get("type") != "BOOKMARK":
                            self._on_pod(str(event.get("type")), obj)
            except Exception as exc:  # the API server restarting, a test tearing down
                if self._stop.is_set():
                    return
                if transient(exc) and not away:
                    self.outages += 1
                    away = True
                    self.log(f"the API server does not answer ({type(exc).__name__}: {exc}); "
                             "retrying with back-off")
                elif not transient(exc):
                    self.log(f"watch interrupted ({type(exc).__name__}: {exc}); watching again")
                rv = None
                self._stop.wait(backoff.next())

    def _on_pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid, name = str(meta.get("uid")), str(meta.get("name"))
        deleting = meta.get("deletionTimestamp") is not None
        with self._lock:
            worker = self._workers.get(uid)
            if uid not in self.records:
                self.records[uid] = PodRecord(name=name, uid=uid, seen=time.monotonic())
        if kind == "DELETED":
            if worker is not None:
                worker.shutdown(0.0)
            return
        node = spec.get("nodeName")
        if not node:
            if not deleting and spec.get("schedulerName", "default-scheduler") == "default-scheduler":
                self._bind(name, uid)
            return
        if node != self.node_name:
            return
        if worker is None:
            if deleting:
                self.confirm_deletion(name, uid)
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return
            worker = PodWorker(self, pod, self.records[uid])
            with self._lock:
                self._workers[uid] = worker
            worker.start()
        elif deleting:
            worker.terminate(float(meta.get("deletionGracePeriodSeconds") or 0))

    def _bind(self, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.api.request("POST", f"/api/v1/namespaces/{self.namespace}/pods/{name}/binding", body)
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 409):  # gone, or bound meanwhile
                self.log(f"binding {name} failed: {exc.code} {exc.read()[:300]!r}")
            return
        # an outage outlasting the API's patience propagates: the watch lists (and binds) again
        self.records[uid].bound = time.monotonic()

    def confirm_deletion(self, name: str, uid: str) -> None:
        """What the kubelet does once a pod's processes are gone: delete it for good. When the
        API server is away past the API's patience, the watch's next listing (the pod marked
        for deletion, no worker) asks again."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{name}", body)
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 409):
                self.log(f"deleting {name} failed: {exc.code}")
        except Exception as exc:
            if not transient(exc):
                raise
            self.log(f"deleting {name}: the API server does not answer ({type(exc).__name__})")
            return
        rec = self.records.get(uid)
        if rec is not None and rec.deleted is None:
            rec.deleted = time.monotonic()

    def done(self, uid: str) -> None:
        with self._lock:
            self._workers.pop(uid, None)

