"""The decision log's index: in step with the log through crashes, rebuilt when lost, paged over
real HTTP, pruned by count and age.

Every check compares with the whole log read back (`decision_segments.read_all`): the index may
only ever answer what the log says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from support.net import free_port
from support.waits import wait_until

from mlgitops import errors
from mlgitops.adapters import decision_index
from mlgitops.adapters import decision_segments as segments
from mlgitops.controller import decision_pages, gateway
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reconciler as rec
from mlgitops.core import clock, decisions
from mlgitops.core.decisions import Kind

pytestmark = pytest.mark.fast

START = 1_780_000_000.0
KINDS = [Kind.PASS, Kind.PASS, Kind.BREACH, Kind.PASS, Kind.ALERT, Kind.PASS, Kind.DEPLOY]


def record(i: int, *, model: str = "credit-risk", kind: Kind | None = None,
           at: float | None = None, commit: str | None = None) -> decisions.Decision:
    kind = kind or KINDS[i % len(KINDS)]
    at = START + 60.0 * i if at is None else at
    version = f"{i // 10:040x}"
    return decisions.Decision(
        id=decisions.make_id(model=model, kind=kind, at=at, version=version), model=model,
        kind=kind, at=at, version=version, previous_version=None, verdict=f"window {i}",
        commit=commit, window=i)


def whole_log(root: Path, *, model: str | None = None,
              kinds: frozenset[Kind] | None = None) -> list[str]:
    """Ids newest first, as reading the whole log says."""
    return [d.id for d in reversed(segments.read_all(root))
            if (model is None or d.model == model) and (kinds is None or d.kind in kinds)]


def every_page(root: Path, **kw: object) -> list[str]:
    out: list[str] = []
    before = None
    while True:
        got = decision_log.page(root, limit=7, before=before, **kw)  # type: ignore[arg-type]
        out += [d.id for d in got.decisions]
        if got.next is None:
            return out
        before = got.next


def test_a_crash_between_the_log_write_and_the_index_write_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    root = tmp_path / "reports"
    log = decision_log.Log(root)
    first = record(0, kind=Kind.DEPLOY)
    log.append(first)
    assert decision_index.total(root) == 1
    # the writer died after its line reached the log, before the index had it
    second = record(1, kind=Kind.DEPLOY)
    segments.append(root, (second.to_json() + "\n").encode(), max_bytes=1 << 30)
    with (root / segments.ACTIVE).open("ab") as f:
        f.write(b'{"id":"credit-risk-2026')  # and another one died mid-line
    # a reader after the restart sees both decisions once; the torn line is none
    assert every_page(root) == [second.id, first.id] == whole_log(root)
    assert decision_index.total(root) == 2
    # the restarted controller does not record the same deploy again
    assert not decision_log.Rollouts(root).new_deploy(second.model, second.version)
    log = decision_log.Log(root)
    log.append(second.with_(outcome="written again"))  # a record written again supersedes
    third = record(2)
    log.append(third)
    assert every_page(root) == [third.id, second.id, first.id] == whole_log(root)
    assert decision_log.find(root, second.model, second.id).outcome == "written again"


@pytest.mark.process
def test_a_writer_killed_between_the_two_writes_leaves_a_log_the_next_reader_indexes(
        tmp_path: Path) -> None:
    """A real process appends through `Log` and is SIGKILLed right after its third line reached
    the log, before the index took it; the next reader finds all three, once."""
    root = tmp_path / "reports"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from mlgitops.adapters import decision_index
from mlgitops.controller import decisions as decision_log
from test_decision_index import record
real = decision_index.sync
calls = []
def sync(root):
    calls.append(root)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(root)
decision_index.sync = sync
log = decision_log.Log(decision_log.Path({str(root)!r}))
for i in range(5):
    log.append(record(i))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9, proc.stderr.decode()
    assert len(segments.read_all(root)) == 3
    assert every_page(root) == whole_log(root) == [record(i).id for i in (2, 1, 0)]


def test_the_index_is_rebuilt_when_lost_or_broken_and_follows_rotation(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    log = decision_log.Log(root, max_bytes=2_000)  # a few records per segment
    for i in range(60):
        log.append(record(i, model="credit-risk" if i % 3 else "fraud"))
    assert len(segments.segments(root)) > 5  # rotated on the way, followed by the index
    expect = whole_log(root)
    assert len(expect) == 60 and every_page(root) == expect
    acted = decision_index.ACTED
    assert every_page(root, model="fraud", kinds=acted) == whole_log(root, model="fraud",
                                                                      kinds=acted)
    (root / decision_index.INDEX_FILE).unlink()  # lost: built again from the log
    assert every_page(root) == expect
    for suffix in ("", "-wal", "-shm"):
        (root / f"{decision_index.INDEX_FILE}{suffix}").unlink(missing_ok=True)
    (root / decision_index.INDEX_FILE).write_bytes(b"not a database at all" * 100)
    assert every_page(root) == expect and decision_index.total(root) == 60
    # a segment written again by hand (without its first line): the index follows the log
    oldest = root / segments.segments(root)[0].name
    lines = oldest.read_bytes().splitlines(keepends=True)
    oldest.write_bytes(b"".join(lines[1:]))
    assert every_page(root) == whole_log(root) and len(whole_log(root)) == 59
    # and with no index possible at all, the whole log is read as before
    for suffix in ("", "-wal", "-shm"):
        (root / f"{decision_index.INDEX_FILE}{suffix}").unlink(missing_ok=True)
    (root / decision_index.INDEX_FILE).mkdir()
    assert not decision_index.sync(root)
    assert every_page(root) == whole_log(root)
    assert decision_log.find(root, "fraud", whole_log(root, model="fraud")[0]) is not None


@pytest.fixture()
def gateway_url(tmp_path: Path) -> Iterator[str]:
    app = gateway.build(router=rec.Router(), trigger=lambda why: None, statuses=lambda: [],
                        webhook_secret=None, reports_root=tmp_path / "reports")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15, what="gateway")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_reports_are_paged_over_http_links_and_cursors(tmp_path: Path, gateway_url: str) -> None:
    root = tmp_path / "reports"
    log = decision_log.Log(root)
    for i in range(230):
        log.append(record(i, model="credit-risk" if i % 2 else "fraud"))
    acted = whole_log(root, kinds=decision_index.ACTED)
    first = httpx.get(f"{gateway_url}/reports/?limit=50")
    assert first.status_code == 200
    assert [i for i in acted[:50] if i in first.text] == acted[:50] and acted[50] not in first.text
    assert f"of {len(acted)}, newest first" in first.text and "href='?page=2&amp;limit=50'" in first.text
    second = httpx.get(f"{gateway_url}/reports/?page=2&limit=50").text
    assert acted[50] in second and acted[49] not in second and "← newer" in second
    # the JSON form: every kind by default, newest first, `page.next` followed to the end
    url: str | None = "/reports/credit-risk/?format=json&limit=40"
    seen: list[str] = []
    while url:
        doc = httpx.get(f"{gateway_url}{url}").json()
        assert doc["page"]["total"] == 115 and doc["page"]["limit"] == 40
        seen += [d["id"] for d in doc["decisions"]]
        url = doc["page"]["next"]
    assert seen == whole_log(root, model="credit-risk")
    only = httpx.get(f"{gateway_url}/reports/fraud/?format=json&kind=alert").json()
    assert [d["id"] for d in only["decisions"]] == whole_log(root, model="fraud",
                                                              kinds=frozenset({Kind.ALERT}))
    for query, says in [("limit=0", "from 1 to 1000"), ("limit=x", "limit='x'"),
                        ("page=-1", "page='-1'"), ("kind=bogus", "not a kind of decision"),
                        ("format=json&before=yesterday", "follow the `next` link")]:
        bad = httpx.get(f"{gateway_url}/reports/?{query}")
        assert bad.status_code == 400 and says in bad.json()["error"], (query, bad.text)


def test_retention_drops_by_count_and_age_and_keeps_linked_reverts_until_they_age_out(
        tmp_path: Path) -> None:
    root = tmp_path / "reports"
    now = clock.ManualClock(at=START + 60.0 * 100)
    log = decision_log.Log(root, max_bytes=3_000, keep=20, keep_days=2, clock=now)
    revert = record(1, kind=Kind.REVERT, commit="c" * 40)  # its page is in a commit message
    old_alert = record(2, kind=Kind.ALERT)
    for d in [record(0), revert, old_alert, *(record(i) for i in range(3, 80))]:
        log.append(d)
    pages = decision_pages.Pages(root, clone=lambda: None)
    pages.record(revert)
    pages.record(old_alert)
    assert log.prune_due
    done = log.prune()
    assert done is not None and len(done.dropped) == 80 - 20 - 1
    assert not log.prune_due  # next in a day, or after a rotation
    kept = whole_log(root)
    assert kept == every_page(root) and len(kept) == 21
    assert revert.id in kept and old_alert.id not in kept
    assert decision_pages.page_file(root, revert.model, revert.id).exists()
    assert not decision_pages.page_file(root, old_alert.model, old_alert.id).exists()
    now.advance(3 * 86_400)  # everything is older than two days now, the revert too
    log.append(record(500, at=now.wall()))
    log.prune()
    assert whole_log(root) == every_page(root) == [record(500, at=now.wall()).id]
    assert not decision_pages.page_file(root, revert.model, revert.id).exists()


def test_retention_settings_are_whole_numbers_and_zero_is_no_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlgitops import settings

    track = settings.tracking()
    assert (track.decisions_keep, track.decisions_keep_days) == (500_000, 365)
    monkeypatch.setenv("MLGITOPS_DECISIONS_KEEP", "0")
    monkeypatch.setenv("MLGITOPS_DECISIONS_KEEP_DAYS", "30")
    track = settings.tracking()
    assert (track.decisions_keep, track.decisions_keep_days) == (None, 30)
    monkeypatch.setenv("MLGITOPS_DECISIONS_KEEP_DAYS", "a year")
    with pytest.raises(errors.ConfigError, match="not a whole number of days"):
        settings.tracking()


@pytest.mark.process
def test_mlgitops_report_lists_the_newest_and_says_how_many_are_older(repo: Path) -> None:
    from click.testing import CliRunner

    from mlgitops import cli, settings
    from mlgitops.notebook import insights

    root = settings.state_dir(repo) / "reports"
    log = decision_log.Log(root)
    for i in range(5):
        log.append(record(i))
    runner = CliRunner()
    out = runner.invoke(cli.main, ["report", "credit-risk", "--repo", str(repo), "--json",
                                   "--limit", "2"])
    assert out.exit_code == 0, out.output
    assert [r["id"] for r in json.loads(out.output)] == [record(3).id, record(4).id]
    out = runner.invoke(cli.main, ["report", "credit-risk", "--repo", str(repo), "--limit", "2"],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "3 older decision(s) not shown" in out.output, out.output
    assert list(insights.decisions(repo, "credit-risk", limit=3)["id"]) == [
        record(i).id for i in (2, 3, 4)]
    assert insights.decision_count(repo) == 5
