"""kill -9: SIGKILL a real `mlgitops up` at random points of deploys and reverts, restart it.

    .venv/bin/python bench/kill9.py [--trials 20] [--seed 1] [--workdir DIR]

A fresh model repository (bare remote with the real validating hooks) served by `mlgitops up`
in a subprocess. Trials alternate:

- **deploy**: a manifest change is pushed (a new version of the same model: a new server
  starts, the old one drains and stops); the controller is killed with SIGKILL a random time
  after the push returned (before it noticed, while the new server starts, while the old one
  drains, after);
- **revert**: a bad version (trained on a shifted population) is published and serves, then
  population-A traffic is sent through the gateway until the drift monitor reverts it in Git;
  the controller is killed a random time after the traffic started (before the window closes,
  while the revert is pushed, while the previous content redeploys, while the report builds).

After each kill: ``mlgitops status --json`` must say ``running: false``; the controller is
started again and must converge (the version Git names at the remote's head serves at the
gateway; in a revert trial, the bad version is reverted), with no orphan server process (every
process carrying this controller's marker is in its ledger and is the serving server of a model,
a warm standby, or the previous version the running controller itself replaced and keeps warm
for a fast rollback (``keep_previous_seconds``, not yet run out); one a killed controller
parked must have been stopped by recovery; nothing listens that serves no model) and no
duplicate revert commit (each ``Mlgitops-Reverts`` value at most once). At the end every revert
commit's report opens: the decision page its ``Mlgitops-Report`` trailer links exists (with its
Evidently report beside it) and answers 200 at the gateway; Ctrl-C leaves no process behind.
Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlgitops import settings
from mlgitops.adapters import files, git, local_runtime
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.controller import decision_pages, reports
from mlgitops.core import decisions, layout
from mlgitops.demo import examples

console = Console(width=170)
NAME = "credit-risk"
DRIFT = {"windowRows": 300, "minRows": 200, "consecutiveWindows": 1, "cooldownSeconds": 0,
         "maxReverts": 1000, "revertPeriodSeconds": 3600}
DEPLOY_KILL_SECONDS = 3.0
"""Deploy kills land uniformly within this long after the push (launch, switch, drain, after)."""
REVERT_KILL_SECONDS = 8.0
"""Revert kills land uniformly within this long after traffic starts (window, push, redeploy,
drain, report)."""

CLIENT = """
import sys, time, httpx
from mlgitops.demo import examples
url, seed = sys.argv[1], int(sys.argv[2])
records = examples.credit_population(4000, seed=seed).drop(columns=examples.TARGET).to_dict(
    orient="records")
print("ready", flush=True)
i = 0
with httpx.Client(timeout=5.0) as client:
    while True:
        try:
            client.post(url, json={"dataframe_records": records[i % 3900 : i % 3900 + 25]})
        except httpx.HTTPError:
            time.sleep(0.2)
        i += 25
        time.sleep(0.02)
"""


@dataclass
class Trial:
    n: int
    kind: str
    kill_after: float
    kill_on: str | None = None
    """Kill as soon as this moment comes (see `MOMENTS`) instead of after a random time."""
    phase: str = "-"
    at_kill: str = "-"
    """The controller's recorded server processes at the kill (roles), and for a revert trial
    whether the revert was on the remote already."""
    status_after_kill: bool | None = None
    """What `status --json` said about the killed controller (must be False)."""
    status_after_restart: bool | None = None
    stopped_at_restart: int = 0
    converged: float | None = None
    orphans: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.error is None and self.converged is not None and not self.orphans
                and not self.duplicates and self.status_after_kill is False
                and self.status_after_restart is True)


@dataclass
class Result:
    trials: list[Trial]
    reverts: int
    reports_missing: list[str]
    left_after_stop: list[int]
    command: str

    @property
    def ok(self) -> bool:
        return (all(t.ok for t in self.trials) and not self.reports_missing
                and not self.left_after_stop)


# ---------------------------------------------------------------------------------------------
# The controller under test, in its own process


class Controller:
    def __init__(self, repo: Path, port: int, log: Path) -> None:
        self.repo = repo
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started: float | None = None
        """When the running controller process was started (wall clock)."""
        self.env = {**os.environ, "MLGITOPS_POLL_SECONDS": "2", "MLGITOPS_MONITOR_SECONDS": "0.5",
                    "DO_NOT_TRACK": "true"}

    def start(self, *, timeout: float = 120.0) -> None:
        self.started = time.time()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlgitops.cli", "up", "--repo", str(self.repo),
                 "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )
        wait(lambda: self.live(), timeout=timeout, what="the controller's gateway")

    def live(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the controller exited with {self.proc.returncode}; see {self.log}")
        try:
            return httpx.get(f"{self.base}/v2/health/live", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def keep_previous_seconds(self) -> float:
        """How long the controller keeps a replaced version warm (its drift monitor is on)."""
        raw = self.env.get("MLGITOPS_KEEP_PREVIOUS_SECONDS")
        return float(raw) if raw else settings.SyncSettings().keep_previous_seconds

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def interrupt(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=120)

    def served(self) -> str | None:
        try:
            r = httpx.get(f"{self.base}/v2/models/{NAME}", timeout=2.0)
            return str(r.json().get("version")) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None


class Client:
    """Population-A traffic through the gateway, from its own process."""

    def __init__(self, url: str, seed: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, url, str(seed)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def wait(check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# What must hold


def desired(bare: Path) -> str:
    head = git.text(bare, "rev-parse", f"refs/heads/{layout.BRANCH}")
    version = git.last_change(bare, head, layout.model_paths(NAME))
    assert version is not None
    return version


def revert_commits(bare: Path) -> list[git.LogEntry]:
    return [e for e in git.log(bare, f"refs/heads/{layout.BRANCH}", [], limit=1000)
            if e.trailers.get(layout.TRAILER_REVERTS)]


def duplicate_reverts(bare: Path) -> list[str]:
    seen = collections.Counter(e.trailers[layout.TRAILER_REVERTS] for e in revert_commits(bare))
    return [f"{sha[:12]} reverted {n} times" for sha, n in seen.items() if n > 1]


def listening(pids: set[int]) -> dict[int, set[int]]:
    """Ports each of ``pids`` listens on (from /proc/net/tcp*, sockets matched by inode)."""
    ports: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A":  # LISTEN
                ports[cols[9]] = int(cols[1].rsplit(":", 1)[1], 16)
    out: dict[int, set[int]] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in ports:
                out.setdefault(pid, set()).add(ports[target[8:-1]])
    return out


def parked(state_dir: Path, ledger: dict[str, dict[str, object]], *, since: float | None,
           keep_seconds: float) -> dict[str, set[int | None]]:
    """Previous versions the running controller keeps warm on purpose: ledger token -> ports.

    A switch parks the version it replaced (marked draining in the ledger) for
    ``keep_seconds`` so a rollback routes at once. Such a server is not an orphan when the
    controller started at ``since`` (the one running now) replaced that very version, the
    replacement did not itself come from a warm server (then the replaced one retires), and
    the time it is kept has not run out. One left by a killed controller is not: recovery
    must have stopped it (and dropped it from the ledger). Per model only the version replaced
    last counts; other draining servers must stop within the drain time.
    """
    if since is None or keep_seconds <= 0:
        return {}
    now = time.time()
    last: dict[str, tuple[float, str]] = {}  # model -> (when, the version it replaced then)
    for e in files.read_jsonl(state_dir / "events.jsonl"):
        if e.get("type") not in ("Deployed", "Restarted") or not e.get("previous"):
            continue
        try:
            when = dt.datetime.fromisoformat(str(e["time"]).replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            continue
        if when >= since - 0.5:  # the event's time has a resolution; the start is ours
            warm = "kept warm" in str(e.get("message") or "")
            last[str(e.get("model"))] = (when, "" if warm else str(e["previous"]))
    keep = {(name, version) for name, (when, version) in last.items()
            if version and now < when + keep_seconds}
    out: dict[str, set[int | None]] = {}
    for token, r in ledger.items():
        port = r.get("port")
        if (r.get("role") == "draining" and r.get("pid")
                and (str(r.get("name")), str(r.get("version"))) in keep):
            out.setdefault(token, set()).add(port if isinstance(port, int) else None)
        models = r.get("models")
        for at, m in (models.items() if isinstance(models, dict) else ()):
            if (isinstance(m, list) and m[2:3] == ["draining"]
                    and (str(m[0]), str(m[1])) in keep):
                out.setdefault(token, set()).add(int(at))
    return out


def audit(state_dir: Path, *, since: float | None = None, keep_seconds: float = 0.0) -> list[str]:
    """Orphans: processes of this controller outside its ledger, or neither serving, standby,
    nor the previous version the controller started at ``since`` keeps warm (`parked`)."""
    ledger = (files.read_json(state_dir / local_runtime.LEDGER) or {}).get("servers") or {}
    backends = (files.read_json(state_dir / "state.json") or {}).get("backends") or {}
    serving = {str(b.get("token")): name for name, b in backends.items()}
    ports = {int(b.get("port", -1)) for b in backends.values()}
    kept = parked(state_dir, ledger, since=since, keep_seconds=keep_seconds)
    ports |= {p for held in kept.values() for p in held if p is not None}
    # warm spares: a standby, an idle host, the zygote hosts fork from; a staging host only
    # probes new content
    standby = {t for t, r in ledger.items()
               if r.get("role") in ("standby", "idle", "staging", "zygote")}
    admin = {int(r["adminPort"]) for r in ledger.values() if r.get("adminPort")}
    ports |= admin
    procs = local_runtime.server_tokens(state_dir)
    problems = []
    for pid, token in sorted(procs.items(), key=lambda kv: kv[0]):
        if token is None or token not in ledger:
            problems.append(f"pid {pid} is not in the controller's ledger")
        elif token not in serving and token not in standby and token not in kept:
            problems.append(f"pid {pid} ({ledger[token].get('role')} "
                            f"{str(ledger[token].get('version'))[:12]}) serves no model")
    for pid, held in listening(set(procs)).items():
        token = procs.get(pid)
        spare = token in standby and held <= admin  # a host's control port only
        if not spare and ((token not in serving and token not in kept) or not held <= ports):
            problems.append(f"pid {pid} listens on {sorted(held)} but is not a serving server")
    return problems


def settle(state_dir: Path, *, since: float | None = None, keep_seconds: float = 0.0,
           timeout: float = 30.0) -> list[str]:
    """The orphans left once draining servers had time to stop (empty: none)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = audit(state_dir, since=since, keep_seconds=keep_seconds)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.25)


def at_kill(state_dir: Path, bare: Path, bad: str | None) -> str:
    """The ledger's roles (what the killed controller had running) and the revert's progress."""
    ledger = (files.read_json(state_dir / local_runtime.LEDGER) or {}).get("servers") or {}
    roles = collections.Counter(str(r.get("role")) for r in ledger.values())
    text = ", ".join(f"{n}×{role}" if n > 1 else role for role, n in sorted(roles.items())) or "none"
    if bad is not None:
        text += " (pushed)" if desired(bare) != bad else " (not yet)"
    return text


def status_running(repo: Path) -> bool:
    from mlgitops.cli import observe

    return bool(observe._status_doc(repo)["controller"]["running"])


def phase_at(state_dir: Path, since: float, at: float) -> str:
    """The last controller event between ``since`` and the kill (where the kill landed)."""
    last = "-"
    for e in files.read_jsonl(state_dir / "events.jsonl"):
        try:
            when = dt.datetime.fromisoformat(str(e["time"]).replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            continue
        if since - 1 <= when <= at + 0.5 and e.get("model") == NAME:
            last = str(e.get("type"))
    return last


# ---------------------------------------------------------------------------------------------
# The repository and the trials


def setup(repo: Path) -> Path:
    bare = repository.init(repo)
    a = examples.credit_population(2000, seed=1)
    publish(examples.train_credit_model(a, trees=10, seed=1), a, name=NAME, repo=repo,
            target=examples.TARGET, quiet=True, push=False, message="v1 on population A")
    path = repo / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["drift"].update(DRIFT)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(repo, message="kill9 bench drift policy", paths=[layout.MANIFESTS])
    git.push(repo)
    return bare


def pull(repo: Path) -> None:
    git.run(repo, "pull", "-q", "--ff-only", "origin", layout.BRANCH)


def push_manifest_change(repo: Path, n: int) -> str:
    pull(repo)
    path = repo / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["serving"]["batching"]["maxBatchSize"] = 32 + (n % 7)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    sha = git.commit(repo, message=f"kill9 trial {n}: batching", paths=[layout.MANIFESTS])
    assert sha is not None
    git.push(repo)
    return sha


def publish_bad(repo: Path, seed: int) -> str:
    pull(repo)
    b = examples.credit_population(2000, shift=1.0, seed=seed)
    return str(publish(examples.train_credit_model(b, trees=10, seed=seed), b, name=NAME,
                       repo=repo, target=examples.TARGET, quiet=True,
                       message=f"bad version {seed} on population B"))


def _ledger_role(state_dir: Path, role: str) -> bool:
    ledger = (files.read_json(state_dir / local_runtime.LEDGER) or {}).get("servers") or {}
    return any((r.get("role") == role and r.get("pid"))  # a process, or a model in a host
               or any(isinstance(m, list) and m[2:3] == [role]
                      for m in (r.get("models") or {}).values())
               for r in ledger.values())


def _event(state_dir: Path, kind: str, **match: str) -> bool:
    return any(e.get("type") == kind and all(e.get(k) == v for k, v in match.items())
               for e in files.read_jsonl(state_dir / "events.jsonl"))


MOMENTS: dict[str, Callable[[Path, str | None], bool]] = {
    # a new server is being started from a standby (deploy)
    "launching": lambda state, bad: _ledger_role(state, "launching"),
    # the new server serves and the old one drains before it stops (deploy)
    "draining": lambda state, bad: _ledger_role(state, "draining"),
    # the breaching window closed: the revert is being committed and pushed (revert)
    "window": lambda state, bad: _event(state, "DriftWindow", commit=bad or "", verdict="revert"),
    # the revert landed on the remote; the previous content is about to deploy (revert)
    "reverted": lambda state, bad: _event(state, "Reverted", reverted=bad or ""),
}


def converge(ctl: Controller, bare: Path, *, until: Callable[[], bool] | None = None,
             timeout: float = 180.0) -> float:
    def done() -> bool:
        if until is not None and not until():
            return False
        return ctl.served() == desired(bare)

    return wait(done, timeout=timeout, what="the desired version serving", every=0.1)


def one_trial(n: int, kind: str, *, ctl: Controller, repo: Path, bare: Path,
              rng: random.Random, kill_on: str | None = None) -> Trial:
    state_dir = settings.state_dir(repo)
    started = time.monotonic()
    trial = Trial(n, kind, 0.0, kill_on=kill_on)
    client: Client | None = None
    bad: str | None = None
    try:
        if kind == "deploy":
            push_manifest_change(repo, n)
            trial.kill_after = rng.uniform(0.0, DEPLOY_KILL_SECONDS)
            since = time.time()
        else:
            bad = publish_bad(repo, seed=100 + n)
            wait(lambda: ctl.served() == bad, timeout=180, what="the bad version serving")
            time.sleep(1.0)  # the warm standby is back
            client = Client(f"{ctl.base}/models/{NAME}/invocations", seed=200 + n)
            trial.kill_after = rng.uniform(0.0, REVERT_KILL_SECONDS)
            since = time.time()
        if kill_on is None:
            time.sleep(trial.kill_after)
        else:
            moment = MOMENTS[kill_on]
            trial.kill_after = wait(lambda: moment(state_dir, bad), timeout=120,
                                    what=f"the moment {kill_on!r}", every=0.005)
        ctl.kill9()
        trial.phase = phase_at(state_dir, since, time.time())
        trial.at_kill = at_kill(state_dir, bare, bad)
        trial.status_after_kill = status_running(repo)
        before = sum(1 for e in files.read_jsonl(state_dir / "events.jsonl")
                     if e.get("type") == "OrphanStopped")
        ctl.start()
        with contextlib.suppress(TimeoutError):  # controller.json follows the gateway's start
            wait(lambda: status_running(repo), timeout=15, what="status saying running")
        trial.status_after_restart = status_running(repo)
        reverted = bad
        trial.converged = converge(
            ctl, bare,
            until=None if reverted is None else lambda: desired(bare) != reverted)
        trial.stopped_at_restart = sum(
            1 for e in files.read_jsonl(state_dir / "events.jsonl")
            if e.get("type") == "OrphanStopped") - before
        if client is not None:
            client.stop()
            client = None
        trial.orphans = settle(state_dir, since=ctl.started,
                               keep_seconds=ctl.keep_previous_seconds)
        trial.duplicates = duplicate_reverts(bare)
    except Exception as exc:
        trial.error = f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None:
            client.stop()
        trial.seconds = time.monotonic() - started
    return trial


def run_trials(trials: int, *, seed: int, workdir: Path,
               progress: Callable[[Trial], None] | None = None,
               kill_on: list[str | None] | None = None) -> Result:
    """``trials`` trials alternating deploy and revert; ``kill_on[i]`` names the moment trial
    ``i + 1`` is killed at (`MOMENTS`), None (or no list) for a random time."""
    settings.telemetry_off()
    rng = random.Random(seed)
    repo = workdir / "repo"
    bare = setup(repo)
    ctl = Controller(repo, free_port(), workdir / "controller.log")
    ctl.start()
    converge(ctl, bare)
    results: list[Trial] = []
    command = "  ".join(["$", ".venv/bin/python", *sys.argv])
    try:
        for n in range(1, trials + 1):
            kind = "deploy" if n % 2 else "revert"
            moment = kill_on[n - 1] if kill_on and n <= len(kill_on) else None
            trial = one_trial(n, kind, ctl=ctl, repo=repo, bare=bare, rng=rng, kill_on=moment)
            results.append(trial)
            if progress is not None:
                progress(trial)
            if ctl.proc is None or ctl.proc.poll() is not None:
                ctl.start()
        missing = reports_missing(repo, bare)
    finally:
        code = ctl.interrupt() if ctl.proc is not None and ctl.proc.poll() is None else None
    state_dir = settings.state_dir(repo)
    left: set[int] = set()
    try:
        wait(lambda: not local_runtime.owned_pids(state_dir), timeout=20, what="no process left")
    except TimeoutError:
        left = local_runtime.owned_pids(state_dir)
    if code not in (0, None):
        missing.append(f"the controller exited with {code} on Ctrl-C")
    return Result(results, len(revert_commits(bare)), missing, sorted(left), command)


def reports_missing(repo: Path, bare: Path, *, timeout: float = 300.0) -> list[str]:
    """Revert commits whose linked report a person could not open (once the controller had
    time to build it and its recovery to rebuild missing pages).

    The ``Mlgitops-Report`` trailer links the decision page ``{base}/reports/<model>/<id>``
    (``<id>`` also in ``Mlgitops-Report-Id``): its page file is under the state directory, the
    Evidently report ``<id>.evidently.html`` beside it, and the link answers 200 with the page.
    """
    reports_root = settings.state_dir(repo) / reports.REPORTS

    def missing() -> list[str]:
        out = []
        for e in revert_commits(bare):
            link = e.trailers.get(layout.TRAILER_REPORT, "")
            ident = e.trailers.get(layout.TRAILER_REPORT_ID, "")
            name = e.trailers.get(layout.TRAILER_MODEL, "")
            what = f"{e.commit[:12]} links {link or 'no report'}"
            if not (decisions.valid_id(ident) and name == NAME
                    and link.endswith(f"/{reports.REPORTS}/{NAME}/{ident}")):
                out.append(f"{what} with report id {ident!r} of model {name!r}: not its "
                           "decision page")
                continue
            if not decision_pages.page_file(reports_root, NAME, ident).is_file():
                out.append(f"{what}, whose page {ident}.html does not exist")
                continue
            target = reports.plan_for_link(reports_root.parent, link, name=NAME,
                                           version=e.trailers[layout.TRAILER_REVERTS])
            if target is None or not target.html.is_file():
                out.append(f"{what}, whose Evidently report {ident}.evidently.html does not "
                           "exist")
                continue
            try:  # and the link opens: the gateway serves the page
                r = httpx.get(link, timeout=5.0)
                code: int | str = r.status_code
                if code == 200 and ident not in r.text:
                    code = "200 without the decision's id"
            except httpx.HTTPError as exc:
                code = repr(exc)
            if code != 200:
                out.append(f"{what}, which answers {code}")
        return out

    with contextlib.suppress(TimeoutError):
        wait(lambda: not missing(), timeout=timeout, what="every revert's report", every=1.0)
    return missing()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table(result: Result) -> Table:
    t = Table(title="kill -9 of `mlgitops up` during deploys and reverts, then a restart")
    right = {"justify": "right"}
    t.add_column("trial", **right)
    t.add_column("kind")
    t.add_column("kill after s", **right)
    t.add_column("servers at the kill (revert)", min_width=28)
    t.add_column("status then")
    t.add_column("stopped on restart", **right)
    t.add_column("converged s", **right)
    t.add_column("orphans", **right)
    t.add_column("dup. reverts", **right)
    t.add_column("trial s", **right)
    t.add_column("ok")
    for tr in result.trials:
        t.add_row(str(tr.n), tr.kind,
                  f"{tr.kill_after:.2f}" + (f" ({tr.kill_on})" if tr.kill_on else ""),
                  tr.at_kill,
                  "-" if tr.status_after_kill is None else
                  ("running" if tr.status_after_kill else "not running"),
                  str(tr.stopped_at_restart),
                  "-" if tr.converged is None else f"{tr.converged:.1f}",
                  str(len(tr.orphans)), str(len(tr.duplicates)), f"{tr.seconds:.1f}",
                  "[green]yes[/]" if tr.ok else f"[red]no[/] {tr.error or ''}"[:60])
    return t


def summary(result: Result) -> str:
    n = len(result.trials)
    converged = sum(t.converged is not None and t.error is None for t in result.trials)
    orphans = sum(len(t.orphans) for t in result.trials)
    dups = max((len(t.duplicates) for t in result.trials), default=0)
    per = sum(t.seconds for t in result.trials) / max(n, 1)
    status_ok = sum(t.status_after_kill is False for t in result.trials)
    return (f"{converged} of {n} kill -9 trials converged, {orphans} orphan server process(es), "
            f"{dups} duplicate revert(s) among {result.reverts} revert commit(s); status said "
            f"'not running' after {status_ok} of {n} kills; "
            f"{len(result.reports_missing)} missing revert report(s); "
            f"{len(result.left_after_stop)} process(es) left after Ctrl-C; "
            f"{per:.1f} s per trial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where to create the repository")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mlgitops-kill9-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def show(t: Trial) -> None:
        console.print(f"trial {t.n:>2} {t.kind:<6} killed after {t.kill_after:.2f}s "
                      f"({t.phase}): " + ("[green]ok[/]" if t.ok else f"[red]FAILED[/] "
                                          f"{t.error or ''} {t.orphans} {t.duplicates}")
                      + f" [dim]{t.seconds:.1f}s[/]")

    result = run_trials(args.trials, seed=args.seed, workdir=workdir, progress=show)
    console.print(table(result))
    for line in result.reports_missing:
        console.print(f"[red]report:[/] {line}")
    for t in result.trials:
        for o in t.orphans:
            console.print(f"[red]trial {t.n} orphan:[/] {o}")
    console.print(summary(result))
    load = os.getloadavg()
    console.print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} "
                  f"/ {load[2]:.1f}; logs in {workdir}")
    console.print(f"command: {result.command}")
    json_path = workdir / "kill9.json"
    json_path.write_text(json.dumps([t.__dict__ | {"ok": t.ok} for t in result.trials],
                                    indent=2, default=str))
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
