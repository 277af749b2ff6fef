"""Process identity and signals: which processes are ours, and stopping them safely.

A process is named for good by its pid *and* its start time (a reused pid starts later), and
is recognised as this runtime's by the markers it carries in its environment:
``MLGITOPS_OWNER=<state dir>`` (every process of a runtime) and ``MLGITOPS_SERVER=<token>``
(its ledger record). A signal goes only to a process that still carries the marker, pinned by
a pidfd between the check and the signal.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

TOKEN_ENV = "MLGITOPS_SERVER"
OWNER_ENV = "MLGITOPS_OWNER"


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "boot"


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (boot id and clock ticks since boot); None when it is gone.

    Together with the pid this names one process for good: a reused pid starts later.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{_boot_id()}:{ticks}"


def is_process(pid: int | None, started: str | None) -> bool:
    """True while ``pid`` runs and is the process that started at ``started`` (when known)."""
    if pid is None or not pid_alive(pid):
        return False
    return started is None or start_time(pid) == started


def environ(pid: int) -> list[bytes]:
    """The ``KEY=value`` entries of process ``pid``'s environment ([] when unreadable)."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def pids_with(markers: Iterable[str]) -> dict[int, list[str]]:
    """Live processes whose environment holds any of ``markers`` (``KEY=value``), with them."""
    wanted = {m.encode(): m for m in markers}
    out: dict[int, list[str]] = {}
    if not wanted:
        return out
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        pid = int(proc.name)
        hits = [wanted[e] for e in environ(pid) if e in wanted]
        if hits and pid_alive(pid):
            out[pid] = hits
    return out


def owned_pids(state_dir: Path) -> set[int]:
    """Live processes started by a runtime for ``state_dir`` (via their environment marker)."""
    return set(pids_with([f"{OWNER_ENV}={state_dir}"]))


def server_tokens(state_dir: Path) -> dict[int, str | None]:
    """Live processes of ``state_dir``'s runtime and the ledger token each carries (None: none)."""
    owner = f"{OWNER_ENV}={state_dir}".encode()
    prefix = f"{TOKEN_ENV}=".encode()
    out: dict[int, str | None] = {}
    for pid in owned_pids(state_dir):
        env = environ(pid)
        if owner not in env:
            continue
        token = next((e[len(prefix):].decode() for e in env if e.startswith(prefix)), None)
        out[pid] = token
    return out


def flock_holders(path: Path) -> set[int] | None:
    """Pids holding a ``flock`` on ``path`` (from ``/proc/locks``); None when that cannot be read."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    holders: set[int] = set()
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue  # "->" marks a waiter, not a holder
        try:
            pid, where = int(parts[4]), parts[5]
        except ValueError:
            continue
        if where.rsplit(":", 1)[-1] == str(inode):
            holders.add(pid)
    return holders


def group(pid: int) -> int | None:
    """The process group of ``pid`` (None when it is gone)."""
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def signal_verified(pid: int, sig: int, *, marker: bytes) -> bool:
    """Send ``sig`` to ``pid`` only if it still carries ``marker`` in its environment.

    A pidfd pins the process between the check and the signal, so a pid reused meanwhile is
    never hit. False when the process is gone (or is not ours).
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        if marker not in environ(pid):
            return False
        if fd is not None:
            try:
                signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                return False
            return True
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    finally:
        if fd is not None:
            os.close(fd)


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` and to ``pid`` (gone: nothing)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """Stop a process we started and its group: SIGTERM, SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    else:
        # the leader is gone; its forked workers may not be
        signal_group(proc.pid, signal.SIGKILL)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def stop_pids(pids: Iterable[int], *, marker: bytes, grace: float) -> None:
    """SIGTERM each process still carrying ``marker``, SIGKILL those alive after ``grace``."""
    left = [p for p in pids if signal_verified(p, signal.SIGTERM, marker=marker)]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in left):
        time.sleep(0.05)
    for pid in left:
        if pid_alive(pid):
            signal_verified(pid, signal.SIGKILL, marker=marker)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in left):
        time.sleep(0.05)


def tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
