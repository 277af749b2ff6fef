"""A model pod's two commands, cold: ``mlgitops fetch-model`` and ``mlgitops serve`` -> ready.

    .venv/bin/python bench/pod_start.py [--runs 7] [--baseline-venv /work/main/.venv]

Publishes one small real model (a forest of the tests' data) to a bare remote, then times, per
run, ``fetch-model`` of that commit (process start to exit) and ``serve`` (process start to
``GET /v2/health/ready`` answering 200, plus the CPU seconds of the server and its worker by
then). With ``--baseline-venv`` (another checkout's virtualenv, e.g. main's) each run times that
one too, alternating, so the ratio is against a same-run baseline. Prints medians. The
imports (``python -X importtime``) are most of ``serve``: scikit-learn and skops (its trusted
types list imports every estimator); ``bench/k8s_commit_to_ready.py`` has the whole path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.data import make_frame, train  # the tests' small estimators

import mlgitops
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.core import layout

NAME = "credit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(k)) for k in kids)


def fetch(venv: Path, url: str, commit: str, digest: str, scratch: Path) -> float:
    dest = Path(tempfile.mkdtemp(dir=scratch)) / NAME
    began = time.monotonic()
    subprocess.run([str(venv / "bin" / "mlgitops"), "fetch-model", "--repo-url", url,
                    "--commit", commit, "--name", NAME, "--digest", digest, "--dest", str(dest)],
                   check=True, capture_output=True)
    return time.monotonic() - began


def serve(venv: Path, model: Path, scratch: Path) -> tuple[float, float]:
    port = free_port()
    stats = Path(tempfile.mkdtemp(dir=scratch))
    began = time.monotonic()
    proc = subprocess.Popen([str(venv / "bin" / "mlgitops"), "serve", str(model), "--port",
                             str(port), "--name", NAME, "--stats-dir", str(stats)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"{venv}: mlgitops serve exited {proc.returncode}")
            time.sleep(0.01)
        return time.monotonic() - began, cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--baseline-venv", type=Path, default=None)
    args = ap.parse_args()
    os.environ.update({"MLGITOPS_MLFLOW": "0", "MLGITOPS_EVIDENTLY": "0",
                       "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    venvs = {"this": Path(sys.prefix)}
    if args.baseline_venv is not None:
        venvs["baseline"] = args.baseline_venv.resolve()
    scratch = Path(tempfile.mkdtemp(prefix="bench-pod-start-"))
    try:
        repo = scratch / "repo"
        repository.init(repo)
        frame = make_frame()
        commit = str(mlgitops.publish(train(frame, kind="forest"), frame, name=NAME, repo=repo,
                                      target="label", push=True, quiet=True))
        import yaml

        digest = yaml.safe_load((repo / layout.manifest_path(NAME)).read_text())["spec"]["model"]["digest"]
        url = f"file://{git.remote_url(repo)}"
        model = repo / layout.model_path(NAME)
        got: dict[str, dict[str, list[float]]] = {k: {"fetch": [], "serve": [], "cpu": []}
                                                  for k in venvs}
        for _ in range(args.runs):
            for key, venv in venvs.items():
                got[key]["fetch"].append(fetch(venv, url, commit, digest, scratch))
                wall, cpu = serve(venv, model, scratch)
                got[key]["serve"].append(wall)
                got[key]["cpu"].append(cpu)
        load = os.getloadavg()[0]
        print(f"pod start, {args.runs} runs (medians), load {load:.1f}")
        for what, label in (("fetch", "fetch-model, start -> exit"),
                            ("serve", "serve, start -> ready"),
                            ("cpu", "serve, CPU s by ready")):
            line = f"  {label:28s}" + "".join(
                f"  {k} {statistics.median(v[what]):.2f} s" for k, v in got.items())
            if "baseline" in got:
                ratio = (statistics.median(got["baseline"][what])
                         / statistics.median(got["this"][what]))
                line += f"  (baseline / this: {ratio:.2f})"
            print(line)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
