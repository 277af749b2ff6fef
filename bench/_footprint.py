"""The whole memory footprint of a running `mlgitops up` and its remote, by role (PSS).

Every process in the controller's process tree (walked by parent pid from ``/proc``, so
whatever `mlgitops up` starts is counted, whatever it is) plus the remote's warm validator
(``mlgitops.authoring.hooks serve <gitdir>``: it runs in its own session, found by its command
line, never pinged, so measuring it does not keep it alive). PSS from
``/proc/<pid>/smaps_rollup``: a page shared by n processes counts 1/n in each, so the sum is
the memory they hold together.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("controller", "hosts", "servers", "sink: mlflow", "sink: evidently", "sinks",
         "validator", "other")


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out[ppid].append(int(entry.name))
    return out


def tree(root: int) -> list[int]:
    """``root`` and every live descendant of it."""
    kids = _children()
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def validators(gitdir: Path) -> list[int]:
    """The warm validator(s) of the bare repository ``gitdir`` (by command line)."""
    want = str(gitdir.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _cmdline(int(entry.name))
            if "mlgitops.authoring.hooks" in cmd and "serve" in cmd and want in cmd:
                found.append(int(entry.name))
    return found


def _sink_of(pid: int) -> str:
    try:
        log = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return "sinks"
    name = Path(log).stem
    return f"sink: {name}" if name in ("mlflow", "evidently") else "sinks"


def role(pid: int, controller: int) -> str:
    if pid == controller:
        return "controller"
    cmd = _cmdline(pid)
    if "mlgitops.controller.tracking" in cmd:
        return _sink_of(pid)
    if any(c.startswith("mlgitops.server.host") for c in cmd) or any(
            "mlgitops.server.host" in c for c in cmd):
        return "hosts"
    if any(c.startswith("mlgitops.server") for c in cmd):
        return "servers"
    return "other"


@dataclass
class Footprint:
    """PSS (MB) and process count by role, at one moment."""

    mb: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    procs: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def total(self) -> float:
        return sum(self.mb.values())

    @property
    def processes(self) -> int:
        return sum(self.procs.values())

    def cell(self, r: str) -> str:
        n = self.procs.get(r, 0)
        return f"{self.mb.get(r, 0.0):.0f} ({n})" if n else "-"

    def as_dict(self) -> dict[str, Any]:
        return {r: [round(self.mb[r], 1), self.procs[r]] for r in self.mb}


def measure(controller: int, remote: Path) -> Footprint:
    fp = Footprint()
    for pid in tree(controller):
        kb = pss_kb(pid)
        if kb:
            r = role(pid, controller)
            fp.mb[r] += kb / 1024
            fp.procs[r] += 1
    for pid in validators(remote):
        kb = pss_kb(pid)
        if kb:
            fp.mb["validator"] += kb / 1024
            fp.procs["validator"] += 1
    return fp


def idle_roles(fp: Footprint) -> bool:
    """True once nothing that idles out (sinks, the validator) runs."""
    return not any(fp.procs.get(r) for r in ("sink: mlflow", "sink: evidently", "sinks",
                                               "validator"))
