"""Validation of a model repository before anything deploys.

Run by ``mlgitops validate``, by the remote's pre-receive hook, and by the controller.
Each problem is a sentence naming the file and the field, and what to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgitops import errors
from mlgitops.adapters import files
from mlgitops.core import layout, manifest, quarantine, trust, yamldoc

if TYPE_CHECKING:  # heavy (numpy, skops): imported where a model is really checked
    from mlgitops.adapters import mlflow_models
    from mlgitops.core import stats

#: quarantine.yaml grows by one entry per revert; far below this.
MAX_QUARANTINE_BYTES = 1024 * 1024


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


def _read_small(root: Path, rel: str, *, limit: int) -> bytes:
    """A regular file of the repository, refused (before reading) when larger than ``limit``."""
    path = root / rel
    if path.is_symlink():
        raise errors.ManifestError(f"{rel}: is a symbolic link; commit the file itself")
    try:
        size = path.stat().st_size
        if size > limit:
            raise errors.ManifestError(
                f"{rel}: is {size} bytes, over the {limit}-byte limit for this file; keep data "
                "out of it (models and samples belong under models/)"
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise errors.ManifestError(f"{rel}: does not exist; publish the model first") from exc
    except IsADirectoryError as exc:
        raise errors.ManifestError(f"{rel}: is a directory, not a manifest file") from exc


def parse_manifest(raw: bytes, *, rel: str) -> manifest.ModelDeployment:
    """A manifest's bytes as a ModelDeployment named like its file (``manifests/<name>.yaml``)."""
    dep = manifest.parse(yamldoc.load(raw, source=rel), source=rel)
    if layout.manifest_path(dep.name) != rel:
        raise errors.ManifestError(
            f"{rel}: field metadata.name: is {dep.name!r}, so the file must be named "
            f"{layout.manifest_path(dep.name)!r}; rename one of them"
        )
    return dep


def read_manifest(root: Path, rel: str) -> manifest.ModelDeployment:
    """Parse one manifest file under ``root``; ManifestError names file and field."""
    return parse_manifest(_read_small(root, rel, limit=yamldoc.MAX_MANIFEST_BYTES), rel=rel)


def parse_quarantine(raw: bytes | None) -> tuple[quarantine.Entry, ...]:
    if raw is None:
        return ()
    doc = yamldoc.load(raw, source=layout.QUARANTINE, max_bytes=MAX_QUARANTINE_BYTES)
    return quarantine.parse(doc, source=layout.QUARANTINE)


def read_quarantine(root: Path) -> tuple[quarantine.Entry, ...]:
    if not (root / layout.QUARANTINE).exists() and not (root / layout.QUARANTINE).is_symlink():
        return ()
    return parse_quarantine(_read_small(root, layout.QUARANTINE, limit=MAX_QUARANTINE_BYTES))


def manifest_files(root: Path) -> list[str]:
    mdir = root / layout.MANIFESTS
    if not mdir.is_dir():
        return []
    return sorted(f"{layout.MANIFESTS}/{p.name}" for p in mdir.glob("*.yaml") if p.is_file())


def check_digest(model_dir: Path, dep: manifest.ModelDeployment) -> None:
    """The model directory exists and its content is what the manifest's digest names."""
    rel = dep.model_path
    if model_dir.is_symlink():
        raise errors.ModelError(f"{rel}: is a symbolic link; commit the model directory itself")
    if not model_dir.is_dir():
        raise errors.ModelError(
            f"{rel}: does not exist but {layout.manifest_path(dep.name)} points to it; "
            "publish the model or fix spec.model.path"
        )
    try:
        actual = files.dir_digest(model_dir)
    except errors.ModelError as exc:
        raise errors.ModelError(f"{layout.MODELS}/{exc}") from exc
    if actual != dep.digest:
        raise errors.ModelError(
            f"{rel}: content digest is {actual} but {layout.manifest_path(dep.name)} field "
            f"spec.model.digest says {dep.digest}; republish with mlgitops publish "
            "(do not edit model files by hand)"
        )


#: What quarantine matches of content whose digest was verified, by digest (`remember_identity`).
_IDENTITIES: dict[str, quarantine.Identity] = {}
_IDENTITIES_KEPT = 256


def remember_identity(model_dir: Path, digest: str) -> quarantine.Identity:
    """`identity` of ``model_dir``, read once per process per digest.

    Only for a directory whose content was just checked to have ``digest`` (`check_digest`,
    or `files.dir_digest` equal to it): the keys are a function of the content alone, so the
    digest names them. A revert's push and redeploy then match quarantine without reading
    the model again.
    """
    known = _IDENTITIES.get(digest)
    if known is not None:
        return known
    found = identity(model_dir, digest)
    if len(_IDENTITIES) >= _IDENTITIES_KEPT:
        _IDENTITIES.pop(next(iter(_IDENTITIES)))
    _IDENTITIES[digest] = found
    return found


def remembered(digest: str) -> quarantine.Identity | None:
    """The keys `remember_identity` kept for content with ``digest`` in this process, if any."""
    return _IDENTITIES.get(digest)


def identity(model_dir: Path, digest: str) -> quarantine.Identity:
    """The keys quarantine matches on (see `core.quarantine`), read as data: nothing loads."""
    from mlgitops.adapters import mlflow_models, skops_files

    try:
        info = mlflow_models.read_info(model_dir)
        fitted = skops_files.identity(info.model_file)
        recipe = hashlib.sha256(skops_files.recipe(info.model_file).encode())
        recipe.update(_reference_digest(model_dir / layout.REFERENCE).encode())
    except errors.ModelError:
        return quarantine.Identity(digest)  # a broken model is refused for what it is
    return quarantine.Identity(digest, fitted, "sha256:" + recipe.hexdigest())


def _reference_digest(path: Path) -> str:
    """The reference data (without the prediction column that depends on the model)."""
    import pandas as pd

    try:
        files.check_parquet(path, name=path.name)  # its declared size before any read
        frame = pd.read_parquet(path)
    except Exception:  # a missing, unreadable or oversized sample: no recipe key
        return "none"
    frame = frame.drop(columns=[c for c in ("prediction",) if c in frame.columns])
    h = hashlib.sha256(json.dumps([str(c) for c in frame.columns]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def check_quarantine(
    model_dir: Path,
    dep: manifest.ModelDeployment,
    entries: Sequence[quarantine.Entry],
    *,
    verified: bool = False,
) -> None:
    """QuarantinedError when this version matches an entry of its model (bytes or content).

    ``verified``: ``model_dir``'s digest was checked to be ``dep.digest`` just before, so its
    keys may come from `remember_identity`.
    """
    ident = quarantine.Identity(dep.digest)
    if quarantine.needs_identity(entries, model=dep.name, digest=dep.digest):
        read = remember_identity if verified else identity
        ident = read(model_dir, dep.digest)
    hit = quarantine.match(entries, model=dep.name, identity=ident)
    if hit is not None:
        raise errors.QuarantinedError(hit.sentence(name=dep.name))


def check_model(
    model_dir: Path,
    dep: manifest.ModelDeployment,
    *,
    policy: trust.Policy = trust.DEFAULT,
    load: bool = True,
) -> mlflow_models.ModelInfo:
    """Digest, files, signature, baseline, trust; with ``load``, the types the file needs and a
    sandboxed load that predicts a few reference rows.

    Without ``load`` (the controller) nothing heavy is imported: the server process checks the
    file's types against the same policy before it unpickles anything.
    """
    from mlgitops.adapters import mlflow_models

    rel = dep.model_path
    check_digest(model_dir, dep)
    info = mlflow_models.read_info(model_dir)
    listed = trust.refusals((), policy=policy, reviewed=dep.trusted_types)
    if listed:
        from mlgitops.adapters import skops_files

        try:  # what each name is (function, class, data type), read from the file as data
            kinds = skops_files.references(info.model_file)
        except errors.ModelError:
            kinds = {}
        listed = trust.refusals((), policy=policy, reviewed=dep.trusted_types, kinds=kinds)
        raise errors.ModelError(
            f"{layout.manifest_path(dep.name)}: " + "; ".join(r.reason for r in listed)
        )
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
        from mlgitops.adapters import sandbox

        loadable = mlflow_models.check_loadable(
            info, policy=policy, reviewed=dep.trusted_types, source=layout.manifest_path(dep.name)
        )
        if not check_evaluation(model_dir, dep, policy=policy, recompute=True):
            sandbox.load_check(model_dir, trusted_types=loadable, policy=policy)
    else:
        check_evaluation(model_dir, dep, policy=policy, recompute=False)
    return info


def check_evaluation(model_dir: Path, dep: manifest.ModelDeployment, *, policy: trust.Policy,
                     recompute: bool) -> bool:
    """evaluation.json as data (its file and sha256), the manifest's performance metrics of the
    model's kind, and with ``recompute`` its numbers against the model scored in the sandbox
    (which loads it and predicts reference rows too). True when the sandbox loaded it."""
    from mlgitops.adapters import evaluation
    from mlgitops.authoring import gates
    from mlgitops.core.performance import names

    rec = evaluation.read_record(model_dir, rel=dep.model_path)
    perf = dep.performance
    used = ([perf.metric] if perf.metric else []) + [t.metric for t in perf.gate]
    where = f"{layout.manifest_path(dep.name)}: spec.performance"
    if rec is None:
        if perf.gate or perf.max_drop is not None:
            raise errors.ModelError(
                f"{where} {'gate' if perf.gate else 'maxDrop'} needs the version's own "
                f"evaluation, and {dep.model_path}/{evaluation.RECORD} is missing; publish with "
                "--evaluation eval.parquet")
        return False
    wrong = [m for m in used if names.kind(m) != rec["kind"]]
    if wrong:
        raise errors.ModelError(
            f"{where} names {', '.join(wrong)}, but the model is a {rec['kind']}; use "
            f"{', '.join(names.names_for(rec['kind']))}")
    if recompute:
        gates.check_record(model_dir, dep, policy=policy)
    return recompute


def read_baseline(model_dir: Path, *, rel: str) -> stats.Baseline:
    from mlgitops.core import stats

    path = model_dir / layout.BASELINE
    try:
        if path.is_symlink():
            raise errors.BaselineError(f"{rel}/{layout.BASELINE}: is a symbolic link; republish")
        data: Any = json.loads(path.read_text())
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
    policy: trust.Policy = trust.DEFAULT,
    remember: bool = False,
) -> Result:
    """Check every manifest under ``root`` (a working tree or an exported commit).

    ``only`` limits the expensive model checks to those names (the rest get schema checks);
    models in ``known_content`` hold content that was fully checked before (same digest and
    trusted types): only their digest and quarantine are verified. ``remember`` (a long-lived
    validator) keeps what quarantine matches of each model checked in full (`remember_identity`).
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
        try:
            if wanted is None or dep.name in wanted:
                check_digest(root / dep.model_path, dep)
                check_quarantine(root / dep.model_path, dep, quarantined, verified=True)
            elif (hit := quarantine.find(quarantined, model=dep.name, digest=dep.digest)) is not None:
                raise errors.QuarantinedError(quarantine.Match(hit, "the same bytes").sentence(name=dep.name))
        except errors.QuarantinedError as exc:
            problems.append(Problem(rel, f"{rel}: {exc}"))
            continue
        except errors.MlgitopsError as exc:
            problems.append(Problem(dep.model_path, str(exc)))
            continue
        if wanted is not None and dep.name not in wanted:
            continue
        try:
            if dep.name not in known:
                check_model(root / dep.model_path, dep, load=load, policy=policy)
                if remember:  # a revert to this content matches quarantine without reading it
                    remember_identity(root / dep.model_path, dep.digest)
            checked.append(dep.name)
        except errors.MlgitopsError as exc:
            problems.append(Problem(dep.model_path, str(exc)))
    models_dir = root / layout.MODELS
    if models_dir.is_dir():
        named = {d.name for d in deployments}
        for entry in sorted(models_dir.iterdir()):
            sub = entry.name
            if entry.is_symlink() or not entry.is_dir():
                if sub != ".gitkeep":
                    problems.append(Problem(
                        f"{layout.MODELS}/{sub}",
                        f"{layout.MODELS}/{sub}: is not a model directory; models/ holds one "
                        "directory per model, remove it",
                    ))
                continue
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
