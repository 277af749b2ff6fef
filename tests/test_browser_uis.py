"""In a real browser, after a real drift revert through `mlgitops up`: `mlflow ui` and `evidently ui`.

`mlgitops up` runs as a process on a real repository with a bare remote (the monitor tests'
`build_repo`: v1 on population A, v2 on population B), population-A traffic goes through its
gateway until the monitor reverts v2 in Git and v1's content serves again. Then `mlflow ui` on
the controller's default tracking store and `evidently ui` on its workspace run as real
processes on loopback ports, and headless Chromium (tests/browser.py) loads them: the person
sees the `production` alias on the restored version, and the model's project with its drift
trend. Screenshots are saved under the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support import browser
from support.net import free_port, version_at
from test_monitor import NAME, Traffic, build_repo, digest_at, population

from mlgitops import errors, settings
from mlgitops.adapters import evidently_workspace, mlflow_tracking
from mlgitops.controller import reports, tracking

pytestmark = pytest.mark.browser

CLI = [sys.executable, "-m", "mlgitops.cli"]
BIN = Path(sys.executable).parent


def poll(check: Callable[[], bool], *, timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(errors.MlgitopsError):
            if check():
                return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def diagnosis(tmp_path: Path, state: Path) -> str:
    """What the controller and its sinks said, for a failure message."""
    parts = []
    for log in [tmp_path / "up.log", *sorted((state / tracking.TRACKING_DIR).glob("*.log"))]:
        if log.is_file():
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-6000:]}")
    decisions_log = state / reports.REPORTS / "decisions.jsonl"
    if decisions_log.is_file():
        parts.append(f"--- {decisions_log.name}\n{decisions_log.read_text()[-6000:]}")
    ws = reports.workspace_dir(state)
    with contextlib.suppress(Exception):
        parts.append(f"--- snapshots\n{[s.tags for s in evidently_workspace.snapshots(ws, model=NAME)]}")
        parts.append(f"--- dashboard\n{evidently_workspace.dashboard(ws, model=NAME)}")
    return "\n".join(parts)


@contextlib.contextmanager
def process(args: list[str], *, ready: str, log: Path, timeout: float = 300) -> Iterator[str]:
    """A server process in its own session, until ``ready`` (a URL) answers 200; then stopped."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        def up() -> bool:
            assert proc.poll() is None, f"{args[0]} exited: {log.read_text()[-2000:]}"
            try:
                return httpx.get(ready, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        poll(up, timeout=timeout, what=f"{' '.join(args[:2])} to answer {ready}")
        yield ready
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.timeout(1800)
def test_mlflow_ui_and_evidently_ui_show_a_real_revert(tmp_path: Path) -> None:
    browser.require()
    work, bare, v1, v2, _ = build_repo(tmp_path)
    state = settings.state_dir(work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tracker = mlflow_tracking.Tracker(mlflow_tracking.default_uri(state),
                                      artifact_root=tracking.artifact_root(state))
    restored_digest = digest_at(bare, v1)

    with open(tmp_path / "up.log", "wb") as log:
        ctl = subprocess.Popen([*CLI, "up", "--repo", str(work), "--port", str(port),
                                "--poll", "5"], stdout=log, stderr=subprocess.STDOUT)
    try:
        poll(lambda: version_at(base, NAME) == v2, timeout=300, what="v2 serving")
        with Traffic(f"{base}/models/{NAME}/invocations", population(3000)):
            poll(lambda: version_at(base, NAME) not in (v2, None), timeout=300, what="the revert",
                 every=0.2)

        def production_restored() -> bool:
            if not (state / mlflow_tracking.DB_FILE).exists():
                return False
            prod = tracker.alias(NAME)
            return prod is not None and prod.tags.get("mlgitops.digest") == restored_digest

        # the sinks work in their own processes, off the loop: give them time on a busy machine
        poll(production_restored, timeout=600, what="production on the restored version")

        def revert_snapshot() -> bool:
            # the on-demand report path stores snapshots too: wait for the sink's dashboard
            # (written before its snapshot), which is what the UI shows
            ws = reports.workspace_dir(state)
            kept = evidently_workspace.snapshots(ws, model=NAME)
            panels = [t for titles in evidently_workspace.dashboard(ws, model=NAME).values()
                      for t in titles]
            return (any("verdict=revert" in s.tags for s in kept)
                    and "Windows with verdict revert: share of drifted features" in panels)

        try:
            poll(revert_snapshot, timeout=600, what="the revert window's Evidently snapshot")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnosis(tmp_path, state)}") from None
    finally:
        ctl.send_signal(signal.SIGINT)
        ctl.wait(timeout=120)
    prod = tracker.alias(NAME)
    assert prod is not None
    reverted = [v for v in tracker.versions(NAME) if v["tags"].get("mlgitops.commit") == v2]
    assert reverted and reverted[0]["tags"]["mlgitops.quarantined"] == "true"

    uri = mlflow_tracking.default_uri(state)
    mlflow_port = free_port()
    mlflow_ui = process([str(BIN / "mlflow"), "ui", "--backend-store-uri", uri, "--host",
                         "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
                        ready=f"http://127.0.0.1:{mlflow_port}/health",
                        log=tmp_path / "mlflow-ui.log")
    with mlflow_ui, browser.page(width=1600, height=1000, timeout_ms=120_000) as page:
        page.goto(f"http://127.0.0.1:{mlflow_port}/#/models/{NAME}")
        row = page.get_by_role("row").filter(has_text="@ production")
        row.first.wait_for()
        text = row.first.inner_text()
        assert f"Version {prod.version}" in text
        assert restored_digest in text  # the version's digest tag: v1's content
        quarantined = page.get_by_role("row").filter(has_text="mlgitops.quarantined")
        assert "@ production" not in quarantined.first.inner_text()
        browser.shot(page, tmp_path / "mlflow-registered-model.png")

        (revert_run,) = [r for r in tracker.runs(NAME) if r["tags"]["mlgitops.kind"] == "revert"]
        eid = tracker.experiment(NAME)
        page.goto(f"http://127.0.0.1:{mlflow_port}/#/experiments/{eid}/runs/{revert_run['runId']}")
        page.get_by_text("drift.score.f0").first.wait_for()
        page.get_by_text(f"revert {v2[:12]}").first.wait_for()
        browser.shot(page, tmp_path / "mlflow-revert-run.png")

    ev_port = free_port()
    evidently_ui = process([str(BIN / "evidently"), "ui", "--workspace",
                            str(reports.workspace_dir(state)), "--host", "127.0.0.1",
                            "--port", str(ev_port)],
                           ready=f"http://127.0.0.1:{ev_port}/api/projects",
                           log=tmp_path / "evidently-ui.log")
    with evidently_ui, browser.page(width=1600, height=1000, timeout_ms=120_000) as page:
        page.goto(f"http://127.0.0.1:{ev_port}/")
        page.get_by_text(NAME, exact=True).first.click()
        page.get_by_text("Share of drifted features per window").first.wait_for()
        page.get_by_text("Drift score per feature").first.wait_for()
        page.get_by_text(f"Version {v2[:12]}: share of drifted features").first.wait_for()
        page.get_by_text("Windows with verdict revert").first.wait_for()
        page.wait_for_timeout(2000)  # the charts draw after their data arrives
        browser.shot(page, tmp_path / "evidently-dashboard.png")
        page.get_by_text("Reports", exact=True).first.click()
        page.get_by_text(f"{NAME} {v2[:12]} revert").first.wait_for()  # the window's snapshot
        page.get_by_text(f"version={v2[:12]}").first.wait_for()  # its first tag
        browser.shot(page, tmp_path / "evidently-snapshots.png")
    for shot in ("mlflow-registered-model", "mlflow-revert-run", "evidently-dashboard",
                 "evidently-snapshots"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 10_000
