"""Names, labels and annotations of what mlgitops runs in Kubernetes for a model.

Pure: strings in, strings out. ``app.kubernetes.io/name`` and ``mlgitops.io/model`` = NAME,
``app.kubernetes.io/managed-by`` = mlgitops, ``mlgitops.io/version`` = a commit,
``mlgitops.io/digest`` = the first 63 hex digits of the digest (a label value holds at most 63
characters); the full commit and digest are annotations too. Selectors use
``mlgitops.io/model`` only, so the Service follows a rollout and the Deployment's (immutable)
selector never changes between versions.
"""

from __future__ import annotations

import hashlib

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
ANNOTATION_POD_TEMPLATE = "mlgitops.io/pod-template"
"""On the pod template (so on every pod): a digest of all that makes the pod what it is (image,
arguments, model digest, resources, probes) except the commit. The same value, the same pods."""

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
