"""The node's teardown leaves nothing behind: no process, mount, interface, cgroup, iptables chain or
file, and ip_forward as it was. Runs last in the lane (file order): it stops the session's node,
after its pods ran, and checks the host with its own tools, not with devcluster/host.py's. Then
the real-node demo runs on a node of its own."""

from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path

import pytest

from mlgitops.devcluster import host
from mlgitops.devcluster import node as realnode

pytestmark = pytest.mark.realnode


def chains() -> set[str]:
    out = set()
    for tool in ("iptables-save", "ip6tables-save"):
        done = subprocess.run([tool], capture_output=True, text=True, check=False)
        out |= {line.split()[0][1:] for line in done.stdout.splitlines()
                if line.startswith(":") and line.split()[0][1:].startswith(("KUBE-", "CNI-"))}
    return out


def links() -> set[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()}


def test_stopping_the_node_leaves_nothing_on_the_host(real_node: realnode.RealNode) -> None:
    before = real_node.before
    assert before is not None
    state = str(real_node.state_dir)
    # while it runs, each kind of change is there to be undone (so the checks below can fail)
    running = host.leftovers(real_node.state_dir, before)
    for kind in ("processes", "mounts", "interfaces", "cgroups", "files"):
        assert running[kind], f"the running node shows no {kind}: {running}"
    the_links = links()
    assert host.BRIDGE in the_links

    left = real_node.stop()
    assert not any(left.values()), left

    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    assert not [line for line in ps.stdout.splitlines()
                if state in line or "containerd-shim" in line or "/kubelet " in line]
    assert not [p for p in glob.glob("/proc/[0-9]*/cgroup")
                if "/kubepods" in Path(p).read_text(errors="replace")] if not before.cgroups else True
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert state not in mountinfo and "/run/containerd" not in mountinfo
    assert "/var/lib/kubelet" not in mountinfo
    assert host.BRIDGE not in links()
    assert not {n for n in links() - set(before.interfaces) if n.startswith("veth")}
    assert not glob.glob("/sys/fs/cgroup/*/kubepods*") or before.cgroups
    assert not chains() - {c.rsplit("/", 1)[1] for c in before.chains}
    for path in host.OUTSIDE_PATHS:
        assert path in before.paths or not os.path.lexists(path), path
    assert not real_node.state_dir.exists()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == before.ip_forward


@pytest.mark.timeout(900)
def test_the_real_node_demo_tells_the_story_and_leaves_nothing(
    realnode_image: Path, tmp_path: Path,
) -> None:
    """`mlgitops demo --kubernetes --real-node` as a person runs it, once the lane's node is gone
    (one node per machine): a node of its own, the story on real pods, a clean host after."""
    import sys

    from .conftest import bin_dir

    env = {**os.environ, "MLGITOPS_K8S_BIN_DIR": str(bin_dir()), "COLUMNS": "200"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlgitops"), "demo", "--kubernetes", "--real-node",
         "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=840, env=env,
        check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "breach -> revert commit" in out and "revert -> rolled back" in out, out[-6000:]
    assert "0 failed" in out, out[-6000:]
    assert re.search(r"left on the host after teardown\s*│\s*\{\}", out), out[-6000:]
    assert host.BRIDGE not in links() and not realnode.STATE_DIR.exists()
