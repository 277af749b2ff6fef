"""The Monitor reverts for what a version gets wrong (issue 20, item 5).

A real repository and bare remote (with its validating hook), real scikit-learn models published
with `mlgitops.publish`, the previous version scored in the real sandbox (a child process) on the
same inputs; the prediction log and the labels come through the in-memory ports
(`controller.fakes`), filled with what a server would have written: the serving version's real
predictions and probabilities of each row.

- v2, trained on the wrong target, is less accurate than v1 on the same labelled rows: the
  monitor reverts it on the drift revert path (trailers, quarantine) with the evidence on the
  decision page;
- a drop both versions share (the label's rule changed) only alerts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from support.data import FEATURES, make_frame, train
from support.repos import with_v1

import mlgitops
from mlgitops import settings
from mlgitops.adapters import evidently_reports, git, local_runtime, prediction_log
from mlgitops.controller import decision_pages, fakes, reports
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import monitor as monitor_mod
from mlgitops.controller import reconciler as rec
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.core import decisions, layout, quarantine, status

pytestmark = pytest.mark.process

NAME = "credit"
PERFORMANCE = {"metric": "accuracy", "minimum": 0.85, "minRows": 200}


@dataclass
class World:
    bare: Path
    v1: str
    v2: str
    model: Any
    store: state_mod.Store
    monitor: monitor_mod.Monitor[local_runtime.Backend]
    predictions: fakes.FakePredictions
    labels: fakes.FakeLabels
    now: list[float]
    triggers: list[str]

    def score(self, frame: pd.DataFrame, *, label: np.ndarray, first: int = 0) -> None:
        """What v2's server keeps for ``frame`` (its real answers), then the labels coming back."""
        x = frame[[str(c) for c in getattr(self.model, "feature_names_in_", FEATURES)]]
        ids = [f"r{first + i}" for i in range(len(frame))]
        rows = pd.DataFrame({"id": ids, "version": self.v2,
                             "time": self.now[0] + np.arange(len(frame)) / 1000})
        for c in x.columns:
            rows[prediction_log.INPUT + c] = x[c].to_numpy()
        rows["prediction"] = self.model.predict(x)
        for j, c in enumerate(self.model.classes_):
            rows[prediction_log.proba_column(c)] = self.model.predict_proba(x)[:, j]
        self.predictions.add(NAME, rows)
        self.labels.add(NAME, ids, label.tolist())

    def tick(self) -> list[tuple[str, Any]]:
        self.now[0] += 1.0
        self.monitor.tick()
        return self.monitor.performance_decisions


def build(root: Path, *, v2_model: Any, v2_reference: pd.DataFrame | None = None) -> World:
    work, bare, v1, a = with_v1(root, {"performance": dict(PERFORMANCE)}, name=NAME,
                                message="revert on accuracy")
    v2 = str(mlgitops.publish(v2_model, a if v2_reference is None else v2_reference, name=NAME,
                              repo=work, target="label", push=False, quiet=True,
                              message="credit v2"))
    git.push(work)
    served = yaml.safe_load(git.show(bare, v2, layout.manifest_path(NAME)) or b"")
    assert served["spec"]["performance"]["metric"] == "accuracy"
    state = settings.state_dir(work)
    store = state_mod.Store(state)
    src = source_mod.Source(state, url=str(bare))
    store.head = src.sync()
    router: rec.Router[local_runtime.Backend] = rec.Router()
    router.set(NAME, local_runtime.Backend(NAME, v2, str(served["spec"]["model"]["digest"]),
                                           port=1, pid=os.getpid(), log=Path(os.devnull)))
    now = [1_000_000.0]
    triggers: list[str] = []

    def report(state_dir: Path, clone: Path, *, name: str, version: str,
               target: reports.Plan, **_: Any) -> reports.Built:
        paths = evidently_reports.ReportPaths(target.html, target.snapshot, target.snapshot)
        return reports.Built(target, paths, None, None, 0, 0, 0.0)

    predictions, labels = fakes.FakePredictions(), fakes.FakeLabels()
    mon = monitor_mod.Monitor(store=store, router=router, source=src, state_dir=state, root=work,
                              url=str(bare), trigger=triggers.append, build_report=report,
                              clock=lambda: now[0], predictions=predictions, labels=labels,
                              performance_interval=0.0)
    return World(bare, v1, v2, v2_model, store, mon, predictions, labels, now, triggers)


def events(w: World, kind: str) -> list[dict[str, Any]]:
    return [e for e in w.store.events(NAME) if e["type"] == kind]


def test_a_version_less_accurate_than_the_previous_on_the_same_rows_is_reverted(
        tmp_path: Path) -> None:
    a = make_frame(1500, seed=1)
    # trained on the wrong target (another estimator class: a content quarantine would
    # otherwise also match v1, trained alike on the same reference data)
    wrong = a.assign(label=(a.f0 > 0).astype(int))
    w = build(tmp_path, v2_model=train(wrong, kind="logistic"))
    live = make_frame(400, seed=7)
    w.score(live.head(150), label=live.label.to_numpy()[:150])
    assert w.tick() == []  # 150 of the 200 labelled rows needed: nothing is decided
    w.score(live.iloc[150:], label=live.label.to_numpy()[150:], first=150)
    (name, decision), = w.tick()
    assert decision.action == "revert", decision.reason
    ev: dict[str, Any] = dict(decision.evidence)
    assert ev["rows"] == 400 and ev["method"] == "exact McNemar"
    assert ev["previous"] > 0.9 > 0.85 > ev["new"] and ev["pValue"] < 1e-6
    # the drift revert path: one path-scoped commit with its trailers, the digest quarantined
    head = git.text(w.bare, "rev-parse", "refs/heads/main")
    (entry,) = git.log(w.bare, head, [], limit=1)
    assert entry.trailers[layout.TRAILER_REVERTS] == w.v2
    assert entry.trailers[layout.TRAILER_ACTION] == "revert"
    assert "accuracy" in entry.subject and "measurably worse" in entry.subject
    body = git.text(w.bare, "log", "-1", "--format=%B", head)
    assert f"previous={ev['previous']:.6g}" in body and f"new={ev['new']:.6g}" in body
    listed = quarantine.parse(yaml.safe_load(git.show(w.bare, head, layout.QUARANTINE) or b""),
                              source=layout.QUARANTINE)
    assert [e.commit for e in listed if e.model == NAME] == [w.v2]
    assert [e["reverted"] for e in events(w, "Reverted")] == [w.v2]
    assert w.triggers == [f"revert of {NAME}"]
    # the decision page: both values, the rows, the p-value
    ident = entry.trailers[layout.TRAILER_REPORT_ID]
    page = decision_pages.page_file(w.monitor.state_dir / reports.REPORTS, NAME, ident)
    assert w.monitor.dispatcher.wait(30)
    assert page.exists()
    html = page.read_text()
    for shown in ("servingValue", "previousValue", "labelledRows", "pValue",
                  f"{ev['previous']}", f"{ev['new']}", "exact McNemar"):
        assert shown in html, shown
    assert w.tick() == [(name, decision)]  # reverted: decided once
    # its own condition, not Drift's (whose share would read 0.0)
    st = w.store.status(NAME)
    cond = st.condition(status.ConditionType.PERFORMANCE)
    assert cond is not None and cond.status and cond.reason == "Reverted"
    assert entry.commit[:12] in cond.message and "accuracy" in cond.message
    assert st.condition(status.ConditionType.DRIFT) is None and st.drift is None


def test_a_drop_both_versions_share_only_alerts(tmp_path: Path) -> None:
    a = make_frame(1500, seed=1)
    w = build(tmp_path, v2_model=train(a, kind="logistic"))  # as good as v1
    live = make_frame(400, seed=7)
    changed = (live.f2 > 0).astype(int).to_numpy()  # the world's rule changed
    before = git.text(w.bare, "rev-parse", "refs/heads/main")
    w.score(live, label=changed)
    (_, decision), = w.tick()
    assert decision.action == "alert", decision.reason
    assert "both versions degrade: the world changed" in decision.reason
    assert decision.evidence["new"] < 0.85 and decision.evidence["previous"] < 0.85
    assert git.text(w.bare, "rev-parse", "refs/heads/main") == before  # nothing pushed
    assert events(w, "Reverted") == [] and len(events(w, "PerformanceAlert")) == 1
    assert w.tick() == [(_, decision)]  # no new labels: not decided again
    cond = w.store.status(NAME).condition(status.ConditionType.PERFORMANCE)
    assert cond is not None and cond.status and cond.reason == "PerformanceAlert"
    # more labels a minute later: alerted again (an event), but its page and webhooks are
    # not repeated within alert_report_seconds, as drift alerts
    w.now[0] += 60
    more = make_frame(100, seed=8)
    w.score(more, label=(more.f2 > 0).astype(int).to_numpy(), first=400)
    assert [d.action for _, d in w.tick()] == ["alert", "alert"]
    assert len(events(w, "PerformanceAlert")) == 2
    assert w.monitor.dispatcher.wait(30)
    logged = decision_log.read(w.monitor.state_dir / reports.REPORTS)
    assert [d.kind for d in logged if d.model == NAME] == [decisions.Kind.ALERT]


def test_a_previous_version_that_takes_a_column_the_rows_lack_only_alerts(
        tmp_path: Path) -> None:
    """v2 dropped a feature v1 takes: v1 cannot be scored on v2's logged rows, so there is
    nothing to compare with: an alert saying so, not a failure repeated every interval."""
    from sklearn.linear_model import LogisticRegression

    a = make_frame(1500, seed=1)
    wrong = a.assign(label=(a.f0 > 0).astype(int)).drop(columns="f4")
    w = build(tmp_path, v2_model=LogisticRegression().fit(wrong[FEATURES[:4]], wrong.label),
              v2_reference=wrong)
    live = make_frame(400, seed=7)
    w.score(live, label=live.label.to_numpy())
    (_, decision), = w.tick()
    assert decision.action == "alert", decision.reason
    assert "takes f4, which the serving version's logged rows do not have" in decision.reason
    assert "f4" in str(decision.evidence["whyNotReverted"])
    assert events(w, "MonitorFailed") == [] and events(w, "Reverted") == []
    assert len(events(w, "PerformanceAlert")) == 1

