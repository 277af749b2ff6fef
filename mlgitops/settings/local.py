"""``mlgitops up``: the gateway, the sync loop, the monitor, the worker cap and where the
controller keeps its state."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlgitops import errors
from mlgitops.core import layout, trust
from mlgitops.core import trust as trust_mod
from mlgitops.settings import environment
from mlgitops.settings.endpoints import (
    AccessSettings,
    NotifySettings,
    TrackingSettings,
    access,
    notify,
    public_url,
    tracking,
)
from mlgitops.settings.policy import SigningSettings, signing, trust_policy


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8700
    webhook_secret: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    """Largest inference body the gateway proxies (the servers' ``--max-body-bytes`` default)."""
    webhook_max_bytes: int = 1024 * 1024
    """Largest ``/hooks/github`` body (a push event's is a few KB; GitHub's cap is 25 MB)."""
    read_timeout_seconds: float = 5.0
    """Time a client may take to send a request's head, or pause while sending its body."""
    public_url: str | None = None
    """Where people reach the gateway (behind an ingress); decision links are built on it."""
    grpc_port: int | None = None
    """The v2 gRPC API for every model on this port (0: a free one); None: no gRPC port."""
    access: AccessSettings = field(default_factory=AccessSettings)
    """The bearer token of the non-public routes (``MLGITOPS_API_TOKEN``)."""
    mirror_budget: float = 0.05
    """While a model is busy, the share of its requests a rollout copies to the other version
    (``MLGITOPS_MIRROR_BUDGET``); when it is not busy, every request is copied."""


@dataclass(frozen=True)
class SyncSettings:
    poll_seconds: float = 10.0
    branch: str = layout.BRANCH
    remote: str = "origin"
    drain_seconds: float = 1.0
    #: the version a switch replaced stays warm this long (with the drift monitor on), so a
    #: rollback to it routes at once; 0: it stops after draining
    keep_previous_seconds: float = 600.0
    ready_timeout_seconds: float = 120.0
    standby: int = 1
    #: "shared": small models share host processes; "process": one process per model
    hosting: str = "shared"
    models_per_host: int = 20
    dedicated_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool = True
    interval_seconds: float = 1.0
    performance_seconds: float = 30.0
    """``MLGITOPS_PERFORMANCE_SECONDS``: how often each version's labelled rows are checked
    against ``spec.performance``."""


@dataclass(frozen=True)
class ControllerSettings:
    repo: Path
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    trust: trust.Policy = field(default_factory=trust.Policy)
    signing: SigningSettings = field(default_factory=SigningSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    state: Path | None = None
    """Where the controller keeps its state; None: ``<git dir>/mlgitops`` (`git_state_dir`)."""
    max_workers: int = field(default_factory=lambda: default_max_workers())
    """Server worker processes all models together may run on this machine (`LocalRuntime`)."""
    reload_trust: bool = False
    """Read the trust policy again on every pass (`current_trust`: the team's file,
    ``MLGITOPS_TRUST_POLICY``), so a fixed policy takes effect without a restart."""

    def current_trust(self) -> trust_mod.Policy:
        """The trust policy now: `trust`, or with `reload_trust` the same sources read again; a
        file that cannot be read keeps the policy the controller started with."""
        if not self.reload_trust:
            return self.trust
        try:
            return trust_policy(repo=self.repo)
        except errors.ConfigError:
            return self.trust

    @property
    def state_dir(self) -> Path:
        return self.state if self.state is not None else git_state_dir(self.repo)

    def inputs(self) -> str:
        """A fingerprint of the settings that decide whether a version may deploy (trust and
        signing policy, the worker cap): a failure remembered under other inputs is tried again."""
        signers = self.signing.allowed_signers
        signers_text = ""
        if signers is not None:
            try:
                signers_text = signers.read_text(errors="replace")
            except OSError:
                signers_text = "?"
        doc = json.dumps({"trust": sorted(self.current_trust().allow), "signers": str(signers),
                          "signersText": signers_text, "maxWorkers": self.max_workers},
                         sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


def default_max_workers() -> int:
    """Twice the cores, and at least 16 (a fleet's shared hosts count too)."""
    return max(16, 2 * (os.cpu_count() or 2))


def git_state_dir(repo: Path) -> Path:
    """``<git dir>/mlgitops`` of the clone at ``repo`` (its common git directory for a linked
    worktree): git never writes there on a push, pull, rebase or checkout, and it cannot be
    tracked, so nothing a pusher commits lands where the controller reads its own state."""
    dot_git = repo / ".git"
    if dot_git.is_file():  # a linked worktree or a submodule: "gitdir: <path>"
        text = dot_git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            git_dir = (repo / text[len("gitdir:"):].strip()).resolve()
            common = git_dir / "commondir"
            if common.is_file():
                git_dir = (git_dir / common.read_text().strip()).resolve()
            return git_dir / layout.STATE_DIR_IN_GIT
    return dot_git / layout.STATE_DIR_IN_GIT


def state_dir(repo: Path) -> Path:
    """The controller state of the model repository at ``repo``: ``MLGITOPS_STATE_DIR`` when set,
    else `git_state_dir` (what ``mlgitops up`` writes and status, history and report read)."""
    override = (os.environ.get("MLGITOPS_STATE_DIR") or "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return git_state_dir(repo.expanduser().resolve())


def controller(
    repo: Path,
    *,
    port: int | None = None,
    host: str | None = None,
    grpc_port: int | None = None,
    poll_seconds: float | None = None,
    monitor: bool = True,
    public: str | None = None,
    notify_url: str | None = None,
    notify_format: str | None = None,
    tracking_uri: str | None = None,
) -> ControllerSettings:
    """Controller settings from flags, then ``MLGITOPS_*`` environment variables, then defaults."""
    environment.telemetry_off()
    gw = GatewaySettings(
        host=host or os.environ.get("MLGITOPS_HOST", "127.0.0.1"),
        port=port if port is not None else int(environment.positive("MLGITOPS_PORT", 8700)),
        webhook_secret=os.environ.get("MLGITOPS_WEBHOOK_SECRET") or None,
        max_body_bytes=environment.byte_count("MLGITOPS_MAX_BODY_BYTES", GatewaySettings.max_body_bytes),
        webhook_max_bytes=environment.byte_count("MLGITOPS_WEBHOOK_MAX_BYTES", GatewaySettings.webhook_max_bytes),
        read_timeout_seconds=environment.positive("MLGITOPS_READ_TIMEOUT_SECONDS", 5.0),
        public_url=public_url(public),
        grpc_port=grpc_port if grpc_port is not None else environment.grpc_port(),
        access=access(),
        mirror_budget=environment.fraction("MLGITOPS_MIRROR_BUDGET", GatewaySettings.mirror_budget),
    )
    sync = SyncSettings(
        poll_seconds=poll_seconds or environment.positive("MLGITOPS_POLL_SECONDS", 10.0),
        drain_seconds=environment.positive("MLGITOPS_DRAIN_SECONDS", 1.0),
        keep_previous_seconds=environment.positive("MLGITOPS_KEEP_PREVIOUS_SECONDS", 600.0),
        hosting=environment.choice("MLGITOPS_HOSTING", ("shared", "process"), "shared"),
        models_per_host=int(environment.positive("MLGITOPS_MODELS_PER_HOST", 20)),
        dedicated_bytes=environment.byte_count("MLGITOPS_DEDICATED_BYTES", 64 * 1024 * 1024),
    )
    mon = MonitorSettings(
        enabled=monitor and os.environ.get("MLGITOPS_MONITOR", "1") not in ("0", "false"),
        interval_seconds=environment.positive("MLGITOPS_MONITOR_SECONDS", 1.0),
        performance_seconds=environment.positive("MLGITOPS_PERFORMANCE_SECONDS", 30.0),
    )
    max_workers = environment.positive("MLGITOPS_MAX_WORKERS", default_max_workers())
    if max_workers != int(max_workers):
        raise errors.ConfigError(f"MLGITOPS_MAX_WORKERS={max_workers} is not a whole number of "
                                 "worker processes")
    return ControllerSettings(repo=repo.resolve(), gateway=gw, sync=sync, monitor=mon,
                              trust=trust_policy(repo=repo), signing=signing(),
                              notify=notify(url=notify_url, format=notify_format),
                              tracking=tracking(uri=tracking_uri), state=state_dir(repo),
                              max_workers=int(max_workers), reload_trust=True)
