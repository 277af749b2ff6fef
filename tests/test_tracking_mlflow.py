"""MLflow as a decision sink: registered versions by content, the production alias, a run per decision.

Real MLflow (a SQLite store in the test's directory), real git commits of real models; the sink
itself runs its real child process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_frame, train

import mlgitops
from mlgitops import errors
from mlgitops.adapters import git, mlflow_tracking
from mlgitops.authoring import repository
from mlgitops.controller import tracking
from mlgitops.core import decisions, layout

NAME = "credit"


def digest_at(repo: Path, rev: str) -> str:
    return str(yaml.safe_load(git.show(repo, rev, layout.manifest_path(NAME)) or b"")
               ["spec"]["model"]["digest"])


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """v1, v2 and a revert commit of v2 (restoring v1's model) in a real repository."""
    work = tmp_path_factory.mktemp("mlflow-repo") / "models-repo"
    repository.init(work)
    a, b = make_frame(600, seed=1), make_frame(600, shift=1.5, seed=2)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label",
                              push=False, quiet=True, message="credit v1 on population A"))
    v2 = str(mlgitops.publish(train(b, seed=2), b, name=NAME, repo=work, target="label",
                              push=False, quiet=True, message="credit v2 on population B"))
    git.run(work, "revert", "--no-edit", v2)
    return work, v1, v2, git.text(work, "rev-parse", "HEAD")


def deploy(version: str, digest: str, *, at: float, previous: str | None = None) -> decisions.Decision:
    return decisions.of_rollout(kind=decisions.Kind.DEPLOY, model=NAME, at=at, version=version,
                                previous_version=previous, verdict=f"{version[:12]} serves",
                                digest=digest, base_url=None)


def revert(work: Path, v1: str, v2: str, commit: str, *, at: float,
           evidently_file: str | None = None) -> decisions.Decision:
    ident = decisions.make_id(model=NAME, kind=decisions.Kind.REVERT, at=at, version=v2)
    return decisions.Decision(
        id=ident, model=NAME, kind=decisions.Kind.REVERT, at=at, version=v2, previous_version=v1,
        verdict="live data fits the previous version's baseline better", commit=commit,
        digest=digest_at(work, v2), previous_digest=digest_at(work, v1), share=0.8, window=3,
        rows=500, policy_verdict="revert", fit_current=0.8, fit_previous=0.0,
        thresholds={"windowRows": 500, "datasetShare": 0.5, "action": "revert"},
        features=(decisions.Feature("f0", "wasserstein", 0.42, 0.1, True,
                                    decisions.Score("wasserstein", 0.03, 0.1, False)),
                  decisions.Feature("f1", "wasserstein", 0.05, 0.1, False)),
        evidently_file=evidently_file,
    )


def test_versions_alias_and_runs_follow_deploys_and_a_revert(
        history: tuple[Path, str, str, str], tmp_path: Path) -> None:
    work, v1, v2, reverted_by = history
    state = tmp_path / "state"
    tracker = mlflow_tracking.Tracker(mlflow_tracking.default_uri(state),
                                      artifact_root=tracking.artifact_root(state))
    d1, d2 = digest_at(work, v1), digest_at(work, v2)
    t0 = 1_800_000_000.0

    out = tracking.record_mlflow(state, work, tracker, deploy(v1, d1, at=t0))
    assert out["modelVersion"] == "1" and out["created"]
    out = tracking.record_mlflow(state, work, tracker, deploy(v2, d2, at=t0 + 60, previous=v1))
    assert out["modelVersion"] == "2"
    prod = tracker.alias(NAME)
    assert prod is not None and prod.version == "2"
    assert prod.tags["mlgitops.commit"] == v2 and prod.tags["mlgitops.digest"] == d2

    rev = revert(work, v1, v2, reverted_by, at=t0 + 120)
    out = tracking.record_mlflow(state, work, tracker, rev)
    assert out["modelVersion"] == "1" and out["pending"] == []
    prod = tracker.alias(NAME)
    assert prod is not None and prod.version == "1"
    assert prod.tags["mlgitops.restoredBy"] == reverted_by
    # the revert commit's redeploy is the same content: no third version, production stays
    tracking.record_mlflow(state, work, tracker, deploy(reverted_by, d1, at=t0 + 125,
                                                        previous=v2))
    versions = tracker.versions(NAME)
    assert [v["version"] for v in versions] == ["1", "2"]
    assert versions[1]["tags"]["mlgitops.revertedBy"] == reverted_by
    assert versions[0]["aliases"] == [mlflow_tracking.PRODUCTION]
    assert "credit v1 on population A" in versions[0]["description"]
    # the registered source is the model directory exported from Git at the commit
    source = Path(versions[0]["source"].removeprefix("file://"))
    assert (source / "MLmodel").is_file()
    assert git.tree_id(work, v1, f"models/{NAME}") is not None

    runs = tracker.runs(NAME)
    assert [r["tags"]["mlgitops.kind"] for r in runs] == ["deploy", "revert", "deploy", "deploy"]
    r = runs[1]
    assert r["name"] == f"revert {v2[:12]}"
    assert r["metrics"]["drift.score.f0"] == pytest.approx(0.42)
    assert r["metrics"]["restored.score.f0"] == pytest.approx(0.03)
    assert r["metrics"]["drift.drifted.f0"] == 1.0 and r["metrics"]["drift.share"] == 0.8
    assert r["params"]["policy.windowRows"] == "500" and r["params"]["commit"] == reverted_by
    assert r["tags"]["mlgitops.verdict"] == "revert" and r["tags"]["mlgitops.modelVersion"] == "1"
    artifacts = tracker.client.list_artifacts(r["runId"], "report")
    assert [a.path for a in artifacts] == ["report/decision.json"]

    # recording the same decision again (a retry) makes no second run
    tracking.record_mlflow(state, work, tracker, rev)
    assert len(tracker.runs(NAME)) == 4


def test_a_report_built_later_is_attached_on_a_later_record(
        history: tuple[Path, str, str, str], tmp_path: Path) -> None:
    work, v1, v2, reverted_by = history
    state = tmp_path / "state"
    tracker = mlflow_tracking.Tracker(mlflow_tracking.default_uri(state),
                                      artifact_root=tracking.artifact_root(state))
    rev = revert(work, v1, v2, reverted_by, at=1_800_000_500.0, evidently_file="r.evidently.html")
    out = tracking.record_mlflow(state, work, tracker, rev)
    assert out["pending"] == ["the Evidently report r.evidently.html is not built yet"]
    html = state / "reports" / NAME / "r.evidently.html"
    html.parent.mkdir(parents=True)
    html.write_text("<html><body>drift report</body></html>")
    out = tracking.record_mlflow(state, work, tracker, rev)
    assert out["pending"] == [] and not out["created"]
    assert sorted(out["artifacts"]) == ["report/decision.json", "report/r.evidently.html"]


def test_the_sink_runs_in_a_child_that_is_restarted_after_a_crash(
        history: tuple[Path, str, str, str], tmp_path: Path) -> None:
    work, v1, v2, _ = history
    state = tmp_path / "state"
    sink = tracking.MlflowSink(state, clone=work, timeout=120)
    try:
        sink.record(deploy(v1, digest_at(work, v1), at=1_800_001_000.0))
        pid = sink.worker.pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        sink.record(deploy(v2, digest_at(work, v2), at=1_800_001_060.0, previous=v1))
        assert sink.worker.starts == 2
    finally:
        sink.close()
    tracker = mlflow_tracking.Tracker(sink.uri, artifact_root=tracking.artifact_root(state))
    prod = tracker.alias(NAME)
    assert prod is not None and prod.tags["mlgitops.commit"] == v2
    assert sink.uri == f"sqlite:///{(state / 'mlflow.db').resolve()}"


def test_an_unusable_store_is_a_transient_sentence(
        history: tuple[Path, str, str, str], tmp_path: Path) -> None:
    work, v1, _, _ = history
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the database's folder should be")
    sink = tracking.MlflowSink(tmp_path / "state", clone=work,
                               uri=f"sqlite:///{blocked}/mlflow.db", timeout=120)
    try:
        with pytest.raises(errors.TrackingError, match="deploys and reverts are unaffected"):
            sink.record(deploy(v1, digest_at(work, v1), at=1_800_002_000.0))
    finally:
        sink.close()


def test_a_store_killed_while_it_is_created_stays_usable(tmp_path: Path) -> None:
    """MLflow creates its schema in a dozen migrations; a kill in between must not brick the store."""
    import subprocess
    import sys

    uri = mlflow_tracking.default_uri(tmp_path)
    code = ("from pathlib import Path; from mlgitops.adapters import mlflow_tracking as m; "
            f"m.Tracker({uri!r}, artifact_root=Path({str(tmp_path)!r})).ensure_model('x')")
    proc = subprocess.Popen([sys.executable, "-c", code])
    db = tmp_path / mlflow_tracking.DB_FILE
    aside = list(tmp_path.glob(".mlflow.db.*.init"))
    deadline = time.monotonic() + 120
    while not aside and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        aside = list(tmp_path.glob(".mlflow.db.*.init"))
    proc.kill()
    proc.wait()
    assert aside or db.exists(), "the schema was never being created"
    if aside:  # killed during the migrations: no half-made database in place
        assert not db.exists() or db.stat().st_size > 0
    tracker = mlflow_tracking.Tracker(uri, artifact_root=tmp_path / "a")
    tracker.ensure_model(NAME)
    assert tracker.versions(NAME) == []


def test_the_tracking_uri_setting_and_flag(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mlgitops import settings

    assert settings.tracking(uri="http://mlflow.example.com:5000").mlflow_uri == \
        "http://mlflow.example.com:5000"
    assert settings.tracking().mlflow_uri is None and settings.tracking().evidently_keep == 200
    with pytest.raises(errors.ConfigError, match="is not a URI; pass e\\.g\\. --tracking-uri"):
        settings.tracking(uri="mlflow.db")
    out = subprocess.run([sys.executable, "-m", "mlgitops.cli", "up", "--repo", str(tmp_path),
                          "--tracking-uri", "mlflow.db"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "is not a URI" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
