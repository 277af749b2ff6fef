"""End to end on the local runtime (issue 20, item 5): a real controller (`mlgitops up`'s
wiring), real server processes keeping their prediction logs, real git with a bare remote and
its validating hook, real scikit-learn models; traffic through the gateway, labels back through
``mlgitops.feedback``. v2, less accurate than v1 on the same labelled rows, is reverted with the
evidence on its page; when both versions drop alike only an alert is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.data import FEATURES, make_frame, train
from support.net import free_port, version_at
from support.repos import with_v1
from support.waits import wait_until

import mlgitops
from mlgitops import settings
from mlgitops.adapters import git, prediction_log
from mlgitops.controller import decision_pages, performance, run
from mlgitops.core import layout

pytestmark = pytest.mark.process

NAME = "credit"
SECRET = "performance-e2e-secret"



def build(root: Path, v2_model: Any) -> tuple[Path, Path, str, str]:
    work, bare, v1, a = with_v1(
        root, {"performance": {"metric": "accuracy", "minimum": 0.85, "minRows": 200}},
        name=NAME, message="revert on accuracy")
    v2 = str(mlgitops.publish(v2_model, a, name=NAME, repo=work, target="label", push=False,
                              quiet=True, message="credit v2"))
    git.push(work)
    return work, bare, v1, v2


@pytest.mark.parametrize("case", ["less-accurate", "world-changed"])
def test_labels_revert_a_less_accurate_version_and_only_alert_on_a_shared_drop(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGITOPS_PREDICTION_LOG_INTERVAL", "0.2")
    monkeypatch.setenv("MLGITOPS_WEBHOOK_SECRET", SECRET)
    a = make_frame(1500, seed=1)
    wrong = a.assign(label=(a.f0 > 0).astype(int))  # the wrong target; another estimator class
    v2_model = train(wrong if case == "less-accurate" else a, kind="logistic")
    work, bare, v1, v2 = build(tmp_path, v2_model)
    live = make_frame(400, seed=7)
    truth = (live.label if case == "less-accurate" else (live.f2 > 0).astype(int)).to_numpy()
    cfg = settings.controller(work, port=free_port(), poll_seconds=5.0)
    with run.running(cfg) as ctl:
        mon = ctl.monitor
        assert mon is not None
        mon.performance_interval = 0.5
        base = ctl.base_url
        wait_until(lambda: version_at(base, NAME) == v2, timeout=120, what="v2 serving")
        ids: list[str] = []
        for k in range(0, len(live), 50):
            batch = live.iloc[k:k + 50][FEATURES]
            r = httpx.post(f"{base}/models/{NAME}/invocations", headers={"X-Request-Id": f"b{k}"},
                           json={"dataframe_records": batch.to_dict(orient="records")}, timeout=30)
            assert r.status_code == 200, r.text
            ids += [f"b{k}:{i}" for i in range(len(batch))]
        log = prediction_log.Directory(settings.state_dir(work) / performance.STATS)

        def kept() -> int:
            frame = log.read(NAME)
            return int((frame["version"] == v2).sum()) if len(frame) else 0

        wait_until(lambda: kept() == len(live), timeout=60, what="v2's rows in its log")
        sent = mlgitops.feedback(NAME, np.asarray(ids), truth, url=base)
        assert sent["received"] == len(live) and sent.get("unknown", 0) == 0, sent
        if case == "less-accurate":
            wait_until(lambda: version_at(base, NAME) not in (v2, None), timeout=180, what="the revert")
            (entry,) = git.log(bare, "main", [], limit=1)
            assert entry.trailers[layout.TRAILER_REVERTS] == v2
            assert git.tree_id(bare, entry.commit, f"models/{NAME}") == git.tree_id(
                bare, v1, f"models/{NAME}")
            (_, decision), = [d for d in mon.performance_decisions if d[1].action != "keep"]
            ev: dict[str, Any] = dict(decision.evidence)
            assert decision.action == "revert" and ev["rows"] == len(live)
            assert ev["previous"] > 0.9 and ev["new"] < 0.85 and ev["pValue"] < 1e-6
            assert mon.dispatcher.wait(120, only=(decision_pages.Pages,))
            page = httpx.get(entry.trailers[layout.TRAILER_REPORT], timeout=10)
            assert page.status_code == 200
            for shown in ("previousValue", "servingValue", "pValue", str(ev["previous"]),
                          str(ev["new"]), str(ev["pValue"])):
                assert shown in page.text, shown
        else:
            def alerted() -> list[dict[str, Any]]:
                return [e for e in ctl.store.events(NAME) if e["type"] == "PerformanceAlert"]

            wait_until(alerted, timeout=120, what="the performance alert")
            (alert,) = alerted()
            assert "both versions degrade: the world changed" in alert["message"]
            assert version_at(base, NAME) == v2
            assert git.text(bare, "rev-parse", "refs/heads/main") == git.text(
                work, "rev-parse", "HEAD")
