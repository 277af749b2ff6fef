"""Evidently as a decision sink: a snapshot per closed window, the dashboard, bounded retention.

Real Evidently workspace, real git commits of real models, the sink's real child process.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import FEATURES, make_frame, train

import mlgitops
from mlgitops import errors
from mlgitops.adapters import evidently_workspace
from mlgitops.authoring import repository
from mlgitops.controller import reports, tracking
from mlgitops.core import decisions

NAME = "credit"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    work = tmp_path_factory.mktemp("evidently-repo") / "models-repo"
    repository.init(work)
    a, b = make_frame(800, seed=1), make_frame(800, shift=1.5, seed=2)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    v2 = str(mlgitops.publish(train(b, seed=2), b, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    return work, v1, v2


def window(state: Path, version: str, kind: decisions.Kind, *, at: float, shift: float,
           index: int) -> decisions.Decision:
    """A closed window's record and its live sample (what the dispatcher writes)."""
    ident = decisions.make_id(model=NAME, kind=kind, at=at, version=version)
    frame = make_frame(400, shift=shift, seed=index)
    sample = frame[FEATURES].assign(prediction=frame["label"])
    path = state / "samples" / NAME / f"{ident}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.to_parquet(path, index=False)
    return decisions.Decision(id=ident, model=NAME, kind=kind, at=at, version=version,
                              previous_version=None, verdict=f"window {index}", window=index,
                              share=0.0 if shift == 0 else 0.8, sample_path=str(path),
                              policy_verdict={"pass": "ok"}.get(kind.value, kind.value))


def test_every_closed_window_is_a_tagged_snapshot_with_a_bounded_history(
        versions: tuple[Path, str, str], tmp_path: Path) -> None:
    work, v1, v2 = versions
    state = tmp_path / "state"
    sink = tracking.EvidentlySink(state, clone=work, keep=3, timeout=180)
    t0 = 1_800_000_000.0
    try:
        sink.record(window(state, v1, decisions.Kind.PASS, at=t0, shift=0.0, index=1))
        sink.record(window(state, v1, decisions.Kind.PASS, at=t0 + 60, shift=0.0, index=2))
        sink.record(window(state, v2, decisions.Kind.ALERT, at=t0 + 120, shift=0.0, index=1))
        sink.record(window(state, v2, decisions.Kind.REVERT, at=t0 + 180, shift=0.0, index=2))
        # deploys and holds are not windows: no snapshot
        sink.record(decisions.of_rollout(kind=decisions.Kind.DEPLOY, model=NAME, at=t0 + 200,
                                         version=v1, previous_version=v2, verdict="v1 serves",
                                         digest=None, base_url=None))
        pid = sink.worker.pid
    finally:
        sink.close()
    assert pid is not None and sink.worker.starts == 1
    assert [r["pruned"] for r in sink.recorded] == [0, 0, 0, 1]

    workspace = reports.workspace_dir(state)
    kept = evidently_workspace.snapshots(workspace, model=NAME)
    assert [s.metadata["verdict"] for s in kept] == ["pass", "alert", "revert"]
    assert [s.timestamp.timestamp() for s in kept] == pytest.approx([t0 + 60, t0 + 120, t0 + 180])
    assert set(kept[-1].tags) == {"mlgitops:window", f"model={NAME}", f"version={v2[:12]}",
                                  "verdict=revert"}
    assert kept[-1].metadata["version"] == v2 and kept[-1].metadata["window"] == "2"

    board = evidently_workspace.dashboard(workspace, model=NAME)
    assert "Share of drifted features per window" in board["Drift trend"]
    assert "Drift score per feature" in board["Drift trend"]
    assert board["Versions"] == [
        f"Version {v[:12]}: share of drifted features and drift score per feature"
        for v in (v1, v2)]
    assert [t.split(":")[0] for t in board["Verdicts"]] == [
        "Windows with verdict pass", "Windows with verdict alert", "Windows with verdict revert"]


def test_the_dashboard_is_written_once_and_keeps_foreign_panels(
        versions: tuple[Path, str, str], tmp_path: Path) -> None:
    from evidently.sdk import panels
    from evidently.ui.workspace import Workspace

    work, v1, _ = versions
    state = tmp_path / "state"
    d = window(state, v1, decisions.Kind.PASS, at=1_800_000_000.0, shift=0.0, index=1)
    tracking.record_window(state, work, d, keep=10)
    ws = Workspace(str(reports.workspace_dir(state)))
    (project,) = ws.search_project(NAME)
    project.dashboard.add_panel(panels.text_panel(title="a person's own panel"), tab="Mine")
    before = ws.get_dashboard(project.id)
    assert not evidently_workspace.ensure_dashboard(
        ws, str(project.id), model=NAME, features=FEATURES, version=v1[:12], verdict="pass",
        keep=10)
    # a new verdict adds its panel, the person's panel stays
    assert evidently_workspace.ensure_dashboard(
        ws, str(project.id), model=NAME, features=FEATURES, version=v1[:12], verdict="alert",
        keep=10)
    after = ws.get_dashboard(project.id)
    assert len(after.panels) == len(before.panels) + 1
    assert "a person's own panel" in [p.title for p in after.panels]
    assert {p.id for p in before.panels} <= {p.id for p in after.panels}


def test_a_window_without_a_sample_or_a_readable_one(
        versions: tuple[Path, str, str], tmp_path: Path) -> None:
    work, v1, _ = versions
    state = tmp_path / "state"
    d = window(state, v1, decisions.Kind.PASS, at=1_800_000_000.0, shift=0.0, index=1)
    Path(str(d.sample_path)).unlink()  # and no reservoir sample recorded for the version
    assert "no live sample of credit" in tracking.record_window(state, work, d, keep=5)["skipped"]
    Path(str(d.sample_path)).write_bytes(b"not parquet")
    with pytest.raises(errors.ReportError, match="cannot read the live sample"):
        tracking.record_window(state, work, d, keep=5)
    pd.DataFrame({"other": [1, 2, 3]}).to_parquet(str(d.sample_path))
    with pytest.raises(errors.ReportError, match="share no columns"):
        tracking.record_window(state, work, d, keep=5)
    with pytest.raises(errors.ConfigError, match="keep at least one"):
        tracking.EvidentlySink(state, clone=work, keep=0)


@pytest.mark.timeout(900)
def test_the_evidently_snapshot_of_a_window_agrees_with_its_decision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real controller serves a real model; 1,100 live rows (two of five features shifted)
    close one window. The Evidently snapshot stored for it is built from that window's own rows
    (all 1,100) and says what the decision says: the same share of drifted features (features
    only: 40 %, not 50 % with the prediction counted), the same verdict per feature and for the
    prediction; the full Evidently report of the alert too; and the page says how it counts."""
    import json

    import httpx
    import yaml
    from conftest import free_port, wait_until
    from evidently.core.report import Snapshot

    from mlgitops import settings
    from mlgitops.adapters import evidently_reports, git
    from mlgitops.controller import decisions as decision_log
    from mlgitops.controller import run
    from mlgitops.core import layout

    monkeypatch.setenv("MLGITOPS_MLFLOW", "0")
    work = tmp_path / "models-repo"
    repository.init(work)
    a = make_frame(1500, seed=1)
    mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label", push=False,
                     quiet=True)
    path = work / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["drift"].update({"windowRows": 1100, "minRows": 300, "datasetShare": 0.3,
                                 "consecutiveWindows": 1, "action": "alert"})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(work, message="credit: one window of 1,100 rows", paths=[layout.MANIFESTS])
    git.push(work)
    live = make_frame(1100, seed=7)[FEATURES]
    live["f0"] += 1.0
    live["f1"] += 1.0
    root = settings.state_dir(work) / reports.REPORTS
    cfg = settings.controller(work, port=free_port(), poll_seconds=2.0)
    with run.running(cfg) as ctl:
        base = ctl.base_url

        def serving() -> bool:
            try:
                return httpx.get(f"{base}/v2/models/{NAME}", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, timeout=180, what="the model serving")
        with httpx.Client(timeout=30) as client:
            for at in range(0, len(live), 100):
                part = live.iloc[at:at + 100]
                body = {"dataframe_split": {"columns": list(part.columns),
                                            "data": part.to_numpy().tolist()}}
                r = client.post(f"{base}/models/{NAME}/invocations", json=body)
                assert r.status_code == 200, r.text

        def window() -> decisions.Decision | None:
            return next((d for d in decision_log.read(root) if d.kind.window), None)

        wait_until(lambda: window() is not None, timeout=180, what="a closed window")
        d = window()
        assert d is not None and d.kind is decisions.Kind.ALERT and d.rows == 1100
        assert set(d.drifted_features) == {"f0", "f1"} and d.share == pytest.approx(0.4)
        assert ctl.decisions.wait(300, only=(tracking.EvidentlySink,))
        assert ctl.monitor is not None and ctl.monitor.wait_reports(300)
        page = httpx.get(f"{base}{d.page_path}", timeout=10).text

    assert d.version is not None and d.prediction is not None
    assert len(pd.read_parquet(d.sample_path)) == 1100  # the window's own rows, all of them
    kinds = reports.kinds_of(reports.baseline_at(work, name=NAME, version=d.version))
    stored = evidently_workspace.window_verdicts(reports.workspace_dir(settings.state_dir(work)),
                                                 model=NAME, decision_id=d.id, kinds=kinds,
                                                 share=0.3)
    assert d.evidently_file is not None
    full_path = root / NAME / d.evidently_file.replace(".html", ".snapshot.json")
    full = evidently_reports.verdicts_of(Snapshot.load(str(full_path)), kinds=kinds, share=0.3,
                                         rows=1100, reference_rows=1500)
    decided = {f.name: f.drifted for f in d.features}
    for report in (stored, full):
        assert report is not None
        assert report.share == pytest.approx(d.share)
        assert {c.column: c.drifted for c in report.columns} == decided
        assert {c.column: c.method for c in report.columns} == {f.name: f.method for f in d.features}
        assert report.prediction is not None and report.prediction.drifted == d.prediction.drifted
    snaps = [s for s in evidently_workspace.snapshots(reports.workspace_dir(settings.state_dir(work)),
                                                      model=NAME)
             if s.metadata.get("decisionId") == d.id]
    assert snaps and snaps[0].metadata["sampleRows"] == "1100"
    assert "features only" in snaps[0].metadata["shareCounts"]
    assert "40%" in page and "features only" in page
    assert json.loads(full_path.read_text())  # a loadable snapshot file
