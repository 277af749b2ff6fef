"""``mlgitops operator``: where desired state comes from and how model pods run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlgitops import errors
from mlgitops.core import layout, trust
from mlgitops.settings import environment
from mlgitops.settings.endpoints import (
    AccessSettings,
    NotifySettings,
    TrackingSettings,
    access,
    notify,
    tracking,
)
from mlgitops.settings.policy import trust_policy


@dataclass(frozen=True)
class OperatorSettings:
    """``mlgitops operator``: where desired state comes from and how pods run."""

    repo_url: str
    namespace: str
    branch: str = layout.BRANCH
    interval_seconds: float = 10.0
    secret_name: str | None = None
    image: str = "mlgitops:0.1.0"
    state_dir: Path = Path("/tmp/mlgitops-operator")
    kubeconfig: Path | None = None
    progress_deadline_seconds: int = 600
    trust: trust.Policy = field(default_factory=trust.Policy)
    http_port: int = 8700
    """The operator's own port: ``POST /hooks/github`` (push webhook) and ``GET /reports/``; 0: off."""
    http_host: str = "127.0.0.1"
    """Where that port binds (``MLGITOPS_OPERATOR_HTTP_HOST``; the installed operator's pod sets
    0.0.0.0 so that its Service reaches it)."""
    access: AccessSettings = field(default_factory=AccessSettings)
    """The bearer token of its ``/status`` (and of ``/reports/`` when private), also sent to the
    model pods' statistics routes."""
    api_token_secret: str | None = None
    """A Secret (key ``token``, the same value as ``MLGITOPS_API_TOKEN``) the model pods take as
    their token (``MLGITOPS_OPERATOR_API_TOKEN_SECRET``); None: their stats route is open to the
    cluster network (the operator's port never forwards it)."""
    webhook_secret: str | None = None
    public_url: str | None = None
    """Where people reach that port (an Ingress); revert commits link their reports there."""
    grpc_port: int | None = None
    """When set, model pods also serve the v2 gRPC API on it and their Service exposes it."""
    notify: NotifySettings = field(default_factory=NotifySettings)
    """The outgoing webhook (``MLGITOPS_NOTIFY_*``, as for ``mlgitops up``)."""
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    """MLflow and Evidently (``MLGITOPS_TRACKING_URI``, ``MLGITOPS_MLFLOW``, ``MLGITOPS_EVIDENTLY``)."""
    pod_requests: tuple[tuple[str, str], ...] = (("cpu", "100m"), ("memory", "256Mi"))
    pod_limits: tuple[tuple[str, str], ...] = (("cpu", "2"), ("memory", "2Gi"))
    """CPU and memory requests and limits of every model pod (``MLGITOPS_OPERATOR_CPU_REQUEST``,
    ``…_MEMORY_REQUEST``, ``…_CPU_LIMIT``, ``…_MEMORY_LIMIT``); never the manifest's to set."""


def operator() -> OperatorSettings:
    """``MLGITOPS_OPERATOR_*`` environment variables (the ``mlgitops operator`` flags set them)."""
    environment.telemetry_off()
    url = os.environ.get("MLGITOPS_OPERATOR_REPO_URL", "")
    namespace = os.environ.get("MLGITOPS_OPERATOR_NAMESPACE", "")
    if not namespace:  # no URL: only the namespace's ModelRepository resources
        raise errors.ConfigError(
            "the operator needs a namespace: pass --namespace (or set "
            "MLGITOPS_OPERATOR_NAMESPACE); --repo-url names a repository besides the "
            "namespace's ModelRepository resources"
        )
    kubeconfig = os.environ.get("MLGITOPS_OPERATOR_KUBECONFIG") or None
    token_secret = (os.environ.get("MLGITOPS_OPERATOR_API_TOKEN_SECRET") or "").strip() or None
    access_settings = access()
    if token_secret and access_settings.api_token is None:
        raise errors.ConfigError(
            "MLGITOPS_OPERATOR_API_TOKEN_SECRET is set but MLGITOPS_API_TOKEN is not: the "
            "operator sends that token to the pods' statistics route; set it to the Secret's value"
        )
    return OperatorSettings(
        repo_url=url,
        namespace=namespace,
        branch=os.environ.get("MLGITOPS_OPERATOR_BRANCH") or layout.BRANCH,
        interval_seconds=environment.positive("MLGITOPS_OPERATOR_INTERVAL_SECONDS", 10.0),
        secret_name=os.environ.get("MLGITOPS_OPERATOR_SECRET") or None,
        image=os.environ.get("MLGITOPS_OPERATOR_IMAGE") or "mlgitops:0.1.0",
        state_dir=Path(os.environ.get("MLGITOPS_OPERATOR_STATE_DIR") or "/tmp/mlgitops-operator"),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        progress_deadline_seconds=int(environment.positive("MLGITOPS_OPERATOR_PROGRESS_DEADLINE_SECONDS", 600)),
        trust=trust_policy(),
        http_port=int(os.environ.get("MLGITOPS_OPERATOR_HTTP_PORT") or 8700),
        http_host=(os.environ.get("MLGITOPS_OPERATOR_HTTP_HOST") or "").strip() or "127.0.0.1",
        access=access_settings,
        api_token_secret=token_secret,
        webhook_secret=os.environ.get("MLGITOPS_WEBHOOK_SECRET") or None,
        public_url=(os.environ.get("MLGITOPS_OPERATOR_PUBLIC_URL") or "").rstrip("/") or None,
        grpc_port=environment.port_or_none("MLGITOPS_OPERATOR_GRPC_PORT"),
        notify=notify(),
        tracking=tracking(),
        pod_requests=(("cpu", environment.quantity("MLGITOPS_OPERATOR_CPU_REQUEST", "100m")),
                      ("memory", environment.quantity("MLGITOPS_OPERATOR_MEMORY_REQUEST", "256Mi"))),
        pod_limits=(("cpu", environment.quantity("MLGITOPS_OPERATOR_CPU_LIMIT", "2")),
                    ("memory", environment.quantity("MLGITOPS_OPERATOR_MEMORY_LIMIT", "2Gi"))),
    )
