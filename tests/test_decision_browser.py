"""What a person sees after a real drift revert: the link in the commit, opened in a real browser.

A real controller (`run.running`, what ``mlgitops up`` runs) with real server processes, real git
and a bare remote, live population-A traffic through the gateway against v2 (trained on B): the
monitor reverts v2. Then headless Chromium (Debian's, driven by Playwright) opens the reports
index and the ``Mlgitops-Report`` URL of the revert commit, built on ``--public-url``, and reads
the page as a person would: the reverted and restored commits, the features, the verdict, the
Evidently report one click away; and a webhook receiver on loopback got the signed revert.

Screenshots go to the test's temporary directory; with ``MLGITOPS_DOCS_SCREENSHOTS=DIR`` they are
also copied there (how ``docs/decision-page.png`` is made).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import browser
from support.net import free_port, version_at
from support.waits import wait_until
from support.webhook_receiver import Receiver
from test_monitor import DRIFT, NAME, Traffic, build_repo, population

from mlgitops import cli, settings
from mlgitops.adapters import git, webhooks
from mlgitops.controller import decision_pages, run
from mlgitops.core import layout

pytestmark = pytest.mark.browser


@pytest.mark.timeout(900)
def test_a_revert_is_read_in_a_browser_from_the_link_in_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser.require()
    # two breached windows in a row before acting: the page charts the windows that led to it
    work, bare, v1, v2, _ = build_repo(tmp_path, drift={**DRIFT, "consecutiveWindows": 2})
    restored = git.text(bare, "rev-parse", f"{v2}^")  # v1's model with the drift policy edit
    port = free_port()
    public = f"http://localhost:{port}"  # not the address it binds: the link is built on the setting
    monkeypatch.setenv("MLGITOPS_NOTIFY_SECRET", "hook-secret")
    with Receiver() as receiver:
        cfg = settings.controller(work, port=port, poll_seconds=5.0, public=public,
                                  notify_url=receiver.url)
        with run.running(cfg) as ctl:
            base = ctl.base_url
            wait_until(lambda: version_at(base, NAME) == v2, timeout=120, what="v2 serving")
            with Traffic(f"{base}/models/{NAME}/invocations", population(3000)) as traffic:
                wait_until(lambda: version_at(base, NAME) not in (v2, None), timeout=180, what="rollback")
            assert not traffic.failed, traffic.failed[:3]
            (entry,) = git.log(bare, "main", [], limit=1)
            assert entry.trailers[layout.TRAILER_REVERTS] == v2
            ident = entry.trailers[layout.TRAILER_REPORT_ID]
            link = entry.trailers[layout.TRAILER_REPORT]
            assert link == f"{public}/reports/{NAME}/{ident}"
            assert ctl.monitor is not None and ctl.monitor.wait_reports(180)
            # pages and webhook (the MLflow and Evidently sinks have lanes of their own)
            assert ctl.decisions.wait(120, only=(decision_pages.Pages, webhooks.Notifier))
            wait_until(lambda: any(d.headers["x-mlgitops-event"] == "revert"
                                   for d in receiver.deliveries), timeout=30, what="webhook")

            shots = tmp_path / "screenshots"
            with browser.page() as page:
                page.goto(f"{public}/reports/")
                rows = page.locator("table.decisions tbody tr")
                assert rows.count() >= 2  # deploy of v2, the revert (quiet windows: ?kind=all)
                revert_row = page.locator("tr.revert").first
                assert v2[:12] in revert_row.inner_text() and restored[:12] in revert_row.inner_text()
                kinds = page.locator("table.decisions tbody tr td:nth-child(2)").all_inner_texts()
                assert {"REVERT", "DEPLOY"} <= {k.strip().upper() for k in kinds}
                browser.shot(page, shots / "reports-index.png")

                page.goto(link)  # the URL in the revert commit
                assert page.title().startswith(f"Reverted: {NAME} {v2[:12]}")
                text = page.inner_text("body")
                assert v2[:12] in text and restored[:12] in text and entry.commit[:12] in text
                assert "credit v2 on population B" in text  # the reverted commit's message
                assert "live data fits the previous version's baseline clearly better" in text
                table = page.locator("table.attribution")
                features = table.locator("tbody th").all_inner_texts()
                assert features == ["f0", "f1", "f2", "f3", "f4", "prediction"]
                cells = [r.split("\t") for r in table.locator("tbody tr").all_inner_texts()][:5]
                # every feature drifts from the reverted baseline; fewer than datasetShare (half)
                # of them from the restored one: why the revert was attributed to v2
                assert [c[4] for c in cells] == ["drifts"] * 5
                assert sum(c[8] == "fits" for c in cells) >= 3, cells
                charts = page.locator("svg[aria-label^='drift score of']")
                assert charts.count() == 6
                assert charts.first.locator("circle").count() >= 2  # one dot per window
                assert page.locator("svg[aria-label='prediction distributions']").count() == 1
                browser.shot(page, shots / "decision-page.png")
                page.emulate_media(media="print")
                assert page.locator(".nav").is_hidden()  # prints without the navigation
                page.emulate_media(media="screen")

                page.click("a.evidently")  # the full Evidently report, one click away
                page.wait_for_load_state("load")
                assert page.url == f"{public}/reports/{NAME}/{ident}.evidently.html"
                assert "f0" in page.content()
                browser.shot(page, shots / "evidently-report.png", full_page=False)

            # mlgitops report NAME --json: the decisions with their URLs
            out = CliRunner().invoke(cli.main, ["report", NAME, "--repo", str(work), "--json"])
            assert out.exit_code == 0, out.output
            listed = json.loads(out.output)
            (rev,) = [d for d in listed if d["kind"] == "revert"]
            assert rev["url"] == link and rev["commit"] == entry.commit

    (hook,) = [d for d in receiver.deliveries if d.headers["x-mlgitops-event"] == "revert"]
    assert webhooks.verify("hook-secret", hook.body, hook.headers["x-mlgitops-signature"])
    body = json.loads(hook.body)
    assert (body["model"], body["version"], body["previousVersion"], body["commit"]) == (
        NAME, v2, restored, entry.commit)
    assert body["reportUrl"] == link and "fits the previous version" in body["verdict"]
    assert any(d.headers["x-mlgitops-event"] == "deploy" for d in receiver.deliveries)
    assert v1  # v1 is the grand-parent: restored is v1's model with the policy edit
    for png in shots.iterdir():
        assert png.stat().st_size > 10_000, png
    docs = os.environ.get("MLGITOPS_DOCS_SCREENSHOTS")
    if docs:
        shutil.copy(shots / "decision-page.png", Path(docs) / "decision-page.png")
        shutil.copy(shots / "reports-index.png", Path(docs) / "reports-index.png")
