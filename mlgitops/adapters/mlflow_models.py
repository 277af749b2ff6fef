"""MLflow models of scikit-learn estimators: save (skops), inspect and load with reviewed types.

The only importer of mlflow. Loading does not import mlflow: it reads the MLmodel file and
loads ``model.skops`` with the trusted types the *manifest* lists (reviewed in Git), never the
list the model carries about itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from mlgitops import errors

if TYPE_CHECKING:
    import pandas as pd

MLMODEL = "MLmodel"
#: Type prefixes a publisher may trust without naming them: the libraries mlgitops serves.
SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")

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


def read_info(model_dir: Path) -> ModelInfo:
    """Parse ``MLmodel``; raise ModelError when it is not a skops sklearn model with a signature."""
    mlmodel = model_dir / MLMODEL
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except FileNotFoundError as exc:
        raise errors.ModelError(
            f"{model_dir}: no MLmodel file; publish an MLflow model directory there"
        ) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise errors.ModelError(f"{mlmodel}: cannot be read as YAML ({exc}); republish the model") from exc
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
    model_file = model_dir / str(flavor.get("pickled_model", "model.skops"))
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
    """Types in a skops file that skops does not trust by default."""
    import skops.io

    try:
        return sorted(skops.io.get_untrusted_types(file=model_file))
    except Exception as exc:  # skops raises many kinds for a corrupt file
        raise errors.ModelError(
            f"{model_file}: is not a readable skops file ({type(exc).__name__}: {exc}); "
            "republish the model"
        ) from exc


def load(model_dir: Path, *, trusted_types: Sequence[str]) -> LoadedModel:
    """Load a model trusting only ``trusted_types`` (from the reviewed manifest)."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    info = read_info(model_dir)
    try:
        estimator = skops.io.load(info.model_file, trusted=list(trusted_types))
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
    return LoadedModel(info=info, estimator=estimator)


def untrusted_beyond_safe(types: Iterable[str]) -> list[str]:
    """The types outside scikit-learn/numpy/scipy: a publisher must name these explicitly."""
    return sorted(t for t in types if not t.startswith(SAFE_PREFIXES))


def save(
    estimator: Any,
    model_dir: Path,
    *,
    example: pd.DataFrame,
    trusted_types: Sequence[str] = (),
) -> tuple[ModelInfo, tuple[str, ...]]:
    """Save ``estimator`` as an MLflow model (skops) and return its info and needed types.

    Types from scikit-learn/numpy/scipy are trusted automatically (and recorded); any other
    type must be listed in ``trusted_types`` or ModelError says which to add.
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
        needed = skops.io.get_untrusted_types(file=probe)
    outside = [t for t in untrusted_beyond_safe(needed) if t not in trusted_types]
    if outside:
        raise errors.ModelError(
            f"the model needs types from outside scikit-learn/numpy/scipy: {', '.join(outside)}; "
            "review them and pass trusted_types=[...] (they are recorded in the manifest)"
        )
    types = tuple(sorted(set(needed) | set(trusted_types)))
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
    return read_info(model_dir), types


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


def load_estimator_for_publish(source: str, *, trusted_types: Sequence[str] = ()) -> Any:
    """The estimator of an MLflow model a publisher brings (their own, so they vouch for it).

    skops models load with the types they declare plus ``trusted_types``; pickle-based models
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

            types = list(flavor.get("skops_trusted_types") or ()) + list(trusted_types)
            try:
                return skops.io.load(local / str(flavor.get("pickled_model", "model.skops")), trusted=types)
            except Exception as exc:
                raise errors.ModelError(
                    f"{source}: does not load ({exc}); pass --trust TYPE for each type you reviewed"
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
