"""Who may read what, and where results go: the API token, the public URL, the outgoing
webhook and the tracking sinks (MLflow, Evidently); shared by ``mlgitops up`` and the operator."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlgitops import errors
from mlgitops.settings import environment


@dataclass(frozen=True)
class AccessSettings:
    """Who may read the non-public routes: a model server's live statistics, ``/status``,
    and (``MLGITOPS_REPORTS_PRIVATE=1``) ``/reports/``. With no token they answer anyone who
    reaches the port (the gateway never forwards a server's statistics route)."""

    api_token: str | None = None
    reports_private: bool = False


def access() -> AccessSettings:
    """``MLGITOPS_API_TOKEN`` and ``MLGITOPS_REPORTS_PRIVATE``."""
    token = (os.environ.get("MLGITOPS_API_TOKEN") or "").strip() or None
    private = (os.environ.get("MLGITOPS_REPORTS_PRIVATE") or "").strip().lower()
    if private and private not in ("0", "1", "true", "false", "yes", "no"):
        raise errors.ConfigError(
            f"MLGITOPS_REPORTS_PRIVATE={private!r} is not a yes/no value: use 1 or 0"
        )
    if private in ("1", "true", "yes") and token is None:
        raise errors.ConfigError(
            "MLGITOPS_REPORTS_PRIVATE is set but MLGITOPS_API_TOKEN is not: set the token that "
            "readers of /reports/ send (Authorization: Bearer <token>)"
        )
    return AccessSettings(api_token=token, reports_private=private in ("1", "true", "yes"))


@dataclass(frozen=True)
class NotifySettings:
    """The outgoing webhook on deploy, hold, alert and revert (off when ``url`` is None)."""

    url: str | None = None
    secret: str | None = None
    """Signs each body: ``X-Mlgitops-Signature: sha256=<HMAC-SHA256 hex>``."""
    format: str = "json"
    """``json`` or ``slack`` (``{"text": …, "blocks": …}``)."""
    timeout_seconds: float = 5.0


def notify(*, url: str | None = None, format: str | None = None) -> NotifySettings:
    """``MLGITOPS_NOTIFY_URL``, ``MLGITOPS_NOTIFY_SECRET``, ``MLGITOPS_NOTIFY_FORMAT`` (flags win)."""
    target = url or os.environ.get("MLGITOPS_NOTIFY_URL") or None
    if target is not None and not target.startswith(("http://", "https://")):
        raise errors.ConfigError(f"the notification URL {target!r} must start with http:// or "
                                 "https://; pass --notify-url http://host/path")
    fmt = (format or os.environ.get("MLGITOPS_NOTIFY_FORMAT") or "json").strip().lower()
    if fmt not in ("json", "slack"):
        raise errors.ConfigError(f"the notification format {fmt!r} is not json or slack; pass "
                                 "--notify-format json or --notify-format slack")
    return NotifySettings(url=target, secret=os.environ.get("MLGITOPS_NOTIFY_SECRET") or None,
                          format=fmt, timeout_seconds=environment.positive("MLGITOPS_NOTIFY_TIMEOUT_SECONDS", 5.0))


def public_url(value: str | None) -> str | None:
    """``--public-url`` or ``MLGITOPS_PUBLIC_URL``, without a trailing slash; checked."""
    raw = (value or os.environ.get("MLGITOPS_PUBLIC_URL") or "").strip().rstrip("/")
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise errors.ConfigError(f"the public URL {raw!r} must start with http:// or https://; "
                                 "pass e.g. --public-url https://mlgitops.example.com")
    return raw


@dataclass(frozen=True)
class TrackingSettings:
    """Where decisions are recorded besides the log: MLflow and the Evidently workspace."""

    mlflow: bool = True
    mlflow_uri: str | None = None
    """Any MLflow tracking URI; None: ``sqlite:///<state>/mlflow.db`` (``mlflow ui`` opens it)."""
    evidently: bool = True
    evidently_keep: int = 200
    """Window snapshots kept per model in the Evidently workspace (the oldest go first)."""
    idle_seconds: float = 60.0
    """A sink's child process stops after this long without a decision to record."""
    decisions_keep: int | None = 500_000
    """Decisions kept in the log besides those a commit links (None: no count limit)."""
    decisions_keep_days: float | None = 365.0
    """Days a decision is kept, linked or not (None: no age limit)."""


def tracking(*, uri: str | None = None) -> TrackingSettings:
    """``--tracking-uri`` or ``MLGITOPS_TRACKING_URI``; ``MLGITOPS_MLFLOW=0`` and
    ``MLGITOPS_EVIDENTLY=0`` switch a sink off; ``MLGITOPS_EVIDENTLY_KEEP`` (snapshots per model);
    ``MLGITOPS_TRACKING_IDLE_SECONDS`` (a sink's process stops when idle this long)."""
    target = (uri or os.environ.get("MLGITOPS_TRACKING_URI") or "").strip() or None
    if target is not None and "://" not in target and not target.startswith(("/", "file:")):
        raise errors.ConfigError(
            f"the tracking URI {target!r} is not a URI; pass e.g. --tracking-uri "
            "sqlite:////abs/path/mlflow.db or http://mlflow.example.com:5000")
    keep = environment.positive("MLGITOPS_EVIDENTLY_KEEP", 200)
    if keep != int(keep):
        raise errors.ConfigError(f"MLGITOPS_EVIDENTLY_KEEP={keep} is not a whole number of snapshots")
    return TrackingSettings(
        mlflow=os.environ.get("MLGITOPS_MLFLOW", "1") not in ("0", "false"), mlflow_uri=target,
        evidently=os.environ.get("MLGITOPS_EVIDENTLY", "1") not in ("0", "false"),
        evidently_keep=int(keep),
        idle_seconds=environment.positive("MLGITOPS_TRACKING_IDLE_SECONDS", 60.0),
        decisions_keep=_limit("MLGITOPS_DECISIONS_KEEP", 500_000, "decisions"),
        decisions_keep_days=_limit("MLGITOPS_DECISIONS_KEEP_DAYS", 365, "days"))


def _limit(name: str, default: int, unit: str) -> int | None:
    """Decision retention: a whole number of ``unit``; 0 means no limit (None)."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise errors.ConfigError(f"{name}={raw!r} is not a whole number of {unit}; unset it, or "
                                 "give 0 for no limit")
    return int(raw) or None
