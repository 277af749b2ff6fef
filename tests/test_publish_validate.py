"""Publishing versions into a real repository and validating them, locally and at the remote."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_frame, train

import mlgitops
from mlgitops import errors, settings
from mlgitops.adapters import files, git
from mlgitops.authoring import validate
from mlgitops.core import layout


def remote_head(repo: Path) -> str:
    return git.text(repo, "ls-remote", "origin", "refs/heads/main").split()[0]


def test_publish_commits_model_baseline_manifest_and_pushes(
    repo: Path, publish_version: Callable[..., str]
) -> None:
    sha = publish_version()
    assert remote_head(repo) == sha
    model = repo / "models" / "credit"
    for name in ("MLmodel", "model.skops", "baseline.json", "reference.parquet"):
        assert (model / name).is_file(), name
    dep = yaml.safe_load((repo / "manifests/credit.yaml").read_text())
    assert dep["spec"]["model"]["digest"] == files.dir_digest(model)
    assert dep["spec"]["model"]["trustedTypes"] == ["sklearn.tree._tree.Tree"]
    (entry,) = git.log(repo, "HEAD", ["models/credit"])
    assert entry.trailers[layout.TRAILER_MODEL] == "credit"
    assert entry.trailers[layout.TRAILER_DIGEST] == dep["spec"]["model"]["digest"]
    assert validate.validate_tree(repo).ok


def test_identical_content_changes_nothing(repo: Path, publish_version: Callable[..., str]) -> None:
    first = publish_version()
    count = git.text(repo, "rev-list", "--count", "HEAD")
    assert publish_version() == first
    assert git.text(repo, "rev-list", "--count", "HEAD") == count


def test_new_version_keeps_manifest_settings(repo: Path, publish_version: Callable[..., str]) -> None:
    publish_version()
    path = repo / "manifests/credit.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["serving"]["batching"]["maxBatchSize"] = 16
    path.write_text(yaml.safe_dump(doc))
    git.commit(repo, message="tune batching", paths=["manifests"])
    second = publish_version(seed=3)
    doc2 = yaml.safe_load(path.read_text())
    assert doc2["spec"]["serving"]["batching"]["maxBatchSize"] == 16
    assert doc2["spec"]["model"]["digest"] != doc["spec"]["model"]["digest"]
    assert remote_head(repo) == second


def test_types_outside_the_policy_need_the_operator_and_a_review(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FunctionTransformer, make_pipeline

    monkeypatch.delenv("MLGITOPS_TRUST_ALLOW", raising=False)
    frame = make_frame()
    model = make_pipeline(FunctionTransformer(np.round), LogisticRegression())
    model.fit(frame.drop(columns="label"), frame.label)
    with pytest.raises(errors.ModelError,
                       match=r"numpy\.round is a function.*`mlgitops trust allow numpy\.round --repo "):
        mlgitops.publish(model, frame, name="rounded", repo=repo, target="label", quiet=True)
    monkeypatch.setenv("MLGITOPS_TRUST_ALLOW", "numpy.round")  # the publisher's own setting
    mlgitops.publish(model, frame, name="rounded", repo=repo, target="label", quiet=True, push=False)
    doc = yaml.safe_load((repo / "manifests/rounded.yaml").read_text())
    assert doc["spec"]["model"]["trustedTypes"] == ["numpy.round"]
    assert validate.validate_tree(repo, policy=settings.trust_policy()).ok
    # the manifest alone cannot widen the policy: without a setting it is refused
    problems = [p.message for p in validate.validate_tree(repo).problems]
    assert any("numpy.round" in m and "trust policy" in m for m in problems), problems


def test_bad_names_and_inputs_are_refused(repo: Path) -> None:
    frame = make_frame()
    with pytest.raises(errors.ConfigError, match="DNS label"):
        mlgitops.publish(train(frame), frame, name="Bad_Name", repo=repo, target="label")
    with pytest.raises(errors.ConfigError, match="target 'nope'"):
        mlgitops.publish(train(frame), frame, name="ok", repo=repo, target="nope")


def test_validate_reports_tampered_model_and_bad_manifest(
    repo: Path, publish_version: Callable[..., str]
) -> None:
    publish_version()
    with (repo / "models/credit/model.skops").open("ab") as f:
        f.write(b"garbage")
    result = validate.validate_tree(repo)
    assert not result.ok
    assert "content digest is" in result.problems[0].message
    assert "republish" in result.problems[0].message

    (repo / "manifests/other.yaml").write_text("apiVersion: mlgitops.io/v1alpha1\nkind: ModelDeployment\n"
                                               "metadata: {name: other}\nspec: {model: {path: 3}}\n")
    messages = [p.message for p in validate.validate_tree(repo).problems]
    assert any(m.startswith("manifests/other.yaml: field spec.model") for m in messages), messages


def test_cli_validate_exit_codes(repo: Path, publish_version: Callable[..., str]) -> None:
    publish_version()
    cli = [str(Path(mlgitops.__file__).parents[1] / ".venv/bin/mlgitops")]
    ok = subprocess.run([*cli, "validate", str(repo), "--no-load"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (repo / "manifests/credit.yaml").write_text("spec: [")
    bad = subprocess.run([*cli, "validate", str(repo)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "manifests/credit.yaml: is not valid YAML" in bad.stderr


def test_remote_refuses_a_corrupt_model_push_with_the_reason(
    repo: Path, publish_version: Callable[..., str]
) -> None:
    good = publish_version()
    with (repo / "models/credit/model.skops").open("r+b") as f:
        f.seek(100)
        f.write(b"\0" * 64)
    git.commit(repo, message="corrupt the model by hand", paths=["models"])
    with pytest.raises(errors.GitError) as err:
        git.push(repo)
    assert "content digest is" in str(err.value)
    assert remote_head(repo) == good  # nothing changed on the remote
    # the local commit is not lost
    assert git.text(repo, "log", "-1", "--format=%s") == "corrupt the model by hand"


def test_remote_refuses_untrusted_types_edit(repo: Path, publish_version: Callable[..., str]) -> None:
    publish_version()
    path = repo / "manifests/credit.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["model"]["trustedTypes"] = []
    path.write_text(yaml.safe_dump(doc))
    git.commit(repo, message="drop trusted types", paths=["manifests"])
    with pytest.raises(errors.GitError, match="trustedTypes"):
        git.push(repo)


def test_publish_rebases_over_a_concurrent_push(
    repo: Path, publish_version: Callable[..., str], tmp_path: Path
) -> None:
    publish_version()
    other = tmp_path / "colleague"
    git.clone(git.remote_url(repo) or "", other)
    (other / "NOTES.md").write_text("a colleague's commit\n")
    git.commit(other, message="colleague notes", paths=["NOTES.md"])
    git.push(other)
    sha = publish_version(seed=5)
    assert remote_head(repo) == sha
    subjects = git.text(repo, "log", "--format=%s", "origin/main")
    assert "colleague notes" in subjects


def _housing(n: int = 300) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "sqft": rng.normal(1500, 300, n), "rooms": rng.integers(1, 6, n).astype(float),
        "lot_size": rng.normal(5000, 900, n), "age": rng.normal(30, 10, n),
        "city": rng.choice(["north", "south", "east"], n),
    })
    frame.loc[rng.random(n) < 0.1, "lot_size"] = np.nan
    frame["price"] = 100 * frame.sqft + 5000 * frame.rooms + rng.normal(0, 1000, n)
    return frame


def _housing_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = ["sqft", "rooms", "lot_size", "age"]
    return Pipeline([
        ("prep", ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ])),
        ("ridge", Ridge()),
    ])


def test_publish_without_target_refuses_a_column_the_pipeline_was_not_fitted_on(
    repo: Path,
) -> None:
    frame = _housing()
    pipeline = _housing_pipeline().fit(frame.drop(columns=["price"]), frame["price"])
    before = git.text(repo, "rev-parse", "HEAD")
    with pytest.raises(errors.ConfigError) as caught:
        mlgitops.publish(pipeline, frame, name="houses", repo=repo, push=False, quiet=True,
                         trusted_types=["numpy.dtype"])
    assert "'price'" in str(caught.value) and "--target" in str(caught.value)
    assert git.text(repo, "rev-parse", "HEAD") == before  # nothing committed
    assert not (repo / "models/houses").exists()
    with pytest.raises(errors.ConfigError, match="lacks 'sqft'"):
        mlgitops.publish(pipeline, frame.drop(columns=["sqft"]), name="houses", repo=repo,
                         target="price", push=False, quiet=True)
    with pytest.raises(errors.ConfigError, match="not fitted; call fit"):
        mlgitops.publish(_housing_pipeline(), frame, name="houses", repo=repo, target="price",
                         push=False, quiet=True)
    assert git.text(repo, "rev-parse", "HEAD") == before


def test_cli_publish_names_the_unfitted_column_and_the_flag(repo: Path, tmp_path: Path) -> None:
    import mlflow.sklearn

    frame = _housing()
    pipeline = _housing_pipeline().fit(frame.drop(columns=["price"]), frame["price"])
    model_dir = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(pipeline, str(model_dir), serialization_format="skops",
                              skops_trusted_types=["numpy.dtype"])
    data = tmp_path / "houses.csv"
    frame.to_csv(data, index=False)
    cli = [str(Path(mlgitops.__file__).parents[1] / ".venv/bin/mlgitops")]
    env = {**os.environ, "MLGITOPS_TRUST_ALLOW": "numpy.dtype"}
    before = git.text(repo, "rev-parse", "HEAD")
    out = subprocess.run([*cli, "publish", "houses", "--model", str(model_dir), "--reference",
                          str(data), "--repo", str(repo), "--no-push", "--trust", "numpy.dtype"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "'price'" in out.stderr and "--target" in out.stderr
    assert "Traceback" not in out.stderr
    assert git.text(repo, "rev-parse", "HEAD") == before
