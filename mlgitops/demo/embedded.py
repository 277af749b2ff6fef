"""``mlgitops demo``: the whole loop on this machine, told step by step with timings.

init -> publish v1 -> serving -> live traffic -> publish v2 (trained on a shifted population)
-> v2 serving -> drift on v2 -> automatic revert commit -> v1 serving again -> report.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from mlgitops import errors, settings, ui
from mlgitops.adapters import git, validator
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.core import layout
from mlgitops.demo import examples

MODEL = "credit-risk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Traffic:
    """A client sending live rows to the gateway; counts answers and failures."""

    url: str
    rows: Any
    ok: int = 0
    failed: int = 0
    errors_seen: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        records = self.rows.to_dict(orient="records")
        i = 0
        with httpx.Client(timeout=10.0) as client:
            while not self.stop.is_set():
                batch = records[i % len(records) : i % len(records) + 8]
                i += 8
                try:
                    r = client.post(self.url, json={"dataframe_records": batch})
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.errors_seen.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed += 1
                    self.errors_seen.append(repr(exc))
                time.sleep(0.005)


def served_version(base: str, name: str) -> str | None:
    try:
        r = httpx.get(f"{base}/v2/models/{name}", timeout=2.0)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    version = r.json().get("version")
    return str(version) if version else None


def wait_for_version(base: str, name: str, version: str, *, timeout: float = 120.0) -> float:
    """Seconds until the gateway answers with ``version`` for ``name``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if served_version(base, name) == version:
            return time.perf_counter() - start
        time.sleep(0.01)
    raise errors.RuntimeFailure(f"{name} did not serve {version[:12]} within {timeout:.0f}s")


def reverted_by(remote: Path, version: str) -> git.LogEntry | None:
    """The commit on ``remote`` that reverts ``version`` (among the last five), if any."""
    for entry in git.log(remote, layout.BRANCH, [], limit=5):
        if entry.trailers.get(layout.TRAILER_REVERTS) == version:
            return entry
    return None


def wait(check: Any, timeout: float, what: str) -> None:
    """Until ``check()`` is true; a sentence naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise errors.RuntimeFailure(f"the demo waited {timeout:.0f} s for {what}")
        time.sleep(0.1)


def run(*, workdir: Path | None = None, port: int = 0) -> None:
    settings.telemetry_off()
    base_dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlgitops-demo-"))
    repo = base_dir / "models-repo"
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    steps = ui.Steps("demo")
    rows: list[tuple[str, str]] = []
    ui.console.rule("[bold]mlgitops demo[/]: Git says which model serves")

    with steps.step(f"init model repository {repo} with a bare remote"):
        remote = repository.init(repo)
    v1_data = examples.credit_population(4000, seed=1)
    v2_data = examples.credit_population(4000, shift=1.0, seed=2)
    with steps.step("train v1 on population A and publish it (commit + push, validated by the remote)"):
        v1 = publish(examples.train_credit_model(v1_data, seed=1), v1_data, name=MODEL, repo=repo,
                     target=examples.TARGET, message="credit-risk v1: trained on population A",
                     quiet=True)
    from mlgitops.controller import run as run_mod

    cfg = settings.controller(repo, port=port, poll_seconds=10.0)
    with run_mod.running(cfg) as ctl:
        with steps.step("controller starts and serves v1"):
            wait_for_version(base, MODEL, v1)
        rows.append(("v1 commit", v1[:12]))
        traffic = Traffic(f"{base}/models/{MODEL}/invocations",
                          examples.credit_population(5000, seed=7).drop(columns=examples.TARGET))
        client = threading.Thread(target=traffic.run, daemon=True)
        client.start()
        with steps.step("train v2 on population B (shifted) and publish it"):
            v2 = publish(examples.train_credit_model(v2_data, seed=2), v2_data, name=MODEL,
                         repo=repo, target=examples.TARGET,
                         message="credit-risk v2: retrained on population B", quiet=True)
            pushed = time.perf_counter()
        with steps.step("v2 switches in while live traffic flows"):
            wait_for_version(base, MODEL, v2)
            commit_to_serving = time.perf_counter() - pushed
        rows.append(("v2 commit", v2[:12]))
        rows.append(("commit-to-serving (push returned → v2 answers)", f"{commit_to_serving:.2f} s"))
        evidently_url = _await_rollback(ctl, base, repo, v1, v2, steps, rows)
        traffic.stop.set()
        client.join(timeout=5)
        rows.append(("requests answered / failed", f"{traffic.ok} / {traffic.failed}"))
        if traffic.errors_seen:
            rows.append(("first failure", traffic.errors_seen[0][:120]))
        rows.extend(_tracking_rows(ctl))
        _print_summary(rows, repo, remote)
        # recorded off the loop by background processes: the table above does not wait for them
        with steps.step("the revert recorded in MLflow and the Evidently workspace"):
            deadline = time.monotonic() + 300
            while not (recorded := _revert_recorded(ctl)) and time.monotonic() < deadline:
                time.sleep(0.5)
        ui.console.print(_alias_line(ctl) if recorded else "The revert was not recorded in "
                         f"MLflow and Evidently within 300 s; see {ctl.state_dir / 'tracking'}/*.log")
        if evidently_url:  # built off the loop after the revert: the table does not wait for it
            with steps.step("full Evidently report of the breach (the decision page is served)"):
                deadline = time.monotonic() + 120
                while not _served(evidently_url) and time.monotonic() < deadline:
                    time.sleep(0.2)
            if _served(evidently_url):
                ui.console.print(f"Evidently report: {evidently_url} (while the controller runs)")
            else:
                ui.console.print("The Evidently report was not served within 120 s; see "
                                 f"mlgitops history {MODEL} --repo {repo}")
    validator.stop(remote)  # the demo leaves nothing running behind it


def _print_summary(rows: list[tuple[str, str]], repo: Path, remote: Path) -> None:
    table = Table(title="mlgitops demo", show_lines=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    ui.console.print(table)
    log = git.text(repo, "log", "--format=%h %s", f"origin/{layout.BRANCH}")
    ui.console.print("[bold]commits on the remote[/] (newest first):")
    ui.console.print(log, highlight=False)
    ui.console.print(f"Repository: {repo}   remote: {remote}")
    ui.console.print(f"Try: mlgitops history {MODEL} --repo {repo}")


def _revert_recorded(ctl: Any) -> bool:
    """True once every tracking sink recorded a revert decision (their replies name it)."""
    from mlgitops.controller import tracking

    sinks = [s for s in ctl.decisions.sinks
             if isinstance(s, tracking.MlflowSink | tracking.EvidentlySink)]
    return all(any("-revert-" in str(r.get("id")) for r in s.recorded) for s in sinks)


def _tracking_rows(ctl: Any) -> list[tuple[str, str]]:
    """Where the MLflow store and the Evidently workspace are, and how to open them."""
    from mlgitops.controller import tracking

    where = tracking.describe(ctl.state_dir, uri=ctl.cfg.tracking.mlflow_uri)
    return [("MLflow tracking store", where["mlflowUri"]),
            ("open it", where["mlflowUi"] + "  (then Models -> " + MODEL + ")"),
            ("Evidently workspace", where["evidentlyWorkspace"]),
            ("open it", where["evidentlyUi"] + "  (project " + MODEL + ": drift trend)")]


def _alias_line(ctl: Any) -> str:
    """Where MLflow's production alias points once the revert is recorded."""
    from mlgitops.controller import tracking

    for sink in ctl.decisions.sinks:
        if isinstance(sink, tracking.MlflowSink):
            moved = [r for r in sink.recorded if r.get("modelVersion") and "-revert-" in r["id"]]
            if moved:
                return (f"MLflow alias production: version {moved[-1]['modelVersion']} "
                        "(the restored content)")
    return "The revert is recorded in MLflow and the Evidently workspace."


def _served(url: str) -> bool:
    """True when the gateway answers ``url`` (a report page) with 200."""
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _await_rollback(ctl: Any, base: str, repo: Path, v1: str, v2: str, steps: ui.Steps,
                    rows: list[tuple[str, str]]) -> str | None:
    """Wait for the monitor to revert v2 and v1 to serve again; return the URL of the full
    Evidently report of the breach (built after the revert), None when there is none."""
    if not ctl.cfg.monitor.enabled or not ctl.background:
        rows.append(("drift monitor", "not running"))
        return None
    start = time.perf_counter()
    with steps.step("drift monitor watches v2 against live data (population A)"):
        deadline = start + 120
        revert_sha: str | None = None
        while time.perf_counter() < deadline and revert_sha is None:
            git.fetch(repo)
            for e in git.log(repo, f"origin/{layout.BRANCH}", layout.model_paths(MODEL), limit=3):
                if e.trailers.get(layout.TRAILER_REVERTS, "").startswith(v2):
                    revert_sha = e.commit
                    report = e.trailers.get(layout.TRAILER_REPORT, "")
                    rows.append(("revert commit", f"{e.commit[:12]} {e.subject}"))
                    if report:
                        rows.append(("decision page (why v2 was reverted)", report))
                        rows.append(("open it", f"a browser at {report} (while the controller "
                                     f"runs; every decision: {base}/reports/), or evidently ui "
                                     f"--workspace {ctl.state_dir / 'workspace'}"))
                    break
            time.sleep(0.2)
    if revert_sha is None:
        rows.append(("automatic revert", "none within 120 s"))
        return None
    with steps.step("controller rolls back to v1 because Git says so"):
        wait_for_version(base, MODEL, revert_sha)
        answered = time.time()
    reverted = [e for e in ctl.store.events(MODEL) if e.get("type") == "Reverted"]
    if reverted and reverted[-1].get("closedAt"):
        rows.append(("breach-to-rollback (window closed → v1 answers)",
                     f"{answered - float(reverted[-1]['closedAt']):.2f} s"))
    rows.append(("v2 serving → v1 serving again", f"{time.perf_counter() - start:.1f} s"))
    page = next((r[1] for r in rows if r[0] == "decision page (why v2 was reverted)"), None)
    return f"{page}.evidently.html" if page else None  # the full report beside the page
