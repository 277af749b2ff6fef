"""`bench/rollout.py --kubernetes`: the same two measurements on the local test cluster.

One test cluster (etcd, kube-apiserver, kube-controller-manager of devcluster), the kubelet
stand-in running the real pods, the operator's runtime for the repository (`operator.runtime`:
reconciler, loop, monitor, route keeper) and the operator's gateway (`controller.gateway` over
`operator.traffic.Traffic`, forwarding to the pods' addresses) on a loopback port, wired as
the cluster tests wire them (`tests/k8s/rollout_rig.py`). v2 runs in its own Deployment beside
v1's, as a shadow that never ends.

1. Mirroring cost through the operator's gateway: rounds alternate the shadow off and on, same
   run, same pods (`rollout.mirroring_cost`).
2. Breach -> revert commit: bad versions under a strict shadow, judged by the operator's monitor
   on the copies its candidate pods answered (`rollout.reverts`).

Printed with the machine's load average before and after (a loaded machine is slower).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import _load
import rollout
from k8s.rollout_rig import rigged

from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.core import layout
from mlgitops.demo import examples
from mlgitops.devcluster.cluster import TestCluster

NS = "bench-rollout"
console = rollout.console


def bin_dir() -> Path:
    out = subprocess.run(["bash", "tools/k8s/build.sh", "--print-bin-dir"], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return Path(out.stdout.strip())


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min, {os.cpu_count()} cores)"


def wait(what: str, check: object, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def main(args: argparse.Namespace) -> int:
    settings.telemetry_off()
    console.print(f"load average at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="mlgitops-bench-rollout-k8s-") as tmp:
        root = Path(tmp)
        repo = root / "models"
        bare = repository.init(repo)
        a = examples.credit_population(3000, seed=1)
        publish(examples.train_credit_model(a, trees=30, seed=1), a, name=rollout.NAME,
                repo=repo, target=examples.TARGET, quiet=True, push=False,
                message="v1 on population A")
        rollout.set_rollout(repo, {"strategy": "shadow", "shadow": {"rows": rollout.NEVER},
                                   "analysis": rollout.LENIENT}, "rollout: shadow")
        git.push(repo)
        dev = TestCluster(bin_dir(), parent_dir=root, log=lambda _msg: None)
        dev.start()
        try:
            dev.request("/api/v1/namespaces", method="POST", body={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            with rigged(bare, dev, NS, root, interval=1.0) as rig, rig.operating():
                router = rig.runtime.reconciler.router
                v1 = git.last_change(repo, "HEAD", list(layout.model_paths(rollout.NAME)))
                wait("v1 serving", lambda: getattr(router.get(rollout.NAME), "version", None)
                     == v1)
                a2 = examples.credit_population(3000, seed=2)
                v2 = str(publish(examples.train_credit_model(a2, trees=30, seed=2), a2,
                                 name=rollout.NAME, repo=repo, target=examples.TARGET,
                                 quiet=True, message="v2 (good) under a shadow"))
                rig.runtime.loop.trigger("bench")
                wait("v2 beside v1", lambda: router.split(rollout.NAME) is not None)
                rig.traffic.refresh()
                url = f"{rig.url}/models/{rollout.NAME}/invocations"
                console.print(f"v1 {str(v1)[:12]} serves (its own Deployment), v2 {v2[:12]} is "
                              "its shadow (another Deployment); through the operator's gateway; "
                              f"load: {'wrk' if _load.have_wrk() else 'python client'}, "
                              f"concurrency {args.concurrency}, {args.seconds:g} s per round")
                rollout.mirroring_cost(router, url, args)
                console.print(f"load average after the cost rounds: {load()}")
                git.run(repo, "pull", "-q", "--ff-only", "origin", layout.BRANCH)
                rollout.set_rollout(repo, {"strategy": "shadow", "shadow": {"rows": rollout.NEVER},
                                           "analysis": rollout.STRICT}, "rollout: strict shadow")
                git.push(repo)
                rig.runtime.loop.trigger("bench")
                if args.reverts:
                    operator = SimpleNamespace(store=rig.runtime.store, router=router,
                                               trigger=rig.runtime.loop.trigger)
                    rollout.reverts(operator, repo, url, args.reverts)
        finally:
            dev.stop()
    console.print(f"load average at the end: {load()}")
    return 0
