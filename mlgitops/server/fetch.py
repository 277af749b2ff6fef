"""``mlgitops fetch-model``: one model version, exactly as a commit holds it, checked, on disk.

The init container of every model pod runs it (see `core.k8s_objects`): the pod gets the model
content of that commit and nothing else, and refuses what the controller would refuse. Steps:

1. fetch exactly ``commit`` from ``repo_url`` into a scratch bare repository (a shallow fetch of
   that one commit when the server allows it, else a full fetch of its branches);
2. read ``manifests/NAME.yaml`` at the commit: its digest must be the one the pod pins;
3. export ``models/NAME`` (regular files only: symlinks and submodules are refused), check the
   digest, files, baseline and trusted types without loading anything (`validate.check_model`
   with ``load=False``; the server checks types again before it unpickles), and the quarantine
   as that commit records it;
4. move the directory into ``dest`` in one rename (a reader sees all of it or nothing).

Credentials (``--credentials DIR``, a mounted Secret): ``username`` + ``password`` are given to
git by a credential helper that reads the files (never on a command line); ``ssh-privatekey``
needs ``known_hosts`` beside it (hosts are never trusted on first use).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlgitops import errors
from mlgitops.adapters import files, git
from mlgitops.authoring import validate
from mlgitops.core import layout, manifest, quarantine, source_spec, trust, yamldoc

_COMMIT = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")


def redact(url: str) -> str:
    """``https://user:secret@host/x`` -> ``https://user:***@host/x`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _check_inputs(*, commit: str, name: str, digest: str) -> None:
    if not _COMMIT.fullmatch(commit):
        raise errors.ConfigError(
            f"--commit {commit!r} is not a full commit id (40 or 64 lowercase hex digits); "
            "pods pin exact commits, never branches or short ids"
        )
    if not manifest.valid_name(name):
        raise errors.ConfigError(f"--name {name!r} is not a model name (a DNS label)")
    if not re.fullmatch(manifest.DIGEST_PATTERN, digest):
        raise errors.ConfigError(f"--digest {digest!r} is not sha256: and 64 hex digits")


def credential_options(credentials: Path | None, scratch: Path) -> list[str]:
    """``git -c`` options that authenticate with the files in ``credentials`` (a mounted Secret)."""
    if credentials is None:
        return []
    if not credentials.is_dir():
        raise errors.ConfigError(
            f"--credentials {credentials}: is not a directory; mount the Git credentials Secret there"
        )
    user = credentials / source_spec.SECRET_USERNAME
    password = credentials / source_spec.SECRET_PASSWORD
    key = credentials / source_spec.SECRET_SSH_KEY
    if user.is_file() and password.is_file():
        helper = (
            '!f() { test "$1" = get || exit 0; '
            f"printf 'username=%s\\n' \"$(cat {shlex.quote(str(user))})\"; "
            f"printf 'password=%s\\n' \"$(cat {shlex.quote(str(password))})\"; }}; f"
        )
        return ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]
    if key.is_file():
        known = credentials / source_spec.SECRET_KNOWN_HOSTS
        if not known.is_file():
            raise errors.ConfigError(
                f"{credentials}: has {source_spec.SECRET_SSH_KEY} but no "
                f"{source_spec.SECRET_KNOWN_HOSTS}; add the Git host's public keys to the Secret "
                "(ssh-keyscan HOST), hosts are never trusted on first use"
            )
        # ssh refuses a key others may read; a mounted Secret's mode is not ours to choose.
        own_key = scratch / "ssh-key"
        own_key.write_bytes(key.read_bytes())
        own_key.chmod(0o600)
        ssh = (
            f"ssh -i {shlex.quote(str(own_key))} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(str(known))}"
        )
        return ["-c", f"core.sshCommand={ssh}"]
    raise errors.ConfigError(
        f"--credentials {credentials}: holds neither {source_spec.SECRET_USERNAME} and "
        f"{source_spec.SECRET_PASSWORD} nor {source_spec.SECRET_SSH_KEY}; fix the Secret"
    )


def _fetch_commit(bare: Path, url: str, commit: str, options: list[str]) -> None:
    shown = redact(url)
    try:
        git.run(bare, *options, "fetch", "-q", "--no-tags", "--depth=1", url, commit)
    except errors.GitError:
        # Servers that refuse a want by id (old protocol, no allowReachableSHA1InWant): all of it.
        try:
            git.run(bare, *options, "fetch", "-q", "--no-tags", url, "+refs/heads/*:refs/heads/*")
        except errors.GitError as exc:
            said = str(exc).partition(f"failed in {bare}: ")[2] or str(exc)
            said = " ".join(said.replace(url, shown).split())
            raise errors.GitError(
                f"cannot fetch {shown}: {said}; check the URL, the network and the credentials "
                "Secret"
            ) from exc
    if git.rev_parse(bare, commit) != commit:
        raise errors.GitError(
            f"commit {commit[:12]} is not on any branch of {shown}; it was never pushed there, "
            "or history was rewritten"
        )


def _blob(bare: Path, commit: str, path: str, *, limit: int) -> bytes | None:
    size = git.blob_size(bare, commit, path)
    if size > limit:
        raise errors.ManifestError(
            f"{path}: is {size} bytes at commit {commit[:12]}, over the {limit}-byte limit"
        )
    return git.show(bare, commit, path)


def read_at(bare: Path, commit: str, name: str) -> tuple[manifest.ModelDeployment, tuple[quarantine.Entry, ...]]:
    """The manifest of ``name`` and the quarantine entries as ``commit`` holds them."""
    rel = layout.manifest_path(name)
    raw = _blob(bare, commit, rel, limit=yamldoc.MAX_MANIFEST_BYTES)
    if raw is None:
        raise errors.ManifestError(
            f"{rel}: does not exist at commit {commit[:12]}; the model was never published there"
        )
    dep = validate.parse_manifest(raw, rel=rel)
    entries = validate.parse_quarantine(
        _blob(bare, commit, layout.QUARANTINE, limit=validate.MAX_QUARANTINE_BYTES)
    )
    return dep, entries


def _install(model_dir: Path, dest: Path) -> None:
    """Move ``model_dir`` to ``dest`` in one rename, replacing an older copy if there is one."""
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    os.rename(model_dir, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def fetch_model(
    *,
    repo_url: str,
    commit: str,
    name: str,
    digest: str,
    dest: Path,
    credentials: Path | None = None,
    policy: trust.Policy = trust.DEFAULT,
) -> Path:
    """Write ``models/<name>`` at ``commit`` of ``repo_url`` to ``dest``, checked; return ``dest``.

    ConfigError for bad input, GitError when the commit cannot be had, ManifestError /
    ModelError / BaselineError / QuarantinedError when it must not serve; ``dest`` is then
    left as it was.
    """
    _check_inputs(commit=commit, name=name, digest=digest)
    dest = Path(os.path.abspath(dest))
    if dest.is_dir() and not dest.is_symlink():
        try:
            already = files.dir_digest(dest) == digest
        except errors.ModelError:
            already = False
        if already:  # a restarted init container: the same content is already in place
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=dest.parent))
    try:
        bare = work / "repo.git"
        git.init_bare(bare)
        _fetch_commit(bare, repo_url, commit, credential_options(credentials, work))
        dep, entries = read_at(bare, commit, name)
        if dep.digest != digest:
            raise errors.ModelError(
                f"{layout.manifest_path(name)} at commit {commit[:12]} names digest {dep.digest}, "
                f"but the pod pins {digest}; the pod spec is stale: let the operator render it again"
            )
        model_dir = work / "model"
        git.export(bare, commit, dep.model_path, model_dir)
        validate.check_model(model_dir, dep, policy=policy, load=False)
        validate.check_quarantine(model_dir, dep, entries)
        _install(model_dir, dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)

