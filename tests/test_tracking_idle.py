"""The tracking sinks' child processes start when there is a decision to record and stop when idle.

Real MLflow (a SQLite store) and a real Evidently workspace, real git commits of real models,
the sinks' real child processes: an idle child exits, and a later decision starts it again and
still lands in MLflow and in Evidently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.data import FEATURES, make_frame, train
from support.waits import wait_until

import mlgitops
from mlgitops import errors, settings
from mlgitops.adapters import evidently_workspace, git, local_runtime, mlflow_tracking
from mlgitops.authoring import repository
from mlgitops.controller import reports, sinks, tracking
from mlgitops.core import decisions, layout

pytestmark = pytest.mark.process

NAME = "credit"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    work = tmp_path_factory.mktemp("idle-repo") / "models-repo"
    repository.init(work)
    a, b = make_frame(600, seed=1), make_frame(600, shift=1.5, seed=2)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    v2 = str(mlgitops.publish(train(b, seed=2), b, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    return work, v1, v2


def deploy(work: Path, version: str, *, at: float, previous: str | None = None
           ) -> decisions.Decision:
    digest = str(yaml.safe_load(git.show(work, version, layout.manifest_path(NAME)) or b"")
                 ["spec"]["model"]["digest"])
    return decisions.of_rollout(kind=decisions.Kind.DEPLOY, model=NAME, at=at, version=version,
                                previous_version=previous, verdict=f"{version[:12]} serves",
                                digest=digest, base_url=None)


def window(state: Path, version: str, kind: decisions.Kind, *, at: float, index: int
           ) -> decisions.Decision:
    ident = decisions.make_id(model=NAME, kind=kind, at=at, version=version)
    frame = make_frame(300, seed=index)
    path = state / "samples" / NAME / f"{ident}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[FEATURES].assign(prediction=frame["label"]).to_parquet(path, index=False)
    return decisions.Decision(id=ident, model=NAME, kind=kind, at=at, version=version,
                              previous_version=None, verdict=f"window {index}", window=index,
                              share=0.0, sample_path=str(path), policy_verdict=kind.value)


def test_an_idle_sink_process_exits_and_a_later_decision_still_lands(
        versions: tuple[Path, str, str], tmp_path: Path) -> None:
    work, v1, v2 = versions
    state = tmp_path / "state"
    t0 = 1_800_000_000.0
    mlflow_sink = tracking.MlflowSink(state, clone=work, timeout=180, idle=1.0)
    evidently_sink = tracking.EvidentlySink(state, clone=work, keep=5, timeout=180, idle=1.0)
    both = (mlflow_sink.worker, evidently_sink.worker)
    try:
        assert [w.pid for w in both] == [None, None]  # nothing runs before a decision
        mlflow_sink.record(deploy(work, v1, at=t0))
        evidently_sink.record(window(state, v1, decisions.Kind.PASS, at=t0 + 60, index=1))
        first = [w.last_pid for w in both]
        assert all(first) and [w.starts for w in both] == [1, 1]
        for w, pid in zip(both, first, strict=True):
            wait_until(lambda w=w, pid=pid: w.idle_stops == 1 and w.pid is None
                       and not local_runtime.pid_alive(pid),
                       timeout=60, what=f"the idle {w.sink} process {pid} to exit")
        # the next decisions start each child again, and land
        mlflow_sink.record(deploy(work, v2, at=t0 + 120, previous=v1))
        evidently_sink.record(window(state, v2, decisions.Kind.ALERT, at=t0 + 180, index=2))
        assert [w.starts for w in both] == [2, 2]
        assert [w.last_pid for w in both] != first
    finally:
        mlflow_sink.close()
        evidently_sink.close()
    tracker = mlflow_tracking.Tracker(mlflow_sink.uri, artifact_root=tracking.artifact_root(state))
    prod = tracker.alias(NAME)
    assert prod is not None and prod.tags["mlgitops.commit"] == v2
    assert sorted(r["tags"]["mlgitops.version"] for r in tracker.runs(NAME)) == sorted([v1, v2])
    kept = evidently_workspace.snapshots(reports.workspace_dir(state), model=NAME)
    assert [(s.metadata["verdict"], s.metadata["version"]) for s in kept] == [
        ("pass", v1), ("alert", v2)]


@pytest.mark.fast
def test_the_idle_timeout_is_a_setting_that_reaches_both_sinks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGITOPS_TRACKING_IDLE_SECONDS", "7.5")
    track = settings.tracking()
    assert track.idle_seconds == 7.5
    dispatcher = sinks.dispatcher(tmp_path, clone=lambda: tmp_path, notify=settings.NotifySettings(),
                                  track=track)
    workers = [s.worker for s in dispatcher.sinks
               if isinstance(s, tracking.MlflowSink | tracking.EvidentlySink)]
    assert [w.idle for w in workers] == [7.5, 7.5]
    assert all(w.pid is None for w in workers)
    monkeypatch.setenv("MLGITOPS_TRACKING_IDLE_SECONDS", "soon")
    with pytest.raises(errors.ConfigError, match="MLGITOPS_TRACKING_IDLE_SECONDS='soon' is not a"):
        settings.tracking()
    monkeypatch.delenv("MLGITOPS_TRACKING_IDLE_SECONDS")
    assert settings.tracking().idle_seconds == 60.0
