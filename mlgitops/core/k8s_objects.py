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

Labels and names: `core.k8s_labels` (re-exported here). The pod template depends only on what
changes the pod (model digest, image, arguments, resources, probes; ``mlgitops.io/pod-template``
is their digest), so a commit that changes only ``spec.serving.replicas`` keeps the pods: with
``current`` (the Deployment as read), `deployment` keeps the commit its template was rendered
at, and the Deployment's own ``mlgitops.io/version`` label carries the new version. Reading
back: `core.k8s_rollout` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlgitops.core import manifest
from mlgitops.core.k8s_labels import (
    ANNOTATION_COMMIT,
    ANNOTATION_DIGEST,
    ANNOTATION_POD_TEMPLATE,
    ANNOTATION_SOURCE,
    CREDENTIALS_MOUNT,
    DEFAULT_IMAGE,
    GRPC_PORT_NAME,
    HTTP_PORT,
    INIT_CONTAINER,
    LABEL_DIGEST,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_NAME,
    LABEL_VERSION,
    LIVE_PATH,
    MANAGER,
    MODELS_MOUNT,
    PORT_NAME,
    READY_PATH,
    RUN_AS_USER,
    SERVER_CONTAINER,
    SERVICE_PORT,
    STATS_MOUNT,
    TMP_MOUNT,
    digest_label,
    labels,
    model_labels,
    object_name,
    selector,
)
from mlgitops.core.k8s_rollout import (
    Phase,
    Pod,
    RolloutState,
    pinned_commit,
    pod_view,
    rollout_state,
)

__all__ = [
    "ANNOTATION_COMMIT", "ANNOTATION_DIGEST", "ANNOTATION_POD_TEMPLATE", "ANNOTATION_SOURCE",
    "CREDENTIALS_MOUNT", "DEFAULT_IMAGE", "GRPC_PORT_NAME", "HTTP_PORT", "INIT_CONTAINER",
    "LABEL_DIGEST", "LABEL_MANAGED_BY", "LABEL_MODEL", "LABEL_NAME", "LABEL_VERSION", "LIVE_PATH",
    "MANAGER", "MODELS_MOUNT", "PORT_NAME", "READY_PATH", "RUN_AS_USER", "SERVER_CONTAINER",
    "SERVICE_PORT", "STATS_MOUNT", "TMP_MOUNT", "Owner", "Phase", "Pod", "PodOptions",
    "RolloutState", "Source", "deployment", "digest_label", "fetch_args", "labels",
    "model_labels", "object_name", "pinned_commit", "pod_template_commit", "pod_view",
    "rollout_state", "selector", "serve_args", "service",
]


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
    api_token_secret: str | None = None
    """A Secret whose key ``token`` the model server takes as ``MLGITOPS_API_TOKEN``: its live
    statistics route then answers only that bearer token (the operator's monitor sends it)."""
    env: tuple[tuple[str, str], ...] = ()
    """More environment of both containers: the operator's own prediction-log settings
    (``MLGITOPS_PREDICTION_LOG*``, when it has them), so that the pods keep what it says."""


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
    env: list[dict[str, Any]] = [
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "DO_NOT_TRACK", "value": "true"},
        {"name": "HOME", "value": TMP_MOUNT},
    ]
    if options.trust_allow:
        env.append({"name": "MLGITOPS_TRUST_ALLOW", "value": ",".join(options.trust_allow)})
    if options.api_token_secret:
        env.append({"name": "MLGITOPS_API_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": options.api_token_secret, "key": "token"}}})
    env += [{"name": k, "value": v} for k, v in options.env]
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
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``apps/v1`` Deployment that serves ``dep`` at ``commit`` (see the module docstring).

    ``trusted_types``: the types the server may load beyond skops' defaults, as the controller
    decided them under its policy (``--trust`` each). Rolled out with ``maxUnavailable: 0``
    and ``maxSurge: 1``: a new version's pod must be ready before an old one goes.
    ``current``: the model's Deployment as read from the API server (None: none yet); when its
    pods are what ``dep`` asks for, its template is kept (`pod_template_commit`), so the
    Deployment only scales.
    """
    _check_commit(commit)
    opts = options or PodOptions()
    template = _pod_template(dep, _PLACEHOLDER, source=source, trusted_types=trusted_types, opts=opts)
    stamp = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:32]
    pod_commit = pod_template_commit(current, stamp, commit)
    template = _pod_template(dep, pod_commit, source=source, trusted_types=trusted_types, opts=opts)
    template["metadata"]["annotations"][ANNOTATION_POD_TEMPLATE] = stamp
    notes = {ANNOTATION_COMMIT: commit, ANNOTATION_DIGEST: dep.digest, ANNOTATION_SOURCE: source.url}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(object_name(dep.name), namespace, owner, labels(dep, commit), notes),
        "spec": {
            "replicas": dep.serving.replicas,
            "selector": {"matchLabels": selector(dep.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "progressDeadlineSeconds": opts.progress_deadline_seconds,
            "revisionHistoryLimit": opts.revision_history_limit,
            "template": template,
        },
    }


#: What a pod template is rendered with to take its digest: the commit is not part of it.
_PLACEHOLDER = "0" * 40


def pod_template_commit(current: Mapping[str, Any] | None, stamp: str, commit: str) -> str:
    """The commit a new pod template is rendered at: the one ``current``'s template was
    rendered at when its ``mlgitops.io/pod-template`` digest is ``stamp`` (the pods would not
    change), else ``commit``."""
    if current is None:
        return commit
    tmpl = ((current.get("spec") or {}).get("template") or {}).get("metadata") or {}
    kept = (tmpl.get("labels") or {}).get(LABEL_VERSION)
    if (tmpl.get("annotations") or {}).get(ANNOTATION_POD_TEMPLATE) == stamp and isinstance(kept, str):
        try:
            _check_commit(kept)
        except ValueError:
            return commit
        return kept
    return commit


def _pod_template(
    dep: manifest.ModelDeployment,
    commit: str,
    *,
    source: Source,
    trusted_types: Sequence[str],
    opts: PodOptions,
) -> dict[str, Any]:
    """The pods of ``dep`` fetching and serving ``commit`` (no replicas, nothing else)."""
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

