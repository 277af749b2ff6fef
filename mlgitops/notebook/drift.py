"""Drift between two data frames, for notebooks: ``mlgitops.drift.compare(reference, current)``.

Adapts pandas frames to the pure core (`mlgitops.core.drift`), which mirrors the defaults of
Evidently's DataDriftPreset: per-column ``drifted``, ``method``, ``score``, ``threshold`` and the
dataset-level ``drifted`` and ``share``.

Column kinds follow Evidently's inference, applied to the reference frame: floats are numeric,
integers are numeric above 10 distinct values, booleans, strings and categoricals are
categorical. Datetime and other columns are skipped (Evidently's preset skips them too).

Numeric columns are read as they are stored (no copy of the frames); with a reference of more
than 1000 rows each is scored on its own from two float32 sorts (`core.drift.compare_columns`):
verdicts exactly Evidently's, Wasserstein scores within 1e-6 of scipy's (see
`mlgitops.core.drift.quantiles`). Large windows use the machine's cores: from `PARALLEL_VALUES`
rows on, the numeric columns are split into groups compared in threads (NumPy's sorts and scans
release the interpreter lock), while the categorical columns are counted; the result is the
same, column for column.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from mlgitops.core import drift as core_drift
from mlgitops.core import stats
from mlgitops.core.drift import ColumnDrift, DriftReport
from mlgitops.core.stats import Baseline, ColumnKind

__all__ = [
    "ColumnDrift",
    "DriftReport",
    "DriftResult",
    "build_baseline",
    "column_kinds",
    "compare",
    "to_frame",
]

DriftResult = DriftReport
"""The result of `compare` (an alias of `mlgitops.core.drift.DriftReport`)."""

PARALLEL_VALUES = 20_000
"""Current rows from which `compare` splits the numeric columns over threads."""
MAX_THREADS = 4


def compare(
    reference_frame: pd.DataFrame,
    current_frame: pd.DataFrame,
    *,
    share: float = 0.5,
    columns: Sequence[str] | None = None,
) -> DriftReport:
    """Per-column and dataset drift of `current_frame` against `reference_frame`.

    Numeric columns are compared by `core.drift.compare_columns` (Wasserstein scores within
    1e-6 of scipy's, verdicts exact); string columns from their label counts
    (`core.drift.compare_counts`); other categories as the rank of their label among both
    frames' labels.
    """
    names = _shared_columns(reference_frame, current_frame, columns)
    kinds = _kinds(reference_frame, names)
    if not kinds:
        raise ValueError("No numeric or categorical columns to compare; pass columns= to choose some.")
    order = list(kinds)
    by_name: dict[str, ColumnDrift] = {}
    numeric = [n for n in order if kinds[n] == "numeric"]
    groups = _groups(len(numeric), len(current_frame))
    pool = ThreadPoolExecutor(len(groups) - 1) if len(groups) > 1 else None
    try:
        pending: list[Future[list[ColumnDrift]]] = []
        first: list[ColumnDrift] = []
        if numeric:  # the columns as float arrays (views where stored so); groups after the first in threads
            ref = [column_values(reference_frame[n], "numeric") for n in numeric]
            cur = [column_values(current_frame[n], "numeric") for n in numeric]
            if pool is not None:
                pending = [pool.submit(_compare_rows, numeric[a:b], ref[a:b], cur[a:b]) for a, b in groups[1:]]
            end = groups[0][1]
            first = _compare_rows(numeric[:end], ref[:end], cur[:end])
        categorical = [n for n in order if kinds[n] == "categorical"]
        by_name.update(_compare_categorical(reference_frame, current_frame, categorical))
        by_name.update(zip(numeric, [*first, *(d for f in pending for d in f.result())], strict=True))
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    columns_drift = tuple(by_name[n] for n in order)
    report = core_drift.dataset_verdict(
        columns_drift, prediction=None, share=share, rows=len(current_frame), reference_rows=len(reference_frame)
    )
    return report


def _compare_categorical(
    reference_frame: pd.DataFrame, current_frame: pd.DataFrame, categorical: list[str]
) -> dict[str, ColumnDrift]:
    """Drift of the categorical columns: string columns from their label counts, others from
    the rank of their label among both frames' labels."""
    by_name: dict[str, ColumnDrift] = {}
    counted = {n: _label_counts(reference_frame[n], current_frame[n]) for n in categorical}
    strings = {n: pair for n, pair in counted.items() if pair is not None}
    if strings:  # counts per label (string columns), one row per column, zero padded
        width = max(len(r) for r, _ in strings.values())
        ref_counts, cur_counts = np.zeros((len(strings), width)), np.zeros((len(strings), width))
        for i, (ref_row, cur_row) in enumerate(strings.values()):
            ref_counts[i, : len(ref_row)], cur_counts[i, : len(cur_row)] = ref_row, cur_row
        found = core_drift.compare_counts(list(strings), ["categorical"] * len(strings), ref_counts, cur_counts)
        by_name.update(zip(strings, found, strict=True))
    others = [n for n in categorical if counted[n] is None]
    if others:  # label ranks, one row per column
        codes = [_category_codes(reference_frame[n], current_frame[n]) for n in others]
        found = core_drift.compare_matrices(
            others,
            ["categorical"] * len(others),
            np.array([r for r, _ in codes], dtype=np.float64).reshape(len(codes), -1),
            np.array([c for _, c in codes], dtype=np.float64).reshape(len(codes), -1),
            overwrite_current=True,
        )
        by_name.update(zip(others, found, strict=True))
    return by_name


def _groups(columns: int, rows: int) -> list[tuple[int, int]]:
    """Column ranges compared in parallel: one per usable core for a large window, else one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    count = max(1, min(cores, MAX_THREADS, columns)) if rows >= PARALLEL_VALUES else 1
    bounds = np.linspace(0, columns, count + 1).round().astype(int).tolist()
    return list(itertools.pairwise(bounds))


def _compare_rows(
    names: list[str], ref: list[np.ndarray[Any, Any]], cur: list[np.ndarray[Any, Any]]
) -> list[ColumnDrift]:
    return core_drift.compare_columns(names, ["numeric"] * len(names), ref, cur)


def _label_counts(
    reference: pd.Series[Any], current: pd.Series[Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """Reference and current counts of each label of a string column, labels in ascending
    order (`stats.to_labels`, missing values left out); None for other columns.

    One `pd.factorize` over both sides and a bincount of its codes: exact counts, no sort of
    the values (strings are equal exactly where their labels are). Columns holding anything
    but strings and missing values (None, NaN, pandas.NA) go the way of `_category_codes`."""
    ref_values = column_values(reference, "categorical")
    cur_values = column_values(current, "categorical")
    both = np.concatenate([ref_values, cur_values])
    if both.dtype != object:
        return None
    codes, uniques = pd.factorize(both, use_na_sentinel=True)
    if not all(isinstance(u, str) for u in uniques):
        return None
    dropped = codes < 0  # factorize's missing values must be missing labels too (not NaT)
    if dropped.any() and stats.to_labels(both[dropped])[1].any():
        return None
    labels, present = stats.to_labels(np.asarray(uniques, dtype=object))
    _, rank = np.unique(labels[present], return_inverse=True)
    keys = int(rank.max()) + 1 if len(rank) else 0
    split = len(ref_values)
    slots = len(uniques) + 1  # slot 0: missing (code -1)
    per_value = (
        np.bincount(codes[:split] + 1, minlength=slots)[1:],
        np.bincount(codes[split:] + 1, minlength=slots)[1:],
    )
    key = np.asarray(rank, dtype=np.int64).reshape(-1)
    ref_counts, cur_counts = (
        np.bincount(key, weights=side[present].astype(np.float64), minlength=keys) for side in per_value
    )
    return ref_counts, cur_counts


def _category_codes(reference: pd.Series[Any], current: pd.Series[Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Both sides of a non-string categorical column as the rank of each value's label
    (`stats.to_labels`) among all labels, NaN where missing (`core.drift.encode`)."""
    return core_drift.encode(
        str(reference.name),
        column_values(reference, "categorical"),
        column_values(current, "categorical"),
        kind="categorical",
    )


def build_baseline(
    reference_frame: pd.DataFrame,
    *,
    predictions: Sequence[Any] | np.ndarray[Any, Any] | pd.Series[Any] | None = None,
    bins: int = stats.DEFAULT_BINS,
) -> Baseline:
    """The baseline profile (content of baseline.json) of a reference frame and its predictions."""
    kinds = column_kinds(reference_frame)
    if not kinds:
        raise ValueError("The reference frame has no numeric or categorical columns to profile.")
    columns = {name: column_values(reference_frame[name], kinds[name]) for name in kinds}
    preds = None if predictions is None else np.asarray(predictions)
    return stats.build_baseline(columns, predictions=preds, kinds=kinds, bins=bins)


def column_kinds(frame: pd.DataFrame) -> dict[str, ColumnKind]:
    """Evidently's kind inference per column; unsupported columns (datetime, mixed) are left out."""
    return _kinds(frame, list(frame.columns))


def _kinds(frame: pd.DataFrame, names: Sequence[Any]) -> dict[str, ColumnKind]:
    """`column_kinds` of the named columns, read in place (selecting them would copy the frame)."""
    kinds: dict[str, ColumnKind] = {}
    for name in names:
        kind = _kind(frame[name])
        if kind is not None:
            kinds[str(name)] = kind
    return kinds


def _kind(series: pd.Series[Any]) -> ColumnKind | None:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_float_dtype(dtype):
        return "numeric"
    if pd.api.types.is_integer_dtype(dtype):
        return "categorical" if series.nunique() <= stats.INTEGER_CARDINALITY_LIMIT else "numeric"
    if pd.api.types.is_string_dtype(dtype):
        present = series.dropna()
        if len(present) and all(isinstance(v, str) for v in (present.iloc[0], present.iloc[-1])):
            return "categorical"
    return None


def column_values(series: pd.Series[Any], kind: ColumnKind) -> np.ndarray[Any, Any]:
    """A column as a numpy array the core understands (NaN for missing numbers)."""
    if kind == "numeric":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.astype(object).to_numpy()
    return series.to_numpy()


def to_frame(report: DriftReport) -> pd.DataFrame:
    """One row per column (prediction last): column, kind, method, score, threshold, drifted."""
    rows = [*report.columns, *([report.prediction] if report.prediction is not None else [])]
    return pd.DataFrame(
        [
            {
                "column": c.column,
                "kind": c.kind,
                "method": c.method,
                "score": c.score,
                "threshold": c.threshold,
                "drifted": c.drifted,
            }
            for c in rows
        ],
        columns=["column", "kind", "method", "score", "threshold", "drifted"],
    )


def _shared_columns(
    reference_frame: pd.DataFrame, current_frame: pd.DataFrame, columns: Sequence[str] | None
) -> list[str]:
    names = [str(c) for c in (reference_frame.columns if columns is None else columns)]
    if columns is not None:
        lacking_ref = [n for n in names if n not in reference_frame.columns]
        if lacking_ref:
            raise ValueError(f"reference frame lacks columns {lacking_ref}; pass columns= that both frames have.")
    lacking = [n for n in names if n not in current_frame.columns]
    if lacking:
        raise ValueError(f"current frame lacks columns {lacking}; pass columns= to compare a subset.")
    return names


def report_dict(report: DriftReport) -> Mapping[str, Any]:
    """JSON-ready mapping of a report (same as ``report.to_dict()``)."""
    return report.to_dict()
