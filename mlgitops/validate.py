"""Validation of a model repository before anything deploys.

Run by ``mlgitops validate``, by the remote's pre-receive hook, and by the controller.
Each problem is a sentence naming the file and the field, and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mlgitops import errors
from mlgitops.adapters import files
from mlgitops.core import layout, manifest, quarantine

if TYPE_CHECKING:  # heavy (numpy, skops): imported where a model is really checked
    from mlgitops.adapters import mlflow_models
    from mlgitops.core import stats


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Result:
    deployments: tuple[manifest.ModelDeployment, ...] = ()
    problems: tuple[Problem, ...] = ()
    checked_models: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def read_manifest(root: Path, rel: str) -> manifest.ModelDeployment:
    """Parse one manifest file under ``root``; ManifestError names file and field."""
    path = root / rel
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise errors.ManifestError(f"{rel}: does not exist; publish the model first") from exc
    except yaml.YAMLError as exc:
        raise errors.ManifestError(f"{rel}: is not valid YAML ({exc}); fix and commit") from exc
    dep = manifest.parse(doc, source=rel)
    if layout.manifest_path(dep.name) != rel:
        raise errors.ManifestError(
            f"{rel}: field metadata.name: is {dep.name!r}, so the file must be named "
            f"{layout.manifest_path(dep.name)!r}; rename one of them"
        )
    return dep


def read_quarantine(root: Path) -> tuple[quarantine.Entry, ...]:
    path = root / layout.QUARANTINE
    if not path.exists():
        return ()
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise errors.ManifestError(
            f"{layout.QUARANTINE}: is not valid YAML ({exc}); fix and commit"
        ) from exc
    return quarantine.parse(doc, source=layout.QUARANTINE)


def manifest_files(root: Path) -> list[str]:
    mdir = root / layout.MANIFESTS
    if not mdir.is_dir():
        return []
    return sorted(f"{layout.MANIFESTS}/{p.name}" for p in mdir.glob("*.yaml") if p.is_file())


def check_digest(model_dir: Path, dep: manifest.ModelDeployment) -> None:
    """The model directory exists and its content is what the manifest's digest names."""
    rel = dep.model_path
    if not model_dir.is_dir():
        raise errors.ModelError(
            f"{rel}: does not exist but {layout.manifest_path(dep.name)} points to it; "
            "publish the model or fix spec.model.path"
        )
    actual = files.dir_digest(model_dir)
    if actual != dep.digest:
        raise errors.ModelError(
            f"{rel}: content digest is {actual} but {layout.manifest_path(dep.name)} field "
            f"spec.model.digest says {dep.digest}; republish with mlgitops publish "
            "(do not edit model files by hand)"
        )


def check_model(
    model_dir: Path,
    dep: manifest.ModelDeployment,
    *,
    load: bool = True,
) -> mlflow_models.ModelInfo:
    """Digest, signature, baseline and (optionally) loading with the manifest's trusted types."""
    from mlgitops.adapters import mlflow_models

    rel = dep.model_path
    check_digest(model_dir, dep)
    info = mlflow_models.read_info(model_dir)
    baseline = read_baseline(model_dir, rel=rel)
    expected = [c.name for c in info.columns]
    got = [c.name for c in baseline.columns]
    if expected != got:
        raise errors.BaselineError(
            f"{rel}/{layout.BASELINE}: columns {got} differ from the MLflow signature's "
            f"{expected}; republish so both come from the same reference frame"
        )
    if not (model_dir / layout.REFERENCE).is_file():
        raise errors.BaselineError(
            f"{rel}/{layout.REFERENCE}: missing; republish to record a reference sample"
        )
    if load:
        needed = mlflow_models.required_types(info.model_file)
        missing = sorted(set(needed) - set(dep.trusted_types))
        if missing:
            raise errors.ModelError(
                f"{layout.manifest_path(dep.name)}: field spec.model.trustedTypes: the model "
                f"needs {missing} which are not listed; review them and add them"
            )
        mlflow_models.load(model_dir, trusted_types=dep.trusted_types)
    return info


def read_baseline(model_dir: Path, *, rel: str) -> stats.Baseline:
    from mlgitops.core import stats

    path = model_dir / layout.BASELINE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise errors.BaselineError(
            f"{rel}/{layout.BASELINE}: missing; republish with mlgitops publish"
        ) from exc
    except ValueError as exc:
        raise errors.BaselineError(f"{rel}/{layout.BASELINE}: is not JSON ({exc})") from exc
    try:
        return stats.Baseline.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.BaselineError(f"{rel}/{layout.BASELINE}: {exc}; republish") from exc


def validate_tree(
    root: Path,
    *,
    load: bool = True,
    only: Iterable[str] | None = None,
    known_content: Iterable[str] = (),
) -> Result:
    """Check every manifest under ``root`` (a working tree or an exported commit).

    ``only`` limits the expensive model checks to those names (the rest get schema checks);
    models in ``known_content`` hold content that was fully checked before (same digest and
    trusted types): only their digest is verified.
    """
    known = set(known_content)
    wanted = set(only) if only is not None else None
    problems: list[Problem] = []
    deployments: list[manifest.ModelDeployment] = []
    checked: list[str] = []
    try:
        quarantined = read_quarantine(root)
    except errors.MlgitopsError as exc:
        problems.append(Problem(layout.QUARANTINE, str(exc)))
        quarantined = ()
    for rel in manifest_files(root):
        try:
            dep = read_manifest(root, rel)
        except errors.MlgitopsError as exc:
            problems.append(Problem(rel, str(exc)))
            continue
        deployments.append(dep)
        hit = quarantine.find(quarantined, model=dep.name, digest=dep.digest)
        if hit is not None:
            problems.append(
                Problem(
                    rel,
                    f"{rel}: field spec.model.digest: {dep.digest} is quarantined (auto-reverted "
                    f"in {hit.commit[:12]}: {hit.reason}); remove its entry from "
                    f"{layout.QUARANTINE} to deploy it again",
                )
            )
            continue
        if wanted is not None and dep.name not in wanted:
            continue
        try:
            if dep.name in known:
                check_digest(root / dep.model_path, dep)
            else:
                check_model(root / dep.model_path, dep, load=load)
            checked.append(dep.name)
        except errors.MlgitopsError as exc:
            problems.append(Problem(dep.model_path, str(exc)))
    models_dir = root / layout.MODELS
    if models_dir.is_dir():
        named = {d.name for d in deployments}
        for sub in sorted(p.name for p in models_dir.iterdir() if p.is_dir()):
            if sub not in named and not (root / layout.manifest_path(sub)).exists():
                problems.append(
                    Problem(
                        f"{layout.MODELS}/{sub}",
                        f"{layout.MODELS}/{sub}: has no manifest {layout.manifest_path(sub)}; "
                        "publish it with mlgitops publish or remove the directory",
                    )
                )
    return Result(tuple(deployments), tuple(problems), tuple(checked))


def changed_models(paths: Sequence[str]) -> set[str]:
    """Model names touched by changed paths (models/<n>/… or manifests/<n>.yaml)."""
    names: set[str] = set()
    for p in paths:
        parts = p.split("/")
        if len(parts) >= 2 and parts[0] == layout.MODELS:
            names.add(parts[1])
        n = layout.manifest_name(p)
        if n:
            names.add(n)
    return names
