"""Rollback: from the breaching window closing to the previous version answering at the gateway.

    .venv/bin/python bench/rollback.py [--runs 5] [--without-hook-runs 0]

A fresh repository served by `mlgitops up` (in process, drift monitor on). v1 is trained on
population A. Each run publishes a new bad version (trained on the shifted population B),
waits until it serves, then sends population-A traffic through the gateway until the monitor
reverts the version in Git and the controller serves the previous content again. Measured per
run, on one clock:

- window -> pushed: the breaching window closes, the policy decides, the revert commit is made
  and pushed; "git push" is the push alone (the remote's pre-receive hook validates the
  commit, and its post-receive hook notifies the controller, before the push returns);
- pushed -> answering: the controller learns of the commit and the gateway answers with it;
- window -> answering: the total (target <= 2 s).

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
import json
import os
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

from mlgitops import examples, repository, settings
from mlgitops.adapters import git
from mlgitops.controller import run
from mlgitops.core import layout
from mlgitops.demo import free_port, wait_for_version
from mlgitops.publishing import publish

console = Console(width=150)
NAME = "credit-risk"
TARGET_SECONDS = 2.0
DRIFT = {"windowRows": 500, "minRows": 300, "consecutiveWindows": 1, "cooldownSeconds": 0,
         "maxReverts": 1000, "revertPeriodSeconds": 3600}


@dataclass(frozen=True)
class Sample:
    hook: bool
    window_to_pushed: float
    push: float
    pushed_to_answer: float
    window_to_answer: float
    controller_seconds: float | None
    failed: int


CLIENT = """
import json, signal, sys, time, httpx
from mlgitops import examples
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


def one_run(ctl: run.Controller, repo: Path, *, seed: int, hook: bool, settle: float,
            rate: float) -> Sample:
    base = ctl.base_url
    git.run(repo, "pull", "-q", "--ff-only", "origin", layout.BRANCH)
    b = examples.credit_population(3000, shift=1.0, seed=seed)
    bad = publish(examples.train_credit_model(b, trees=30, seed=seed), b, name=NAME, repo=repo,
                  target=examples.TARGET, quiet=True, message=f"bad version {seed} on population B")
    wait_for_version(base, NAME, bad, timeout=180)
    time.sleep(settle)
    seen = len([e for e in ctl.store.events(NAME) if e["type"] == "Reverted"])
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
        window_to_pushed=pushed - closed,
        push=push,
        pushed_to_answer=answered - pushed,
        window_to_answer=answered - closed,
        controller_seconds=float(rolled[0]["breachToRollbackSeconds"]) if rolled else None,
        failed=failed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs against the hooked remote")
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
    with run.running(cfg) as ctl:
        total = args.runs + args.without_hook_runs
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rollbacks", total=total)
            for i in range(total):
                hook = i < args.runs
                if not hook:
                    (remote / "hooks" / "pre-receive").unlink(missing_ok=True)
                samples.append(one_run(ctl, repo, seed=10 + i, hook=hook, settle=args.settle,
                                       rate=args.rate))
                progress.advance(task)
    table = Table(title="rollback: breaching window closes → previous version answers at the gateway")
    for col in ("run", "remote hook", "window→pushed s", "of which git push s", "pushed→answering s",
                "window→answering s", "controller-side s", "failed requests"):
        table.add_column(col, justify="right")
    for i, s in enumerate(samples, 1):
        table.add_row(str(i), "validating" if s.hook else "none", f"{s.window_to_pushed:.3f}",
                      f"{s.push:.3f}", f"{s.pushed_to_answer:.3f}", f"{s.window_to_answer:.3f}",
                      "-" if s.controller_seconds is None else f"{s.controller_seconds:.3f}",
                      str(s.failed))
    for hook in (True, False):
        group = [s for s in samples if s.hook == hook]
        if not group:
            continue

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.3f}"

        table.add_row(
            f"median ({len(group)})", "validating" if hook else "none",
            med([s.window_to_pushed for s in group]), med([s.push for s in group]),
            med([s.pushed_to_answer for s in group]), med([s.window_to_answer for s in group]),
            med([s.controller_seconds for s in group if s.controller_seconds is not None] or [0.0]),
            str(sum(s.failed for s in group)), style="bold",
        )
    console.print(table)
    hooked = [s.window_to_answer for s in samples if s.hook]
    if hooked:
        med_total = statistics.median(hooked)
        verdict = "met" if med_total <= TARGET_SECONDS else "NOT met"
        console.print(f"target window→answering <= {TARGET_SECONDS:.0f} s (median, validating "
                      f"remote): {verdict} ({med_total:.2f} s)")
    load = os.getloadavg()
    console.print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / "
                  f"{load[2]:.1f} (1/5/15 min) at the end of the runs")
    console.print(f"command: {command}")


if __name__ == "__main__":
    main()
