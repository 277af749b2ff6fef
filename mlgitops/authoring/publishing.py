"""Publishing a model version: MLflow model + baseline + reference sample + manifest, one commit.

Publishing identical content again changes nothing and returns the version already there.
Before anything is committed the estimator is checked against the trust policy (a type the
controller would refuse is refused here, with the way to admit it deliberately) and against
the remote's quarantine: re-publishing a version that was reverted automatically (the same
bytes, the same fitted estimator, or the same estimator and parameters on the same reference
data) is refused, naming the revert commit and its report.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlgitops import errors, settings, ui
from mlgitops.adapters import files, fitted_missing, git, mlflow_models, validator
from mlgitops.authoring import validate
from mlgitops.core import layout, manifest, quarantine, stats, trust
from mlgitops.core.manifest import ModelDeployment

#: Rows kept in ``reference.parquet`` for human-readable reports.
REFERENCE_ROWS = 5000


def fingerprint(
    estimator: Any,
    features: pd.DataFrame,
    *,
    trusted_types: Sequence[str],
    target: str | None,
) -> str:
    """A key of what was published: estimator state, reference data, trusted types."""
    h = hashlib.sha256()
    h.update(pickle.dumps(estimator, protocol=5))
    h.update(pd.util.hash_pandas_object(features, index=False).to_numpy().tobytes())
    h.update(json.dumps([list(features.columns), sorted(trusted_types), target]).encode())
    return h.hexdigest()


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def write_version(
    estimator: Any,
    reference: pd.DataFrame,
    *,
    dest: Path,
    target: str | None,
    trusted_types: Sequence[str],
    key: str,
    policy: trust.Policy | None = None,
) -> tuple[str, ...]:
    """Write the model directory (MLflow model, baseline, reference sample); return its types.

    ``policy``: the repository's trust policy (`settings.trust_policy`); refusals name the
    command that admits a type."""
    features = reference.drop(columns=[target]) if target else reference
    info, types = mlflow_models.save(
        estimator, dest, example=features, trusted_types=list(trusted_types),
        policy=policy if policy is not None else settings.trust_policy(),
    )
    del info
    predictions = np.asarray(estimator.predict(features))
    baseline = stats.build_baseline(_columns(features), predictions=predictions)
    (dest / layout.BASELINE).write_text(json.dumps(baseline.to_dict(), sort_keys=True) + "\n")
    sample = reference
    if len(sample) > REFERENCE_ROWS:
        sample = sample.sample(n=REFERENCE_ROWS, random_state=0)
    sample = sample.copy()
    sample["prediction"] = estimator.predict(sample[features.columns])
    sample.reset_index(drop=True).to_parquet(dest / layout.REFERENCE, index=False)
    publish_info: dict[str, Any] = {"fingerprint": key, "target": target,
                                    "features": [str(c) for c in features.columns]}
    nan_strings = fitted_missing.nan_columns(features)
    if nan_strings:  # served as fitted: NaN, not the None a request's null decodes to
        publish_info[fitted_missing.KEY] = nan_strings
    (dest / layout.PUBLISH_INFO).write_text(json.dumps(publish_info, sort_keys=True) + "\n")
    return types


def write_evaluation(estimator: Any, frame: pd.DataFrame, *, dest: Path, label: str | None,
                     features: list[str]) -> dict[str, float]:
    """Commit ``frame`` as ``evaluation.parquet`` beside the model and the metrics of
    ``estimator`` on it as ``evaluation.json`` (both inside the digest); return the metrics."""
    from mlgitops.adapters import evaluation

    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise errors.ConfigError("the evaluation data is empty; pass a labelled frame")
    if label is None:
        extra = [str(c) for c in frame.columns if str(c) not in set(features)]
        if len(extra) != 1:
            raise errors.ConfigError(
                f"the evaluation data has {len(extra)} column(s) the model does not take "
                f"({_names(extra)}); name the label column with --label-column")
        label = extra[0]
    if len(frame) > evaluation.MAX_ROWS:
        raise errors.ConfigError(
            f"the evaluation data has {len(frame)} rows; at most {evaluation.MAX_ROWS} are "
            "committed beside a model: pass a sample (frame.sample(n=..., random_state=0))")
    try:
        x, y = evaluation.split(frame, label=label, columns=features, where="the evaluation data")
    except errors.ModelError as exc:
        raise errors.ConfigError(str(exc)) from exc
    kept = frame[[*features, label]].reset_index(drop=True)
    kept.to_parquet(dest / evaluation.DATA, index=False)
    # scored as the hook and the controller will: the rows read back, the model as it loads
    x, y = evaluation.split(pd.read_parquet(dest / evaluation.DATA), label=label,
                            columns=features, where="the evaluation data")
    metrics = evaluation.score(fitted_missing.wrap(estimator, fitted_missing.read(dest)), x, y)
    files.write_json(dest / evaluation.RECORD, evaluation.record(
        kind=evaluation.kind_of(estimator), metrics=metrics,
        sha=evaluation.sha256(dest / evaluation.DATA), rows=len(kept), label=label))
    return metrics


def _existing_deployment(repo: Path, name: str) -> ModelDeployment | None:
    if not (repo / layout.manifest_path(name)).exists():
        return None
    try:
        return validate.read_manifest(repo, layout.manifest_path(name))
    except errors.ManifestError:
        return None


def remote_quarantine(root: Path) -> tuple[quarantine.Entry, ...]:
    """Quarantine entries of the remote's branch (fetched: reverts are made by the controller)
    and of this clone's HEAD."""
    entries: list[quarantine.Entry] = []
    refs = ["HEAD"]
    if git.remote_url(root) is not None:
        try:
            git.fetch(root)
            refs.append(f"origin/{layout.BRANCH}")
        except errors.GitError:
            pass  # offline: the remote's hook still refuses a quarantined version
    for ref in refs:
        try:
            entries.extend(validate.parse_quarantine(git.show(root, ref, layout.QUARANTINE)))
        except errors.ManifestError:
            continue
    return tuple(entries)


def write_manifest(repo: Path, dep: ModelDeployment) -> None:
    path = repo / layout.manifest_path(dep.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dep.to_dict(), sort_keys=False))


def publish(
    estimator: Any,
    reference_frame: pd.DataFrame,
    *,
    name: str,
    repo: str | Path,
    target: str | None = None,
    message: str | None = None,
    push: bool = True,
    trusted_types: Sequence[str] = (),
    quiet: bool = False,
    evaluation_frame: pd.DataFrame | None = None,
    label_column: str | None = None,
) -> git.CommitSha:
    """Commit ``estimator`` as the next version of model ``name`` and push it.

    ``reference_frame`` is the data the model was trained or validated on (``target`` names its
    label column, kept out of the features). ``evaluation_frame`` (labelled, ``label_column``,
    default ``target``): committed beside the model with the version's metrics on it
    (`write_evaluation`), what ``spec.performance`` compares with. Returns the commit that is
    now the version.
    """
    settings.telemetry_off()
    root = Path(repo).expanduser().resolve()  # repo="~/credit-models" as the README writes it
    if not manifest.valid_name(name):
        raise errors.ConfigError(
            f"model name {name!r} is not a DNS label (lowercase letters, digits, '-'); pick another"
        )
    if not git.is_repo(root):
        raise errors.ConfigError(f"{root} is not a git repository; run `mlgitops init {root}` first")
    if not isinstance(reference_frame, pd.DataFrame) or reference_frame.empty:
        raise errors.ConfigError("reference_frame must be a non-empty pandas DataFrame")
    if target is not None and target not in reference_frame.columns:
        raise errors.ConfigError(f"target {target!r} is not a column of reference_frame")
    check_fitted_columns(estimator, reference_frame, target=target)
    steps = ui.Steps(f"publish {name}", quiet=quiet)
    url = git.remote_url(root) if push else None
    if url is not None:
        validator.warm_remote(root / url)  # the remote's validator imports while this saves the model
    features = reference_frame.drop(columns=[target]) if target else reference_frame
    key = fingerprint(estimator, features, trusted_types=trusted_types, target=target)
    if evaluation_frame is not None:  # other evaluation data: another version
        h = hashlib.sha256(key.encode())
        h.update(pd.util.hash_pandas_object(evaluation_frame, index=False).to_numpy().tobytes())
        h.update(json.dumps([[str(c) for c in evaluation_frame.columns], label_column]).encode())
        key = h.hexdigest()
    model_dir = root / layout.model_path(name)
    previous = _existing_deployment(root, name)
    if previous is not None and evaluation_frame is None and (
            previous.performance.gate or previous.performance.max_drop is not None):
        raise errors.ConfigError(
            f"{layout.manifest_path(name)} sets spec.performance "
            f"{'gate' if previous.performance.gate else 'maxDrop'}, which needs the version's "
            "own evaluation; publish with --evaluation eval.parquet (evaluation_frame= in Python)")
    info_path = model_dir / layout.PUBLISH_INFO
    old_key = (files.read_json(info_path) or {}).get("fingerprint") if info_path.exists() else None
    paths = list(layout.model_paths(name))
    if previous is not None and old_key == key and files.dir_digest(model_dir) == previous.digest:
        sha = git.last_change(root, "HEAD", paths)
        if sha is not None and not _dirty(root, paths):
            validate.check_quarantine(model_dir, previous, remote_quarantine(root))
            if push:
                _push(root, steps)
            ui.console.print(f"{name}: identical content is already version {sha[:12]}; nothing to do")
            return sha
    with tempfile.TemporaryDirectory(prefix="mlgitops-publish-") as tmp:
        staged = Path(tmp) / name
        with steps.step("save MLflow model, baseline and reference sample"):
            types = write_version(
                estimator,
                reference_frame,
                dest=staged,
                target=target,
                trusted_types=trusted_types,
                key=key,
                policy=settings.trust_policy(repo=root),
            )
        if evaluation_frame is not None:
            with steps.step("score the evaluation data"):
                write_evaluation(estimator, evaluation_frame, dest=staged,
                                 label=label_column or target, features=list(features.columns))
        with steps.step("check the remote's quarantine"):
            staged_dep = ModelDeployment(name=manifest.ModelName(name),
                                         model_path=layout.model_path(name),
                                         digest=files.dir_digest(staged))
            validate.check_quarantine(staged, staged_dep, remote_quarantine(root))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, model_dir)
    digest = files.dir_digest(model_dir)
    base = previous or ModelDeployment(
        name=manifest.ModelName(name), model_path=layout.model_path(name), digest=digest
    )
    dep = ModelDeployment(
        name=base.name,
        model_path=layout.model_path(name),
        digest=digest,
        trusted_types=types,
        serving=base.serving,
        drift=base.drift,
        rollout=base.rollout,
        performance=base.performance,
    )
    write_manifest(root, dep)
    with steps.step("commit"):
        subject = message or f"Publish {name} {digest.removeprefix('sha256:')[:12]}"
        sha = git.commit(
            root,
            message=subject,
            paths=paths,
            trailers={layout.TRAILER_MODEL: name, layout.TRAILER_DIGEST: digest},
        )
    if sha is None:
        found = git.last_change(root, "HEAD", paths)
        assert found is not None
        sha = found
    if push:
        _push(root, steps)
        # a rebase over a concurrent push gives the commit a new id
        rebased = git.last_change(root, "HEAD", paths)
        assert rebased is not None
        sha = rebased
    return sha


def _names(columns: Sequence[Any]) -> str:
    return ", ".join(repr(str(c)) for c in columns)


def check_fitted_columns(estimator: Any, reference_frame: pd.DataFrame, *,
                         target: str | None) -> None:
    """Refuse, before anything is written, a reference frame that does not match what the
    estimator was fitted on: an unfitted estimator, a feature it lacks, or a column the
    estimator never saw that is not named as the target (it would become a required input)."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    kind = type(estimator).__name__
    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise errors.ConfigError(
            f"the {kind} is not fitted; call fit(...) on it before publishing"
        ) from exc
    except TypeError as exc:
        raise errors.ConfigError(
            f"{kind} is not a scikit-learn estimator; publish a fitted estimator or Pipeline"
        ) from exc
    features = [c for c in reference_frame.columns if c != target]
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None:
        count = getattr(estimator, "n_features_in_", None)
        if isinstance(count, int) and count != len(features):
            raise errors.ConfigError(
                f"the reference data has {len(features)} feature column(s) but the {kind} was "
                f"fitted on {count}; name the label column with --target (target= in Python) "
                "and drop columns the model does not take"
            )
        return
    fitted_names = [str(c) for c in fitted]
    missing = [c for c in fitted_names if c not in {str(f) for f in features}]
    if missing:
        raise errors.ConfigError(
            f"the reference data lacks {_names(missing)}, which the {kind} was fitted on; "
            "publish with the data the model was trained or validated on"
        )
    extra = [c for c in features if str(c) not in set(fitted_names)]
    if extra:
        raise errors.ConfigError(
            f"the reference data has {_names(extra)}, which the {kind} was not fitted on; if "
            f"{'it is' if len(extra) == 1 else 'one is'} the label, name it with --target "
            "(target= in Python), and drop any other column the model does not take"
        )


def _dirty(root: Path, paths: Sequence[str]) -> bool:
    return bool(git.run(root, "status", "--porcelain", "--", *paths).strip())


def _push(root: Path, steps: ui.Steps, *, attempts: int = 3) -> None:
    """Push; when the remote moved on, rebase this clone's commits onto it and retry."""
    if git.remote_url(root) is None:
        raise errors.ConfigError(
            f"{root} has no 'origin' remote to push to; add one or pass push=False"
        )
    with steps.step("push (the remote validates: digest, types, a sandboxed load and predict)"):
        for attempt in range(attempts):
            try:
                git.push(root)
                return
            except errors.PushRejected:
                if attempt == attempts - 1:
                    raise
                git.fetch(root)
                try:
                    git.run(root, "rebase", "-q", f"origin/{layout.BRANCH}")
                except errors.GitError as exc:
                    git.run(root, "rebase", "--abort", check=False)
                    raise errors.GitError(
                        "the remote has commits that conflict with this publish; your commit is "
                        "kept locally: run `git pull --rebase`, resolve, then `git push`"
                    ) from exc
