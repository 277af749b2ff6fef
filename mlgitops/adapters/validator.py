"""The remote's warm validator: one process per bare repository that checks pushes.

The pre-receive hook used to start an interpreter and import scikit-learn for every push
(seconds). Instead it asks a long-lived process of the remote over a Unix socket in the bare
repository's private runtime directory (`socket_path`): the process imported everything once
(`sandbox.warm`) and loads each model in a fresh child forked from it under the sandbox's
limits. It is started on demand by the hook itself (or warmed ahead by ``publish`` and the
drift monitor), serves one request at a time, and exits after ``IDLE_SECONDS`` without one,
and starts itself again as soon as mlgitops' own source files change (an upgrade).

Protocol: the client connects, sends one JSON object and shuts its writing side; the
process answers one JSON object and closes. ``{"ping": true}`` -> ``{"pong": true}``; any
other request goes to the handler (the hook's `hooks.answer`); an answer without a
``status`` (the handler failed, or ``{"restart": true}``) makes the hook check cold. Whoever can reach the
socket can only ask for a verdict: the ref update stays the hook's (git's) decision.

This module is the transport and the lifecycle; what is checked is `mlgitops.authoring.hooks`'.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlgitops import errors

LOG = "mlgitops-validator.log"
#: In the bare repository: digests validated in full, one ``<digest> <key>`` line each.
VALIDATED = "mlgitops-validated"
#: A validator that answered nothing for this long exits (the next push starts one again; a
#: publish and a new version under the drift monitor's watch warm it ahead): two minutes of
#: a scikit-learn interpreter (~160 MB) per push, not ten. ``MLGITOPS_VALIDATOR_IDLE``
#: (seconds) in its environment overrides it.
IDLE_SECONDS = 120.0
IDLE_ENV = "MLGITOPS_VALIDATOR_IDLE"
#: How often a waiting validator checks that its repository still exists.
TICK_SECONDS = 2.0
MAX_REQUEST_BYTES = 4 * 1024 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def runtime_dir() -> Path:
    """This user's directory of validator sockets (``$TMPDIR/mlgitops-<uid>``, mode 0700).

    Outside the repository, so copying a bare repository copies no socket, and short, so a
    long repository path fits a socket address. ConfigError when it is not private to us.
    """
    path = Path(os.environ.get("TMPDIR") or "/tmp") / f"mlgitops-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise errors.ConfigError(f"{path} is not a directory private to this user; remove it "
                                 "so the remote's validator can keep its socket there")
    return path


def _key(gitdir: Path) -> str:
    return hashlib.sha256(os.path.realpath(gitdir).encode()).hexdigest()[:24]


def socket_path(gitdir: Path) -> Path:
    """Where ``gitdir``'s validator listens (the hook computes the same path)."""
    return runtime_dir() / f"{_key(gitdir)}.sock"


def sources() -> list[Path]:
    """The source files of the mlgitops modules this process imported."""
    root = Path(__file__).resolve().parents[1]  # the mlgitops package
    found = {Path(f) for m in list(sys.modules.values())
             if (f := getattr(m, "__file__", None)) and Path(f).is_relative_to(root)}
    return sorted(found)


def source_stamp(paths: list[Path]) -> str:
    """Changes whenever one of ``paths`` changes (mlgitops was upgraded or edited)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            h.update(f"{path}:gone".encode())
            continue
        h.update(f"{path}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()


def ask(gitdir: Path, request: dict[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """Send ``request`` to ``gitdir``'s validator; OSError when none answers, ValueError on junk."""
    try:
        path = socket_path(gitdir)
    except errors.ConfigError as exc:
        raise OSError(str(exc)) from exc
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(2.0)
        conn.connect(str(path))
        conn.settimeout(timeout)
        conn.sendall(json.dumps(request).encode() + b"\n")
        conn.shutdown(socket.SHUT_WR)
        data = _read_all(conn)
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("the validator's answer is not a JSON object")
    return answer


def running(gitdir: Path) -> bool:
    """True when ``gitdir`` has a warm validator that answers."""
    try:
        return bool(ask(gitdir, {"ping": True}, timeout=5.0).get("pong"))
    except (OSError, ValueError):
        return False


def stop(gitdir: Path) -> bool:
    """Ask ``gitdir``'s validator to exit now (what a demo does when it ends); True if one did."""
    try:
        return bool(ask(gitdir, {"stop": True}, timeout=5.0).get("stopped"))
    except (OSError, ValueError):
        return False


def warm_remote(url: str | Path) -> bool:
    """Start the validator of the bare repository at ``url`` in the background unless it runs.

    Runs the remote's own hook with ``--warm`` (its interpreter and code, as a push would) and
    returns at once. False when ``url`` is not a local bare repository with the mlgitops
    pre-receive hook (nothing to warm).
    """
    gitdir = Path(url)
    hook = gitdir / "hooks" / "pre-receive"
    try:
        if not (gitdir / "HEAD").is_file() or b"mlgitops" not in hook.read_bytes()[:400]:
            return False
    except OSError:
        return False
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        subprocess.Popen([str(hook), "--warm"], cwd=gitdir, env={**env, "GIT_DIR": str(gitdir)},
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return False
    return True


def _read_all(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise ValueError(f"message over {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)


def _same_dir(path: Path, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _reply(conn: socket.socket, answer: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(answer).encode() + b"\n")


def idle_seconds() -> float:
    """`IDLE_SECONDS`, or ``MLGITOPS_VALIDATOR_IDLE`` when it is a positive number."""
    try:
        value = float(os.environ.get(IDLE_ENV, ""))
    except ValueError:
        return IDLE_SECONDS
    return value if value > 0 else IDLE_SECONDS


#: `serve`'s status when mlgitops' sources changed: the caller starts the new code in its place.
RESTART = 75


def serve(gitdir: Path, *, handle: Handler, idle: float = IDLE_SECONDS,
          warm: Callable[[], None] | None = None) -> int:
    """Answer requests on ``gitdir``'s socket until idle for ``idle`` seconds; exit status.

    Only one validator per repository runs (an exclusive lock, taken before ``warm`` imports,
    so a hook sees that one is starting); a second one exits 0 at once. It exits when
    ``gitdir`` is removed, and returns `RESTART` when a source file of mlgitops it imported
    changed (checked every `TICK_SECONDS` and before each request).
    """
    path = socket_path(gitdir)
    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return 0
    try:
        if warm is not None:
            warm()
    except BaseException:
        os.close(lock)
        raise
    watched = sources()
    stamp = source_stamp(watched)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        umask = os.umask(0o077)
        try:
            listener.bind(str(path))
        finally:
            os.umask(umask)
        listener.listen(16)
        listener.settimeout(min(idle, TICK_SECONDS))
        home = os.stat(gitdir).st_ino
        print(f"mlgitops validator {os.getpid()} ready for {gitdir}", file=sys.stderr, flush=True)
        last = time.monotonic()
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() - last >= idle or not _same_dir(gitdir, home):
                    return 0
                if source_stamp(watched) != stamp:
                    return RESTART
                continue
            last = time.monotonic()
            with conn:
                conn.settimeout(30.0)
                try:
                    request = json.loads(_read_all(conn))
                    if not isinstance(request, dict):
                        raise ValueError("not a JSON object")
                except (OSError, ValueError):
                    continue  # not a client of ours; nothing to answer
                if request.get("ping"):
                    _reply(conn, {"pong": True, "pid": os.getpid()})
                    continue
                if request.get("stop"):
                    _reply(conn, {"stopped": True, "pid": os.getpid()})
                    return 0
                if source_stamp(watched) != stamp:  # mlgitops was upgraded: the new code must check
                    _reply(conn, {"restart": True})
                    return RESTART
                conn.settimeout(None)
                try:
                    answer = handle(request)
                except Exception as exc:  # no verdict: the hook then checks cold
                    answer = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                _reply(conn, answer)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        listener.close()
        os.close(lock)
