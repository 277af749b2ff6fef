"""The deployment gate where a version lands: the remote's hook and the controller.

A candidate whose manifest sets ``spec.performance.gate`` is compared with the serving
version on the candidate's own committed evaluation data (``models/<name>/evaluation.parquet``,
covered by the digest). Both models are loaded and scored in the sandbox here: the numbers in
``evaluation.json`` are checked against that recomputation, never used for the verdict.

"The serving version" is the model's version in the commit the candidate replaces (for the
hook: main before the push; for the controller: the candidate version's first parent). A
candidate whose exact content was a version of this model before (a revert, a rollback) is not
gated again: going back to what served is always possible.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from mlgitops import errors, settings
from mlgitops.adapters import evaluation, git
from mlgitops.core import digest, layout, manifest, trust, yamldoc
from mlgitops.core.performance import gate, names


def was_version_before(repo: Path, commit: str | None, dep: manifest.ModelDeployment) -> bool:
    """True when ``dep``'s digest was in ``dep``'s manifest at ``commit`` or before it."""
    if commit is None:
        return False
    out = git.run(repo, "log", "--first-parent", "--format=%H", f"-S{dep.digest}", commit,
                  "--", layout.manifest_path(dep.name), keep_env=True, check=False)
    return bool(out.strip())


#: Metrics recomputed in this process, by (model digest, data sha256, label, policy): the hook
#: checks a candidate's evaluation.json and gates it with one sandboxed load.
_SCORED: dict[tuple[str, str, str, trust.Policy], dict[str, float]] = {}
_SCORED_KEPT = 256


def recompute(model_dir: Path, dep: manifest.ModelDeployment, *, data: Path, label: str,
              policy: trust.Policy) -> dict[str, float]:
    """``dep``'s model scored on ``data`` in the sandbox, after the same type and tree checks
    as any load (`mlflow_models.check_loadable`). ModelError when ``model_dir`` is not the
    content ``dep``'s digest names."""
    from mlgitops.adapters import files, mlflow_models, sandbox

    key = (dep.digest, evaluation.sha256(data), label, policy)
    if key in _SCORED:
        return dict(_SCORED[key])
    if files.dir_digest(model_dir) != dep.digest:
        raise errors.ModelError(f"{dep.model_path}: its content is not what its manifest's "
                                "digest names; republish with mlgitops publish")
    info = mlflow_models.read_info(model_dir)
    loadable = mlflow_models.check_loadable(info, policy=policy, reviewed=dep.trusted_types,
                                            source=layout.manifest_path(dep.name))
    metrics = sandbox.evaluate(model_dir, data=data, label=label, trusted_types=loadable,
                               policy=policy)
    if len(_SCORED) >= _SCORED_KEPT:
        _SCORED.pop(next(iter(_SCORED)))
    _SCORED[key] = dict(metrics)
    return metrics


def check_record(model_dir: Path, dep: manifest.ModelDeployment, *, policy: trust.Policy
                 ) -> dict[str, float] | None:
    """The version's evaluation recomputed in the sandbox and held against evaluation.json
    (None: it has none). ModelError when a number differs: the file was not written by
    publish from this model and data."""
    rec = evaluation.read_record(model_dir, rel=dep.model_path)
    if rec is None:
        return None
    metrics = recompute(model_dir, dep, data=model_dir / evaluation.DATA, label=rec["label"],
                        policy=policy)
    claimed: dict[str, float] = rec["metrics"]
    for name in sorted(set(claimed) | set(metrics)):
        a, b = claimed.get(name), metrics.get(name)
        if a is None or b is None or abs(a - b) > 1e-9 * max(1.0, abs(b)):
            raise errors.ModelError(
                f"{dep.model_path}/{evaluation.RECORD}: says {name} is {a} but the model scores "
                f"{b} on {evaluation.DATA}; republish with mlgitops publish --evaluation (the "
                "numbers are recomputed, never taken as written)")
    return metrics


def verdict(candidate_dir: Path, dep: manifest.ModelDeployment, serving_dir: Path | None,
            serving: manifest.ModelDeployment | None, *, policy: trust.Policy) -> str | None:
    """Why the gate holds ``dep`` against ``serving`` (None: it passes, or there is no gate).

    Both are scored in the sandbox on the candidate's evaluation data."""
    thresholds = dep.performance.gate
    if not thresholds:
        return None
    rec = evaluation.read_record(candidate_dir, rel=dep.model_path)
    if rec is None:
        return (f"{layout.manifest_path(dep.name)}: spec.performance.gate is set but "
                f"{dep.model_path}/{evaluation.RECORD} is missing; publish with --evaluation "
                "eval.parquet so the version can be compared with the serving one")
    wrong = [t.metric for t in thresholds if names.kind(t.metric) != rec["kind"]]
    if wrong:
        return (f"{layout.manifest_path(dep.name)}: spec.performance.gate names {', '.join(wrong)}"
                f", which do not apply to a {rec['kind']}; use "
                f"{', '.join(names.names_for(rec['kind']))}")
    data = candidate_dir / evaluation.DATA
    cand = recompute(candidate_dir, dep, data=data, label=rec["label"], policy=policy)
    base = None
    if serving is not None and serving_dir is not None:
        base = recompute(serving_dir, serving, data=data, label=rec["label"], policy=policy)
    result = gate.evaluate(thresholds, cand, base)
    if result.passed:
        return None
    what = (f"{dep.model_path}/{evaluation.DATA} ({rec['rows']} rows, "
            f"{digest.short(rec['sha256'])}), against the serving version "
            f"{digest.short(serving.digest) if serving else '(none)'}")
    return gate.sentence(result, model=dep.name, data=what)


def read_at(root: Path, name: str) -> manifest.ModelDeployment | None:
    """``name``'s manifest in an exported tree (None: none, or one validation refuses anyway)."""
    rel = layout.manifest_path(name)
    try:
        raw = (root / rel).read_bytes()
        return manifest.parse(yamldoc.load(raw, source=rel), source=rel)
    except (OSError, errors.MlgitopsError):
        return None


def hook_problems(gitdir: Path, old: str | None, new: str, models: Iterable[str], *,
                  policy: trust.Policy, limits: settings.BlobLimits) -> list[str]:
    """The gate's refusals of moving main from ``old`` (None: a first push) to ``new``."""
    problems = []
    for name in sorted(models):
        paths = list(layout.model_paths(name))
        with tempfile.TemporaryDirectory(prefix="mlgitops-gate-") as tmp:
            cand_root, old_root = Path(tmp) / "new", Path(tmp) / "old"
            git.export_paths(gitdir, new, paths, cand_root, limits=limits)
            dep = read_at(cand_root, name)
            if dep is None or not dep.performance.gate:
                continue
            serving = None
            if old is not None:
                git.export_paths(gitdir, old, paths, old_root, limits=limits)
                serving = read_at(old_root, name)
                if serving is not None and serving.digest == dep.digest:
                    continue
                if was_version_before(gitdir, old, dep):
                    continue
            try:
                why = verdict(cand_root / dep.model_path, dep,
                              None if serving is None else old_root / serving.model_path,
                              serving, policy=policy)
            except errors.MlgitopsError as exc:
                why = f"{dep.model_path}: the deployment gate could not score it: {exc}"
            if why is not None:
                problems.append(why)
    return problems
