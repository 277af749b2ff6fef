"""The deployment gate (issue 20, item 6), end to end: real git, a real bare remote with its
hook, real scikit-learn models saved through MLflow, the controller.

v1 is a weak forest published with ``--evaluation``; its manifest requires that a candidate is
not less accurate than the serving version on the candidate's committed evaluation data
(``minRelativeChange: 0``). A worse candidate is refused by the hook with the metric and both
values; pushed past the hook, the controller holds it while v1 serves; a better candidate
lands; evaluation.json is inside the digest and its numbers are recomputed, not trusted.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.data import FEATURES, make_frame
from support.git import copy_published, remote_head

import mlgitops
from mlgitops import errors
from mlgitops.adapters import evaluation, files, git

pytestmark = pytest.mark.process

MODEL = "models/credit"
MANIFEST = "manifests/credit.yaml"
GATE = [{"metric": "accuracy", "minRelativeChange": 0}]


def weak(frame: Any) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=3, max_depth=1, random_state=0).fit(
        frame[FEATURES], frame["label"])


def better(frame: Any) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(frame[FEATURES], frame["label"])


def worse(frame: Any) -> Any:
    """A forest fitted on shuffled labels: about as good as a coin."""
    from sklearn.ensemble import RandomForestClassifier

    shuffled = frame["label"].sample(frac=1.0, random_state=3).to_numpy()
    return RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(
        frame[FEATURES], shuffled)


TRAIN = make_frame(seed=0)
EVAL = make_frame(n=400, seed=1)


def publish(repo: Path, estimator: Any, **kw: Any) -> str:
    return mlgitops.publish(estimator, TRAIN, name="credit", repo=repo, target="label",
                            evaluation_frame=EVAL, quiet=True, **kw)


def commit_all(repo: Path, message: str) -> None:
    subprocess.run(["git", "-C", str(repo), "add", "-A", "models", "manifests"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=a", "-c", "user.email=a@x",
                    "commit", "-q", "-m", message], check=True)


def plain_push(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), "push", "origin", "HEAD:main"],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 (weak) with its evaluation, and a manifest whose gate says "not less accurate"."""
    from mlgitops.authoring import repository

    work = tmp_path_factory.mktemp("gate") / "repo"
    repository.init(work)
    publish(work, weak(TRAIN))
    doc = yaml.safe_load((work / MANIFEST).read_text())
    doc["spec"]["performance"] = {"gate": GATE}
    (work / MANIFEST).write_text(yaml.safe_dump(doc, sort_keys=False))
    commit_all(work, "Gate credit on accuracy")
    assert plain_push(work).returncode == 0
    return work


@pytest.fixture()
def repo(published: Path, tmp_path: Path) -> Iterator[Path]:
    yield copy_published(published, tmp_path)


def test_evaluation_is_committed_beside_the_model_inside_the_digest(repo: Path) -> None:
    from sklearn.metrics import accuracy_score

    record = json.loads((repo / MODEL / "evaluation.json").read_text())
    model = weak(TRAIN)
    assert record["metrics"]["accuracy"] == accuracy_score(EVAL["label"],
                                                           model.predict(EVAL[FEATURES]))
    assert record["rows"] == 400 and record["label"] == "label" and record["kind"] == "classifier"
    assert record["sha256"] == evaluation.sha256(repo / MODEL / "evaluation.parquet")
    # the manifest keeps its gate across a republish
    publish(repo, better(TRAIN))
    assert yaml.safe_load((repo / MANIFEST).read_text())["spec"]["performance"]["gate"] == [
        {"metric": "accuracy", "minRelativeChange": 0.0, "greaterIsBetter": True}]


def test_a_worse_candidate_is_refused_by_the_hook_naming_the_metric_and_both_values(
        repo: Path) -> None:
    before = remote_head(repo)
    with pytest.raises(errors.GitError) as exc:
        publish(repo, worse(TRAIN))
    text = str(exc.value)
    assert "the deployment gate (spec.performance.gate) holds this version" in text, text
    assert "accuracy is 0." in text and "against the serving version's 0." in text
    assert "publish a better model" in text and "Traceback" not in text
    assert remote_head(repo) == before


def test_a_better_candidate_passes(repo: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"publish with --evaluation eval\.parquet"):
        mlgitops.publish(better(TRAIN), TRAIN, name="credit", repo=repo, target="label",
                         quiet=True)
    sha = publish(repo, better(TRAIN))
    assert remote_head(repo) == sha


def test_evaluation_numbers_are_recomputed_and_inside_the_digest(repo: Path) -> None:
    before = remote_head(repo)
    record_path = repo / MODEL / "evaluation.json"
    record = json.loads(record_path.read_text())
    record["metrics"]["accuracy"] = 0.999
    record_path.write_text(json.dumps(record))
    commit_all(repo, "tamper without redigest")
    proc = plain_push(repo)
    assert proc.returncode != 0 and "content digest is" in proc.stderr, proc.stderr
    doc = yaml.safe_load((repo / MANIFEST).read_text())
    doc["spec"]["model"]["digest"] = files.dir_digest(repo / MODEL)
    (repo / MANIFEST).write_text(yaml.safe_dump(doc, sort_keys=False))
    commit_all(repo, "tamper with redigest")
    proc = plain_push(repo)
    assert proc.returncode != 0, "the push was accepted"
    assert "says accuracy is 0.999 but the model scores" in proc.stderr, proc.stderr
    assert remote_head(repo) == before


def test_pushed_past_the_hook_the_controller_holds_it_while_v1_serves(repo: Path) -> None:
    from support.net import free_port, version_at
    from support.status import stalled
    from support.waits import wait_until

    from mlgitops import settings
    from mlgitops.controller import run

    bare = Path(git.remote_url(repo) or "")
    (bare / "hooks" / "pre-receive").unlink()
    v1 = git.text(repo, "rev-parse", "HEAD")
    cfg = settings.controller(repo, port=free_port(), poll_seconds=1.0, monitor=False)

    with run.running(cfg) as ctl:
        wait_until(lambda: version_at(ctl.base_url) == v1, what="v1 serving")
        publish(repo, worse(TRAIN))
        ctl.trigger("test")
        wait_until(lambda: "deployment gate" in stalled(ctl), what="the worse candidate held",
                   timeout=120)
        assert "accuracy is 0." in stalled(ctl) and "against the serving version's" in stalled(ctl)
        assert version_at(ctl.base_url) == v1
        v3 = publish(repo, better(TRAIN))
        ctl.trigger("test")
        wait_until(lambda: version_at(ctl.base_url) == v3, what="the better candidate serving", timeout=120)


def test_the_cli_publishes_with_evaluation_and_the_hook_answers_with_the_sentence(
        repo: Path, tmp_path: Path) -> None:
    import sys

    import mlflow.sklearn

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlgitops.cli", *args], capture_output=True,
                              text=True, timeout=300)

    train_csv, eval_parquet = tmp_path / "train.csv", tmp_path / "eval.parquet"
    TRAIN.to_csv(train_csv, index=False)
    EVAL.rename(columns={"label": "y"}).to_parquet(eval_parquet, index=False)
    from sklearn.linear_model import LogisticRegression

    shuffled = TRAIN["label"].sample(frac=1.0, random_state=3).to_numpy()
    coin = LogisticRegression().fit(TRAIN[FEATURES], shuffled)  # no trees: MLflow saves it as is
    for kind, model in (("worse", coin), ("better", better(TRAIN))):
        mlflow.sklearn.save_model(model, str(tmp_path / kind), serialization_format="skops")
    args = ["--reference", str(train_csv), "--target", "label", "--repo", str(repo),
            "--evaluation", str(eval_parquet)]
    before = remote_head(repo)
    lacking = cli("publish", "credit", "--model", str(tmp_path / "better"), *args,
                  "--label-column", "nope")
    assert lacking.returncode != 0 and "has no label column 'nope'" in lacking.stderr
    refused = cli("publish", "credit", "--model", str(tmp_path / "worse"), *args,
                  "--label-column", "y")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "deployment gate" in refused.stderr and "accuracy is" in refused.stderr
    assert remote_head(repo) == before
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard", "origin/main"], check=True)
    done = cli("publish", "credit", "--model", str(tmp_path / "better"), *args,
               "--label-column", "y")
    assert done.returncode == 0, done.stderr
    assert remote_head(repo) == done.stdout.strip().splitlines()[-1]
    record = json.loads((repo / MODEL / "evaluation.json").read_text())
    assert record["label"] == "y" and record["metrics"]["accuracy"] > 0.9
