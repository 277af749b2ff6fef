"""The Kubernetes objects of one ModelDeployment at one commit, and how to read them back.

Pure: dicts in, dicts out (the JSON the API server speaks, camelCase), no I/O, no clock, no
``kubernetes`` import. The operator renders with `deployment` and `service`, sends them with
``adapters.kubernetes``, and reads progress with `rollout_state` and `pod_view`.

What a rendered pod does (the image is the one mlgitops image, entrypoint ``mlgitops``):

- init container ``fetch-model`` runs ``mlgitops fetch-model --repo-url URL --commit SHA --name
  NAME --digest sha256:… --dest /models/NAME``: it fetches exactly that commit, exports
  ``models/NAME`` (regular files only), checks the manifest's digest, the trust policy and the
  quarantine at that commit, and writes the directory atomically into an ``emptyDir`` at
  ``/models``. No model bytes travel through etcd.
- container ``server`` runs ``mlgitops serve /models/NAME --port 8080 --host 0.0.0.0 --name NAME
  --version SHA --digest sha256:… --workers N`` with one ``--trust T`` per trusted type the
  caller computed, readiness on ``GET /v2/health/ready``, liveness (and a startup probe) on
  ``GET /v2/health/live``.
- Git credentials (optional): ``Source.secret_name`` names a Secret in the model's namespace,
  mounted read-only at ``/etc/mlgitops/git`` and passed as ``--credentials``. It holds either
  ``username`` and ``password`` (type ``kubernetes.io/basic-auth``; HTTPS, given to git by a
  credential helper, never on a command line) or ``ssh-privatekey`` and ``known_hosts``
  (type ``kubernetes.io/ssh-auth``; ``known_hosts`` is required: hosts are never trusted on
  first use).

Labels: ``app.kubernetes.io/name`` and ``mlgitops.io/model`` = NAME, ``app.kubernetes.io/
managed-by`` = mlgitops, ``mlgitops.io/version`` = the commit, ``mlgitops.io/digest`` = the
first 63 hex digits of the digest (a label value holds at most 63 characters); the full commit
and digest are annotations too. Selectors use ``mlgitops.io/model`` only, so the Service
follows a rollout and the Deployment's (immutable) selector never changes between versions.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlgitops.core import manifest

DEFAULT_IMAGE = "mlgitops:0.1.0"
MANAGER = "mlgitops"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL = "mlgitops.io/model"
LABEL_VERSION = "mlgitops.io/version"
LABEL_DIGEST = "mlgitops.io/digest"
ANNOTATION_COMMIT = "mlgitops.io/commit"
ANNOTATION_DIGEST = "mlgitops.io/digest"
ANNOTATION_SOURCE = "mlgitops.io/source"

HTTP_PORT = 8080
SERVICE_PORT = 80
PORT_NAME = "http"
GRPC_PORT_NAME = "grpc"
MODELS_MOUNT = "/models"
STATS_MOUNT = "/var/lib/mlgitops/stats"
TMP_MOUNT = "/tmp"
CREDENTIALS_MOUNT = "/etc/mlgitops/git"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
INIT_CONTAINER = "fetch-model"
SERVER_CONTAINER = "server"
RUN_AS_USER = 10001

#: Kubernetes names of a Service are DNS-1035 labels: at most 63 characters.
_MAX_NAME = 63
_PREFIX = "mlgitops-"


def object_name(model: str) -> str:
    """``mlgitops-<model>``: the Deployment's and the Service's name (hashed when too long)."""
    name = _PREFIX + model
    if len(name) <= _MAX_NAME:
        return name
    tail = hashlib.sha256(model.encode()).hexdigest()[:8]
    keep = _MAX_NAME - len(_PREFIX) - len(tail) - 1
    return f"{_PREFIX}{model[:keep].rstrip('-')}-{tail}"


def digest_label(digest: str) -> str:
    """The digest as a label value: its first 63 hex digits, without ``sha256:``."""
    return digest.removeprefix("sha256:")[:63]


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment custom resource that owns the Deployment and the Service."""

    name: str
    uid: str

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> Owner:
        """The owner described by a ModelDeployment object as the API server returns it."""
        if resource.get("apiVersion") != manifest.API_VERSION or resource.get("kind") != manifest.KIND:
            raise ValueError(
                f"an owner must be a {manifest.KIND} ({manifest.API_VERSION}), not "
                f"{resource.get('kind')!r} ({resource.get('apiVersion')!r})"
            )
        meta = resource.get("metadata") or {}
        name, uid = meta.get("name"), meta.get("uid")
        if not name or not uid:
            raise ValueError(
                "the ModelDeployment has no metadata.uid yet: read it back from the API server "
                "before rendering what it owns"
            )
        return cls(name=str(name), uid=str(uid))

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": manifest.API_VERSION,
            "kind": manifest.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Source:
    """Where the init container fetches the model from."""

    url: str
    """A URL git can fetch (https://, ssh://, git@host:path, file://, or a path in tests)."""
    secret_name: str | None = None
    """A Secret of the model's namespace with Git credentials (see the module docstring)."""


def _default_requests() -> dict[str, str]:
    return {"cpu": "100m", "memory": "256Mi"}


def _default_limits() -> dict[str, str]:
    """What one pod may use at most, whatever its manifest's ``workers`` asks for."""
    return {"cpu": "2", "memory": "2Gi"}


@dataclass(frozen=True)
class PodOptions:
    """How pods run; everything here is the operator's setting, never the repository's."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    requests: Mapping[str, str] = field(default_factory=_default_requests)
    limits: Mapping[str, str] = field(default_factory=_default_limits)
    """Requests and limits of both containers (the operator's ``MLGITOPS_OPERATOR_CPU_*`` and
    ``MLGITOPS_OPERATOR_MEMORY_*`` settings); a manifest cannot change them."""
    progress_deadline_seconds: int = 600
    """A version not ready within this long is reported Failed (ProgressDeadlineExceeded)."""
    termination_grace_period_seconds: int = 30
    readiness_period_seconds: int = 2
    startup_period_seconds: int = 1
    startup_failure_threshold: int = 180
    """With ``startup_period_seconds``: how long a server may take to load before a restart."""
    trust_allow: tuple[str, ...] = ()
    """The operator's own trust policy (``MLGITOPS_TRUST_ALLOW``), given to both containers."""
    revision_history_limit: int = 3
    grpc_port: int | None = None
    """The container also serves the v2 gRPC API on this port (``--grpc-port``), and the Service
    exposes it as port ``grpc``; None: HTTP only."""


def model_labels(model: str) -> dict[str, str]:
    """Labels of everything mlgitops runs for ``model``, whatever the version (the Service's)."""
    return {LABEL_NAME: model, LABEL_MANAGED_BY: MANAGER, LABEL_MODEL: model}


def labels(dep: manifest.ModelDeployment, commit: str) -> dict[str, str]:
    """Labels of the Deployment and its pods: the model's, its version and its digest."""
    return {
        **model_labels(dep.name),
        LABEL_VERSION: commit,
        LABEL_DIGEST: digest_label(dep.digest),
    }


def selector(model: str) -> dict[str, str]:
    """What the Deployment and the Service select: every pod of the model, any version."""
    return {LABEL_MODEL: model}


def _check_commit(commit: str) -> None:
    if len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        raise ValueError(f"{commit!r} is not a full commit id (40 or 64 lowercase hex digits)")


def _metadata(
    name: str, namespace: str | None, owner: Owner, lbls: Mapping[str, str], notes: Mapping[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": dict(lbls),
        "annotations": dict(notes),
        "ownerReferences": [owner.reference()],
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def fetch_args(dep: manifest.ModelDeployment, commit: str, source: Source) -> list[str]:
    """The init container's arguments (after the ``mlgitops`` command)."""
    args = [
        "fetch-model",
        "--repo-url", source.url,
        "--commit", commit,
        "--name", dep.name,
        "--digest", dep.digest,
        "--dest", f"{MODELS_MOUNT}/{dep.name}",
    ]  # fmt: skip
    if source.secret_name:
        args += ["--credentials", CREDENTIALS_MOUNT]
    return args


def serve_args(
    dep: manifest.ModelDeployment,
    commit: str,
    trusted_types: Sequence[str],
    *,
    grpc_port: int | None = None,
) -> list[str]:
    """The server container's arguments (after the ``mlgitops`` command)."""
    batching = dep.serving.batching
    args = [
        "serve", f"{MODELS_MOUNT}/{dep.name}",
        "--port", str(HTTP_PORT),
        "--host", "0.0.0.0",
        "--name", dep.name,
        "--version", commit,
        "--digest", dep.digest,
        "--workers", str(dep.serving.workers),
        "--max-batch-size", str(batching.max_batch_size),
        "--max-delay-ms", f"{batching.max_delay_ms:g}",
        "--stats-dir", STATS_MOUNT,
    ]  # fmt: skip
    if grpc_port is not None:
        args += ["--grpc-port", str(grpc_port)]
    for t in trusted_types:
        args += ["--trust", t]
    return args


def _env(options: PodOptions) -> list[dict[str, Any]]:
    env = [
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "DO_NOT_TRACK", "value": "true"},
        {"name": "HOME", "value": TMP_MOUNT},
    ]
    if options.trust_allow:
        env.append({"name": "MLGITOPS_TRUST_ALLOW", "value": ",".join(options.trust_allow)})
    return env


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _probe(path: str, *, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _resources(options: PodOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": dict(options.requests)}
    if options.limits:
        out["limits"] = dict(options.limits)
    return out


def deployment(
    dep: manifest.ModelDeployment,
    commit: str,
    *,
    owner: Owner,
    source: Source,
    trusted_types: Sequence[str],
    namespace: str | None = None,
    options: PodOptions | None = None,
) -> dict[str, Any]:
    """The ``apps/v1`` Deployment that serves ``dep`` at ``commit`` (see the module docstring).

    ``trusted_types``: the types the server may load beyond skops' defaults, as the controller
    decided them under its policy (``--trust`` each). Rolled out with ``maxUnavailable: 0``
    and ``maxSurge: 1``: a new version's pod must be ready before an old one goes.
    """
    _check_commit(commit)
    opts = options or PodOptions()
    name = object_name(dep.name)
    lbls = labels(dep, commit)
    notes = {ANNOTATION_COMMIT: commit, ANNOTATION_DIGEST: dep.digest, ANNOTATION_SOURCE: source.url}
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {}},
        {"name": "stats", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    fetch_mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": MODELS_MOUNT},
        {"name": "tmp", "mountPath": TMP_MOUNT},
    ]
    if source.secret_name:
        volumes.append(
            {"name": "git-credentials", "secret": {"secretName": source.secret_name, "defaultMode": 0o440}}
        )
        fetch_mounts.append(
            {"name": "git-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True}
        )
    init = {
        "name": INIT_CONTAINER,
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["mlgitops"],
        "args": fetch_args(dep, commit, source),
        "env": _env(opts),
        "volumeMounts": fetch_mounts,
        "resources": _resources(opts),
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    server = {
        "name": SERVER_CONTAINER,
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["mlgitops"],
        "args": serve_args(dep, commit, trusted_types, grpc_port=opts.grpc_port),
        "env": _env(opts),
        "ports": [{"name": PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}]
        + (
            [{"name": GRPC_PORT_NAME, "containerPort": opts.grpc_port, "protocol": "TCP"}]
            if opts.grpc_port is not None
            else []
        ),
        "startupProbe": _probe(
            LIVE_PATH, period=opts.startup_period_seconds, failures=opts.startup_failure_threshold
        ),
        "readinessProbe": _probe(READY_PATH, period=opts.readiness_period_seconds, failures=3),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
            {"name": "stats", "mountPath": STATS_MOUNT},
            {"name": "tmp", "mountPath": TMP_MOUNT},
        ],
        "resources": _resources(opts),
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, owner, lbls, notes),
        "spec": {
            "replicas": dep.serving.replicas,
            "selector": {"matchLabels": selector(dep.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "progressDeadlineSeconds": opts.progress_deadline_seconds,
            "revisionHistoryLimit": opts.revision_history_limit,
            "template": {
                "metadata": {"labels": dict(lbls), "annotations": dict(notes)},
                "spec": {
                    "initContainers": [init],
                    "containers": [server],
                    "volumes": volumes,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": opts.termination_grace_period_seconds,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                },
            },
        },
    }


def service(
    dep: manifest.ModelDeployment,
    *,
    owner: Owner,
    namespace: str | None = None,
    options: PodOptions | None = None,
) -> dict[str, Any]:
    """The ``v1`` Service in front of every ready pod of the model (port 80 -> 8080, ``http``;
    and ``grpc`` when the pods serve gRPC: the same options as the Deployment's)."""
    grpc_port = (options or PodOptions()).grpc_port
    ports = [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}]
    if grpc_port is not None:
        ports.append(
            {"name": GRPC_PORT_NAME, "port": grpc_port, "targetPort": GRPC_PORT_NAME, "protocol": "TCP"}
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(object_name(dep.name), namespace, owner, model_labels(dep.name), {}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(dep.name),
            "ports": ports,
        },
    }


# -- reading back ----------------------------------------------------------------------------


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

    @property
    def endpoint(self) -> str | None:
        """``http://<ip>:8080`` once the pod has an address."""
        return f"http://{self.ip}:{HTTP_PORT}" if self.ip else None


def pod_view(pod: Mapping[str, Any]) -> Pod:
    """A Pod object (as the API server returns it) as `Pod`."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    lbls = meta.get("labels") or {}
    notes = meta.get("annotations") or {}
    ready_cond = _conditions(status).get("Ready")
    terminating = meta.get("deletionTimestamp") is not None
    ready = bool(ready_cond and ready_cond.get("status") == "True") and not terminating
    return Pod(
        name=str(meta.get("name", "")),
        ip=status.get("podIP") or None,
        ready=ready,
        commit=lbls.get(LABEL_VERSION),
        digest=notes.get(ANNOTATION_DIGEST),
        phase=str(status.get("phase") or "Pending"),
        terminating=terminating,
        problem=None if ready else _pod_problem(status),
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
    """The version the Deployment's pod template pins (its ``mlgitops.io/version`` label)."""
    serving_commits: tuple[str, ...] = ()
    """The commits ready pods serve: from the pods when given, else the pinned one once Ready."""
    ready_replicas: int = 0
    updated_replicas: int = 0
    replicas: int = 0


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
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    commit = template_labels.get(LABEL_VERSION) or (meta.get("labels") or {}).get(LABEL_VERSION)
    short = str(commit)[:12] if commit else "(no version label)"
    want = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    views = [pod_view(p) for p in pods]
    serving = tuple(sorted({p.commit for p in views if p.ready and p.commit}))
    counts = {"ready_replicas": ready, "updated_replicas": updated, "replicas": want}

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
