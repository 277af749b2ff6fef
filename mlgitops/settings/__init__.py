"""Settings as grouped frozen dataclasses; the only package that reads environment variables.

``from mlgitops import settings`` then ``settings.controller(repo)``, ``settings.operator()``,
``settings.trust_policy(...)``: every name is re-exported here. By concern:
``environment`` (checked readers of ``MLGITOPS_*``), ``policy`` (trust, blob limits, signing),
``endpoints`` (token, public URL, notifications, tracking), ``local`` (``mlgitops up``),
``cluster`` (``mlgitops operator``).

May NOT import the controller, the server, the operator or the CLI.
"""

from __future__ import annotations

from mlgitops.settings.cluster import OperatorSettings, operator
from mlgitops.settings.endpoints import (
    AccessSettings,
    NotifySettings,
    TrackingSettings,
    access,
    notify,
    public_url,
    tracking,
)
from mlgitops.settings.environment import telemetry_off
from mlgitops.settings.local import (
    ControllerSettings,
    GatewaySettings,
    MonitorSettings,
    SyncSettings,
    controller,
    default_max_workers,
    git_state_dir,
    state_dir,
)
from mlgitops.settings.policy import (
    REMOTE_TRUST_FILE,
    BlobLimits,
    SigningSettings,
    TrustFile,
    blob_limits,
    read_trust_file,
    signing,
    trust_file,
    trust_policy,
    trust_sources,
)
from mlgitops.settings.predictions import (
    PredictionLogSettings,
    feedback_credentials,
    prediction_log,
)

__all__ = [
    "REMOTE_TRUST_FILE",
    "AccessSettings",
    "BlobLimits",
    "ControllerSettings",
    "GatewaySettings",
    "MonitorSettings",
    "NotifySettings",
    "OperatorSettings",
    "PredictionLogSettings",
    "SigningSettings",
    "SyncSettings",
    "TrackingSettings",
    "TrustFile",
    "access",
    "blob_limits",
    "controller",
    "default_max_workers",
    "feedback_credentials",
    "git_state_dir",
    "notify",
    "operator",
    "prediction_log",
    "public_url",
    "read_trust_file",
    "signing",
    "state_dir",
    "telemetry_off",
    "tracking",
    "trust_file",
    "trust_policy",
    "trust_sources",
]
