"""Decision records: built from real windows, logged, fanned out to sinks, served, and sent.

- records of a real window against two real baselines (both sides per feature, the prediction
  distributions, the reason an alert did not revert);
- the append-only log survives a new reader, supersedes by id, and skips a torn line;
- the dispatcher retries a failing sink with back-off and never blocks the caller;
- the outgoing webhook against a real HTTP receiver on loopback: signed JSON, Slack format,
  retried after 503s;
- the gateway's ``/reports/`` index and ``/reports/<model>/<id>`` pages over real HTTP, and
  404 sentences for what is not there.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from conftest import free_port, wait_until
from webhook_receiver import Receiver

from mlgitops import errors, settings
from mlgitops.adapters import webhooks
from mlgitops.controller import decision_pages, gateway
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reconciler as rec
from mlgitops.core import decision_page, decisions, drift, policy, stats
from mlgitops.core.manifest import DriftPolicy

FEATURES = ["age", "income", "plan"]


def frame(n: int, *, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40 + 10 * shift, 8, n),
        "income": rng.lognormal(10 + shift, 0.4, n),
        "plan": rng.choice(["basic", "plus", "pro"], n,
                           p=[0.6, 0.3, 0.1] if shift == 0 else [0.1, 0.3, 0.6]),
    })


def baseline_of(f: pd.DataFrame) -> stats.Baseline:
    preds = (f["age"] > 40).astype(int).to_numpy()
    return stats.build_baseline({c: f[c].to_numpy() for c in FEATURES}, predictions=preds,
                                kinds={"plan": "categorical", "prediction": "categorical"})


def window_of(baseline: stats.Baseline, f: pd.DataFrame) -> stats.LiveStats:
    live = stats.LiveStats.empty(baseline)
    live.update({c: f[c].to_numpy() for c in FEATURES}, (f["age"] > 40).astype(int).to_numpy())
    return live


RULES = DriftPolicy(window_rows=500, min_rows=300, consecutive_windows=1, cooldown_seconds=0)


def window_decision(*, live_shift: float, action: str = "revert",
                    blocked: str | None = None) -> decisions.Decision:
    """A closed window of the serving version (trained on shift 1) vs the previous (shift 0)."""
    previous, serving = baseline_of(frame(2000, seed=1)), baseline_of(frame(2000, shift=1, seed=2))
    window = window_of(serving, frame(800, shift=live_shift, seed=3))
    report = drift.compare_stats(serving, window, share=RULES.dataset_share)
    rules = DriftPolicy(**{**RULES.__dict__, "action": action})
    evidence = policy.Evidence.from_reports(
        report, fit_current=policy.fit_share(serving, serving, window),
        fit_previous=policy.fit_share(previous, serving, window), revert_blocked=blocked)
    d = policy.decide(evidence, policy.History(), rules, now=1_780_000_000.25)
    return decisions.of_window(d, model="credit-risk", version="b" * 40, digest="sha256:" + "2" * 64,
                               previous_version="a" * 40, rules=rules, baseline=serving,
                               previous=previous, window=window, index=3,
                               base_url="https://ml.example.com/")


def test_a_revert_window_records_both_baselines_per_feature_and_round_trips() -> None:
    d = window_decision(live_shift=0.0)  # live data is the previous version's population
    assert d.kind is decisions.Kind.REVERT and d.policy_verdict == "revert"
    assert decisions.valid_id(d.id) and d.id.startswith("credit-risk-20260528T")
    assert d.id.split("-")[-2] == "revert" and len(d.id.split("-")[-1]) == 6
    assert d.report_url == f"https://ml.example.com/reports/credit-risk/{d.id}"
    assert [f.name for f in d.features] == FEATURES
    for f in d.features:  # drifts from the reverted baseline, fits the restored one
        assert f.drifted and f.restored is not None and not f.restored.drifted, f
    methods = {f.name: (f.method, f.restored.method if f.restored else None) for f in d.features}
    # 2000 reference rows: distances, as Evidently picks them (core.drift)
    assert methods == {"age": ("wasserstein",) * 2, "income": ("wasserstein",) * 2,
                       "plan": ("jensenshannon",) * 2}
    assert d.prediction is not None and d.prediction.name == "prediction"
    labels = [dist.label for dist in d.distributions]
    assert labels == ["reverted baseline", "restored baseline", "live"]
    assert all(abs(sum(dist.shares) - 1) < 1e-6 for dist in d.distributions)
    assert d.thresholds["datasetShare"] == 0.5 and d.thresholds["consecutiveWindows"] == 1
    assert d.why_not_reverted is None and d.window == 3 and d.rows == 800
    again = decisions.Decision.from_json(d.to_json())
    assert again == d
    # the id is a function of what was decided: the same inputs give the same id
    assert window_decision(live_shift=0.0).id == d.id


def test_an_alert_says_why_no_revert_was_made() -> None:
    inputs = window_decision(live_shift=3.0)  # away from both versions
    assert inputs.kind is decisions.Kind.ALERT
    assert inputs.why_not_reverted is not None and "both versions" in inputs.why_not_reverted
    alert_only = window_decision(live_shift=0.0, action="alert")
    assert alert_only.why_not_reverted is not None and "action is alert" in alert_only.why_not_reverted
    blocked = window_decision(live_shift=0.0, blocked="there is no previous version to return to")
    assert blocked.why_not_reverted == "there is no previous version to return to"
    page = decision_page.render(inputs, history=[inputs])
    assert "Why no revert was made" in page and "both versions" in page


def test_the_log_survives_a_new_reader_supersedes_by_id_and_skips_a_torn_line(tmp_path: Path) -> None:
    log = decision_log.Log(tmp_path)
    d = window_decision(live_shift=0.0)
    log.append(d.with_(outcome="the revert is being pushed"))
    log.append(d.with_(commit="c" * 40))
    with log.path.open("ab") as f:
        f.write(b'{"id": "torn')
    other = decisions.of_rollout(kind=decisions.Kind.DEPLOY, model="fraud", at=1.0,
                                 version="d" * 40, previous_version=None, verdict="serves",
                                 digest=None, base_url=None)
    decision_log.Log(tmp_path).append(other)
    (again,) = decision_log.read(tmp_path, model="credit-risk")
    assert again.commit == "c" * 40 and again.outcome is None
    assert [r.model for r in decision_log.read(tmp_path)] == ["fraud", "credit-risk"]
    small = decision_log.Log(tmp_path / "small", max_bytes=len(d.to_json()) + 10)
    small.append(d)
    small.append(other)  # rotated once: both still readable
    assert {r.id for r in decision_log.read(tmp_path / "small")} == {d.id, other.id}


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[float] = []
        self.got: list[str] = []

    def record(self, decision: decisions.Decision) -> None:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise errors.NotifyError("receiver is down")
        self.got.append(decision.id)


class Slow:
    def __init__(self) -> None:
        self.release = threading.Event()

    def record(self, decision: decisions.Decision) -> None:
        self.release.wait(10)


def test_the_dispatcher_retries_with_backoff_off_the_callers_thread(tmp_path: Path) -> None:
    flaky, slow, never = Flaky(2), Slow(), Flaky(99)
    dispatcher = decision_log.Dispatcher(
        log=decision_log.Log(tmp_path / "reports"), state_dir=tmp_path, sinks=[slow, flaky, never],
        retry=decision_log.Retry(attempts=3, first=0.05, cap=0.2))
    d = window_decision(live_shift=0.0)
    started = time.monotonic()
    dispatcher.submit(d.with_(sample_path=str(dispatcher.sample_path(d.model, d.id))),
                      frame(50))
    assert time.monotonic() - started < 0.5  # the slow sink does not hold the caller
    assert decision_log.find(tmp_path / "reports", d.model, d.id) is not None  # logged at once
    # the slow sink holds only its own lane: the others get the decision meanwhile
    wait_until(lambda: flaky.got == [d.id] and len(never.calls) == 3, timeout=10,
               what="the other sinks")
    assert not dispatcher.wait(0.2)  # the slow one still holds it
    slow.release.set()
    assert dispatcher.wait(10)
    assert flaky.got == [d.id] and len(flaky.calls) == 3
    assert flaky.calls[2] - flaky.calls[1] >= flaky.calls[1] - flaky.calls[0] >= 0.04
    assert dispatcher.failures == [("Flaky", d.id, "NotifyError: receiver is down")]
    assert len(pd.read_parquet(dispatcher.sample_path(d.model, d.id))) == 50
    dispatcher.stop()


def test_samples_are_kept_with_bounded_retention(tmp_path: Path) -> None:
    dispatcher = decision_log.Dispatcher(log=decision_log.Log(tmp_path / "reports"),
                                         state_dir=tmp_path, keep_samples=3)
    base = window_decision(live_shift=0.0)
    ids = []
    for i in range(5):
        d = base.with_(id=f"credit-risk-20260528T00000{i}-pass-00000{i}")
        dispatcher.submit(d.with_(sample_path=str(dispatcher.sample_path(d.model, d.id))), frame(5))
        ids.append(d.id)
        assert dispatcher.wait(10)
        time.sleep(0.01)
    kept = sorted(p.stem for p in decision_log.samples_dir(tmp_path, "credit-risk").iterdir())
    assert kept == ids[2:]


def test_webhook_posts_a_signed_decision_and_is_retried_after_503(tmp_path: Path) -> None:
    d = window_decision(live_shift=0.0).with_(commit="c" * 40)
    with Receiver(fail_first=2) as receiver:
        sink = webhooks.Notifier(webhooks.Target(url=receiver.url, secret="s3cret"))
        dispatcher = decision_log.Dispatcher(
            log=decision_log.Log(tmp_path), state_dir=tmp_path, sinks=[sink],
            retry=decision_log.Retry(attempts=4, first=0.05))
        dispatcher.submit(d)
        assert dispatcher.wait(20)
        (got,) = receiver.deliveries
        assert receiver.refused == 2
    assert got.headers["x-mlgitops-event"] == "revert"
    assert got.headers["x-mlgitops-delivery"] == d.id
    assert webhooks.verify("s3cret", got.body, got.headers["x-mlgitops-signature"])
    assert not webhooks.verify("other", got.body, got.headers["x-mlgitops-signature"])
    body = json.loads(got.body)
    assert body["model"] == "credit-risk" and body["event"] == "revert"
    assert (body["version"], body["previousVersion"], body["commit"]) == ("b" * 40, "a" * 40, "c" * 40)
    assert body["reportUrl"] == d.report_url and body["verdict"] == d.verdict
    assert body["driftedFeatures"] == FEATURES


def test_webhook_slack_format_and_quiet_windows_are_not_sent() -> None:
    d = window_decision(live_shift=3.0)  # an alert
    with Receiver() as receiver:
        sink = webhooks.Notifier(webhooks.Target(url=receiver.url, format="slack"))
        sink.record(d)
        sink.record(d.with_(kind=decisions.Kind.PASS))
    (got,) = receiver.deliveries
    assert "x-mlgitops-signature" not in got.headers  # no secret, no signature
    body = json.loads(got.body)
    assert set(body) == {"text", "blocks"} and "drift alert" in body["text"]
    assert any(b["type"] == "actions" and b["elements"][0]["url"] == d.report_url
               for b in body["blocks"])


def test_a_webhook_that_cannot_be_reached_is_a_sentence() -> None:
    sink = webhooks.Notifier(webhooks.Target(url=f"http://127.0.0.1:{free_port()}/x",
                                             timeout_seconds=1))
    with pytest.raises(errors.NotifyError, match="could not be reached"):
        sink.record(window_decision(live_shift=0.0))


@pytest.fixture()
def gateway_url(tmp_path: Path) -> Iterator[str]:
    app = gateway.build(router=rec.Router(), trigger=lambda why: None, statuses=lambda: [],
                        webhook_secret=None, reports_root=tmp_path / "reports")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15, what="gateway")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_gateway_serves_the_index_and_every_decisions_page(tmp_path: Path,
                                                                gateway_url: str) -> None:
    root = tmp_path / "reports"
    revert = window_decision(live_shift=0.0).with_(commit="c" * 40)
    alert = window_decision(live_shift=3.0)
    deploy = decisions.of_rollout(kind=decisions.Kind.DEPLOY, model="fraud", at=1_780_000_100.0,
                                  version="e" * 40, previous_version="f" * 40,
                                  verdict="eeeeeeeeeeee serves on 127.0.0.1:9000", digest=None,
                                  base_url=gateway_url)
    log = decision_log.Log(root)
    for d in (revert, alert, deploy):
        log.append(d)
    pages = decision_pages.Pages(root, clone=lambda: None)
    pages.record(revert)  # the alert's and the deploy's pages are rendered from the log
    index = httpx.get(f"{gateway_url}/reports/")
    assert index.status_code == 200
    for d in (revert, alert, deploy):
        assert f"/reports/{d.model}/{d.id}" in index.text
    assert "bbbbbbbbbbbb" in index.text and "aaaaaaaaaaaa" in index.text
    quiet = revert.with_(id="credit-risk-20260528T000000-pass-0a0b0c", kind=decisions.Kind.PASS,
                         at=revert.at - 5)
    log.append(quiet)
    assert quiet.id not in httpx.get(f"{gateway_url}/reports/").text  # quiet windows: on asking
    assert quiet.id in httpx.get(f"{gateway_url}/reports/?kind=all").text
    only = httpx.get(f"{gateway_url}/reports/?kind=revert").text
    assert revert.id in only and alert.id not in only and deploy.id not in only
    data = httpx.get(f"{gateway_url}/reports/credit-risk/?format=json").json()
    assert [r["id"] for r in data["decisions"]] == [alert.id, revert.id, quiet.id]  # newest first
    for d in (revert, alert, deploy):
        page = httpx.get(f"{gateway_url}/reports/{d.model}/{d.id}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert d.verdict[:40].replace("'", "&#x27;") in page.text
    assert "@media print" in httpx.get(f"{gateway_url}/reports/credit-risk/{revert.id}").text
    missing = httpx.get(f"{gateway_url}/reports/credit-risk/credit-risk-20260101T000000-revert-abcdef")
    assert missing.status_code == 404 and "No decision" in missing.json()["error"]
    bad = httpx.get(f"{gateway_url}/reports/Credit/{revert.id}")
    assert bad.status_code == 404 and "lowercase DNS label" in bad.json()["error"]


def test_a_page_shows_the_trend_of_the_windows_that_led_to_the_decision(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    log = decision_log.Log(root)
    base = window_decision(live_shift=0.0)
    windows = []
    for i, kind in enumerate([decisions.Kind.PASS, decisions.Kind.PASS, decisions.Kind.REVERT]):
        d = base.with_(id=f"credit-risk-2026052{i}T000000-{kind.value}-00000{i}", kind=kind,
                       at=base.at + i, window=i + 1)
        log.append(d)
        windows.append(d)
    page = decision_pages.render(root, windows[-1], clone=None)
    assert page.count("aria-label='drift score of") == len(FEATURES) + 1  # features + prediction
    assert "window 3" in page and "<svg" in page and "<script" not in page
    assert "aria-label='prediction distributions'" in page


def test_mlgitops_report_lists_decisions_with_urls_and_opens_the_latest(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from mlgitops import cli

    root = settings.state_dir(repo) / "reports"
    revert = window_decision(live_shift=0.0).with_(commit="c" * 40)
    local = decisions.of_rollout(kind=decisions.Kind.DEPLOY, model="credit-risk",
                                 at=revert.at + 60, version="c" * 40, previous_version="b" * 40,
                                 verdict="cccccccccccc serves", digest=None, base_url=None)
    log = decision_log.Log(root)
    log.append(revert)
    log.append(local)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    runner = CliRunner()
    out = runner.invoke(cli.main, ["report", "credit-risk", "--repo", str(repo), "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["kind"] for r in rows] == ["revert", "deploy"]
    assert rows[0]["url"] == revert.report_url  # recorded with the public URL
    # no controller runs and none was recorded: the page file
    page = root / "credit-risk" / f"{local.id}.html"
    assert rows[1]["url"] == page.as_uri()
    out = runner.invoke(cli.main, ["report", "credit-risk", "--repo", str(repo), "--open"],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "revert" in out.output and "bbbbbbbbbbbb" in out.output
    assert opened == [page.as_uri()]
    empty = runner.invoke(cli.main, ["report", "fraud", "--repo", str(repo), "--open"])
    assert empty.exit_code == 1 and "there is no decision of fraud to open" in empty.output
    bad = runner.invoke(cli.main, ["report", "Fraud!", "--repo", str(repo)])
    assert bad.exit_code == 1 and "lowercase DNS label" in bad.output


def test_public_url_and_notification_settings_are_checked(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from mlgitops import settings

    cfg = settings.controller(tmp_path, public="https://ml.example.com/", notify_url="http://h/x",
                              notify_format="slack")
    assert cfg.gateway.public_url == "https://ml.example.com"
    assert (cfg.notify.url, cfg.notify.format, cfg.notify.secret) == ("http://h/x", "slack", None)
    monkeypatch.setenv("MLGITOPS_NOTIFY_SECRET", "s")
    assert settings.controller(tmp_path).notify.secret == "s"
    with pytest.raises(errors.ConfigError, match="must start with http"):
        settings.controller(tmp_path, public="ml.example.com")
    with pytest.raises(errors.ConfigError, match="not json or slack"):
        settings.controller(tmp_path, notify_format="teams")
    with pytest.raises(errors.ConfigError, match="--notify-url"):
        settings.controller(tmp_path, notify_url="ftp://x")


def test_notebook_helpers_read_the_decisions_and_the_page(repo: Path) -> None:
    from mlgitops.notebook import insights

    root = settings.state_dir(repo) / "reports"
    revert = window_decision(live_shift=0.0).with_(commit="c" * 40)
    alert = window_decision(live_shift=3.0)
    log = decision_log.Log(root)
    log.append(revert)
    log.append(alert)
    frame_ = insights.decisions(repo, "credit-risk")
    assert list(frame_["kind"]) == ["revert", "alert"]
    assert frame_["url"].iloc[0] == revert.report_url
    page = insights.decision_page(repo, "credit-risk")  # no file: rendered from the log
    assert "Reverted: credit-risk bbbbbbbbbbbb" in page and "age" in page
    decision_pages.Pages(root, clone=lambda: None).record(alert)
    written = insights.decision_page(repo, "credit-risk", kind="alert")
    assert written == (root / "credit-risk" / f"{alert.id}.html").read_text()
    assert "Why no revert was made" in written
    with pytest.raises(ValueError, match="no hold of credit-risk is recorded"):
        insights.decision_page(repo, "credit-risk", kind="hold")


def test_a_breached_window_that_did_not_act_is_listed_as_a_breach(tmp_path: Path) -> None:
    """A window that breaches before ``consecutiveWindows`` is reached is a ``breach`` (not a
    ``pass``): its own kind, id, badge and title, listed in ``/reports/`` by default; a window
    that did not breach stays a quiet ``pass``."""
    previous, serving = baseline_of(frame(2000, seed=1)), baseline_of(frame(2000, shift=1, seed=2))
    rules = DriftPolicy(**{**RULES.__dict__, "consecutive_windows": 2})
    out = {}
    for name, shift in (("drifted", 0.0), ("quiet", 1.0)):
        window = window_of(serving, frame(800, shift=shift, seed=3))
        evidence = policy.Evidence.from_reports(
            drift.compare_stats(serving, window, share=rules.dataset_share),
            fit_current=policy.fit_share(serving, serving, window),
            fit_previous=policy.fit_share(previous, serving, window))
        d = policy.decide(evidence, policy.History(), rules, now=1_780_000_000.0 - shift)
        out[name] = decisions.of_window(d, model="credit-risk", version="b" * 40, digest=None,
                                        previous_version="a" * 40, rules=rules, baseline=serving,
                                        previous=previous, window=window, index=1, base_url=None)
    breach, quiet = out["drifted"], out["quiet"]
    assert breach.policy_verdict == "breach" and breach.kind is decisions.Kind.BREACH
    assert breach.id.split("-")[-2] == "breach" and decisions.valid_id(breach.id)
    assert breach.kind.window and not breach.kind.notifies and breach.evidently_file is None
    assert quiet.policy_verdict == "ok" and quiet.kind is decisions.Kind.PASS
    assert decision_page.title_of(breach).startswith("Drift breach")
    assert "<span class='badge breach'>breach</span>" in decision_page.render(breach, history=[breach])
    assert decisions.Decision.from_json(breach.to_json()) == breach
    root = tmp_path / "reports"
    log = decision_log.Log(root)
    log.append(quiet)
    log.append(breach)
    from mlgitops.controller import report_files
    listed = report_files.index_page(root)
    assert breach.id in listed and quiet.id not in listed  # breaches are listed, passes on asking
    assert decision_log.window_history(root, breach) == [quiet, breach]


def test_each_side_of_a_revert_page_is_painted_by_its_own_verdict() -> None:
    """On a revert page the restored version's ``fits`` is green on a row whose reverted side
    drifts: each flag cell carries its own colour, and no rule paints a cell by its row."""
    import re

    d = window_decision(live_shift=0.0)
    assert d.kind is decisions.Kind.REVERT
    page = decision_page.render(d, history=[d])
    assert "tr.drifted td" not in page  # the old rule that painted both sides by the row
    table = page[page.index("<table class='attribution'>"):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr[^>]*><th scope='row'>([^<]+)</th>(.*?)</tr>", table)
    assert [name for name, _ in rows] == [*FEATURES, "prediction"]
    seen = set()
    for name, cells in rows:
        flags = re.findall(r"<td class='(\w+) flag' style='color:([^']+)'>(\w+)</td>", cells)
        assert len(flags) == 2, (name, cells)
        for cls, colour, word in flags:
            assert (cls, colour) == (("drift", "var(--bad)") if word == "drifts"
                                     else ("fit", "var(--ok)")), (name, flags)
            seen.add(word)
    feature_flags = [re.findall(r">(drifts|fits)</td>", c) for n, c in rows if n in FEATURES]
    assert all(f == ["drifts", "fits"] for f in feature_flags)  # reverted drifts, restored fits
    assert seen == {"drifts", "fits"}


def _label_boxes(svg: str) -> tuple[list[list[tuple[float, float]]], float, float, float]:
    """The corners of each bin label of a chart as drawn (`decision_page.CHAR_PX` per character,
    ascent 0.8 and descent 0.3 of `LINE_PX`), the chart's width, height and axis line."""
    import math
    import re

    width, height = (float(v) for v in re.search(r"viewBox='0 0 (\S+) (\S+)'", svg).groups())
    axis = max(float(y) for y in re.findall(r"<line [^>]*y1='([\d.]+)'", svg))
    boxes = []
    for x, y, anchor, turn, text in re.findall(
            r"<text class='bin' x='([\d.]+)' y='([\d.]+)' text-anchor='(\w+)'"
            r"(?: transform='rotate\((-?[\d.]+) [^)]*\)')?>([^<]*)</text>", svg):
        w = len(text.replace("&#x27;", "'")) * decision_page.CHAR_PX
        left = {"middle": -w / 2, "end": -w, "start": 0.0}[anchor]
        up, down = 0.8 * decision_page.LINE_PX, 0.3 * decision_page.LINE_PX
        a = math.radians(float(turn or 0))
        corners = []
        for dx, dy in ((left, -up), (left + w, -up), (left + w, down), (left, down)):
            corners.append((float(x) + dx * math.cos(a) - dy * math.sin(a),
                            float(y) + dx * math.sin(a) + dy * math.cos(a)))
        boxes.append(corners)
    return boxes, width, height, axis


def _overlap(p: list[tuple[float, float]], q: list[tuple[float, float]]) -> bool:
    """Whether two convex quadrilaterals overlap (separating axis theorem)."""
    for poly in (p, q):
        for i in range(4):
            (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % 4]
            nx, ny = y2 - y1, x1 - x2
            a = [nx * x + ny * y for x, y in p]
            b = [nx * x + ny * y for x, y in q]
            if max(a) <= min(b) + 1e-9 or max(b) <= min(a) + 1e-9:
                return False
    return True


@pytest.mark.parametrize("bins", [
    ["0", "1"],
    [f"[{i / 10:.3g}, {(i + 1) / 10:.3g})" for i in range(12)],
    [f"[{-1234.5 + i * 321.7:.3g}, {-1234.5 + (i + 1) * 321.7:.3g})" for i in range(12)],
    ["a-very-long-class-name-indeed", "short", "another-rather-long-class-label"] * 5,
    [f"class-{i}" for i in range(40)],
])
def test_the_prediction_chart_labels_never_overlap(bins: list[str]) -> None:
    """Each drawn bin label's box (as drawn: turned, thinned, cut) overlaps no other label, stays
    inside the chart and below its axis."""
    dists = [decisions.Distribution(label, tuple(bins), tuple(1 / len(bins) for _ in bins))
             for label in ("serving baseline", "previous baseline", "live")]
    svg = decision_page.distribution_chart(dists)
    boxes, width, height, axis = _label_boxes(svg)
    assert len(boxes) >= min(len(bins), 6)  # labelled, even with many bins
    for i, p in enumerate(boxes):
        assert all(0 <= x <= width and axis < y <= height for x, y in p), (bins[i], p)
        for q in boxes[i + 1:]:
            assert not _overlap(p, q), (p, q)


@pytest.mark.timeout(600)
def test_one_commit_yields_one_deploy_row_across_a_controller_restart(
        repo: Path, publish_version: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real controller serves v1, stops (its servers with it) and starts again: v1 is started
    again, which is not another decision; `/reports/` lists one deploy of v1. A new commit is."""
    from mlgitops import settings

    monkeypatch.setenv("MLGITOPS_MLFLOW", "0")
    monkeypatch.setenv("MLGITOPS_EVIDENTLY", "0")
    from mlgitops.controller import report_files, run

    root = settings.state_dir(repo) / "reports"
    v1 = publish_version(name="credit")

    def serve_until(version: str) -> None:
        cfg = settings.controller(repo, port=free_port(), poll_seconds=1.0, monitor=False)
        with run.running(cfg) as ctl:
            def served() -> bool:
                try:
                    r = httpx.get(f"{ctl.base_url}/v2/models/credit", timeout=2)
                except httpx.HTTPError:
                    return False
                return r.status_code == 200 and r.json().get("version") == version
            wait_until(served, timeout=180, what=f"{version[:12]} serving")
            # the log is appended when the deploy is recorded; its page comes from the log
            assert ctl.decisions.wait(120, only=(decision_pages.Pages,))

    serve_until(v1)
    serve_until(v1)  # a restart
    deploys = [d for d in decision_log.read(root) if d.kind is decisions.Kind.DEPLOY]
    assert [d.version for d in deploys] == [v1]
    assert report_files.index_page(root).count("<tr class='deploy'>") == 1
    v2 = publish_version(name="credit", seed=1)
    serve_until(v2)
    deploys = [d for d in decision_log.read(root) if d.kind is decisions.Kind.DEPLOY]
    assert [d.version for d in deploys] == [v1, v2]
