"""A model version's offline evaluation: its metrics on a labelled frame, and evaluation.json.

``mlgitops publish --evaluation eval.parquet`` commits the frame beside the model
(``models/<name>/evaluation.parquet``, at most `MAX_ROWS` rows, features and the label column)
and ``evaluation.json``: the frame's sha256, its rows, the label column, the model's kind and
its metrics there (`core.performance.metrics`, exactly scikit-learn's). Both files are inside the
model directory, so the manifest's digest covers them. Nobody trusts the numbers: the remote's
hook and the controller recompute them in the sandbox (`sandbox.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas loads where a frame is read: `fetch-model` reads only the record
    import pandas as pd

from mlgitops import errors
from mlgitops.adapters import files
from mlgitops.core.performance import metrics as realized
from mlgitops.core.performance import names

RECORD = "evaluation.json"
DATA = "evaluation.parquet"
#: Rows an evaluation frame committed beside a model may have.
MAX_ROWS = 100_000
#: Largest evaluation.json read.
MAX_RECORD_BYTES = 64 * 1024


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def kind_of(estimator: Any) -> names.Kind:
    return "classifier" if hasattr(estimator, "classes_") else "regressor"


def score(estimator: Any, features: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """The metrics of ``estimator`` on ``features`` against labels ``y`` (those defined)."""
    pred = np.asarray(estimator.predict(features))
    if kind_of(estimator) == "classifier":
        proba = (np.asarray(estimator.predict_proba(features))
                 if hasattr(estimator, "predict_proba") else None)
        return dict(realized.classification(y, pred, proba, labels=list(estimator.classes_)))
    return dict(realized.regression(y, pred))


def split(frame: pd.DataFrame, *, label: str, columns: list[str], where: str
          ) -> tuple[pd.DataFrame, np.ndarray]:
    """The feature columns (signature order) and the labels of an evaluation frame."""
    if label not in frame.columns:
        raise errors.ModelError(f"{where}: has no label column {label!r}; name the label column "
                                "with --label-column")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise errors.ModelError(f"{where}: lacks the model's input columns {missing}; evaluate on "
                                "data with the columns the model takes")
    if frame[label].isna().any():
        raise errors.ModelError(f"{where}: the label column {label!r} has missing values; drop "
                                "the unlabelled rows")
    return frame[columns], frame[label].to_numpy()


def read_data(path: Path, *, name: str) -> pd.DataFrame:
    files.check_parquet(path, name=name)
    import pandas as pd

    frame = pd.read_parquet(path)
    if len(frame) > MAX_ROWS:
        raise errors.ModelError(f"{name}: has {len(frame)} rows, over the {MAX_ROWS} an "
                                "evaluation frame beside a model may have; evaluate on a sample")
    return frame


def record(*, kind: names.Kind, metrics: dict[str, float], sha: str, rows: int,
           label: str) -> dict[str, Any]:
    return {"data": DATA, "sha256": sha, "rows": rows, "label": label, "kind": kind,
            "metrics": {k: metrics[k] for k in sorted(metrics)}}


def read_record(model_dir: Path, *, rel: str) -> dict[str, Any] | None:
    """evaluation.json of ``model_dir`` checked as data (None when the version has none):
    its shape, and that evaluation.parquet is there with the sha256 it names."""
    path = model_dir / RECORD
    if not path.exists() and not path.is_symlink():
        return None
    where = f"{rel}/{RECORD}"
    try:
        if path.is_symlink() or path.stat().st_size > MAX_RECORD_BYTES:
            raise ValueError("a symbolic link or over 64 KiB")
        doc: Any = json.loads(path.read_text())
        ok = (isinstance(doc, dict) and doc.get("data") == DATA
              and isinstance(doc.get("label"), str) and doc.get("kind") in ("classifier", "regressor")
              and isinstance(doc.get("rows"), int) and isinstance(doc.get("sha256"), str)
              and isinstance(doc.get("metrics"), dict)
              and all(k in names.METRICS and names.kind(k) == doc["kind"]
                      and isinstance(v, int | float) and math.isfinite(v)
                      for k, v in doc["metrics"].items()))
        if not ok:
            raise ValueError("not the shape mlgitops publish writes")
    except (OSError, ValueError) as exc:
        raise errors.ModelError(f"{where}: cannot be read ({exc}); republish with mlgitops "
                                "publish --evaluation") from exc
    data = model_dir / DATA
    if data.is_symlink() or not data.is_file():
        raise errors.ModelError(f"{rel}/{DATA}: missing but {RECORD} names it; republish with "
                                "mlgitops publish --evaluation")
    if sha256(data) != doc["sha256"]:
        raise errors.ModelError(f"{rel}/{DATA}: its sha256 is not the one {RECORD} names; "
                                "republish with mlgitops publish --evaluation (do not edit the "
                                "files by hand)")
    return dict(doc)
