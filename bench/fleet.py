"""Fleet size: 10 and 100 models in one repository served by one `mlgitops up`, and what it all costs.

    .venv/bin/python bench/fleet.py [--sizes 10,100] [--baseline-sizes ''] [--switches 5]

For each size: a fresh repository with that many models (mixed LogisticRegression and small
RandomForests, each its own content) published in ONE commit (model directories written with
`publishing.write_version`, one push through the remote's validating hook), then a real
`mlgitops up` (a child process, monitor on). Printed per size: time until all serve, the
**whole footprint** (PSS from ``/proc/<pid>/smaps_rollup``, shared pages counted once: every
process in the controller's process tree, walked by parent pid, plus the remote's warm
validator) by role (controller, hosts, each tracking sink, the validator) twice: *busy*, right
after the deploys (each deploy is a decision the MLflow sink records; the validator just
checked the push), and *idle*, once the processes that idle out did (sinks, validator, staging
host; waited for, up to their idle timeouts) — the targets (<= 60 MB/model at 10 models,
<= 20 at 100) are for the idle footprint; the busy one is what the previous code held all the
time (sinks and validator warm for 10 minutes). Also: the processes, commit -> serving p50 for
one model (new content each time) while the others serve and answer traffic, one reconcile pass
with no change (the controller's own pass code: source, plan, status, state file; against the
in-memory workloads so that it times the pass, not the processes), and the controller's CPU
at idle. Then how each grows. ``--baseline-sizes 10`` adds the process-per-model mode
(``MLGITOPS_HOSTING=process``) as a baseline of the same run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _footprint
import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlgitops import settings
from mlgitops.adapters import files, git, local_hosts, local_runtime
from mlgitops.authoring import publishing, repository
from mlgitops.controller import fakes, source
from mlgitops.controller import reconciler as rec
from mlgitops.controller import state as state_mod
from mlgitops.core import layout, manifest
from mlgitops.demo.embedded import free_port, wait_for_version

console = Console(width=max(Console().width, 170))
FEATURES = [f"x{i}" for i in range(6)]
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Built:
    dir: Path
    types: tuple[str, ...]


@dataclass
class Result:
    mode: str
    size: int
    publish_s: float = 0.0
    all_serve_s: float = 0.0
    pss_mb: float = 0.0
    controller_mb: float = 0.0
    processes: int = 0
    busy_pss_mb: float = 0.0
    busy_processes: int = 0
    commit_to_serving: list[float] = field(default_factory=list)
    failed: int = 0
    answered: int = 0
    pass_ms: float = 0.0
    idle_cpu: float = 0.0
    servers_idle_cpu: float = 0.0
    crash_models: int = 0
    crash_back_s: float = float("nan")
    busy: _footprint.Footprint = field(default_factory=_footprint.Footprint)
    idle: _footprint.Footprint = field(default_factory=_footprint.Footprint)
    idle_after_s: float = float("nan")

    @property
    def per_model_mb(self) -> float:
        return self.pss_mb / self.size

    @property
    def p50(self) -> float:
        return statistics.median(self.commit_to_serving) if self.commit_to_serving else float("nan")


def frame(seed: int, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    x["label"] = (x.x0 + 0.5 * x.x1 - 0.3 * x.x2 + rng.normal(scale=0.3, size=n) > 0).astype(int)
    return x


def estimator(i: int, data: pd.DataFrame) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = data[FEATURES], data["label"]
    if i % 2:
        return RandomForestClassifier(n_estimators=8, max_depth=5, random_state=i).fit(x, y)
    return LogisticRegression(C=0.5 + (i % 7)).fit(x, y)


def build(cache: Path, key: str, seed: int) -> Built:
    dest = cache / key
    data = frame(seed)
    est = estimator(seed, data)
    fp = publishing.fingerprint(est, data[FEATURES], trusted_types=(), target="label")
    types = publishing.write_version(est, data, dest=dest, target="label", trusted_types=(), key=fp)
    return Built(dest, tuple(types))


def place(repo: Path, name: str, built: Built) -> None:
    """Copy a built model directory into the repository as ``name`` with its manifest."""
    dest = repo / layout.model_path(name)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(built.dir, dest)
    dep = manifest.ModelDeployment(name=manifest.ModelName(name), model_path=layout.model_path(name),
                                   digest=files.dir_digest(dest), trusted_types=built.types)
    publishing.write_manifest(repo, dep)


def cpu_ticks(pid: int) -> int:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    except (OSError, IndexError):
        return 0


def statuses(base: str) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"{base}/status", timeout=5)
        data = r.json()
    except (httpx.HTTPError, ValueError):
        return []
    models = data.get("models", data) if isinstance(data, dict) else data
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def reconcile_pass_ms(repo: Path, work: Path) -> float:
    """Median of 5 no-change passes of the controller's reconciler (real source, plan, state
    store and status; in-memory workloads), after one pass that deployed everything."""
    remote = repository.remote_of(repo)
    state = work / "pass-state"
    src = source.Source(state, url=remote.url, local=remote.local)
    reconciler = rec.Reconciler(source=src, workloads=fakes.FakeWorkloads(),
                                store=state_mod.Store(state), router=rec.Router(),
                                endpoint=lambda n: f"http://gateway/v2/models/{n}")
    reconciler.reconcile()
    times = []
    for _ in range(5):
        outcome = reconciler.reconcile()
        assert not any(s.action.changes_live for s in outcome.steps)
        times.append(outcome.seconds * 1000)
    return statistics.median(times)


class Traffic:
    """Light traffic on a few models that are not switched: every failure counts."""

    def __init__(self, base: str, names: list[str]) -> None:
        self.base, self.names = base, names
        self.ok = self.failed = 0
        self.stop = threading.Event()
        rows = frame(99, 20)[FEATURES].to_dict(orient="records")
        self.body = {"dataframe_records": rows[:4]}

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                name = self.names[i % len(self.names)]
                i += 1
                try:
                    r = client.post(f"{self.base}/models/{name}/invocations", json=self.body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.ok += ok
                self.failed += not ok
                time.sleep(0.02)


def wait_idle(controller: int, remote: Path, progress: Progress, task: Any, label: str, *,
              limit: float) -> tuple[_footprint.Footprint, float]:
    """The footprint once the sinks and the validator idled out (or after ``limit`` s)."""
    started = time.monotonic()
    while True:
        fp = _footprint.measure(controller, remote)
        waited = time.monotonic() - started
        if _footprint.idle_roles(fp) or waited > limit:
            return fp, waited
        left = ", ".join(r for r in ("sink: mlflow", "sink: evidently", "sinks", "validator")
                         if fp.procs.get(r))
        progress.update(task, description=f"{label}: waiting for {left} to idle out "
                                          f"({waited:.0f}/{limit:.0f} s)")
        time.sleep(2.0)


def measure(mode: str, size: int, *, built: list[Built], variants: list[Built], work: Path,
            idle: float, progress: Progress, idle_limit: float) -> Result:
    res = Result(mode, size)
    repo = work / f"{mode}-{size}" / "repo"
    repository.init(repo)
    names = [f"m{i:04d}" for i in range(size)]
    for name, b in zip(names, built, strict=False):
        place(repo, name, b)
    sha = git.commit(repo, message=f"Publish {size} models", paths=[layout.MODELS, layout.MANIFESTS])
    assert sha is not None
    started = time.perf_counter()
    git.push(repo)
    res.publish_s = time.perf_counter() - started
    res.pass_ms = reconcile_pass_ms(repo, work / f"{mode}-{size}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLGITOPS_HOSTING": mode, "DO_NOT_TRACK": "true"}
    log = (work / f"{mode}-{size}" / "up.log").open("wb")
    ctl = subprocess.Popen([sys.executable, "-m", "mlgitops.cli", "up", "--repo", str(repo),
                            "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    state_dir = settings.state_dir(repo)
    remote = Path(str(repository.remote_of(repo).local))
    task = progress.add_task(f"{mode} x{size}: serving", total=size)
    try:
        started = time.perf_counter()
        while True:
            serving = sum(1 for m in statuses(base) if m.get("servedCommit") == sha)
            progress.update(task, completed=serving)
            if serving == size:
                break
            # a process per model starts an interpreter per model: give it its time
            allowed = 120 + (40 if mode == "process" else 8) * size
            if ctl.poll() is not None or time.perf_counter() - started > allowed:
                raise RuntimeError(f"{mode} x{size}: {serving}/{size} serve; see {log.name}")
            time.sleep(0.05)
        res.all_serve_s = time.perf_counter() - started
        progress.update(task, description=f"{mode} x{size}: idle CPU")
        time.sleep(3.0)  # the pool refills after the last deploy
        res.busy = _footprint.measure(ctl.pid, remote)
        servers = local_runtime.owned_pids(state_dir)
        before = cpu_ticks(ctl.pid), sum(cpu_ticks(p) for p in servers)
        time.sleep(idle)
        res.idle_cpu = 100 * (cpu_ticks(ctl.pid) - before[0]) / TICK / idle
        res.servers_idle_cpu = 100 * (sum(cpu_ticks(p) for p in servers) - before[1]) / TICK / idle
        servers = local_runtime.owned_pids(state_dir)
        res.busy_processes = 1 + len(servers)
        res.busy_pss_mb = (_footprint.pss_kb(ctl.pid) + sum(_footprint.pss_kb(p) for p in servers)) / 1024
        if mode == "shared":  # steady state: the staging host stops once idle
            progress.update(task, description=f"{mode} x{size}: staging host retires")
            deadline = time.monotonic() + local_hosts.STAGING_IDLE_SECONDS + 10.0
            while time.monotonic() < deadline and any(
                    r.get("role") == "staging"
                    for r in local_runtime.Ledger(state_dir / local_runtime.LEDGER).records().values()):
                time.sleep(0.5)
        servers = local_runtime.owned_pids(state_dir)
        res.processes = 1 + len(servers)
        res.controller_mb = _footprint.pss_kb(ctl.pid) / 1024
        res.pss_mb = res.controller_mb + sum(_footprint.pss_kb(p) for p in servers) / 1024
        progress.update(task, description=f"{mode} x{size}: commit -> serving")
        traffic = Traffic(base, names[1:6] or names)
        client = threading.Thread(target=traffic.run, daemon=True)
        client.start()
        for variant in variants:
            place(repo, names[0], variant)
            new = git.commit(repo, message="m0000: next version",
                             paths=list(layout.model_paths(names[0])))
            assert new is not None
            git.push(repo)
            pushed = time.perf_counter()
            wait_for_version(base, names[0], new, timeout=120)
            res.commit_to_serving.append(time.perf_counter() - pushed)
            time.sleep(1.5)  # the old version drains
        traffic.stop.set()
        client.join(timeout=10)
        res.failed, res.answered = traffic.failed, traffic.ok
        progress.update(task, description=f"{mode} x{size}: kill -9 a server process")
        res.crash_models, res.crash_back_s = crash(base, state_dir, names[0])
        res.idle, res.idle_after_s = wait_idle(ctl.pid, remote, progress, task, f"{mode} x{size}",
                                               limit=idle_limit)
    finally:
        os.killpg(ctl.pid, signal.SIGINT)
        try:
            ctl.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(ctl.pid, signal.SIGKILL)
            ctl.wait()
        log.close()
        local_runtime.LocalRuntime(state_dir, standby=0).sweep(grace=2.0)
        progress.remove_task(task)
    return res


def crash(base: str, state_dir: Path, name: str) -> tuple[int, float]:
    """SIGKILL the process serving ``name`` (a host: all its models); the models it served
    and the seconds until every one of them answers again at the gateway."""
    doc = files.read_json(state_dir / "state.json") or {}
    backends = doc.get("backends") or {}
    pid = int(backends[name]["pid"])
    victims = {n: str(b["version"]) for n, b in backends.items() if b.get("pid") == pid}
    time.sleep(3.0)  # a warm spare is back after the switches
    os.killpg(pid, signal.SIGKILL)
    killed = time.perf_counter()
    for n, version in victims.items():
        wait_for_version(base, n, version, timeout=300)
    return len(victims), time.perf_counter() - killed


def growth(results: list[Result], attr: str) -> str:
    pts = sorted(results, key=lambda r: r.size)
    if len(pts) < 2:
        return "-"
    out = []
    for a, b in itertools.pairwise(pts):
        va, vb = getattr(a, attr), getattr(b, attr)
        out.append(f"{a.size}->{b.size}: x{vb / va:.2f}" if va else f"{a.size}->{b.size}: -")
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--baseline-sizes", default="",
                        help="sizes measured in process-per-model mode ('' skips the baseline)")
    parser.add_argument("--switches", type=int, default=5, help="commits of one model per size")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    parser.add_argument("--idle-limit", type=float, default=240.0,
                        help="longest wait for the sinks and the validator to idle out")
    args = parser.parse_args()
    settings.telemetry_off()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    base_sizes = [int(s) for s in args.baseline_sizes.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="mlgitops-fleet-"))
    cache = work / "built"
    load = os.getloadavg()
    console.print(f"[bold]fleet bench[/] in {work}; load average {load[0]:.1f} {load[1]:.1f}; "
                  f"{os.cpu_count()} cores")
    results: list[Result] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        most = max(sizes + base_sizes)
        task = progress.add_task("train and write models", total=most + args.switches)
        built = []
        for i in range(most):
            built.append(build(cache, f"m{i}", i))
            progress.advance(task)
        variants = []
        for k in range(args.switches):
            variants.append(build(cache, f"v{k}", 1000 + 2 * k))  # LogisticRegression, new content
            progress.advance(task)
        progress.remove_task(task)
        runs = sorted([("process", s) for s in base_sizes] + [("shared", s) for s in sizes],
                      key=lambda run: (run[1], run[0]))
        for mode, size in runs:
            res = measure(mode, size, built=built, variants=variants, work=work,
                          idle=args.idle, progress=progress, idle_limit=args.idle_limit)
            results.append(res)
            console.print(f"{mode} x{size}: all serve in {res.all_serve_s:.1f}s, whole footprint "
                          f"idle {res.idle.total:.0f} MB ({res.idle.total / size:.1f} MB/model, "
                          f"after {res.idle_after_s:.0f} s), busy {res.busy.total:.0f} MB; hosts + "
                          f"controller {res.pss_mb:.0f} MB; commit->serving p50 {res.p50:.3f}s, "
                          f"load {os.getloadavg()[0]:.1f}")
    table = Table(title="mlgitops up at fleet size (PSS: shared pages counted once)")
    for col in ("mode", "models", "processes", "publish s", "all serve s", "PSS MB",
                "MB/model", "controller MB", "PSS MB after deploys (processes)", "commit->serving p50 s", "max s", "failed/answered",
                "pass no change ms", "controller idle CPU %", "servers idle CPU %",
                "kill -9: models back in s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(r.mode, str(r.size), str(r.processes), f"{r.publish_s:.2f}",
                      f"{r.all_serve_s:.1f}", f"{r.pss_mb:.0f}", f"{r.per_model_mb:.1f}",
                      f"{r.controller_mb:.0f}", f"{r.busy_pss_mb:.0f} ({r.busy_processes})",
                      f"{r.p50:.3f}",
                      f"{max(r.commit_to_serving, default=float('nan')):.3f}",
                      f"{r.failed}/{r.answered}", f"{r.pass_ms:.1f}", f"{r.idle_cpu:.1f}",
                      f"{r.servers_idle_cpu:.1f}", f"{r.crash_models} in {r.crash_back_s:.1f}")
    console.print(table)
    grow = Table(title="how each grows with the number of models (shared hosts)")
    grow.add_column("measure")
    grow.add_column("ratio between sizes")
    shared = [r for r in results if r.mode == "shared"]
    for label, attr in (("time until all serve", "all_serve_s"), ("PSS total", "pss_mb"),
                        ("PSS per model", "per_model_mb"), ("processes", "processes"),
                        ("commit->serving p50", "p50"), ("pass with no change", "pass_ms"),
                        ("controller idle CPU", "idle_cpu")):
        grow.add_row(label, growth(shared, attr))
    console.print(grow)
    for r in results:
        if r.mode != "process":
            continue
        twin = next((s for s in shared if s.size == r.size), None)
        if twin is not None:
            console.print(f"{r.size} models: process-per-model {r.per_model_mb:.0f} MB/model "
                          f"({r.processes} processes) vs shared hosts {twin.per_model_mb:.0f} "
                          f"MB/model ({twin.processes} processes): "
                          f"x{r.per_model_mb / twin.per_model_mb:.1f} less memory")
    footprint_table(results)
    big = max(shared, key=lambda r: r.size, default=None)
    if big is not None:
        ok = big.p50 <= 0.5 and all(r.failed == 0 for r in results)
        console.print(f"targets ({big.size} models serve, commit->serving p50 <= 0.5 s, 0 failed):"
                      f" {'met' if ok else 'NOT met'}; load average now {os.getloadavg()[0]:.1f}")
    for r in shared:
        target = 60.0 if r.size <= 10 else 20.0 if r.size >= 100 else None
        if target is not None:
            per = r.idle.total / r.size
            console.print(f"whole footprint at {r.size} models: {per:.1f} MB/model idle (target "
                          f"<= {target:.0f}): {'met' if per <= target else 'NOT met'}; busy "
                          f"{r.busy.total / r.size:.1f} MB/model")


def footprint_table(results: list[Result]) -> None:
    table = Table(title="whole footprint of `mlgitops up` + the remote's validator, MB PSS "
                        "(processes): busy = right after the deploys, idle = once sinks and "
                        "validator idled out")
    table.add_column("mode")
    table.add_column("models", justify="right")
    table.add_column("when")
    roles = [r for r in _footprint.ROLES
             if any(x.busy.procs.get(r) or x.idle.procs.get(r) for x in results)]
    for r in roles:
        table.add_column(r, justify="right")
    for col in ("total MB", "MB/model"):
        table.add_column(col, justify="right")
    for res in results:
        for when, fp in (("busy", res.busy), (f"idle (+{res.idle_after_s:.0f} s)", res.idle)):
            table.add_row(res.mode, str(res.size), when, *(fp.cell(r) for r in roles),
                          f"{fp.total:.0f}", f"{fp.total / res.size:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
