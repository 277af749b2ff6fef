"""Kubernetes: commit -> Ready step by step, and revert commit -> the previous version answering.

    .venv/bin/python bench/k8s_commit_to_ready.py [--runs 3] [--load-procs 2]

One test cluster (etcd, kube-apiserver, kube-controller-manager of devcluster), the kubelet
stand-in running the real pods (``mlgitops fetch-model`` init container, ``mlgitops serve``),
and the operator in this process (kopf, standalone), told of each push by the bare remote's
post-receive call (``POST /hooks/git``, as `mlgitops up`'s remote does). Watches on the
ModelDeployment, the Deployments and the pods time each step on one clock:

- commit (pushed) -> Ready, for a new version of a running model (the median is the target,
  <= 3 s): sync (the remote's call -> the ModelDeployment names the commit), render+apply (-> the version's
  Deployment exists), controller-manager (-> its pod exists), fetch (-> the pod is
  Initialized: bound, ``fetch-model`` done), readiness (-> the pod is Ready; split at the
  server's "serving" log line into ``serve: loaded``, the server's own start, and ``probe:
  ready``, the workers' start and the kubelet's probes), operator (-> the ModelDeployment says
  Ready with the commit). ``--baseline-venv`` alternates each run with one whose pod runs
  another checkout's ``mlgitops`` (the same operator, the same load);
- revert commit (pushed) -> the previous version answering (a ready pod the model's Service selects
  answers with the previous version), with ``spec.rollout.scaleDownDelaySeconds`` at its
  default (the previous version kept warm) and, as the same-run baseline, at 0 (a revert is a
  new rollout). Quiet, then with ``--load-procs`` CPU-bound processes (target: median < 1 s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.data import make_frame, train  # the tests' small estimators

import mlgitops
from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters.kubernetes import versions
from mlgitops.authoring import repository
from mlgitops.core import k8s_objects as ko
from mlgitops.core import layout
from mlgitops.demo.embedded import free_port
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet, http_get

NAME = "credit"
NS = "bench"
STEPS = ("sync", "render+apply", "controller-manager", "fetch", "readiness", "operator")
#: ``readiness`` split by the server's own log line (the model loaded, workers forking)
PARTS = ("serve: loaded", "probe: ready")
EPOCH = time.time() - time.monotonic()  # a log line's wall-clock time -> this clock


def loaded_at(kubelet: Kubelet, pod: str, version: str) -> float | None:
    """When the pod's server logged that it serves ``version`` (monotonic), if it did."""
    found = None
    for line in kubelet.logs(pod, "server").splitlines():
        if f" version {version} on " in line and "serving" in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            found = stamp.timestamp() - EPOCH
    return found


def bin_dir() -> Path:
    out = subprocess.run(["bash", "tools/k8s/build.sh", "--print-bin-dir"], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return Path(out.stdout.strip())


class Seen:
    """The first time (monotonic) each thing was seen, fed by polling the API server often."""

    def __init__(self, cluster: k8s.Cluster) -> None:
        self.cluster = cluster
        self.times: dict[tuple[str, str], float] = {}
        self.pods: dict[str, str] = {}  # version -> the name of its (last seen) pod
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def mark(self, key: tuple[str, str]) -> None:
        self.times.setdefault(key, time.monotonic())

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self._look()
            self.stop.wait(0.05)

    def _look(self) -> None:
        cr = self.cluster.get_resource(NS, NAME) or {}
        commit = (cr.get("metadata", {}).get("annotations") or {}).get(ko.ANNOTATION_COMMIT)
        if commit:
            self.mark(("declared", commit))
        st = cr.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in st.get("conditions") or ())
        if ready and st.get("servedCommit"):
            self.mark(("ready", st["servedCommit"]))
        for d in self.cluster.deployments(NS, NAME):
            self.mark(("deployment", str(ko.pinned_commit(d))))
        for p in self.cluster.pods(NS, NAME):
            runs = (p["metadata"].get("labels") or {}).get(ko.LABEL_VERSION, "")
            self.mark(("pod", runs))
            self.pods[runs] = p["metadata"]["name"]
            conds = {c["type"]: c["status"] for c in (p.get("status") or {}).get("conditions") or ()}
            if conds.get("Initialized") == "True":
                self.mark(("initialized", runs))
            if conds.get("Ready") == "True":
                self.mark(("pod-ready", runs))


def answering(cluster: k8s.Cluster) -> str | None:
    """The version a ready pod the Service selects answers with (what kube-proxy would reach)."""
    svc = cluster.read_service(NS, NAME)
    template = versions.serving_template(svc)
    for p in cluster.pods(NS, NAME, template=template):
        view = ko.pod_view(p)
        if view.ready and view.endpoint:
            status, body = http_get(f"{view.endpoint}/v2/models/{NAME}")
            if status == 200:
                return str(json.loads(body)["version"])
    return None


def wait(what: str, check: Any, timeout: float = 120.0, every: float = 0.02) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def notify(port: int) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/git", data=b"x", method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def set_delay(repo: Path, seconds: float) -> str | None:
    path = repo / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"].setdefault("rollout", {})["scaleDownDelaySeconds"] = seconds
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    sha = git.commit(repo, message=f"{NAME}: scaleDownDelaySeconds {seconds}",
                     paths=[layout.MANIFESTS])
    if sha is not None:  # None: it said so already
        git.push(repo)
    return sha


@contextlib.contextmanager
def load(procs: int) -> Iterator[None]:
    spin = "while True: pass"
    children = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(procs)]
    try:
        yield
    finally:
        for c in children:
            c.kill()
            c.wait()


def outage(tc: TestCluster, seen: Seen, port: int, publish: Any, seconds: float) -> None:
    """Stop the kube-apiserver for ``seconds``; a commit is pushed (and the operator told)
    halfway; from the API server ready again to the commit in the ModelDeployment and Ready."""
    tc.stop_apiserver()
    time.sleep(seconds / 2)
    v = publish(900)
    notify(port)
    time.sleep(seconds / 2)
    tc.start_apiserver()
    back = time.monotonic()
    wait("the commit in its ModelDeployment", lambda: ("declared", v) in seen.times, timeout=600)
    wait("the commit Ready", lambda: ("ready", v) in seen.times, timeout=600)
    t = seen.times
    print(f"\nAPI server stopped {seconds:.0f} s, a commit pushed meanwhile; from its return: "
          f"in the ModelDeployment {t[('declared', v)] - back:.2f} s (target <= 10 s), its "
          f"Deployment {t[('deployment', v)] - back:.2f} s, pod {t[('pod', v)] - back:.2f} s, "
          f"Ready {t[('ready', v)] - back:.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument("--modes", default="quiet,loaded", help="rollback runs: quiet, loaded or both")
    ap.add_argument("--commit-runs", type=int, default=None,
                    help="commit -> Ready runs (default: --runs; 0: skip that part)")
    ap.add_argument("--baseline-venv", type=Path, default=None,
                    help="another checkout's virtualenv (e.g. /work/main/.venv): each commit -> "
                         "Ready run is followed by one whose pod runs that mlgitops")
    ap.add_argument("--outage", type=float, default=40.0,
                    help="seconds the API server is stopped (0: skip that part)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
    port = free_port()
    with TestCluster(bin_dir()) as tc, k8s.Cluster.from_kubeconfig(tc.kubeconfig_path) as cluster:
        install_crds(cluster.api)
        cluster._core.create_namespace({"metadata": {"name": NS}})
        repo = tmp / "repo"
        repository.init(repo)
        published: list[str] = []

        def publish(seed: int) -> str:
            f = make_frame(seed=seed)
            sha = str(mlgitops.publish(train(f, kind="forest", seed=seed), f, name=NAME, repo=repo,
                                       target="label", push=True, quiet=True))
            published.append(sha)
            return sha

        os.environ.update({
            "MLGITOPS_MLFLOW": "0", "MLGITOPS_EVIDENTLY": "0",
            "MLGITOPS_OPERATOR_REPO_URL": f"file://{git.remote_url(repo)}",
            "MLGITOPS_OPERATOR_NAMESPACE": NS, "MLGITOPS_OPERATOR_INTERVAL_SECONDS": "30",
            "MLGITOPS_OPERATOR_STATE_DIR": str(tmp / "operator"),
            "MLGITOPS_OPERATOR_KUBECONFIG": str(tc.kubeconfig_path),
            "MLGITOPS_OPERATOR_HTTP_PORT": str(port),
            "KUBECONFIG": str(tc.kubeconfig_path),
        })
        from mlgitops.operator import handlers  # reads its settings from the environment

        v0 = publish(0)
        seen = Seen(cluster)
        with Kubelet(tc, NS, workdir=tmp / "kubelet", backoff=(1.0, 5.0),
                     log=lambda m: None) as kubelet, handlers.running(NS):
            seen.thread.start()
            wait("v0 Ready", lambda: ("ready", v0) in seen.times)
            venvs = {"this": Path(sys.executable).parent}
            if args.baseline_venv is not None:
                venvs["baseline"] = args.baseline_venv.resolve() / "bin"
            rows: dict[str, list[dict[str, float]]] = {k: [] for k in venvs}
            for i in range(args.runs if args.commit_runs is None else args.commit_runs):
                order = list(venvs.items())
                for key, where in order if i % 2 == 0 else order[::-1]:  # alternating
                    kubelet.bin_dir = where  # the new version's pod runs that mlgitops
                    v = publish(100 + len(published))  # committed and pushed (the remote's hook)
                    began = time.monotonic()
                    notify(port)
                    wait(f"run {i + 1} ({key}) Ready", lambda v=v: ("ready", v) in seen.times)
                    t = seen.times
                    marks = [began, t[("declared", v)], t[("deployment", v)], t[("pod", v)],
                             t[("initialized", v)], t[("pod-ready", v)], t[("ready", v)]]
                    row = {s: marks[k + 1] - marks[k] for k, s in enumerate(STEPS)}
                    row["total"] = marks[-1] - began
                    loaded = loaded_at(kubelet, seen.pods.get(v, ""), v)
                    if loaded is not None:
                        row[PARTS[0]] = loaded - marks[4]
                        row[PARTS[1]] = marks[5] - loaded
                    rows[key].append(row)
                    print(f"commit -> Ready run {i + 1} {key:<8} (load {os.getloadavg()[0]:.1f}): "
                          f"{row['total']:.2f} s  " + "  ".join(
                        f"{s} {row[s]:.2f}" for s in (*STEPS, *PARTS) if s in row), flush=True)
            kubelet.bin_dir = venvs["this"]
            if rows["this"]:
                med = {k: {s: statistics.median(r[s] for r in rs if s in r)
                           for s in (*STEPS, *PARTS, "total") if any(s in r for r in rs)}
                       for k, rs in rows.items()}
                print(f"\ncommit -> Ready (median of {len(rows['this'])}, load "
                      f"{os.getloadavg()[0]:.1f}): this {med['this']['total']:.2f} s "
                      "(target <= 3 s)" + (
                          f", baseline {med['baseline']['total']:.2f} s "
                          f"({args.baseline_venv}'s pod commands; "
                          f"baseline / this: {med['baseline']['total'] / med['this']['total']:.2f})"
                          if "baseline" in med else ""))
                for s in (*STEPS, *PARTS):
                    print(f"  {s:<20}" + "".join(f"  {k} {m[s]:.2f} s" for k, m in med.items()
                                                 if s in m))

            if args.outage > 0:
                outage(tc, seen, port, publish, args.outage)

            figures: dict[tuple[str, str], list[float]] = {}
            for mode, procs in (("quiet", 0), ("loaded", args.load_procs)):
                if mode not in args.modes.split(","):
                    continue
                for delay in (600.0, 0.0):
                    path = "warm" if delay else "baseline"
                    set_delay(repo, delay)
                    notify(port)
                    for _ in range(args.runs):
                        good = answering(cluster) or published[-1]  # what its pods say
                        before = versions.serving_template(cluster.read_service(NS, NAME))
                        bad = publish(200 + len(published))
                        notify(port)
                        wait("the new version Ready", lambda b=bad: ("ready", b) in seen.times)
                        wait("it answers", lambda b=bad: answering(cluster) == b)
                        if not delay:  # the baseline: the previous version's pods are gone
                            wait("the previous pods gone",
                                 lambda t=before: not cluster.pods(NS, NAME, template=t))
                        with load(procs):
                            time.sleep(0.5 if procs else 0.0)
                            subprocess.run(["git", "-C", str(repo), "revert", "--no-edit", "HEAD"],
                                           check=True, capture_output=True)
                            pushing = time.monotonic()
                            git.push(repo)  # through the remote's validating hook
                            began = time.monotonic()
                            notify(port)
                            revert = str(git.rev_parse(repo, "HEAD"))
                            done = wait("the previous version answering",
                                        lambda g=good, r=revert: answering(cluster) in (g, r),
                                        timeout=600, every=0.01)
                        published.append(good)
                        secs = done - began
                        figures.setdefault((mode, path), []).append(secs)
                        print(f"revert -> previous answering, {mode}, {path}: {secs:.2f} s "
                              f"(load {os.getloadavg()[0]:.1f}) "
                              f"(git push {began - pushing:.2f} s before)", flush=True)
            if figures:
                print("\nrevert commit -> previous version answering (median), target < 1 s:")
            for mode in (m for m in args.modes.split(",") if (m, "warm") in figures):
                warm = statistics.median(figures[(mode, "warm")])
                base = statistics.median(figures[(mode, "baseline")])
                print(f"  {mode:<7} warm {warm:.2f} s   baseline (scaleDownDelaySeconds 0) "
                      f"{base:.2f} s   ({base / warm:.1f}x)")
            seen.stop.set()


if __name__ == "__main__":
    main()
