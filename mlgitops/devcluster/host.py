"""What a real node changes on the host, and how to undo all of it (devcluster/node.py).

The kubelet, containerd, runc, its shims and the CNI plugins write outside their state directory
even when told where it is: /var/lib/kubelet (device plugins), /var/log/containers and
/var/log/pods (symlinks), /var/lib/cni (results cache), /run/containerd (fifos); they create
cgroups (kubepods in every v1 hierarchy), network interfaces (the bridge and one veth per pod),
iptables chains (the kubelet's canaries, portmap's CNI-HOSTPORT-*), mounts (the pods' volumes,
rootfs overlays, network namespaces) and set net.ipv4.ip_forward.

`snapshot()` records what exists before the node starts; `leftovers()` lists, by kind, what the
node left behind compared with it; `teardown()` removes exactly that. Nothing that was there
before is touched: a chain, path or interface present in the snapshot is not the node's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BRIDGE = "mlg-br0"
# Paths outside the state directory that the node's components write to (see the module doc).
OUTSIDE_PATHS = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/opt/containerd",
    "/etc/cni",
    "/run/netns",
)
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CGROUP_ROOT = Path("/sys/fs/cgroup")
TABLES = ("filter", "nat", "mangle", "raw")
IPTABLES = ("iptables", "ip6tables")
CHAIN_PREFIXES = ("KUBE-", "CNI-")  # the kubelet's and the CNI plugins' chains


@dataclass
class Snapshot:
    """The host as it was before the node started."""

    paths: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)  # "iptables/nat/CHAIN"
    ip_forward: str = "0"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        return cls(**json.loads(path.read_text()))


def _interfaces() -> list[str]:
    """The bridge and the veths (the only kinds of link the node makes)."""
    return sorted(p.name for p in Path("/sys/class/net").iterdir()
                  if p.name == BRIDGE or p.name.startswith("veth"))


def _kube_cgroups() -> list[str]:
    """Top-level `kubepods*` cgroups of every hierarchy (cgroup v1 hybrid, or v2)."""
    found = [str(p) for p in CGROUP_ROOT.glob("*/kubepods*") if p.is_dir()]
    found += [str(p) for p in CGROUP_ROOT.glob("kubepods*") if p.is_dir()]
    return sorted(found)


def _chains() -> list[str]:
    chains = []
    for tool in IPTABLES:
        if shutil.which(tool) is None:
            continue
        for table in TABLES:
            out = subprocess.run([tool, "-w", "5", "-t", table, "-S"], capture_output=True,
                                 text=True, check=False)
            for line in out.stdout.splitlines():
                if line.startswith("-N ") and line.split()[1].startswith(CHAIN_PREFIXES):
                    chains.append(f"{tool}/{table}/{line.split()[1]}")
    return sorted(chains)


def snapshot() -> Snapshot:
    return Snapshot(
        paths=[p for p in OUTSIDE_PATHS if os.path.lexists(p)],
        interfaces=_interfaces(),
        cgroups=_kube_cgroups(),
        chains=_chains(),
        ip_forward=IP_FORWARD.read_text().strip(),
    )


def _ancestors() -> set[int]:
    """This process and its parents: never the node's, whatever their command line says."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _node_processes(state_dir: Path, before: Snapshot) -> list[int]:
    """Processes started for the node: its state dir on their command line, or in its pods' cgroups."""
    mine, pids, spared = str(state_dir), [], _ancestors()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in spared:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        in_pods = not before.cgroups and "/kubepods" in cgroup
        if mine in cmdline or in_pods:
            pids.append(int(proc.name))
    return sorted(pids)


def _mounts(state_dir: Path, before: Snapshot) -> list[str]:
    roots = [str(state_dir)] + [p for p in OUTSIDE_PATHS if p not in before.paths]
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if any(point == r or point.startswith(r + "/") for r in roots):
                found.append(point)
    return found


def leftovers(state_dir: Path, before: Snapshot) -> dict[str, list[str]]:
    """What the node left on the host, by kind; every list empty means a clean host."""
    files = [p for p in OUTSIDE_PATHS if os.path.lexists(p) and p not in before.paths]
    if state_dir.exists():
        files.append(str(state_dir))
    forward = IP_FORWARD.read_text().strip()
    return {
        "processes": [str(p) for p in _node_processes(state_dir, before)],
        "mounts": _mounts(state_dir, before),
        "interfaces": [i for i in _interfaces() if i not in before.interfaces],
        "cgroups": [c for c in _kube_cgroups() if c not in before.cgroups],
        "iptables": [c for c in _chains() if c not in before.chains],
        "files": files,
        "sysctl": [] if forward == before.ip_forward else [f"net.ipv4.ip_forward={forward}"],
    }


def make_bridge(gateway_cidr: str) -> None:
    """The pods' bridge, made before the apiserver starts so that it can listen on the gateway."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "replace", gateway_cidr, "dev", BRIDGE], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _remove_chains(chains: list[str]) -> None:
    by_table: dict[tuple[str, str], list[str]] = {}
    for entry in chains:
        tool, table, chain = entry.split("/", 2)
        by_table.setdefault((tool, table), []).append(chain)
    for (tool, table), names in by_table.items():
        rules = subprocess.run([tool, "-w", "5", "-t", table, "-S"], capture_output=True,
                               text=True, check=False).stdout.splitlines()
        for rule in rules:  # first every jump to one of them, wherever it is
            parts = rule.split()
            if parts[:1] == ["-A"] and any(f"-j {n}" in rule or f"-g {n}" in rule for n in names):
                subprocess.run([tool, "-w", "5", "-t", table, "-D", *parts[1:]],
                               capture_output=True, check=False)
        for name in names:
            subprocess.run([tool, "-w", "5", "-t", table, "-F", name], capture_output=True, check=False)
        for name in names:
            subprocess.run([tool, "-w", "5", "-t", table, "-X", name], capture_output=True, check=False)


def _rmdir_tree(path: Path) -> None:
    """A cgroup directory and its children, deepest first (cgroup dirs hold only control files)."""
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def teardown(state_dir: Path, before: Snapshot, *, grace: float = 5.0) -> dict[str, list[str]]:
    """Undo every change of `leftovers()`: kill, unmount, delete links, cgroups, chains, files.

    Returns what is still left afterwards (every list empty on success).
    """
    pids = _node_processes(state_dir, before)
    _kill(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
    _kill(_node_processes(state_dir, before), signal.SIGKILL)
    time.sleep(0.2)
    for point in sorted(_mounts(state_dir, before), key=lambda p: -p.count("/")):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for name in _interfaces():
        if name not in before.interfaces:
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
    for cgroup in _kube_cgroups():
        if cgroup not in before.cgroups:
            _rmdir_tree(Path(cgroup))
    _remove_chains([c for c in _chains() if c not in before.chains])
    if IP_FORWARD.read_text().strip() != before.ip_forward:
        IP_FORWARD.write_text(before.ip_forward + "\n")
    for path in OUTSIDE_PATHS:
        if path not in before.paths and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    return leftovers(state_dir, before)
