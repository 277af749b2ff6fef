"""Reading back what runs: a pod as `Pod`, a Deployment's rollout as `RolloutState`.

Pure: the JSON objects the API server returns in, values out; no I/O, no clock.

A Deployment's own ``mlgitops.io/version`` label is the version it is pinned to (the model's
commit in Git); its pod template's label is the commit the pods were first rendered at. The two
differ after a commit that did not change the pods (``spec.serving.replicas`` alone): the
Deployment then only scaled, and its pods of the same template serve the new version.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlgitops.core.k8s_labels import (
    ANNOTATION_DIGEST,
    ANNOTATION_POD_TEMPLATE,
    HTTP_PORT,
    LABEL_VERSION,
)


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in status.get("conditions") or () if isinstance(c, Mapping)}


@dataclass(frozen=True)
class Pod:
    """What the operator needs of one pod: where it answers, whether it is ready, what it serves."""

    name: str
    ip: str | None
    ready: bool
    commit: str | None
    digest: str | None
    phase: str
    terminating: bool
    problem: str | None = None
    """Why it is not ready, in the kubelet's words (e.g. the init container's last message)."""
    runs: str | None = None
    """The commit the pod was rendered at (its label; what its server reports and its
    statistics carry). ``commit`` is the version it serves: the Deployment's when the pod is of
    the Deployment's current template, else ``runs``."""
    deployment: str | None = None
    """The name of the Deployment it was viewed against (None: none given)."""

    @property
    def endpoint(self) -> str | None:
        """``http://<ip>:8080`` once the pod has an address."""
        return f"http://{self.ip}:{HTTP_PORT}" if self.ip else None


def _template(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}


def pinned_commit(deployment: Mapping[str, Any]) -> str | None:
    """The version a Deployment is pinned to: its own version label, else its template's."""
    meta = deployment.get("metadata") or {}
    return (meta.get("labels") or {}).get(LABEL_VERSION) or (_template(deployment).get("labels") or {}).get(LABEL_VERSION)


def pod_view(pod: Mapping[str, Any], deployment: Mapping[str, Any] | None = None) -> Pod:
    """A Pod object (as the API server returns it) as `Pod`; with its model's Deployment, a pod
    of the current template serves the Deployment's version (`Pod.commit`)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    lbls = meta.get("labels") or {}
    notes = meta.get("annotations") or {}
    ready_cond = _conditions(status).get("Ready")
    terminating = meta.get("deletionTimestamp") is not None
    ready = bool(ready_cond and ready_cond.get("status") == "True") and not terminating
    runs = lbls.get(LABEL_VERSION)
    serves = runs
    if deployment is not None and runs:
        tmpl = _template(deployment)
        same = (notes.get(ANNOTATION_POD_TEMPLATE) is not None
                and notes.get(ANNOTATION_POD_TEMPLATE) == (tmpl.get("annotations") or {}).get(ANNOTATION_POD_TEMPLATE)
                and runs == (tmpl.get("labels") or {}).get(LABEL_VERSION))
        serves = (pinned_commit(deployment) or runs) if same else runs
    return Pod(
        name=str(meta.get("name", "")),
        ip=status.get("podIP") or None,
        ready=ready,
        commit=serves,
        digest=notes.get(ANNOTATION_DIGEST),
        phase=str(status.get("phase") or "Pending"),
        terminating=terminating,
        problem=None if ready else _pod_problem(status),
        runs=runs,
        deployment=None if deployment is None else (
            str((deployment.get("metadata") or {}).get("name") or "") or None),
    )


def _pod_problem(status: Mapping[str, Any]) -> str | None:
    """The most telling reason a pod is not ready: a failing container first."""
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or ():
            name = cs.get("name", "?")
            for where in ("state", "lastState"):
                term = (cs.get(where) or {}).get("terminated")
                if term and term.get("exitCode", 0) != 0:
                    # a terminal's line wrapping and log line breaks are not part of the sentence
                    said = " ".join(str(term.get("message") or term.get("reason") or "").split())
                    return f"container {name} exited with {term.get('exitCode')}: {said}".rstrip(": ")
            waiting = (cs.get("state") or {}).get("waiting")
            quiet = waiting and waiting.get("reason") in (None, "PodInitializing", "ContainerCreating")
            if waiting and not (quiet and not waiting.get("message")):
                return f"container {name} is waiting: {waiting.get('reason')} {waiting.get('message') or ''}".strip()
    for c in (status.get("conditions") or ()):
        if c.get("status") == "False" and c.get("message"):
            return str(c["message"])
    return None


class Phase(enum.Enum):
    PROGRESSING = "Progressing"
    READY = "Ready"
    FAILED = "Failed"


@dataclass(frozen=True)
class RolloutState:
    """Where a Deployment's rollout stands, in one sentence."""

    phase: Phase
    message: str
    commit: str | None
    """The version the Deployment is pinned to (`pinned_commit`)."""
    serving_commits: tuple[str, ...] = ()
    """The commits ready pods serve: from the pods when given, else the pinned one once Ready."""
    ready_replicas: int = 0
    updated_replicas: int = 0
    replicas: int = 0
    pod_commit: str | None = None
    """The commit its pod template was rendered at (the same as ``commit`` unless a later
    commit changed nothing the pods run, e.g. only ``spec.serving.replicas``)."""


def rollout_state(
    deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()
) -> RolloutState:
    """Read a Deployment's status (and optionally its pods) as Progressing, Ready or Failed.

    Ready: the controller saw the latest spec, every replica runs the pinned template, and all
    are ready and available. Failed: ``Progressing`` is False with ``ProgressDeadlineExceeded``
    (or ``ReplicaFailure`` is True); with ``maxUnavailable: 0`` the old pods still serve.
    """
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    commit = pinned_commit(deployment)
    short = str(commit)[:12] if commit else "(no version label)"
    want = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    views = [pod_view(p, deployment) for p in pods]
    serving = tuple(sorted({p.commit for p in views if p.ready and p.commit}))
    counts: dict[str, Any] = {"ready_replicas": ready, "updated_replicas": updated, "replicas": want,
                              "pod_commit": (_template(deployment).get("labels") or {}).get(LABEL_VERSION)}

    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return RolloutState(
            Phase.PROGRESSING,
            f"the deployment controller has not yet seen generation {generation} "
            f"(commit {short}); it last saw {observed}",
            commit, serving, **counts,
        )  # fmt: skip
    conds = _conditions(status)
    progressing = conds.get("Progressing")
    failure = conds.get("ReplicaFailure")
    old = max(total - updated, 0)
    still = f"; {old} pod(s) of the previous version stay" if old else ""
    if progressing and progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return RolloutState(
            Phase.FAILED,
            f"commit {short} did not become ready within the progress deadline "
            f"({progressing.get('message', '').strip() or 'ProgressDeadlineExceeded'}); "
            f"{updated} of {want} pod(s) updated, {ready} ready{still}",
            commit, serving, **counts,
        )  # fmt: skip
    if failure and failure.get("status") == "True":
        return RolloutState(
            Phase.FAILED,
            f"pods of commit {short} cannot be created: {failure.get('message') or failure.get('reason')}",
            commit, serving, **counts,
        )  # fmt: skip
    if updated >= want and total <= updated and ready >= want and available >= want:
        return RolloutState(
            Phase.READY,
            f"{ready} of {want} pod(s) of commit {short} ready",
            commit, serving or ((commit,) if commit else ()), **counts,
        )  # fmt: skip
    return RolloutState(
        Phase.PROGRESSING,
        f"rolling out commit {short}: {updated} of {want} pod(s) updated, {ready} ready, "
        f"{old} of the previous version left",
        commit, serving, **counts,
    )  # fmt: skip
