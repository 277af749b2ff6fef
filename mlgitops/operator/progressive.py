"""Progressive rollouts on Kubernetes: the controller's reconciler, running candidates.

The same `controller.reconciler.Reconciler` (``progressive=True``: a shadow or canary version
runs beside the stable one until the monitor promotes it or Git drops it), whose candidate
deploys go through `KubernetesWorkloads.beside`: the candidate gets its own Deployment and its
own Service, and the model's Service keeps selecting the stable version's pods until the
promotion switches it. Traffic is split and mirrored by the operator's gateway
(`operator.traffic`); after each pass, when the cluster has the Gateway API, each model's
``HTTPRoute`` (`adapters.kubernetes.routes`) is brought to the rollout's weights too.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from mlgitops import errors
from mlgitops.adapters.kubernetes.routes import Routes
from mlgitops.adapters.kubernetes.workloads import KubernetesWorkloads, PodHandle
from mlgitops.controller import reconciler as rec
from mlgitops.core import plan, status

log = logging.getLogger("mlgitops.operator")


class Reconciler(rec.Reconciler[PodHandle]):
    """`rec.Reconciler` whose candidates run beside the stable version on Kubernetes."""

    def __init__(self, *, workloads: KubernetesWorkloads, routes: Routes | None = None,
                 **kw: Any) -> None:
        super().__init__(workloads=workloads, progressive=True, **kw)
        self.k8s = workloads
        self.routes = routes

    def _candidate(self, st: status.ModelStatus, step: plan.Step, now: str) -> None:
        with self.k8s.beside():
            super()._candidate(st, step, now)

    def reconcile(self, *, fetch: bool = True) -> rec.Outcome:
        outcome = super().reconcile(fetch=fetch)
        self.sync_routes()
        return outcome

    def sync_routes(self) -> None:
        """Each serving model's ``HTTPRoute`` as its rollout says (nothing without the CRD)."""
        if self.routes is None:
            return
        for name in self.routes.models() - set(self.router.routes):
            self.routes.forget(name)
        for name in sorted(self.router.routes):
            split = self.router.split(name)
            try:
                if split is None or split.frozen:
                    self.routes.sync(name, candidate=None, weight=0, mirror=False)
                else:
                    self.routes.sync(name, candidate=split.candidate.deployment or None,
                                     weight=split.weight if split.mode == "canary" else 0,
                                     mirror=split.mode == "shadow")
            except errors.MlgitopsError as exc:
                log.warning("%s: the HTTPRoute could not be written: %s", name, exc)

    def keep_routes(self, stop: threading.Event, every: float = 1.0) -> None:
        """`sync_routes` every ``every`` seconds until ``stop``: the monitor moves a canary to
        its next step between passes, and the route follows within a second."""
        while not stop.wait(every):
            self.sync_routes()
