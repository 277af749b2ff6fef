"""Settings as grouped frozen dataclasses; the only module that reads environment variables."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mlgitops import errors, telemetry
from mlgitops.core import layout, trust, yamldoc
from mlgitops.core import trust as trust_mod


def telemetry_off() -> None:
    """mlflow and evidently call home unless told not to; mlgitops never lets them.

    ``import mlgitops`` already did this; called again where a process starts, in case
    something changed the environment since.
    """
    telemetry.off()


#: The team's trust policy file, in the bare remote (its administrator's, not the repository's:
#: nothing a push brings widens it). ``mlgitops trust allow`` writes it.
REMOTE_TRUST_FILE = "mlgitops-trust.yaml"


@dataclass(frozen=True)
class TrustFile:
    """Where the team trust policy of a repository is read (and written) on this machine."""

    path: Path
    hosted: str | None = None
    """The origin URL when the remote is not on this machine: ``path`` is then a local copy,
    and the same file belongs in the bare repository on the Git host."""


def _bare(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and not (path / ".git").exists()


def trust_file(repo: Path) -> TrustFile | None:
    """The trust policy file of ``repo``: in the bare remote when ``repo`` is one or its origin
    is a path on this machine, else in ``repo``'s own ``.git`` (None: not a git repository)."""
    repo = repo.resolve()
    if _bare(repo):
        return TrustFile(repo / REMOTE_TRUST_FILE)
    if not (repo / ".git").exists():
        return None
    url = _git(repo, "config", "--get", "remote.origin.url") or None
    if url is not None:
        local = Path(url.removeprefix("file://"))
        local = local if local.is_absolute() else repo / local
        if "://" not in url.removeprefix("file://") and _bare(local):
            return TrustFile(local.resolve() / REMOTE_TRUST_FILE)
    gitdir = _git(repo, "rev-parse", "--absolute-git-dir")
    return TrustFile((Path(gitdir) if gitdir else repo / ".git") / REMOTE_TRUST_FILE, hosted=url)


def _git(repo: Path, *args: str) -> str:
    """One line of git's answer about ``repo`` ('' when git says nothing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def read_trust_file(path: Path) -> dict[str, str]:
    """The types a trust policy file admits (``allow: [type, …]``), each with its reason."""
    try:
        doc = yamldoc.load(path.read_bytes(), source=str(path))
    except OSError as exc:
        raise errors.ConfigError(f"{path}: the trust policy file cannot be read ({exc.strerror})") from exc
    items = doc.get("allow") if isinstance(doc, dict) else None
    if items is not None and (not isinstance(items, list) or not all(isinstance(t, str) for t in items)):
        raise errors.ConfigError(f"{path}: field allow: must be a list of type names")
    reasons = doc.get("reasons") if isinstance(doc, dict) else None
    reasons = reasons if isinstance(reasons, dict) else {}
    return {t: str(reasons.get(t) or "") for t in items or ()}


def trust_sources(*, repo: Path | None = None, file: Path | None = None,
                  environment: bool = True) -> dict[str, tuple[str, str]]:
    """Each type admitted beyond the defaults, with where it is admitted and why."""
    out: dict[str, tuple[str, str]] = {}
    if environment:
        for t in os.environ.get("MLGITOPS_TRUST_ALLOW", "").split(","):
            if t.strip():
                out[t.strip()] = ("MLGITOPS_TRUST_ALLOW", "")
        if os.environ.get("MLGITOPS_TRUST_POLICY"):
            env_file = Path(os.environ["MLGITOPS_TRUST_POLICY"])
            for t, why in read_trust_file(env_file).items():
                out[t] = (f"MLGITOPS_TRUST_POLICY={env_file}", why)
    if file is None and repo is not None:
        found = trust_file(repo)
        file = found.path if found is not None and found.path.is_file() else None
    if file is not None:
        for t, why in read_trust_file(file).items():
            out[t] = (str(file), why)
    return out


def trust_policy(*, file: Path | None = None, environment: bool = True,
                 repo: Path | None = None) -> trust.Policy:
    """The trust policy: the defaults (`core.trust`), the team's file of ``repo``
    (`trust_file`, or ``file``), ``MLGITOPS_TRUST_ALLOW`` (comma-separated type names) and the
    YAML file ``MLGITOPS_TRUST_POLICY`` (``allow: [type, …]``).

    ``environment=False`` ignores the environment (the remote's hook: a pusher sets that).
    """
    allow = trust_sources(repo=repo, file=file, environment=environment)
    try:
        return trust.Policy(allow=frozenset(allow), repo=str(repo.resolve()) if repo else None)
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class BlobLimits:
    """What one model may weigh in Git, checked from object sizes before any blob is read."""

    model_bytes: int = 512 * 1024**2
    """All files of one model directory (``models/<name>/``) together."""
    file_bytes: int = 256 * 1024**2
    """Any one file a model directory holds (or that is read from Git whole)."""
    model_setting: str = "MLGITOPS_MAX_MODEL_BYTES"
    """Where ``model_bytes`` is raised (named in a refusal)."""
    file_setting: str = "MLGITOPS_MAX_FILE_BYTES"


def blob_limits(*, file: Path | None = None, environment: bool = True) -> BlobLimits:
    """``MLGITOPS_MAX_MODEL_BYTES`` and ``MLGITOPS_MAX_FILE_BYTES``; with ``environment=False``
    the keys ``maxModelBytes`` and ``maxFileBytes`` of ``file`` (a remote's `REMOTE_TRUST_FILE`,
    defaults when it does not exist): a remote's hook takes its limits from its administrator,
    never from the pusher."""
    if environment:
        return BlobLimits(model_bytes=_bytes("MLGITOPS_MAX_MODEL_BYTES", BlobLimits.model_bytes),
                          file_bytes=_bytes("MLGITOPS_MAX_FILE_BYTES", BlobLimits.file_bytes))
    where = str(file) if file is not None else f"the remote's {REMOTE_TRUST_FILE}"
    doc: object = {}
    if file is not None and file.is_file():
        try:
            doc = yamldoc.load(file.read_bytes(), source=str(file))
        except OSError as exc:
            raise errors.ConfigError(f"{file}: cannot be read ({exc.strerror})") from exc
    table = doc if isinstance(doc, dict) else {}
    values = []
    for key, default in (("maxModelBytes", BlobLimits.model_bytes),
                         ("maxFileBytes", BlobLimits.file_bytes)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise errors.ConfigError(f"{where}: field {key}: must be a positive number of bytes")
        values.append(value)
    return BlobLimits(model_bytes=values[0], file_bytes=values[1],
                      model_setting=f"maxModelBytes in {where}", file_setting=f"maxFileBytes in {where}")


@dataclass(frozen=True)
class SigningSettings:
    """Opt-in commit signing (SSH keys, git's own verification)."""

    allowed_signers: Path | None = None
    """When set, only commits signed by a key in this allowed-signers file deploy."""
    key: Path | None = None
    """The controller's private key: its revert commits are signed with it."""

    @property
    def required(self) -> bool:
        return self.allowed_signers is not None


def signing() -> SigningSettings:
    """``MLGITOPS_ALLOWED_SIGNERS`` and ``MLGITOPS_SIGNING_KEY`` (paths)."""
    allowed = os.environ.get("MLGITOPS_ALLOWED_SIGNERS") or None
    key = os.environ.get("MLGITOPS_SIGNING_KEY") or None
    out = SigningSettings(Path(allowed) if allowed else None, Path(key) if key else None)
    for what, path in (("MLGITOPS_ALLOWED_SIGNERS", out.allowed_signers), ("MLGITOPS_SIGNING_KEY", out.key)):
        if path is not None and not path.is_file():
            raise errors.ConfigError(f"{what}={path} does not exist; point it at the file or unset it")
    return out


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
                          format=fmt, timeout_seconds=_float("MLGITOPS_NOTIFY_TIMEOUT_SECONDS", 5.0))


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


def tracking(*, uri: str | None = None) -> TrackingSettings:
    """``--tracking-uri`` or ``MLGITOPS_TRACKING_URI``; ``MLGITOPS_MLFLOW=0`` and
    ``MLGITOPS_EVIDENTLY=0`` switch a sink off; ``MLGITOPS_EVIDENTLY_KEEP`` (snapshots per model)."""
    target = (uri or os.environ.get("MLGITOPS_TRACKING_URI") or "").strip() or None
    if target is not None and "://" not in target and not target.startswith(("/", "file:")):
        raise errors.ConfigError(
            f"the tracking URI {target!r} is not a URI; pass e.g. --tracking-uri "
            "sqlite:////abs/path/mlflow.db or http://mlflow.example.com:5000")
    keep = _float("MLGITOPS_EVIDENTLY_KEEP", 200)
    if keep != int(keep):
        raise errors.ConfigError(f"MLGITOPS_EVIDENTLY_KEEP={keep} is not a whole number of snapshots")
    return TrackingSettings(
        mlflow=os.environ.get("MLGITOPS_MLFLOW", "1") not in ("0", "false"), mlflow_uri=target,
        evidently=os.environ.get("MLGITOPS_EVIDENTLY", "1") not in ("0", "false"),
        evidently_keep=int(keep))


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


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise errors.ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}; unset it "
                                 "or pick one")
    return raw


def _bytes(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise errors.ConfigError(f"{name}={raw!r} is not a number of bytes; unset it or give e.g. 1048576")
    return int(raw)


def _grpc_port() -> int | None:
    raw = os.environ.get("MLGITOPS_GRPC_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > 65535:
        raise errors.ConfigError(
            f"MLGITOPS_GRPC_PORT={raw!r} is not a port; unset it or give e.g. 8701"
        )
    return int(raw)


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
    telemetry_off()
    gw = GatewaySettings(
        host=host or os.environ.get("MLGITOPS_HOST", "127.0.0.1"),
        port=port if port is not None else int(_float("MLGITOPS_PORT", 8700)),
        webhook_secret=os.environ.get("MLGITOPS_WEBHOOK_SECRET") or None,
        max_body_bytes=_bytes("MLGITOPS_MAX_BODY_BYTES", GatewaySettings.max_body_bytes),
        webhook_max_bytes=_bytes("MLGITOPS_WEBHOOK_MAX_BYTES", GatewaySettings.webhook_max_bytes),
        read_timeout_seconds=_float("MLGITOPS_READ_TIMEOUT_SECONDS", 5.0),
        public_url=public_url(public),
        grpc_port=grpc_port if grpc_port is not None else _grpc_port(),
        access=access(),
    )
    sync = SyncSettings(
        poll_seconds=poll_seconds or _float("MLGITOPS_POLL_SECONDS", 10.0),
        drain_seconds=_float("MLGITOPS_DRAIN_SECONDS", 1.0),
        keep_previous_seconds=_float("MLGITOPS_KEEP_PREVIOUS_SECONDS", 600.0),
        hosting=_choice("MLGITOPS_HOSTING", ("shared", "process"), "shared"),
        models_per_host=int(_float("MLGITOPS_MODELS_PER_HOST", 20)),
        dedicated_bytes=_bytes("MLGITOPS_DEDICATED_BYTES", 64 * 1024 * 1024),
    )
    mon = MonitorSettings(
        enabled=monitor and os.environ.get("MLGITOPS_MONITOR", "1") not in ("0", "false"),
        interval_seconds=_float("MLGITOPS_MONITOR_SECONDS", 1.0),
    )
    max_workers = _float("MLGITOPS_MAX_WORKERS", default_max_workers())
    if max_workers != int(max_workers):
        raise errors.ConfigError(f"MLGITOPS_MAX_WORKERS={max_workers} is not a whole number of "
                                 "worker processes")
    return ControllerSettings(repo=repo.resolve(), gateway=gw, sync=sync, monitor=mon,
                              trust=trust_policy(repo=repo), signing=signing(),
                              notify=notify(url=notify_url, format=notify_format),
                              tracking=tracking(uri=tracking_uri), state=state_dir(repo),
                              max_workers=int(max_workers), reload_trust=True)


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
    telemetry_off()
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
        interval_seconds=_float("MLGITOPS_OPERATOR_INTERVAL_SECONDS", 10.0),
        secret_name=os.environ.get("MLGITOPS_OPERATOR_SECRET") or None,
        image=os.environ.get("MLGITOPS_OPERATOR_IMAGE") or "mlgitops:0.1.0",
        state_dir=Path(os.environ.get("MLGITOPS_OPERATOR_STATE_DIR") or "/tmp/mlgitops-operator"),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        progress_deadline_seconds=int(_float("MLGITOPS_OPERATOR_PROGRESS_DEADLINE_SECONDS", 600)),
        trust=trust_policy(),
        http_port=int(os.environ.get("MLGITOPS_OPERATOR_HTTP_PORT") or 8700),
        http_host=(os.environ.get("MLGITOPS_OPERATOR_HTTP_HOST") or "").strip() or "127.0.0.1",
        access=access_settings,
        api_token_secret=token_secret,
        webhook_secret=os.environ.get("MLGITOPS_WEBHOOK_SECRET") or None,
        public_url=(os.environ.get("MLGITOPS_OPERATOR_PUBLIC_URL") or "").rstrip("/") or None,
        grpc_port=_port_or_none("MLGITOPS_OPERATOR_GRPC_PORT"),
        notify=notify(),
        tracking=tracking(),
        pod_requests=(("cpu", _quantity("MLGITOPS_OPERATOR_CPU_REQUEST", "100m")),
                      ("memory", _quantity("MLGITOPS_OPERATOR_MEMORY_REQUEST", "256Mi"))),
        pod_limits=(("cpu", _quantity("MLGITOPS_OPERATOR_CPU_LIMIT", "2")),
                    ("memory", _quantity("MLGITOPS_OPERATOR_MEMORY_LIMIT", "2Gi"))),
    )


def _quantity(name: str, default: str) -> str:
    """A Kubernetes quantity (``500m``, ``2``, ``1Gi``) from ``name``."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?", raw):
        raise errors.ConfigError(f"{name}={raw!r} is not a Kubernetes quantity; give e.g. 500m, "
                                 "2 or 1Gi")
    return raw


def _port_or_none(name: str) -> int | None:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise errors.ConfigError(f"{name}={raw!r} is not a TCP port: use a number from 1 to 65535")
    return int(raw)
