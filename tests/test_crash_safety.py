"""kill -9 of the controller: every server it started is recorded first, and owned afterwards.

- the runtime's ledger (``<state>/servers.json``) holds a process before the process exists;
- after a crash, recovery adopts the serving servers and stops every other process of the
  ledger, and never signals a pid that is not that very process (a reused pid);
- ``status`` says ``running: false`` once the recorded controller is gone;
- a real ``mlgitops up`` killed with SIGKILL at the moments the issue names (while the old
  server drains, while a new one launches, right after a revert was pushed, while a revert is
  under way) converges after a restart with no orphan and no duplicate revert (the same trials
  as ``bench/kill9.py``, fewer of them), and every revert's decision page opens;
- the audit's orphans: a previous version the running controller parked on purpose is not one,
  a draining server a killed controller left (or one kept past its time) is.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from mlgitops import settings
from mlgitops.adapters import files, local_runtime
from mlgitops.cli.observe import _status_doc
from mlgitops.controller import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import kill9


def test_every_server_process_is_recorded_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / ".mlgitops"
    runtime = local_runtime.LocalRuntime(state, standby=1)
    seen: list[dict[str, Any]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        # what a controller killed right now would find on disk
        ledger = files.read_json(state / local_runtime.LEDGER)["servers"]
        token = kwargs["env"][local_runtime.TOKEN_ENV]
        seen.append(dict(ledger[token]))
        return real(*args, **kwargs)

    monkeypatch.setattr(local_runtime.subprocess, "Popen", popen)
    runtime.fill()
    try:
        (before,) = seen
        assert before["role"] == "standby" and before["pid"] is None
        (record,) = files.read_json(state / local_runtime.LEDGER)["servers"].values()
        pid = record["pid"]
        assert local_runtime.is_process(pid, record["startTime"])
        # the process carries the token: found by it even when its pid is not known
        wait_until(lambda: local_runtime.server_tokens(state) == {pid: record["token"]},
                   timeout=10, what=f"pid {pid} found by its token "
                                    f"(alive: {local_runtime.pid_alive(pid)})")
    finally:
        runtime.close()
    assert files.read_json(state / local_runtime.LEDGER)["servers"] == {}
    assert not local_runtime.pid_alive(pid)


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            env={**os.environ, **(env or {})}, start_new_session=True)


def test_recovery_stops_its_own_processes_and_never_a_reused_pid(tmp_path: Path) -> None:
    state = tmp_path / ".mlgitops"
    state.mkdir()
    owner = {local_runtime.OWNER_ENV: str(state)}
    stranger = _sleeper()  # someone else's process: as if the kernel reused a recorded pid
    ours_token = uuid.uuid4().hex
    ours = _sleeper({**owner, local_runtime.TOKEN_ENV: ours_token})  # e.g. a draining server
    unrecorded = _sleeper(owner)  # carries the marker but no ledger entry
    try:
        ledger = local_runtime.Ledger(state / local_runtime.LEDGER)
        wait_until(lambda: local_runtime.start_time(ours.pid) is not None, what="start")
        # the stranger's pid, with the start time of the process the ledger once meant
        ledger.put("gone", role="draining", pid=stranger.pid, startTime="boot:1")
        # the stranger's pid and its real start time, but it is not ours (no marker)
        ledger.put("reused", role="standby", pid=stranger.pid,
                   startTime=local_runtime.start_time(stranger.pid))
        ledger.put(ours_token, role="draining", pid=ours.pid,
                   startTime=local_runtime.start_time(ours.pid))
        ledger.put("never-started", role="standby", pid=None, startTime=None)
        runtime = local_runtime.LocalRuntime(state, standby=0)
        found = runtime.recover({}, grace=2.0)
        assert ours.wait(timeout=10) is not None
        assert unrecorded.wait(timeout=10) is not None
        assert stranger.poll() is None, "a process that is not ours was signalled"
        stopped = {(r.get("role"), r.get("pid")) for r in found.stopped}
        assert stopped == {("draining", ours.pid), ("unrecorded", unrecorded.pid)}
        assert {r["token"] for r in found.cleared} == {"gone", "reused", "never-started"}
        assert files.read_json(state / local_runtime.LEDGER)["servers"] == {}
    finally:
        for p in (stranger, ours, unrecorded):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_status_says_not_running_once_the_recorded_controller_is_gone(repo: Path) -> None:
    state = settings.state_dir(repo)
    state.mkdir(exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "url": "http://127.0.0.1:1", "port": 1, "startTime": "boot:1"}
    files.write_json(state / run.CONTROLLER_FILE, record)
    doc = _status_doc(repo)["controller"]
    assert doc == {"running": False, "url": "http://127.0.0.1:1", "pid": dead.pid, "port": 1}
    # a live pid that started at another time is a reused pid, not the controller
    files.write_json(state / run.CONTROLLER_FILE, {**record, "pid": os.getpid()})
    assert _status_doc(repo)["controller"]["running"] is False
    # the right process, but it does not hold the controller lock: not a controller (any more)
    me = {**record, "pid": os.getpid(), "startTime": local_runtime.start_time(os.getpid())}
    files.write_json(state / run.CONTROLLER_FILE, me)
    (state / run.LOCK_FILE).touch()
    if local_runtime.flock_holders(state / run.LOCK_FILE) is None:
        pytest.skip("/proc/locks cannot be read here")
    assert _status_doc(repo)["controller"]["running"] is False
    import fcntl

    fd = os.open(state / run.LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _status_doc(repo)["controller"]["running"] is True
    finally:
        os.close(fd)


def test_audit_counts_only_what_the_running_controller_parked(tmp_path: Path) -> None:
    state = tmp_path / ".mlgitops"
    state.mkdir()
    started = time.time() - 100  # the running controller started 100 s ago
    ledger = {
        # a host serving v2, and v1 parked in it by the running controller
        "host": {"token": "host", "role": "host", "pid": 1, "adminPort": 9000,
                 "models": {"9001": ["m", "v2", "serving"], "9002": ["m", "v1", "draining"]}},
        # a process of another model, draining since before the restart (a killed controller's)
        "old": {"token": "old", "role": "draining", "pid": 2, "name": "n", "version": "w1",
                "port": 9003},
    }

    def event(kind: str, model: str, previous: str, at: float, message: str = "") -> None:
        stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
        files.append_jsonl(state / "events.jsonl", {"time": stamp, "type": kind, "model": model,
                                                    "previous": previous, "message": message})

    event("Deployed", "n", "w1", started - 60)
    event("Deployed", "m", "v1", started + 1)
    assert kill9.parked(state, ledger, since=started, keep_seconds=600) == {"host": {9002}}
    # run out: it should have stopped
    assert kill9.parked(state, ledger, since=started, keep_seconds=50) == {}
    # no controller running (or no parking configured): nothing is parked
    assert kill9.parked(state, ledger, since=None, keep_seconds=600) == {}
    # v2 rolled back to a warm v1: the replaced v2 retires, v1 serves; nothing parked remains
    event("Deployed", "m", "v2", started + 2, message="v1 serves on x (kept warm since v1 ...)")
    assert kill9.parked(state, ledger, since=started, keep_seconds=600) == {}


@pytest.mark.timeout(900)
def test_kill9_at_the_moments_of_the_issue_converges_without_orphans_or_duplicates(
    tmp_path: Path,
) -> None:
    moments = ["draining", "reverted", "launching", "window"]
    result = kill9.run_trials(len(moments), seed=7, workdir=tmp_path, kill_on=list(moments))
    report = "\n".join(
        f"trial {t.n} {t.kind} at {t.kill_on}: converged={t.converged} orphans={t.orphans} "
        f"duplicates={t.duplicates} status={t.status_after_kill}/{t.status_after_restart} "
        f"error={t.error}"
        for t in result.trials
    )
    assert result.ok, f"{report}\nreports: {result.reports_missing}\nleft: {result.left_after_stop}"
    draining = result.trials[0]
    # the old server was still draining when the controller died: the next one stopped it
    assert draining.stopped_at_restart >= 1, report
    assert result.reverts == 2
