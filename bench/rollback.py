"""Rollback: from the breaching window closing to the previous version answering at the gateway.

    .venv/bin/python bench/rollback.py [--runs 5] [--load-procs 3] [--without-hook-runs 0]

A fresh repository served by `mlgitops up` (in process, drift monitor on). v1 is trained on
population A. Each run publishes a new bad version (trained on the shifted population B),
waits until it serves, then sends population-A traffic through the gateway until the monitor
reverts the version in Git and the controller serves the previous content again. Measured per
run, on one clock:

- window -> pushed: the breaching window closes, the policy decides, the revert commit is made
  and pushed ("revert s": the writer's part, git included; "git push": the push alone, the
  remote's pre-receive hook validates the commit and its post-receive hook notifies the
  controller before it returns);
- pushed -> answering: the controller learns of the commit and the gateway answers with it;
- window -> answering: the total (target: median <= 1 s, also under load).

Two paths alternate run by run, in the same controller and repository:

- **warm** (what `mlgitops up` does): the remote's warm validator answers the hook (the revert's
  content was validated when it first served: digest and quarantine checks only), and the
  previous version's server is kept warm after the switch (``keep_previous_seconds``), so the
  rollback routes to it instead of loading the model again;
- **baseline** (the path before): ``MLGITOPS_VALIDATOR=cold`` (the hook starts an interpreter
  and imports per push) and no warm previous version (the rollback loads it in a standby).

Each pair runs on a quiet machine and again with ``--load-procs`` CPU-bound processes running
(``--load-procs 0``: quiet only). The load average is printed per run.

The client runs in its own process (as real clients do), so it does not compete with the
controller for the interpreter lock. After a bad version starts serving, the bench waits
``--settle`` seconds before sending traffic, so the runtime's warm standby process is back (in
production a window of live rows takes far longer than that to fill).

Traffic is ``--rate`` requests per second of 25 rows each (a 500-row window fills in well under
a second at the default rate).

``--without-hook-runs N`` adds N runs against the same remote with its validating pre-receive
hook removed, to show how much of the total is the hook's model validation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlgitops import settings
from mlgitops.adapters import git, validator
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.controller import run
from mlgitops.core import layout
from mlgitops.demo import examples
from mlgitops.demo.embedded import free_port, wait_for_version

console = Console(width=150)
NAME = "credit-risk"
TARGET_SECONDS = 1.0
KEEP_PREVIOUS_SECONDS = 600.0
DRIFT = {"windowRows": 500, "minRows": 300, "consecutiveWindows": 1, "cooldownSeconds": 0,
         "maxReverts": 1000, "revertPeriodSeconds": 3600}


@dataclass(frozen=True)
class Sample:
    hook: bool
    path: str
    loaded: bool
    load: float
    window_to_pushed: float
    revert: float
    push: float
    pushed_to_answer: float
    window_to_answer: float
    controller_seconds: float | None
    failed: int


CLIENT = """
import json, signal, sys, time, httpx
from mlgitops.demo import examples
url, seed, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
records = examples.credit_population(4000, seed=seed).drop(columns=examples.TARGET).to_dict(
    orient="records")
ok = failed = i = 0
def done(*_):
    print(json.dumps({"ok": ok, "failed": failed}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", flush=True)
with httpx.Client(timeout=10.0) as client:
    start = time.monotonic()
    while True:
        pause = start + i / 25 / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        batch = records[i % 3900 : i % 3900 + 25]
        i += 25
        try:
            r = client.post(url, json={"dataframe_records": batch})
            ok, failed = (ok + 1, failed) if r.status_code == 200 else (ok, failed + 1)
        except httpx.HTTPError:
            failed += 1
"""


class Client:
    """Population-A traffic from a separate process; ``stop()`` returns the failed requests."""

    def __init__(self, url: str, seed: int, rate: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, url, str(seed), str(rate)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready": data generated, about to send

    def stop(self) -> int:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return int(json.loads(lines[-1])["failed"]) if lines else 0


def served(base: str) -> str | None:
    try:
        r = httpx.get(f"{base}/v2/models/{NAME}", timeout=2.0)
        return str(r.json().get("version")) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def setup(repo: Path) -> Path:
    remote = repository.init(repo)
    a = examples.credit_population(3000, seed=1)
    publish(examples.train_credit_model(a, trees=30, seed=1), a, name=NAME, repo=repo,
            target=examples.TARGET, quiet=True, push=False, message="v1 on population A")
    path = repo / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["drift"].update(DRIFT)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(repo, message="rollback bench drift policy", paths=[layout.MANIFESTS])
    git.push(repo)
    return remote


BURN = "import os\nos.nice(0)\nwhile True:\n    pass\n"


class Burners:
    """``count`` CPU-bound processes (the load of a busy machine) while in the block."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Burners:
        self.procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(self.count)]
        if self.procs:
            time.sleep(20)  # let the 1-minute load average rise toward the count
        return self

    def __exit__(self, *_: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def one_run(ctl: run.Controller, repo: Path, *, seed: int, hook: bool, settle: float,
            rate: float, path: str, loaded: bool) -> Sample:
    base = ctl.base_url
    ctl.reconciler.keep_previous_seconds = KEEP_PREVIOUS_SECONDS if path == "warm" else 0.0
    git.run(repo, "pull", "-q", "--ff-only", "origin", layout.BRANCH)
    b = examples.credit_population(3000, shift=1.0, seed=seed)
    bad = publish(examples.train_credit_model(b, trees=30, seed=seed), b, name=NAME, repo=repo,
                  target=examples.TARGET, quiet=True, message=f"bad version {seed} on population B")
    wait_for_version(base, NAME, bad, timeout=180)
    time.sleep(settle)
    seen = len([e for e in ctl.store.events(NAME) if e["type"] == "Reverted"])
    if path == "baseline":
        os.environ["MLGITOPS_VALIDATOR"] = "cold"  # the controller's push runs the hook cold
    client = Client(f"{base}/models/{NAME}/invocations", 100 + seed, rate)
    answered: float | None = None
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            version = served(base)
            if version not in (bad, None):
                answered = time.time()
                break
            time.sleep(0.005)
    finally:
        failed = client.stop()
        os.environ.pop("MLGITOPS_VALIDATOR", None)
    if answered is None:
        raise SystemExit(f"no rollback of {bad[:12]} within 180 s; see {ctl.store.events_path}")
    reverted: list[dict[str, Any]] = []
    rolled: list[dict[str, Any]] = []
    wait_until = time.monotonic() + 10
    while time.monotonic() < wait_until and not (reverted and rolled):
        events = list(ctl.store.events(NAME))
        reverted = [e for e in events if e["type"] == "Reverted"][seen:]
        rolled = [e for e in events if e["type"] == "RolledBack" and e.get("reverted") == bad]
        time.sleep(0.05)
    ev = reverted[0]
    closed = float(ev["closedAt"])
    push = float(ev["pushSeconds"])
    pushed = float(ev["pushedAt"])
    return Sample(
        hook=hook,
        path=path,
        loaded=loaded,
        load=os.getloadavg()[0],
        window_to_pushed=pushed - closed,
        revert=float(ev["revertSeconds"]),
        push=push,
        pushed_to_answer=answered - pushed,
        window_to_answer=answered - closed,
        controller_seconds=float(rolled[0]["breachToRollbackSeconds"]) if rolled else None,
        failed=failed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5,
                        help="runs per path (warm, baseline) and condition (quiet, loaded)")
    parser.add_argument("--load-procs", type=int, default=3,
                        help="CPU-bound processes during the loaded runs (0: quiet runs only)")
    parser.add_argument("--without-hook-runs", type=int, default=0,
                        help="extra runs with the remote's validating pre-receive hook removed")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds a bad version serves before traffic starts")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="requests per second of 25 rows each")
    args = parser.parse_args()
    settings.telemetry_off()
    command = "  ".join(["$", ".venv/bin/python", *sys.argv])
    repo = Path(tempfile.mkdtemp(prefix="mlgitops-rollback-")) / "repo"
    remote = setup(repo)
    samples: list[Sample] = []
    cfg = settings.controller(repo, port=free_port(), poll_seconds=10.0)
    conditions = [False] + ([True] if args.load_procs > 0 else [])
    total = len(conditions) * args.runs * 2 + args.without_hook_runs
    seed = 10
    with run.running(cfg) as ctl, Progress(console=console, transient=True) as progress:
        task = progress.add_task("rollbacks", total=total)
        for loaded in conditions:
            with Burners(args.load_procs if loaded else 0):
                for _ in range(args.runs):
                    for path in ("warm", "baseline"):
                        seed += 1
                        samples.append(one_run(ctl, repo, seed=seed, hook=True, settle=args.settle,
                                               rate=args.rate, path=path, loaded=loaded))
                        progress.advance(task)
        for _ in range(args.without_hook_runs):
            (remote / "hooks" / "pre-receive").unlink(missing_ok=True)
            seed += 1
            samples.append(one_run(ctl, repo, seed=seed, hook=False, settle=args.settle,
                                   rate=args.rate, path="warm", loaded=False))
            progress.advance(task)
    with contextlib.suppress(OSError, ValueError, KeyError):  # this bench's remote's validator
        os.kill(int(validator.ask(remote, {"ping": True}, timeout=5.0)["pid"]), signal.SIGTERM)
    table = Table(title="rollback: breaching window closes → previous version answers at the gateway")
    for col in ("run", "load", "path", "remote hook", "window→pushed s", "revert s",
                "of which git push s", "pushed→answering s", "window→answering s",
                "controller-side s", "failed requests"):
        table.add_column(col, justify="right")
    for i, s in enumerate(samples, 1):
        table.add_row(str(i), f"{s.load:.1f}", s.path, "validating" if s.hook else "none",
                      f"{s.window_to_pushed:.3f}", f"{s.revert:.3f}", f"{s.push:.3f}",
                      f"{s.pushed_to_answer:.3f}", f"{s.window_to_answer:.3f}",
                      "-" if s.controller_seconds is None else f"{s.controller_seconds:.3f}",
                      str(s.failed))

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}" if values else "-"

    groups: dict[tuple[bool, str, bool], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.loaded, s.path, s.hook), []).append(s)
    for (loaded, path, hook), group in groups.items():
        table.add_row(
            f"median ({len(group)})", f"{'loaded' if loaded else 'quiet'} "
            f"{statistics.median([s.load for s in group]):.1f}", path,
            "validating" if hook else "none",
            med([s.window_to_pushed for s in group]), med([s.revert for s in group]),
            med([s.push for s in group]), med([s.pushed_to_answer for s in group]),
            med([s.window_to_answer for s in group]),
            med([s.controller_seconds for s in group if s.controller_seconds is not None]),
            str(sum(s.failed for s in group)), style="bold",
        )
    console.print(table)
    for loaded in conditions:
        warm = [s.window_to_answer for s in samples if s.hook and s.loaded == loaded
                and s.path == "warm"]
        cold = [s.window_to_answer for s in samples if s.hook and s.loaded == loaded
                and s.path == "baseline"]
        if not warm or not cold:
            continue
        verdict = "met" if statistics.median(warm) <= TARGET_SECONDS else "NOT met"
        console.print(f"{'loaded' if loaded else 'quiet'}: window→answering median warm "
                      f"{statistics.median(warm):.2f} s vs baseline {statistics.median(cold):.2f} s "
                      f"({statistics.median(cold) / statistics.median(warm):.1f}x); target <= "
                      f"{TARGET_SECONDS:.0f} s: {verdict}")
    load = os.getloadavg()
    console.print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / "
                  f"{load[2]:.1f} (1/5/15 min) at the end of the runs; 'load' per run is the "
                  "1-minute average when it ended (other processes of the machine included)")
    console.print(f"command: {command}")


if __name__ == "__main__":
    main()
