"""Missing strings as the model was fitted: NaN, not None, where its reference data wrote NaN.

mlgitops decodes a missing value of a string column (JSON ``null``, an empty CSV cell) as
``None``, and Parquet gives ``None`` back for a missing string whatever was written. Scikit-learn
tells the two apart: a ``OneHotEncoder`` fitted on a column whose missing values were NaN (what
``pandas.read_csv`` and ``frame.loc[mask, col] = np.nan`` give) has a NaN category and takes a
``None`` for an unknown category, so it would answer a served row differently from the same row
in the data scientist's notebook.

`publish` records, in the model directory's ``mlgitops.json`` (inside the digest), the string
columns whose missing values the reference data wrote as NaN (`nan_columns`); every load of the
model (`mlflow_models.load`: the servers, the sandbox of the hook, the gate and the performance
monitor) wraps the estimator so that those columns get NaN for a missing value (`AsFitted`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgitops.core import layout

if TYPE_CHECKING:
    import pandas as pd

#: The key of ``mlgitops.json`` listing the columns.
KEY = "missingStringsAsNaN"
#: Methods of an estimator that take rows.
_TAKE_ROWS = frozenset({"predict", "predict_proba", "predict_log_proba", "decision_function",
                        "score", "transform"})
_MAX_INFO_BYTES = 1024 * 1024


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def nan_columns(frame: pd.DataFrame) -> list[str]:
    """The non-numeric columns of ``frame`` with missing values, every one of them NaN."""
    import pandas as pd

    out = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column.dtype) or not column.isna().any():
            continue
        missing = column[column.isna()].tolist()
        if all(_is_nan(v) for v in missing):
            out.append(str(name))
    return out


def read(model_dir: Path) -> tuple[str, ...]:
    """The columns ``model_dir``'s ``mlgitops.json`` lists (none when it lists none, or when
    the file is absent or not what publish writes)."""
    path = model_dir / layout.PUBLISH_INFO
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_INFO_BYTES:
            return ()
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return ()
    found = doc.get(KEY) if isinstance(doc, dict) else None
    if not isinstance(found, list) or not all(isinstance(c, str) for c in found):
        return ()
    return tuple(found)


def as_fitted(frame: Any, columns: Sequence[str]) -> Any:
    """``frame`` with NaN for every missing value of ``columns`` (other inputs as they are)."""
    import numpy as np
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return frame
    present = [c for c in columns if c in frame.columns and frame[c].isna().any()]
    if not present:
        return frame
    out = frame.copy()
    for c in present:
        out[c] = out[c].astype(object).where(out[c].notna(), np.nan)
    return out


class AsFitted:
    """``estimator`` whose row-taking methods get NaN for the missing values of ``columns``;
    everything else (``classes_``, ``feature_names_in_``…) is the estimator's own."""

    def __init__(self, estimator: Any, columns: Sequence[str]) -> None:
        self.estimator = estimator
        self.columns = tuple(columns)

    def __getattr__(self, name: str) -> Any:
        if name in ("estimator", "columns"):  # not set yet (a copy being built)
            raise AttributeError(name)
        found = getattr(self.estimator, name)
        if name not in _TAKE_ROWS or not callable(found):
            return found
        columns = self.columns

        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            return found(as_fitted(x, columns), *args, **kwargs)

        return call


def wrap(estimator: Any, columns: Sequence[str]) -> Any:
    """``estimator`` as `AsFitted` when ``columns`` is not empty, else itself."""
    return AsFitted(estimator, columns) if columns else estimator
