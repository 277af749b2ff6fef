"""What may deploy: the trust policy and its files, the size limits of a model in Git, and
commit signing."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlgitops import errors
from mlgitops.core import trust, yamldoc
from mlgitops.settings import environment as read_env

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
        return BlobLimits(model_bytes=read_env.byte_count("MLGITOPS_MAX_MODEL_BYTES", BlobLimits.model_bytes),
                          file_bytes=read_env.byte_count("MLGITOPS_MAX_FILE_BYTES", BlobLimits.file_bytes))
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
