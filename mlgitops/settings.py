"""Settings as grouped frozen dataclasses; the only module that reads environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlgitops import errors
from mlgitops.core import layout


def telemetry_off() -> None:
    """mlflow and evidently call home unless told not to; mlgitops never lets them."""
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8700
    webhook_secret: str | None = None


@dataclass(frozen=True)
class SyncSettings:
    poll_seconds: float = 10.0
    branch: str = layout.BRANCH
    remote: str = "origin"
    drain_seconds: float = 1.0
    ready_timeout_seconds: float = 120.0
    standby: int = 1


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool = True
    interval_seconds: float = 1.0


@dataclass(frozen=True)
class ControllerSettings:
    repo: Path
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)

    @property
    def state_dir(self) -> Path:
        return self.repo / layout.STATE_DIR


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise errors.ConfigError(f"{name}={raw!r} is not a number; unset it or give seconds") from exc
    if value <= 0:
        raise errors.ConfigError(f"{name}={raw!r} must be positive")
    return value


def controller(
    repo: Path,
    *,
    port: int | None = None,
    host: str | None = None,
    poll_seconds: float | None = None,
    monitor: bool = True,
) -> ControllerSettings:
    """Controller settings from flags, then ``MLGITOPS_*`` environment variables, then defaults."""
    telemetry_off()
    gw = GatewaySettings(
        host=host or os.environ.get("MLGITOPS_HOST", "127.0.0.1"),
        port=port if port is not None else int(_float("MLGITOPS_PORT", 8700)),
        webhook_secret=os.environ.get("MLGITOPS_WEBHOOK_SECRET") or None,
    )
    sync = SyncSettings(
        poll_seconds=poll_seconds or _float("MLGITOPS_POLL_SECONDS", 10.0),
        drain_seconds=_float("MLGITOPS_DRAIN_SECONDS", 1.0),
    )
    mon = MonitorSettings(
        enabled=monitor and os.environ.get("MLGITOPS_MONITOR", "1") not in ("0", "false"),
        interval_seconds=_float("MLGITOPS_MONITOR_SECONDS", 1.0),
    )
    return ControllerSettings(repo=repo.resolve(), gateway=gw, sync=sync, monitor=mon)
