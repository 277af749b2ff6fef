"""The loaded model behind a fast ``predict(batch)``.

When every signature column is a double and the estimator was fitted on exactly those
columns in that order (or without names), rows go to ``estimator.predict`` as one float64
matrix: building a pandas frame per batch costs more than a linear model's predict. Otherwise
the rows go through a frame in signature order, as MLflow would pass them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.adapters import mlflow_models
from mlgitops.server import schema

Array = npt.NDArray[Any]

_NAMES_WARNING = "X does not have valid feature names"


def configure_sklearn() -> None:
    """Per-thread scikit-learn settings for serving: inputs are validated already (finite, or
    NaN where a column takes missing values: imputers and NaN-aware estimators see them)."""
    import sklearn

    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)


class Predictor:
    """A loaded model with its signature; ``predict`` returns one prediction per row."""

    def __init__(
        self, model: mlflow_models.LoadedModel, *, missing_ok: Sequence[str] = ()
    ) -> None:
        """``missing_ok``: columns whose reference data had missing values (they take null
        and NaN, as the columns the signature marks optional do)."""
        self.model = model
        self.signature = schema.Signature(model.columns, missing_ok=missing_ok)
        fitted = getattr(model.estimator, "feature_names_in_", None)
        self.matrix_path = self.signature.all_floating and (
            fitted is None or [str(n) for n in fitted] == list(self.signature.names)
        )
        if self.matrix_path:
            warnings.filterwarnings("ignore", message=_NAMES_WARNING, category=UserWarning)

    def predict(self, batch: schema.Batch) -> Array:
        """Predictions for ``batch`` (first axis = rows)."""
        if self.matrix_path and batch.matrix is not None:
            out = np.asarray(self.model.estimator.predict(batch.matrix))
        else:
            import pandas as pd

            frame = pd.DataFrame({name: batch.columns[name] for name in self.signature.names})
            out = self.model.predict(frame)
        if out.ndim == 0 or out.shape[0] != batch.rows:
            raise RuntimeError(f"the model returned {out.shape} predictions for {batch.rows} rows")
        return out

    def example_row(self, reference: dict[str, Any] | None = None) -> schema.Batch:
        """One valid row: from ``reference`` (column -> value) where it fits, else zeros/""/False."""
        reference = reference or {}
        columns: dict[str, Any] = {}
        for col in self.signature.columns:
            value = _as_type(reference.get(col.name), col.type)
            columns[col.name] = [_ZERO.get(col.type, "") if value is None else value]
        return self.signature.from_columnar(columns, where="warm-up row")


_ZERO: dict[str, Any] = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}


def _as_type(value: Any, kind: str) -> Any:
    """``value`` (a baseline sample: a number or a category label) as ``kind``, or None."""
    if value is None:
        return None
    try:
        if kind in ("double", "float"):
            return float(value)
        if kind in ("long", "integer"):
            return int(float(value))
        if kind == "boolean":
            return value if isinstance(value, bool) else str(value).lower() in ("true", "1")
    except (TypeError, ValueError):
        return None
    return str(value)


def merge(batches: Sequence[schema.Batch]) -> schema.Batch:
    """One batch of the rows of ``batches`` in order."""
    if len(batches) == 1:
        return batches[0]
    rows = sum(b.rows for b in batches)
    names = batches[0].names
    if all(b.matrix is not None for b in batches):
        matrix = np.concatenate([b.matrix for b in batches if b.matrix is not None])
        return schema.Batch(rows=rows, matrix=matrix, names=names)
    return schema.Batch(
        rows=rows, columns={n: np.concatenate([b.columns[n] for b in batches]) for n in names}
    )


def split(predictions: Array, sizes: Sequence[int]) -> list[Array]:
    """Per-request slices of batched ``predictions``."""
    out = []
    start = 0
    for size in sizes:
        out.append(predictions[start : start + size])
        start += size
    return out
