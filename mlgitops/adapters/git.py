"""Real git through its command line: read trees at a commit, commit, push, revert paths.

Every failure becomes ``errors.GitError`` (or ``PushRejected`` when the remote moved on).
Pushes are plain fast-forward pushes: git's own compare-and-swap; never forced.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NewType

from mlgitops import errors, settings
from mlgitops.adapters.blob_caps import RAISE, check_sizes, size_text
from mlgitops.adapters.push_output import ref_moved

CommitSha = NewType("CommitSha", str)

_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "mlgitops",
    "GIT_AUTHOR_EMAIL": "mlgitops@localhost",
    "GIT_COMMITTER_NAME": "mlgitops",
    "GIT_COMMITTER_EMAIL": "mlgitops@localhost",
    "LC_ALL": "C",
}


def _env(identity: bool) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_QUARANTINE_PATH"):
        env.pop(key, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if identity:
        for key, value in _ENV.items():
            env.setdefault(key, value)
    return env


def run(
    repo: Path | None,
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    keep_env: bool = False,
) -> bytes:
    """Run ``git -C repo args``; return stdout; raise GitError with git's own words."""
    cmd = ["git"] + (["-C", str(repo)] if repo is not None else []) + list(args)
    env = dict(os.environ) if keep_env else _env(identity=True)
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.GitError(f"`git {' '.join(args)}` could not run ({exc}); is git installed?") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise errors.GitError(f"`git {' '.join(args)}` failed in {repo}: {err}")
    return proc.stdout


def text(repo: Path | None, *args: str) -> str:
    return run(repo, *args).decode().strip()


def init_bare(path: Path, *, branch: str = "main") -> None:
    path.mkdir(parents=True, exist_ok=True)
    run(path, "init", "--bare", "-q", f"--initial-branch={branch}")


def init_work(path: Path, *, branch: str = "main") -> None:
    path.mkdir(parents=True, exist_ok=True)
    run(path, "init", "-q", f"--initial-branch={branch}")


def clone(url: str, dest: Path, *, bare: bool = False) -> None:
    args = ["clone", "-q"] + (["--bare"] if bare else []) + [url, str(dest)]
    run(None, *args)


def is_repo(path: Path) -> bool:
    return run(path, "rev-parse", "--git-dir", check=False) != b"" if path.is_dir() else False


def rev_parse(repo: Path, ref: str) -> CommitSha | None:
    out = run(repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False).decode().strip()
    return CommitSha(out) if out else None


def fetch(repo: Path, remote: str = "origin") -> None:
    run(repo, "fetch", "-q", "--prune", remote)


def remote_url(repo: Path, remote: str = "origin") -> str | None:
    out = run(repo, "remote", "get-url", remote, check=False).decode().strip()
    return out or None


def show(repo: Path, commit: str, path: str, *, limit: int | None = None) -> bytes | None:
    """File content at ``commit``, or None when it does not exist there.

    Its size is read first: ModelError when it is over ``limit`` (default: the per-file cap,
    `settings.BlobLimits.file_bytes`), and the content is never read.
    """
    caps = settings.blob_limits()
    cap = caps.file_bytes if limit is None else limit
    with _Batch(repo) as batch:
        found = batch.header(f"{commit}:{path}")
        if found is None or found[0] != "blob":
            return None
        if found[1] > cap:
            raise errors.ModelError(
                f"{path}: is {size_text(found[1])} at commit {commit[:12]}, over the {size_text(cap)} "
                f"limit for a file read whole; {RAISE} {caps.file_setting}"
            )
        return batch.read(found[1])


def ls_files(repo: Path, commit: str, path: str) -> list[str]:
    """Paths of files under ``path`` at ``commit`` (recursive)."""
    out = run(repo, "ls-tree", "-r", "--name-only", "-z", commit, "--", path)
    return [p for p in out.decode().split("\0") if p]


def tree_id(repo: Path, commit: str, path: str) -> str | None:
    """The object id of a tree or blob at ``commit:path`` (changes iff its content changes)."""
    out = run(repo, "rev-parse", "-q", "--verify", f"{commit}:{path}", check=False).decode().strip()
    return out or None


def last_change(repo: Path, commit: str, paths: Sequence[str]) -> CommitSha | None:
    """The commit that last changed any of ``paths`` up to ``commit`` (a model's version), in
    first-parent history: a merge counts with what it changes against its first parent."""
    out = text(repo, "log", "-1", "--first-parent", "--format=%H", commit, "--", *paths)
    return CommitSha(out) if out else None


def export(repo: Path, commit: str, path: str, dest: Path,
           *, limits: settings.BlobLimits | None = None) -> None:
    """Write the files under ``path`` at ``commit`` into ``dest`` (``path`` prefix stripped).

    Only regular files are written. A symbolic link, a submodule or any other entry under
    ``path`` is refused with ModelError naming it (the pre-receive hook and the controller
    refuse the same commits); nothing outside ``dest`` is ever written. Sizes are capped
    before anything is read (see `export_paths`).
    """
    export_paths(repo, commit, [path], dest, strip=path, limits=limits)


def export_paths(
    repo: Path,
    commit: str,
    paths: Sequence[str],
    dest: Path,
    *,
    strip: str = "",
    limits: settings.BlobLimits | None = None,
) -> None:
    """Write the regular files under ``paths`` at ``commit`` into ``dest`` (see `export`).

    Every size is read (``git cat-file --batch-check``) before any content: a file over
    ``limits.file_bytes``, or a model directory (``models/<name>/``) over ``limits.model_bytes``,
    is refused with ModelError naming it, its size, the cap and the setting that raises it, and
    nothing is written. Then each blob is streamed to its file in chunks, never held whole.
    ``limits`` defaults to `settings.blob_limits`.
    """
    caps = settings.blob_limits() if limits is None else limits
    listing = run(repo, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *paths).decode()
    prefix = strip.rstrip("/") + "/" if strip else ""
    wanted: dict[str, tuple[str, str]] = {}
    for record in listing.split("\0"):
        if not record:
            continue
        meta, _, name = record.partition("\t")
        mode, kind, oid = meta.split()
        if kind != "blob" or mode not in ("100644", "100755"):
            what = {"120000": "a symbolic link", "160000": "a submodule"}.get(mode, f"a {kind}")
            raise errors.ModelError(
                f"{name}: is {what} in commit {commit[:12]}; model repositories hold regular "
                "files only: commit the file itself"
            )
        rel = name[len(prefix):] if prefix and name.startswith(prefix) else name
        parts = Path(rel).parts
        if not rel or rel.startswith("/") or ".." in parts:
            raise errors.ModelError(f"{name}: is not a plain path inside the repository")
        wanted[rel] = (name, oid)
    dest.mkdir(parents=True, exist_ok=True)
    if not wanted:
        return
    sizes = blob_sizes(repo, [oid for _, oid in wanted.values()])
    check_sizes({name: sizes[oid] for name, oid in wanted.values()}, caps, commit=commit)
    with _Batch(repo) as batch:
        for rel, (name, oid) in wanted.items():
            found = batch.header(oid)
            if found is None or found != ("blob", sizes[oid]):
                raise errors.GitError(f"git cat-file returned {found!r} for {name}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as f:
                batch.copy(found[1], f)


def blob_sizes(repo: Path, oids: Sequence[str]) -> dict[str, int]:
    """The size of each blob in ``oids`` (``git cat-file --batch-check``: no content is read)."""
    unique = list(dict.fromkeys(oids))
    out = run(repo, "cat-file", "--batch-check", input="".join(f"{o}\n" for o in unique).encode())
    sizes: dict[str, int] = {}
    for oid, line in zip(unique, out.decode().splitlines(), strict=False):
        parts = line.split()
        if len(parts) != 3 or parts[0] != oid or not parts[2].isdigit():
            raise errors.GitError(f"git cat-file --batch-check returned {line!r} for {oid}")
        sizes[oid] = int(parts[2])
    if len(sizes) != len(unique):
        raise errors.GitError("git cat-file --batch-check did not answer for every blob")
    return sizes


class _Batch:
    """``git cat-file --batch``, one object at a time: its header first, then its content,
    read in chunks (git flushes after each object); killed on exit if still running."""

    CHUNK = 1 << 20

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(identity=False),
        )
        self.deadline = threading.Timer(600.0, self.proc.kill)
        self.deadline.daemon = True
        self.deadline.start()

    def __enter__(self) -> _Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deadline.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def header(self, name: str) -> tuple[str, int] | None:
        """Ask for ``name`` (an object id or ``rev:path``): its (type, size), or None if missing."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if "\n" in name:
            return None
        try:
            self.proc.stdin.write(name.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise errors.GitError(f"git cat-file stopped ({exc})") from exc
        line = self.proc.stdout.readline(4096).decode(errors="replace").split()
        if len(line) == 3 and line[2].isdigit():
            return line[1], int(line[2])
        if len(line) >= 2 and line[-1] in ("missing", "ambiguous"):
            return None
        raise errors.GitError(f"git cat-file answered {' '.join(line)!r} for {name}")

    def _chunks(self, size: int) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        left = size
        while left:
            chunk = self.proc.stdout.read(min(left, self.CHUNK))
            if not chunk:
                raise errors.GitError(f"git cat-file ended {left} bytes before the object's end")
            left -= len(chunk)
            yield chunk
        if self.proc.stdout.read(1) != b"\n":
            raise errors.GitError("git cat-file's answer is not framed as expected")

    def copy(self, size: int, out: BinaryIO) -> None:
        """The object's ``size`` bytes into ``out``, a chunk at a time."""
        for chunk in self._chunks(size):
            out.write(chunk)

    def read(self, size: int) -> bytes:
        return b"".join(self._chunks(size))


@dataclass(frozen=True)
class LogEntry:
    commit: CommitSha
    timestamp: int
    author: str
    subject: str
    trailers: Mapping[str, str]


_SEP = "\x1f"
_REC = "\x1e"


def log(repo: Path, ref: str, paths: Sequence[str] = (), *, limit: int = 200) -> list[LogEntry]:
    """Commits reachable from ``ref`` that touch ``paths``, newest first, with their trailers."""
    fmt = _SEP.join(["%H", "%ct", "%an", "%s", "%(trailers:only,unfold)"]) + _REC
    out = run(repo, "log", f"-{limit}", f"--format={fmt}", ref, "--", *paths).decode()
    entries = []
    for record in out.split(_REC):
        record = record.strip("\n")
        if not record:
            continue
        sha, ts, author, subject, trailer_text = record.split(_SEP)
        trailers = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                trailers[key.strip()] = value.strip()
        entries.append(LogEntry(CommitSha(sha), int(ts), author, subject, trailers))
    return entries


def commit(
    repo: Path,
    *,
    message: str,
    paths: Sequence[str],
    trailers: Mapping[str, str] | None = None,
) -> CommitSha | None:
    """Stage ``paths`` (additions and deletions) and commit; None when nothing changed."""
    run(repo, "add", "-A", "--", *paths)
    if not run(repo, "diff", "--cached", "--name-only", "--", *paths).strip():
        return None
    body = message.rstrip() + "\n"
    if trailers:
        body += "\n" + "".join(f"{k}: {v}\n" for k, v in trailers.items())
    run(repo, "commit", "-q", "--no-verify", "-F", "-", "--", *paths, input=body.encode())
    sha = rev_parse(repo, "HEAD")
    assert sha is not None
    return sha


def _remote_has_more(repo: Path, remote: str, branch: str) -> bool:
    """True when ``remote``'s ``branch`` holds commits this clone's HEAD lacks (it moved on)."""
    line = run(repo, "ls-remote", remote, f"refs/heads/{branch}", check=False).decode().split()
    if not line:
        return False
    theirs = line[0]
    if rev_parse(repo, theirs) is None:
        return True  # a commit this clone has never seen
    return not is_ancestor(repo, theirs, "HEAD")


def push(repo: Path, *, remote: str = "origin", branch: str = "main") -> None:
    """Fast-forward push; PushRejected when the remote moved on, GitError with git's reason else.

    "Moved on" is any of git's wordings for a ref that changed between the push's start and its
    update (see `ref_moved`); when a refusal names no reason, the remote is asked whether it
    now holds commits this clone lacks. Never forced: the caller fetches, re-applies, retries.
    """
    proc = subprocess.run(
        ["git", "-C", str(repo), "push", "--porcelain", remote, f"HEAD:refs/heads/{branch}"],
        capture_output=True,
        env=_env(identity=True),
        timeout=300,
    )
    if proc.returncode == 0:
        return
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    moved = ref_moved(out)
    if moved is None:
        moved = _remote_has_more(repo, remote, branch)
    if moved:
        raise errors.PushRejected(
            f"the remote {remote}/{branch} moved on while this push ran (another push landed "
            "first); fetch, re-apply and push again"
        )
    reason = "\n".join(
        line.removeprefix("remote: ") for line in out.splitlines() if line.startswith("remote:")
    ).strip()
    raise errors.GitError(
        f"push to {remote}/{branch} was refused: {reason or out.strip()}"
    )


def current_branch(repo: Path) -> str:
    return text(repo, "symbolic-ref", "--short", "HEAD")


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", older, newer],
        capture_output=True,
        env=_env(identity=False),
    ).returncode == 0


# commit signatures (SSH keys, git's own verification) ---------------------------------------


@dataclass(frozen=True)
class Signature:
    """What git says of one commit's signature under an allowed-signers file."""

    status: str
    """git's %G?: G good and allowed, U good but the key is not allowed, N none, B bad, E …"""
    signer: str
    key: str

    @property
    def trusted(self) -> bool:
        return self.status == "G"

    def describe(self, commit: str) -> str:
        c = commit[:12]
        if self.status == "N":
            return f"commit {c} is not signed"
        if self.status == "U":
            return f"commit {c} is signed by key {self.key or '(unknown)'}, which is not an allowed signer"
        if self.status == "B":
            return f"commit {c} has a bad signature (key {self.key or 'unknown'})"
        if self.status == "G":
            return f"commit {c} is signed by {self.signer} ({self.key})"
        return f"commit {c}'s signature cannot be checked ({self.status}: key {self.key or 'unknown'})"


def signature(repo: Path, commit: str, *, allowed_signers: Path) -> Signature:
    """Verify ``commit``'s signature against an SSH allowed-signers file."""
    out = run(
        repo, "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}", "log", "-1",
        "--format=%G?%x1f%GS%x1f%GK", commit,
    ).decode().strip()
    status, _, rest = out.partition("\x1f")
    signer, _, key = rest.partition("\x1f")
    return Signature(status or "N", signer, key)


def signing_args(key: Path | None) -> list[str]:
    """``git`` options (before the subcommand) that make ``commit -S`` sign with an SSH ``key``."""
    if key is None:
        return []
    return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true"]


def blob_size(repo: Path, commit: str, path: str) -> int:
    """Size in bytes of the file ``path`` at ``commit`` (read before the content is)."""
    out = run(repo, "cat-file", "-s", f"{commit}:{path}", check=False).decode().strip()
    return int(out) if out.isdigit() else 0
