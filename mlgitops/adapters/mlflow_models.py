"""MLflow models of scikit-learn estimators: save (skops), inspect and load with reviewed types.

The only importer of mlflow. Loading does not import mlflow: it reads the MLmodel file and
loads ``model.skops`` trusting exactly the types that the controller's trust policy admits and
the reviewed manifest lists (`core.trust`), never the list the model carries about itself.
Before skops constructs anything, the types are checked and tree node arrays bounds-checked.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from mlgitops import errors
from mlgitops.adapters import skops_files, skops_trees
from mlgitops.core import trust, yamldoc

if TYPE_CHECKING:
    import pandas as pd

MLMODEL = "MLmodel"
#: MLmodel fields that change every time the same model is saved (left out: stable digests).
VOLATILE_FIELDS = ("model_uuid", "utc_time_created", "run_id", "artifact_path", "model_id")
#: A file a model names: a plain name inside its directory (no folders, no leading dot).
PLAIN_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: Flavor fields that name files of the model directory.
_PATH_FIELDS = ("pickled_model", "model_path", "data", "conda", "virtualenv")

_NUMERIC_TYPES = {"double", "float", "long", "integer"}
_MLFLOW_TYPES = _NUMERIC_TYPES | {"boolean", "string", "datetime", "binary"}


@dataclass(frozen=True)
class Column:
    """One input column of a model's MLflow signature."""

    name: str
    type: str  # MLflow type name: double, float, long, integer, boolean, string, …
    required: bool = True

    @property
    def numeric(self) -> bool:
        return self.type in _NUMERIC_TYPES


@dataclass(frozen=True)
class ModelInfo:
    """What the MLmodel file of a model directory says."""

    path: Path
    model_file: Path
    serialization: str
    columns: tuple[Column, ...]
    output_type: str | None
    trusted_types_in_model: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class LoadedModel:
    """An estimator ready to predict, with the columns its signature promises."""

    info: ModelInfo
    estimator: Any

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.info.columns

    @property
    def classifier(self) -> bool:
        return hasattr(self.estimator, "classes_")

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predict rows in signature column order."""
        return np.asarray(self.estimator.predict(frame[list(self.info.column_names)]))


def _plain_file(model_dir: Path, value: Any, *, field: str) -> Path:
    """``value`` as a regular file directly inside ``model_dir``; ModelError otherwise."""
    where = f"{model_dir.name}/{MLMODEL}: field {field}"
    if not isinstance(value, str) or not PLAIN_FILE.fullmatch(value):
        shown = repr(value)[:80]
        raise errors.ModelError(
            f"{where}: is {shown}; every file a model names must be a plain file name inside its "
            "directory (no folders, absolute paths or leading dots): republish the model"
        )
    path = model_dir / value
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise errors.ModelError(f"{where}: {value} is not a regular file; republish the model")
    return path


def _check_paths(model_dir: Path, doc: dict[str, Any]) -> None:
    """Every path MLmodel names is a plain file inside the model directory; no code paths."""
    for flavor_name, flavor in (doc.get("flavors") or {}).items():
        if not isinstance(flavor, dict):
            continue
        for key, value in flavor.items():
            if key == "code" and value is not None:
                raise errors.ModelError(
                    f"{model_dir.name}/{MLMODEL}: field flavors.{flavor_name}.code: mlgitops "
                    "never loads code shipped with a model; republish without code_paths"
                )
            if key == "env" and isinstance(value, dict):
                for sub, path in value.items():
                    _plain_file(model_dir, path, field=f"flavors.{flavor_name}.env.{sub}")
            elif key in _PATH_FIELDS and value is not None:
                _plain_file(model_dir, value, field=f"flavors.{flavor_name}.{key}")
        if flavor_name == "python_function" and flavor.get("loader_module", "mlflow.sklearn") != "mlflow.sklearn":
            raise errors.ModelError(
                f"{model_dir.name}/{MLMODEL}: field flavors.python_function.loader_module: "
                "mlgitops serves mlflow.sklearn models only; republish with mlgitops publish"
            )


def read_info(model_dir: Path) -> ModelInfo:
    """Parse ``MLmodel``; raise ModelError when it is not a skops sklearn model with a signature."""
    mlmodel = model_dir / MLMODEL
    if mlmodel.is_symlink():
        raise errors.ModelError(f"{model_dir.name}/{MLMODEL}: is a symbolic link; republish the model")
    try:
        raw = mlmodel.read_bytes()
        doc = yamldoc.load(raw, source=f"{model_dir.name}/{MLMODEL}")
    except FileNotFoundError as exc:
        raise errors.ModelError(
            f"{model_dir}: no MLmodel file; publish an MLflow model directory there"
        ) from exc
    except OSError as exc:
        raise errors.ModelError(f"{mlmodel}: cannot be read ({exc.strerror}); republish the model") from exc
    except errors.ManifestError as exc:
        raise errors.ModelError(str(exc)) from exc
    if not isinstance(doc, dict):
        raise errors.ModelError(f"{mlmodel}: is not a mapping; republish the model")
    flavor = (doc.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict):
        raise errors.ModelError(
            f"{mlmodel}: has no sklearn flavor; mlgitops serves scikit-learn models saved by "
            "mlflow.sklearn (use mlgitops publish)"
        )
    serialization = str(flavor.get("serialization_format", "pickle"))
    if serialization != "skops":
        raise errors.ModelError(
            f"{mlmodel}: serialization_format is {serialization!r}; only 'skops' loads without "
            "running code from the model: republish with mlgitops publish"
        )
    _check_paths(model_dir, doc)
    model_file = _plain_file(model_dir, flavor.get("pickled_model", "model.skops"),
                             field="flavors.sklearn.pickled_model")
    columns = _signature_columns(doc, source=str(mlmodel))
    outputs = _parse_json_list((doc.get("signature") or {}).get("outputs"))
    output_type = str(outputs[0].get("type")) if outputs and isinstance(outputs[0], dict) else None
    return ModelInfo(
        path=model_dir,
        model_file=model_file,
        serialization=serialization,
        columns=columns,
        output_type=output_type,
        trusted_types_in_model=tuple(flavor.get("skops_trusted_types") or ()),
    )


def _parse_json_list(raw: Any) -> list[Any]:
    import json

    if raw is None:
        return []
    if isinstance(raw, list):
        return raw
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return []
    return value if isinstance(value, list) else []


def _signature_columns(doc: dict[str, Any], *, source: str) -> tuple[Column, ...]:
    inputs = _parse_json_list((doc.get("signature") or {}).get("inputs"))
    if not inputs:
        raise errors.ModelError(
            f"{source}: has no input signature; publish with a reference frame so mlgitops can "
            "infer one"
        )
    columns = []
    for item in inputs:
        if not isinstance(item, dict) or "name" not in item or item.get("type") not in _MLFLOW_TYPES:
            raise errors.ModelError(
                f"{source}: signature input {item!r} is not a named column of a known type; "
                "mlgitops serves column-based (tabular) signatures"
            )
        columns.append(Column(str(item["name"]), str(item["type"]), bool(item.get("required", True))))
    return tuple(columns)


def required_types(model_file: Path) -> list[str]:
    """What a skops file needs trusted (read as data, nothing built): the types skops does not
    trust by default and every function it names (`core.trust`)."""
    return needs(model_file)[0]


def needs(model_file: Path) -> tuple[list[str], dict[str, str]]:
    """`required_types` and what each name the file refers to is (function, class, data type)."""
    import skops.io

    skops_files.check_bounds(model_file)  # sizes first: skops reads members whole
    try:
        untrusted = set(skops.io.get_untrusted_types(file=model_file))
    except Exception as exc:  # skops raises many kinds for a corrupt file
        raise errors.ModelError(
            f"{model_file.name}: is not a readable skops file ({type(exc).__name__}); "
            "republish the model"
        ) from exc
    kinds = skops_files.references(model_file)
    return sorted(untrusted | set(skops_files.functions(kinds))), kinds


def check_loadable(
    info: ModelInfo, *, policy: trust.Policy, reviewed: Sequence[str] | None, source: str
) -> tuple[str, ...]:
    """Everything decided before a byte of the model is turned into objects.

    The untrusted types the file needs must be admitted by ``policy`` and listed in
    ``reviewed`` (the manifest's trustedTypes; None at publish time), and every tree's node
    arrays must pass the bounds checks. Returns the exact types to hand skops.
    """
    needed = check_types(info.model_file, policy=policy, reviewed=reviewed, source=source)
    return trust.loadable(needed, policy=policy, reviewed=needed if reviewed is None else reviewed)


def check_types(
    model_file: Path, *, policy: trust.Policy, reviewed: Sequence[str] | None, source: str
) -> list[str]:
    """The file's untrusted types, after ModelError for any the policy (and ``reviewed``) refuse
    and the bounds checks of its trees; nothing is constructed from the file."""
    needed, kinds = needs(model_file)
    refused = trust.refusals(needed, policy=policy, reviewed=reviewed, kinds=kinds)
    if refused:
        raise errors.ModelError(
            f"{source}: the model may not load: " + "; ".join(r.reason for r in refused)
        )
    if set(needed) & trust.CHECKED_TYPES:
        skops_trees.check_trees(model_file)
    return needed


def load(
    model_dir: Path,
    *,
    trusted_types: Sequence[str],
    policy: trust.Policy | None = None,
) -> LoadedModel:
    """Load a model: types and trees are checked first (`check_loadable`), then skops loads it
    trusting only what the policy admits and ``trusted_types`` (the reviewed manifest) lists."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    if policy is None:
        from mlgitops import settings

        policy = settings.trust_policy()
    info = read_info(model_dir)
    loadable = check_loadable(info, policy=policy, reviewed=trusted_types, source=model_dir.name)
    try:
        estimator = skops.io.load(info.model_file, trusted=list(loadable))
    except UntrustedTypesFoundException as exc:
        raise errors.ModelError(
            f"{model_dir}: the model needs types the manifest does not trust ({exc}); a reviewer "
            "must add them to spec.model.trustedTypes"
        ) from exc
    except FileNotFoundError as exc:
        raise errors.ModelError(f"{info.model_file}: missing; republish the model") from exc
    except Exception as exc:  # a corrupt skops file raises zipfile/json/attribute errors
        raise errors.ModelError(
            f"{info.model_file}: does not load ({type(exc).__name__}: {exc}); republish the model"
        ) from exc
    if not hasattr(estimator, "predict"):
        raise errors.ModelError(f"{model_dir}: the estimator has no predict(); it cannot serve")
    from mlgitops.adapters import fitted_missing

    # a missing string reaches the model as its reference data wrote it (NaN or None)
    estimator = fitted_missing.wrap(estimator, fitted_missing.read(model_dir))
    return LoadedModel(info=info, estimator=estimator)


def save(
    estimator: Any,
    model_dir: Path,
    *,
    example: pd.DataFrame,
    trusted_types: Sequence[str] = (),
    policy: trust.Policy = trust.DEFAULT,
) -> tuple[ModelInfo, tuple[str, ...]]:
    """Save ``estimator`` as an MLflow model (skops) and return its info and needed types.

    What skops does not trust by default, and every function, must be admitted by ``policy``
    (the defaults, the team's file, the operator's setting); ``trusted_types`` may name some of
    them again (never one the model does not need). The file is canonical (same estimator, same bytes) and MLmodel
    carries no per-save identifiers, so the same estimator always gets the same digest.
    """
    import tempfile

    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.skops"
        try:
            skops.io.dump(estimator, probe)
        except Exception as exc:
            raise errors.ModelError(
                f"the estimator cannot be saved with skops ({type(exc).__name__}: {exc})"
            ) from exc
        needed, kinds = needs(probe)
    refused = trust.refusals(needed, policy=policy, reviewed=None, kinds=kinds)
    if refused:
        raise errors.ModelError(
            f"{type(estimator).__name__} cannot be published: " + "; ".join(r.reason for r in refused)
        )
    extra = sorted(set(trusted_types) - set(needed))
    if extra:
        raise errors.ModelError(
            f"trusted_types lists {', '.join(extra)} but the model does not need them; list only "
            "the types the model needs"
        )
    types = tuple(sorted(needed))
    predictions = estimator.predict(example.head(100))
    signature = infer_signature(example, predictions)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    try:
        mlflow.sklearn.save_model(
            estimator,
            str(model_dir),
            serialization_format="skops",
            skops_trusted_types=list(types) or None,
            signature=signature,
            pip_requirements=["scikit-learn", "skops"],
        )
    except Exception as exc:
        raise errors.ModelError(f"mlflow could not save the model ({exc})") from exc
    info = read_info(model_dir)
    skops_files.canonicalize(info.model_file)
    _stable_mlmodel(model_dir / MLMODEL, size=info.model_file.stat().st_size)
    if set(types) & trust.CHECKED_TYPES:
        skops_trees.check_trees(info.model_file)
    return read_info(model_dir), types


def _stable_mlmodel(path: Path, *, size: int) -> None:
    """Drop MLmodel's per-save identifiers and record the canonical file's size."""
    doc = yaml.safe_load(path.read_text())
    for key in VOLATILE_FIELDS:
        doc.pop(key, None)
    if "model_size_bytes" in doc:
        doc["model_size_bytes"] = size
    path.write_text(yaml.safe_dump(doc, sort_keys=True))


def import_model(source: str, dest: Path) -> Path:
    """Copy an MLflow model (a directory, ``runs:/…`` or ``models:/…`` URI) into ``dest``."""
    src = Path(source)
    if src.is_dir():
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
        return dest
    import mlflow.artifacts

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source)
    except Exception as exc:
        raise errors.ModelError(
            f"cannot fetch MLflow model {source!r} ({exc}); pass a local model directory or a "
            "runs:/ URI reachable from MLFLOW_TRACKING_URI"
        ) from exc
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(local, dest)
    return dest


def load_estimator_for_publish(
    source: str, *, trusted_types: Sequence[str] = (), policy: trust.Policy | None = None
) -> Any:
    """The estimator of an MLflow model a publisher brings (their own, so they vouch for it).

    skops models load when ``policy`` (the repository's, `settings.trust_policy`) admits what
    they need, as the controller would; pickle-based models
    need ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true`` set by the publisher, as mlflow requires.
    """
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = import_model(source, Path(tmp) / "model")
        info_doc = yaml.safe_load((local / MLMODEL).read_text()) or {}
        flavor = (info_doc.get("flavors") or {}).get("sklearn") or {}
        if flavor.get("serialization_format") == "skops":
            import skops.io

            from mlgitops import settings

            model_file = _plain_file(local, flavor.get("pickled_model", "model.skops"),
                                     field="flavors.sklearn.pickled_model")
            needed = check_types(model_file, policy=policy or settings.trust_policy(),
                                 reviewed=None, source=source)
            try:
                return skops.io.load(model_file, trusted=sorted(set(needed) | set(trusted_types)))
            except Exception as exc:
                raise errors.ModelError(
                    f"{source}: does not load ({type(exc).__name__}: {exc}); republish it from "
                    "the estimator (mlgitops.publish) if the file is damaged"
                ) from exc
        if os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "").lower() != "true":
            raise errors.ModelError(
                f"{source}: is pickled ({flavor.get('serialization_format', 'unknown')}); loading it runs "
                "code from the file. If you trust it, set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true; "
                "mlgitops republishes it as skops"
            )
        import mlflow.sklearn

        try:
            return mlflow.sklearn.load_model(str(local))
        except Exception as exc:
            raise errors.ModelError(f"{source}: mlflow could not load it ({exc})") from exc
