"""`mlgitops demo --kubernetes` as a person runs it: a subprocess that starts its own cluster.

It needs the same binaries as the other tests here (the session fixture's `k8s_cluster` is not
used: the demo starts and stops a control plane of its own); it must exit 0, tell the revert and
the rollback, and leave no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)


def test_mlgitops_demo_kubernetes_reverts_and_rolls_back(k8s_bin_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MLGITOPS_K8S_BIN_DIR": str(k8s_bin_dir), "COLUMNS": "200"}
    mlgitops = Path(sys.executable).parent / "mlgitops"
    done = subprocess.run(
        [str(mlgitops), "demo", "--kubernetes", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=840, env=env, check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "breach -> revert commit" in out, out[-6000:]
    assert "revert -> rolled back" in out, out[-6000:]
    assert "Revert" in out and "Reverted" in out, out[-6000:]
    assert "pod processes left running" in out, out[-6000:]
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left behind: {leftovers.stdout}"
