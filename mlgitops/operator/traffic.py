"""The operator gateway's traffic: every repository's router, forwarding to ready pods.

The operator's HTTP port (`controller.gateway`) forwards ``/v2/models/{name}/…`` as the
embedded gateway does, with the same split and mirror during a progressive rollout (a share
of user requests, or a copy of each, to the candidate) and the same step counters the monitor
judges. `Traffic` is the `Router` it is given: it asks the router of the repository that serves
``name`` (each `RepositoryRuntime` has its own) and sends each request to a ready pod of the
chosen version's Deployment (its address on the cluster network, read by a background thread
every ``every`` seconds; until then, the pods the handle was handed out with; none known: the
stable version's Service). Pods are known by their
Deployment, not their commit, so a commit that keeps the pods (a revert to the content serving)
never sends a request to an address it does not know. A candidate none of whose pods is known
yet gets neither a share nor a copy (the stable version answers): no user request waits on, or
fails at, a version the gateway cannot reach. No service mesh is needed, and the gateway never
waits on the API server.
"""

from __future__ import annotations

import collections
import itertools
import threading
from dataclasses import dataclass, replace

from mlgitops import errors
from mlgitops.adapters.kubernetes import Cluster
from mlgitops.adapters.kubernetes.workloads import PodHandle
from mlgitops.controller.router import Role, Router, Split, StepCounters
from mlgitops.core import k8s_objects as ko


@dataclass(frozen=True)
class Member:
    router: Router[PodHandle]
    cluster: Cluster
    namespace: str


class Traffic(Router[PodHandle]):
    """A read view over the repositories' routers (sharing their in-flight and served counts)."""

    def __init__(self, *, every: float = 0.5) -> None:
        super().__init__()
        self.every = every
        self._members: dict[str, Member] = {}
        self._pods: dict[tuple[str, str], list[str]] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def add(self, key: str, router: Router[PodHandle], cluster: Cluster, namespace: str) -> None:
        """Serve the models of ``router`` (one repository's) too; its counts become shared."""
        router.inflight = self.inflight
        router.served = self.served
        router.mirrored = self.mirrored
        with self._lock:
            self._members = {**self._members, key: Member(router, cluster, namespace)}

    def remove(self, key: str) -> None:
        with self._lock:
            self._members = {k: v for k, v in self._members.items() if k != key}

    def _of(self, name: str) -> Router[PodHandle] | None:
        for member in self._members.values():
            if name in member.router.routes:
                return member.router
        return None

    @staticmethod
    def _key(handle: PodHandle) -> tuple[str, str]:
        return handle.name, handle.deployment or ko.object_name(handle.name)

    def _addresses(self, handle: PodHandle) -> list[str] | tuple[str, ...]:
        """Its Deployment's ready pods as last read, else those it was handed out with."""
        return self._pods.get(self._key(handle)) or handle.addresses

    def _known(self, handle: PodHandle | None) -> bool:
        return handle is not None and bool(self._addresses(handle))

    def _at(self, handle: PodHandle | None) -> PodHandle | None:
        """``handle`` addressed to one of its Deployment's ready pods (round robin)."""
        if handle is None:
            return None
        pods = self._addresses(handle)
        if not pods:
            return handle
        return replace(handle, url=pods[next(self._turn) % len(pods)])

    # what the gateway asks ------------------------------------------------------------------
    def get(self, name: str) -> PodHandle | None:
        router = self._of(name)
        return None if router is None else self._at(router.get(name))

    def split(self, name: str) -> Split[PodHandle] | None:
        router = self._of(name)
        return None if router is None else router.split(name)

    def choose(self, name: str, key: str | None = None
               ) -> tuple[PodHandle | None, Role, PodHandle | None, StepCounters | None]:
        router = self._of(name)
        if router is None:
            return None, "stable", None, None
        backend, role, other, counters = router.choose(name, key)
        if role == "candidate" and not self._known(backend):  # not reachable yet: stable answers
            return self._at(other), "stable", None, counters
        if role == "stable" and other is not None and not self._known(other):
            other = None  # no copy for a candidate whose pods are not known yet
        return self._at(backend), role, self._at(other), counters

    # pod addresses --------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the ready pods of every Deployment that serves or is a candidate."""
        found: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for member in list(self._members.values()):
            names = set(member.router.routes) | set(member.router.splits)
            for name in sorted(names):
                try:
                    pods = member.cluster.list_pods(member.namespace, name)
                except errors.MlgitopsError:
                    for k, v in self._pods.items():  # the API is away: keep what was known
                        if k[0] == name:
                            found[k] = v
                    continue
                for pod in pods:
                    if pod.ready and pod.deployment and pod.endpoint:
                        found[(name, pod.deployment)].append(pod.endpoint)
        self._pods = {k: sorted(v) for k, v in found.items()}

    def run(self, stop: threading.Event) -> None:
        """`refresh` every ``every`` seconds until ``stop`` is set."""
        while True:
            self.refresh()
            if stop.wait(self.every):
                return

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True,
                                  name="operator-traffic")
        thread.start()
        return thread

