"""Building baselines: the reference profile committed next to a model version.

A `Baseline` (``baseline.json``) holds, per feature and for the prediction, bin edges and
counts (numeric) or categories and counts (categorical), plus a sample of reference values;
live statistics (`stats.live`) are laid on its bins. See the package docstring for the
numeric layout.

Pure: numpy and the standard library only; no I/O, clock or environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

ColumnKind = Literal["numeric", "categorical"]

SCHEMA_VERSION = 1
# Evidently switches drift methods at 1000 reference rows; below it we keep every raw value.
SAMPLE_LIMIT = 1000
# Evidently's `infer_column_type`: integer columns with at most this many distinct values
# are categorical (evidently/core/datasets.py INTEGER_CARDINALITY_LIMIT).
INTEGER_CARDINALITY_LIMIT = 10
# Default quantile bins for references larger than SAMPLE_LIMIT (smaller references keep every
# distinct value as an edge). With per-bin sums the binned Wasserstein distance is exact
# unless the two CDFs cross inside a bin; 50 bins (2% of reference mass each) keep that error
# far below the 0.1 threshold's resolution while a live column stays ~200 numbers.
DEFAULT_BINS = 50

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ColumnBaseline:
    """Reference profile of one feature (or of the prediction)."""

    name: str
    kind: ColumnKind
    edges: tuple[float, ...]
    """Numeric: sorted bin edges (all distinct values when the reference is small or discrete,
    else reference quantiles including min and max); bins below/above are open. () otherwise."""
    counts: tuple[int, ...]
    """Numeric: len(edges)+1 counts of side-right bins ``[e_{i-1}, e_i)``; categorical: one count
    per entry of `categories`."""
    categories: tuple[str, ...]
    count: int
    """Non-missing reference values (the reference size Evidently uses for method choice)."""
    mean: float
    std: float
    """Population standard deviation (ddof=0), as Evidently norms Wasserstein by np.std."""
    sample: tuple[float, ...] | tuple[str, ...]
    """All non-missing reference values when count <= 1000, else 1000 evenly spaced order statistics."""
    missing: int = 0
    """Missing reference values (NaN, None, +-inf), which drift measures ignore like Evidently."""
    sums: tuple[float, ...] = ()
    """Numeric: sum of values per side-right bin (same layout as `counts`)."""
    distinct: int = 0
    """Distinct non-missing reference values."""

    @property
    def exact_edges(self) -> bool:
        """True when the edges are exactly the distinct reference values."""
        return self.kind == "numeric" and len(self.edges) == self.distinct

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "distinct": self.distinct,
            "mean": self.mean,
            "std": self.std,
            "edges": list(self.edges),
            "counts": list(self.counts),
            "sums": list(self.sums),
            "categories": list(self.categories),
            "sample": list(self.sample),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> ColumnBaseline:
        """Parse and validate; raises ValueError naming the bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be a mapping.")
        name = read_field(data, "name", str, where)
        kind = read_field(data, "kind", str, where)
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"{where}.kind must be 'numeric' or 'categorical', not {kind!r}.")
        edges = tuple(float(v) for v in read_list(data, "edges", (int, float), where))
        counts = tuple(int(v) for v in read_list(data, "counts", (int,), where))
        sums = tuple(float(v) for v in read_list(data, "sums", (int, float), where, default=[]))
        categories = tuple(read_list(data, "categories", (str,), where))
        count = read_field(data, "count", int, where)
        missing = read_field(data, "missing", int, where, default=0)
        distinct = read_field(data, "distinct", int, where, default=0)
        mean = float(read_field(data, "mean", (int, float), where))
        std = float(read_field(data, "std", (int, float), where))
        sample: tuple[float, ...] | tuple[str, ...]
        if kind == "numeric":
            sample = tuple(float(v) for v in read_list(data, "sample", (int, float), where))
            if list(edges) != sorted(set(edges)):
                raise ValueError(f"{where}.edges must be strictly increasing.")
            if len(counts) != len(edges) + 1:
                raise ValueError(f"{where}.counts must have len(edges)+1 = {len(edges) + 1} entries.")
            if sums and len(sums) != len(counts):
                raise ValueError(f"{where}.sums must have as many entries as counts.")
            if categories:
                raise ValueError(f"{where}.categories must be empty for a numeric column.")
        else:
            sample = tuple(read_list(data, "sample", (str,), where))
            if edges:
                raise ValueError(f"{where}.edges must be empty for a categorical column.")
            if len(counts) != len(categories):
                raise ValueError(f"{where}.counts must have one entry per category.")
            if len(set(categories)) != len(categories):
                raise ValueError(f"{where}.categories must not repeat a label.")
        if sum(counts) != count:
            raise ValueError(f"{where}.counts must add up to count ({count}).")
        if any(c < 0 for c in counts) or count < 0 or missing < 0:
            raise ValueError(f"{where}.counts, count and missing must not be negative.")
        return cls(
            name=name,
            kind=cast(ColumnKind, kind),
            edges=edges,
            counts=counts,
            categories=categories,
            count=count,
            mean=mean,
            std=std,
            sample=sample,
            missing=missing,
            sums=sums,
            distinct=distinct,
        )


@dataclass(frozen=True)
class Baseline:
    """Reference profile of a model version: its features and its prediction."""

    columns: tuple[ColumnBaseline, ...]
    prediction: ColumnBaseline | None
    row_count: int

    def column(self, name: str) -> ColumnBaseline:
        """The profile of feature `name`; KeyError names the known features otherwise."""
        for col in self.columns:
            if col.name == name:
                return col
        known = ", ".join(c.name for c in self.columns)
        raise KeyError(f"The baseline has no column {name!r}; it has: {known}.")

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in order."""
        return tuple(c.name for c in self.columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping: the content of baseline.json."""
        return {
            "schemaVersion": SCHEMA_VERSION,
            "rowCount": self.row_count,
            "columns": [c.to_dict() for c in self.columns],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Parse baseline.json content; raises ValueError with a sentence naming the bad field."""
        if not isinstance(data, Mapping):
            raise ValueError("The baseline must be a JSON object.")
        version = data.get("schemaVersion")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"baseline.schemaVersion must be {SCHEMA_VERSION}, not {version!r}; "
                "rebuild the baseline with this mlgitops version."
            )
        row_count = read_field(data, "rowCount", int, "baseline")
        raw_columns = data.get("columns")
        if not isinstance(raw_columns, list) or not raw_columns:
            raise ValueError("baseline.columns must be a non-empty list of column profiles.")
        columns = tuple(
            ColumnBaseline.from_dict(c, where=f"baseline.columns[{i}]") for i, c in enumerate(raw_columns)
        )
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise ValueError("baseline.columns must not repeat a column name.")
        raw_pred = data.get("prediction")
        prediction = None if raw_pred is None else ColumnBaseline.from_dict(raw_pred, where="baseline.prediction")
        return cls(columns=columns, prediction=prediction, row_count=row_count)


def infer_kind(values: npt.ArrayLike) -> ColumnKind:
    """Evidently's rule: floats numeric; integers numeric above 10 distinct values; else categorical."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return "numeric"
    if arr.dtype.kind in "iu":
        return "categorical" if len(np.unique(arr)) <= INTEGER_CARDINALITY_LIMIT else "numeric"
    if arr.dtype.kind in "bUSO":
        return "categorical"
    raise ValueError(f"Cannot profile values of dtype {arr.dtype}; convert them to numbers or strings.")


def build_baseline(
    columns: Mapping[str, npt.ArrayLike],
    *,
    predictions: npt.ArrayLike | None,
    kinds: Mapping[str, ColumnKind] | None = None,
    bins: int = DEFAULT_BINS,
) -> Baseline:
    """Profile reference columns (and predictions); kinds are inferred where not given."""
    if not columns:
        raise ValueError("A baseline needs at least one column.")
    if bins < 2:
        raise ValueError("bins must be at least 2.")
    kinds = kinds or {}
    lengths = {len(np.asarray(v)) for v in columns.values()}
    if len(lengths) != 1:
        raise ValueError("All reference columns must have the same number of rows.")
    (row_count,) = lengths
    profiles = tuple(
        _profile(name, np.asarray(values), kind=kinds.get(name), bins=bins) for name, values in columns.items()
    )
    prediction = None
    if predictions is not None:
        pred = np.asarray(predictions)
        if pred.ndim != 1 or len(pred) != row_count:
            raise ValueError("predictions must be one value per reference row.")
        prediction = _profile("prediction", pred, kind=kinds.get("prediction"), bins=bins)
    return Baseline(columns=profiles, prediction=prediction, row_count=row_count)


def _profile(name: str, values: np.ndarray[Any, Any], *, kind: ColumnKind | None, bins: int) -> ColumnBaseline:
    if values.ndim != 1:
        raise ValueError(f"Column {name!r} must be one-dimensional.")
    kind = kind or infer_kind(values)
    if kind == "numeric":
        return _numeric_profile(name, values, bins=bins)
    return _categorical_profile(name, values)


def _numeric_profile(name: str, values: np.ndarray[Any, Any], *, bins: int) -> ColumnBaseline:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Column {name!r} is declared numeric but holds non-numeric values.") from exc
    finite = x[np.isfinite(x)]
    missing = len(x) - len(finite)
    uniq = np.unique(finite)
    if len(finite) <= SAMPLE_LIMIT or len(uniq) <= bins + 1:
        edges = uniq
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
    idx = np.searchsorted(edges, finite, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    sums = np.bincount(idx, weights=finite, minlength=len(edges) + 1)
    return ColumnBaseline(
        name=name,
        kind="numeric",
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        categories=(),
        count=len(finite),
        mean=float(finite.mean()) if len(finite) else 0.0,
        std=float(finite.std()) if len(finite) else 0.0,
        sample=tuple(float(v) for v in _subsample(finite)),
        missing=missing,
        sums=tuple(float(s) for s in sums),
        distinct=len(uniq),
    )


def _categorical_profile(name: str, values: np.ndarray[Any, Any]) -> ColumnBaseline:
    labels, present = to_labels(values)
    kept = labels[present]
    cats, counts = np.unique(kept, return_counts=True)
    return ColumnBaseline(
        name=name,
        kind="categorical",
        edges=(),
        counts=tuple(int(c) for c in counts),
        categories=tuple(str(c) for c in cats),
        count=len(kept),
        mean=0.0,
        std=0.0,
        sample=tuple(str(v) for v in _subsample(kept if len(kept) <= SAMPLE_LIMIT else np.sort(kept))),
        missing=len(labels) - len(kept),
        distinct=len(cats),
    )


def _subsample(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """All values when few, else SAMPLE_LIMIT evenly spaced order statistics (deterministic)."""
    if len(values) <= SAMPLE_LIMIT:
        return values
    ordered = np.sort(values)
    return ordered[np.linspace(0, len(ordered) - 1, SAMPLE_LIMIT).round().astype(np.int64)]


def to_labels(values: npt.ArrayLike) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.bool_]]:
    """String labels of categorical values and a mask of the present (non-missing) ones.

    Integer-valued floats are labelled like integers (``1.0`` -> ``"1"``) so that a column
    read back with NaN (and hence float dtype) keeps its categories.
    """
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if kind == "f":
        present = np.isfinite(arr)
        whole = present & (arr == np.round(arr)) & (np.abs(arr) < 2**53)
        labels = arr.astype(str)
        if whole.any():
            labels = labels.astype(object)
            labels[whole] = arr[whole].astype(np.int64).astype(str)
            labels = labels.astype(str)
        return labels, present
    if kind in "iubUS":
        return arr.astype(str), np.ones(len(arr), dtype=bool)
    labels = arr.astype(str)
    if not ((labels == "None") | (labels == "nan") | (labels == "<NA>")).any():
        return labels, np.ones(len(arr), dtype=bool)
    present = np.fromiter((_is_present(v) for v in arr), dtype=bool, count=len(arr))
    return labels, present


def _is_present(value: object) -> bool:
    """False for None, NaN, +-inf and pandas.NA (recognised by its text, to stay pandas-free)."""
    if isinstance(value, str):
        return True
    if value is None or str(value) == "<NA>":
        return False
    if isinstance(value, (float, np.floating)):
        return math.isfinite(value)
    return True



def read_field(data: Mapping[str, Any], key: str, types: Any, where: str, default: Any = ...) -> Any:
    """``data[key]`` checked against ``types`` (``default`` when absent, if given); ValueError
    naming ``where.key`` otherwise."""
    if key not in data:
        if default is not ...:
            return default
        raise ValueError(f"{where}.{key} is missing.")
    value = data[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ValueError(f"{where}.{key} has the wrong type ({type(value).__name__}).")
    if not isinstance(value, types):
        raise ValueError(f"{where}.{key} has the wrong type ({type(value).__name__}).")
    return value


def read_list(data: Mapping[str, Any], key: str, types: tuple[type, ...], where: str, default: Any = ...) -> list[Any]:
    """A list field whose items are all of ``types`` (see `read_field`)."""
    value = read_field(data, key, list, where, default)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, types):
            kinds = "/".join(t.__name__ for t in types)
            raise ValueError(f"{where}.{key} must hold only {kinds} values.")
    return cast(list[Any], value)
