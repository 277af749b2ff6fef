"""`mlgitops demo --kubernetes` as a person runs it: a subprocess that starts its own cluster.

It needs the same binaries as the other tests here (the session fixture's `k8s_cluster` is not
used: the demo starts and stops a control plane of its own); it must exit 0, tell the revert and
the rollback, and leave no process behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlgitops.adapters import git
from mlgitops.core import layout

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


def test_mlgitops_demo_shadow_kubernetes_reverts_before_a_user_sees_v2(
        k8s_bin_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MLGITOPS_K8S_BIN_DIR": str(k8s_bin_dir), "COLUMNS": "200"}
    mlgitops = Path(sys.executable).parent / "mlgitops"
    done = subprocess.run(
        [str(mlgitops), "demo", "--shadow", "--kubernetes", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=840, env=env, check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    # the count of user requests v2 answered through the operator's gateway, and of failures
    said = re.search(r"v2 answered (\d+) user requests through the operator's gateway; "
                     r"(\d+) user requests failed", out)
    assert said is not None, out[-6000:]
    assert said.groups() == ("0", "0"), out[-6000:]
    assert "rollout failed at step 1 (shadow)" in out, out[-6000:]
    # Git: the revert of v2 (the newest commit on the remote), path-scoped, v2 quarantined
    (head,) = git.log(tmp_path / "models-repo.git", "main", [], limit=1)
    v2 = head.trailers.get(layout.TRAILER_REVERTS)
    assert v2 and head.trailers.get(layout.TRAILER_MODEL) == "credit-risk"
    assert v2 in (git.show(tmp_path / "models-repo.git", head.commit, layout.QUARANTINE)
                  or b"").decode()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left behind: {leftovers.stdout}"
