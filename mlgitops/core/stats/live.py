"""Baseline profiles and mergeable live statistics laid on the baseline's bins.

A `Baseline` is the reference profile committed next to a model version (``baseline.json``).
`LiveStats` are counters on the baseline's bin edges and categories: they merge across
replicas, subtract to give the window since a cursor, and take memory independent of rows.

Numeric layout. A column with edges ``e_0 < … < e_{K-1}`` keeps, for live data, ``2K+1``
"fine" counts: even codes ``2i`` count values strictly between ``e_{i-1}`` and ``e_i``
(open to -inf/+inf at the ends) and odd codes ``2i+1`` count values equal to ``e_i``.
Knowing counts *at* and *between* the edges makes the two-sample K-S statistic exact when
the edges are all distinct reference values (references of <= 1000 rows, where Evidently
applies K-S), and gives exact value counts for discrete columns. Sums per side-right bin
``[e_{i-1}, e_i)`` make the integral of the empirical CDF over each bin exact, which is what
the normed Wasserstein distance needs (references of > 1000 rows).

Pure: numpy and the standard library only; no I/O, clock or environment.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from mlgitops.core import ecdf

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
        name = _field(data, "name", str, where)
        kind = _field(data, "kind", str, where)
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"{where}.kind must be 'numeric' or 'categorical', not {kind!r}.")
        edges = tuple(float(v) for v in _list(data, "edges", (int, float), where))
        counts = tuple(int(v) for v in _list(data, "counts", (int,), where))
        sums = tuple(float(v) for v in _list(data, "sums", (int, float), where, default=[]))
        categories = tuple(_list(data, "categories", (str,), where))
        count = _field(data, "count", int, where)
        missing = _field(data, "missing", int, where, default=0)
        distinct = _field(data, "distinct", int, where, default=0)
        mean = float(_field(data, "mean", (int, float), where))
        std = float(_field(data, "std", (int, float), where))
        sample: tuple[float, ...] | tuple[str, ...]
        if kind == "numeric":
            sample = tuple(float(v) for v in _list(data, "sample", (int, float), where))
            if list(edges) != sorted(set(edges)):
                raise ValueError(f"{where}.edges must be strictly increasing.")
            if len(counts) != len(edges) + 1:
                raise ValueError(f"{where}.counts must have len(edges)+1 = {len(edges) + 1} entries.")
            if sums and len(sums) != len(counts):
                raise ValueError(f"{where}.sums must have as many entries as counts.")
            if categories:
                raise ValueError(f"{where}.categories must be empty for a numeric column.")
        else:
            sample = tuple(_list(data, "sample", (str,), where))
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
        row_count = _field(data, "rowCount", int, "baseline")
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


def _numeric_categories(categories: tuple[str, ...]) -> tuple[FloatArray, IntArray]:
    """Sorted numeric values of the labels and their category indices, if every label is a number
    written the way `to_labels` writes numbers; else empty arrays."""
    values = []
    for label in categories:
        try:
            v = float(label)
        except ValueError:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        if not math.isfinite(v):
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        canon = str(int(v)) if v.is_integer() and abs(v) < 2**53 else str(np.float64(v))
        if canon != label:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        values.append(v)
    order = np.argsort(values, kind="stable")
    return np.asarray(values, dtype=np.float64)[order], order.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Live statistics


class _Codes(dict[str, int]):
    """Category label -> index; any other key reads -1 (so lookups can use ``__getitem__``)."""

    def __missing__(self, key: object) -> int:
        return -1


@dataclass(frozen=True)
class _Slot:
    """Where one column lives in the flat counter arrays."""

    name: str
    kind: ColumnKind
    edges: FloatArray
    categories: npt.NDArray[np.str_]
    count_offset: int
    count_size: int
    """numeric: 2K+1 fine codes + 1 missing; categorical: C categories + other + missing."""
    sum_offset: int
    sum_size: int
    """numeric: K+1 side-right bins; categorical: 0."""
    cat_values: FloatArray
    """categorical with numeric labels: sorted values (numeric inputs skip the string conversion)."""
    cat_index: IntArray
    lookup: _Codes
    """categorical: label -> category index."""


@dataclass(frozen=True)
class ColumnCounts:
    """Live counters of one column, unpacked for drift measures."""

    name: str
    kind: ColumnKind
    counts: IntArray
    """numeric: 2K+1 fine counts (even: between edges, odd: at edge); categorical: per category."""
    sums: FloatArray
    """numeric: sums per side-right bin; categorical: empty."""
    other: int
    """categorical: values outside the baseline's categories; numeric: 0."""
    missing: int
    sumsq: float

    @property
    def count(self) -> int:
        """Non-missing values."""
        return int(self.counts.sum()) + self.other

    @property
    def bin_counts(self) -> IntArray:
        """numeric: counts on side-right bins ``[e_{i-1}, e_i)`` (len(edges)+1 entries)."""
        fine = self.counts
        out = fine[0::2].copy()
        out[1:] += fine[1::2]
        return out


PREDICTION = "prediction"


@dataclass(frozen=True)
class _Plan:
    """Precomputed layout that lets `LiveStats.update` count all numeric features at once."""

    num_slots: npt.NDArray[np.intp]
    num_names: tuple[str, ...]
    edges: FloatArray
    """(numeric features, most edges) each feature's edges, NaN-padded."""
    edge_queries: FloatArray
    """Each row's edges, then the next float above each edge (values below that are at or
    below the edge): what `_numeric_counts` searches among a batch's sorted values."""
    fine_mask: npt.NDArray[np.bool_]
    """(numeric features, 2 * most edges + 1) which fine counts exist."""
    fine_targets: IntArray
    """Where the existing fine counts go in the flat counter array (row-major order)."""
    sum_mask: npt.NDArray[np.bool_]
    sum_targets: IntArray
    missing_codes: IntArray
    other_slots: tuple[int, ...]


def _make_plan(slots: tuple[_Slot, ...], *, has_prediction: bool) -> _Plan:
    features = slots[:-1] if has_prediction else slots
    num = [i for i, s in enumerate(features) if s.kind == "numeric"]
    widest = max((len(slots[i].edges) for i in num), default=0)
    edges = np.full((len(num), widest), np.nan)
    for j, i in enumerate(num):
        edges[j, : len(slots[i].edges)] = slots[i].edges
    sizes = np.array([len(slots[i].edges) for i in num], dtype=np.int64).reshape(-1, 1)
    fine_mask = np.arange(2 * widest + 1)[None, :] < 2 * sizes + 1
    sum_mask = np.arange(widest + 1)[None, :] < sizes + 1
    count_offsets = np.array([slots[i].count_offset for i in num], dtype=np.int64).reshape(-1, 1)
    sum_offsets = np.array([slots[i].sum_offset for i in num], dtype=np.int64).reshape(-1, 1)
    return _Plan(
        num_slots=np.asarray(num, dtype=np.intp),
        num_names=tuple(slots[i].name for i in num),
        edges=edges,
        edge_queries=np.concatenate([edges, np.nextafter(edges, np.inf)], axis=1),
        fine_mask=fine_mask,
        fine_targets=(count_offsets + np.arange(2 * widest + 1)[None, :])[fine_mask],
        sum_mask=sum_mask,
        sum_targets=(sum_offsets + np.arange(widest + 1)[None, :])[sum_mask],
        missing_codes=np.array([slots[i].count_offset + slots[i].count_size - 1 for i in num], dtype=np.int64),
        other_slots=tuple(i for i, s in enumerate(features) if s.kind != "numeric"),
    )


class LiveStats:
    """Mergeable, subtractable counters on a baseline's edges and categories."""

    __slots__ = ("_counts", "_fingerprint", "_has_pred", "_plan", "_rows", "_slots", "_sums", "_sumsq")

    def __init__(
        self,
        *,
        slots: tuple[_Slot, ...],
        has_prediction: bool,
        plan: _Plan | None,
        fingerprint: str,
        counts: IntArray,
        sums: FloatArray,
        sumsq: FloatArray,
        rows: int,
    ) -> None:
        self._slots = slots
        self._has_pred = has_prediction
        self._plan = plan
        self._fingerprint = fingerprint
        self._counts = counts
        self._sums = sums
        self._sumsq = sumsq
        self._rows = rows

    @classmethod
    def empty(cls, baseline: Baseline) -> LiveStats:
        """Zero counters laid on `baseline`."""
        slots = _layout(baseline)
        n_counts = sum(s.count_size for s in slots)
        n_sums = sum(s.sum_size for s in slots)
        return cls(
            slots=slots,
            has_prediction=baseline.prediction is not None,
            plan=_make_plan(slots, has_prediction=baseline.prediction is not None),
            fingerprint=layout_fingerprint(baseline),
            counts=np.zeros(n_counts, dtype=np.int64),
            sums=np.zeros(n_sums, dtype=np.float64),
            sumsq=np.zeros(len(slots), dtype=np.float64),
            rows=0,
        )

    @property
    def rows(self) -> int:
        """Rows seen."""
        return self._rows

    @property
    def fingerprint(self) -> str:
        """Digest of the baseline layout these counters are laid on."""
        return self._fingerprint

    def update(self, columns: Mapping[str, npt.ArrayLike], predictions: npt.ArrayLike | None) -> None:
        """Count one batch of rows (features by name, and the model's predictions, if given).

        Numeric features are counted together on a (columns x rows) matrix (`_numeric_counts`);
        categories and the prediction by a code per value and one bincount. Nothing changes
        unless the whole batch is valid.
        """
        plan = self._plan
        if plan is None:
            raise ValueError("These live statistics were read without their baseline; pass baseline= to from_dict.")
        try:
            first = next(iter(columns.values()))
        except StopIteration:
            raise ValueError("The batch has no columns.") from None
        rows = len(np.asarray(first))
        codes: list[IntArray] = []
        sum_codes: list[IntArray] = []
        sum_weights: list[FloatArray] = []
        if len(plan.num_slots):
            try:
                m = np.array([columns[name] for name in plan.num_names], dtype=np.float64)
            except KeyError as exc:
                raise ValueError(f"The batch lacks feature {exc.args[0]!r}.") from None
            except ValueError as exc:
                raise ValueError(f"Every feature must hold one number per row ({rows}): {exc}") from None
            if m.shape != (len(plan.num_names), rows):
                raise ValueError(f"Every feature must hold one value per row ({rows}).")
            numeric = self._numeric_counts(m)
        for slot_index in plan.other_slots:
            codes.append(self._slot_codes(slot_index, self._column(columns, slot_index, rows), sum_codes, sum_weights))
        if self._has_pred and predictions is not None:
            pred = np.asarray(predictions)
            if pred.shape != (rows,):
                raise ValueError(f"predictions must hold one value per row ({rows}), not shape {pred.shape}.")
            codes.append(self._slot_codes(len(self._slots) - 1, pred, sum_codes, sum_weights))
        if len(plan.num_slots):
            fine, missing, sums, sumsq = numeric
            self._counts[plan.fine_targets] += fine
            self._counts[plan.missing_codes] += missing
            self._sums[plan.sum_targets] += sums
            self._sumsq[plan.num_slots] += sumsq
        if codes:
            self._counts += np.bincount(np.concatenate(codes), minlength=len(self._counts))
        if sum_codes:
            self._sums += np.bincount(
                np.concatenate(sum_codes), weights=np.concatenate(sum_weights), minlength=len(self._sums)
            )
        self._rows += rows

    def _numeric_counts(self, m: FloatArray) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
        """Counters of a (numeric features x rows) block, in the plan's target order.

        Each row is sorted once; every edge is then found among the sorted values
        (`ecdf.count_below`, all rows at once): the values below an edge and at or below it
        give the counts between and at the edges, and each bin's sum is the sum of a stretch
        of sorted values (`ecdf.segment_sums`). Returns fine counts, missing counts, bin sums
        and sums of squares.
        """
        plan = self._plan
        assert plan is not None
        ordered, present = ecdf.sort_rows(m, in_place=True)
        k, widest = plan.edges.shape
        found = ecdf.count_below(ordered, present, plan.edge_queries)
        below, at_or_below = found[:, :widest], found[:, widest:]
        upto = np.concatenate([below, present[:, None]], axis=1)  # padding edges count all values
        before = np.concatenate([np.zeros((k, 1), dtype=np.int64), at_or_below], axis=1)
        fine = np.empty((k, 2 * widest + 1), dtype=np.int64)
        fine[:, 0::2] = upto - before
        fine[:, 1::2] = at_or_below - below
        width = ordered.shape[1]
        starts = np.concatenate([np.zeros((k, 1), dtype=np.int64), below, present[:, None]], axis=1)
        starts += (np.arange(k, dtype=np.int64) * width)[:, None]
        sums = ecdf.segment_sums(ordered.ravel(), starts.ravel()).reshape(k, widest + 2)[:, :-1]
        finite = np.where(np.isnan(ordered), 0.0, ordered) if (present < width).any() else ordered
        sumsq = np.einsum("ij,ij->i", finite, finite)
        return fine[plan.fine_mask], width - present, sums[plan.sum_mask], sumsq

    def _column(self, columns: Mapping[str, npt.ArrayLike], slot_index: int, rows: int) -> np.ndarray[Any, Any]:
        name = self._slots[slot_index].name
        try:
            values = np.asarray(columns[name])
        except KeyError:
            raise ValueError(f"The batch lacks feature {name!r}.") from None
        if values.shape != (rows,):
            raise ValueError(f"Feature {name!r} must hold one value per row ({rows}), not shape {values.shape}.")
        return values

    def _slot_codes(
        self, slot_index: int, values: np.ndarray[Any, Any], sum_codes: list[IntArray], sum_weights: list[FloatArray]
    ) -> IntArray:
        """Counter codes of one column (numeric prediction, or categorical)."""
        slot = self._slots[slot_index]
        missing_code = slot.count_offset + slot.count_size - 1
        if slot.kind == "numeric":
            x = np.asarray(values, dtype=np.float64)
            finite = np.isfinite(x)
            if not finite.all():
                x = np.where(finite, x, 0.0)
            left = slot.edges.searchsorted(x)
            padded = np.append(slot.edges, np.nan)
            at_edge = padded[left] == x
            sum_codes.append(left + at_edge + slot.sum_offset)
            sum_weights.append(x)
            self._sumsq[slot_index] += float(np.dot(x, x))
            return np.where(finite, 2 * left + at_edge + slot.count_offset, missing_code)
        ncat = len(slot.categories)
        if ncat and len(slot.cat_values) == ncat and values.dtype.kind in "iuf":
            x = values.astype(np.float64, copy=False)
            pos = np.minimum(slot.cat_values.searchsorted(x), ncat - 1)
            code = np.where(slot.cat_values[pos] == x, slot.cat_index[pos], ncat)
            return np.where(np.isfinite(x), code + slot.count_offset, missing_code)
        if values.dtype.kind in "OU":
            # strings: a dict lookup per value (C-level map, no Python frame per value) beats
            # numpy's string machinery and sorting
            lookup = slot.lookup
            code = np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values))
            unmatched = code < 0
            if not unmatched.any():
                return code + slot.count_offset
            labels, present = to_labels(values[unmatched])
            rest = np.fromiter((lookup.get(v, ncat) for v in labels.tolist()), dtype=np.int64, count=len(labels))
            code[unmatched] = np.where(present, rest, -1)
            return np.where(code >= 0, code + slot.count_offset, missing_code)
        labels, present = to_labels(values)
        if ncat:
            pos = np.minimum(slot.categories.searchsorted(labels), ncat - 1)
            code = np.where(slot.categories[pos] == labels, pos, ncat)
        else:
            code = np.zeros(len(labels), dtype=np.int64)
        return np.where(present, code + slot.count_offset, missing_code)

    def _check(self, other: LiveStats) -> None:
        if other._fingerprint != self._fingerprint:
            raise ValueError("Live statistics laid on different baselines cannot be combined.")

    def merge(self, other: LiveStats) -> LiveStats:
        """Sum of two streams (e.g. across workers or replicas)."""
        self._check(other)
        return self._derive(
            self._counts + other._counts, self._sums + other._sums, self._sumsq + other._sumsq, self._rows + other._rows
        )

    def since(self, earlier: LiveStats) -> LiveStats:
        """The window between an earlier snapshot of the same stream and now."""
        self._check(earlier)
        counts = self._counts - earlier._counts
        if earlier._rows > self._rows or (counts < 0).any():
            raise ValueError("`earlier` is not an earlier snapshot of this stream (counters would go negative).")
        return self._derive(counts, self._sums - earlier._sums, self._sumsq - earlier._sumsq, self._rows - earlier._rows)

    def copy(self) -> LiveStats:
        """An independent snapshot (e.g. a window cursor)."""
        return self._derive(self._counts.copy(), self._sums.copy(), self._sumsq.copy(), self._rows)

    def _derive(self, counts: IntArray, sums: FloatArray, sumsq: FloatArray, rows: int) -> LiveStats:
        return LiveStats(
            slots=self._slots,
            has_prediction=self._has_pred,
            plan=self._plan,
            fingerprint=self._fingerprint,
            counts=counts,
            sums=sums,
            sumsq=sumsq,
            rows=rows,
        )

    def column(self, name: str) -> ColumnCounts:
        """Counters of one feature (or ``"prediction"``)."""
        for i, slot in enumerate(self._features):
            if slot.name == name:
                return self._unpack(i)
        raise KeyError(f"The live statistics have no column {name!r}.")

    def prediction(self) -> ColumnCounts | None:
        """Counters of the prediction, if the baseline has one."""
        return self._unpack(len(self._slots) - 1) if self._has_pred else None

    @property
    def _features(self) -> tuple[_Slot, ...]:
        return self._slots[:-1] if self._has_pred else self._slots

    def _unpack(self, i: int) -> ColumnCounts:
        slot = self._slots[i]
        seg = self._counts[slot.count_offset : slot.count_offset + slot.count_size]
        if slot.kind == "numeric":
            return ColumnCounts(
                name=slot.name,
                kind="numeric",
                counts=seg[:-1],
                sums=self._sums[slot.sum_offset : slot.sum_offset + slot.sum_size],
                other=0,
                missing=int(seg[-1]),
                sumsq=float(self._sumsq[i]),
            )
        return ColumnCounts(
            name=slot.name,
            kind="categorical",
            counts=seg[:-2],
            sums=np.zeros(0, dtype=np.float64),
            other=int(seg[-2]),
            missing=int(seg[-1]),
            sumsq=0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-ready mapping (flat lists of numbers plus the layout digest)."""
        return {
            "schemaVersion": SCHEMA_VERSION,
            "layout": self._fingerprint,
            "rows": self._rows,
            "columns": [s.name for s in self._features],
            "prediction": self._has_pred,
            "kinds": [s.kind for s in self._slots],
            "sizes": [s.count_size for s in self._slots],
            "counts": self._counts.tolist(),
            "sums": self._sums.tolist(),
            "sumsq": self._sumsq.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, baseline: Baseline | None = None) -> LiveStats:
        """Parse `to_dict` output; pass `baseline` to keep updating (and to check the layout)."""
        if not isinstance(data, Mapping):
            raise ValueError("Live statistics must be a JSON object.")
        if data.get("schemaVersion") != SCHEMA_VERSION:
            raise ValueError(f"live.schemaVersion must be {SCHEMA_VERSION}.")
        layout = _field(data, "layout", str, "live")
        rows = _field(data, "rows", int, "live")
        names = _list(data, "columns", (str,), "live")
        has_pred = _field(data, "prediction", bool, "live")
        kinds = _list(data, "kinds", (str,), "live")
        sizes = _list(data, "sizes", (int,), "live")
        counts = np.asarray(_list(data, "counts", (int,), "live"), dtype=np.int64)
        sums = np.asarray(_list(data, "sums", (int, float), "live"), dtype=np.float64)
        sumsq = np.asarray(_list(data, "sumsq", (int, float), "live"), dtype=np.float64)
        if baseline is not None:
            template = cls.empty(baseline)
            if template._fingerprint != layout:
                raise ValueError("live.layout does not match the baseline; these statistics belong to another version.")
            if template._counts.shape != counts.shape or template._sums.shape != sums.shape:
                raise ValueError("live.counts or live.sums have the wrong length for the baseline.")
            slots = template._slots
            plan = template._plan
        else:
            plan = None
            slots = _layout_from_sizes(names + ([PREDICTION] if has_pred else []), kinds, sizes, len(sums))
        if sum(s.count_size for s in slots) != len(counts):
            raise ValueError("live.counts does not match live.sizes.")
        if len(sumsq) != len(slots):
            raise ValueError("live.sumsq must have one entry per column.")
        if (counts < 0).any() or rows < 0:
            raise ValueError("live.counts and live.rows must not be negative.")
        return cls(
            slots=slots,
            has_prediction=has_pred,
            plan=plan,
            fingerprint=layout,
            counts=counts,
            sums=sums,
            sumsq=sumsq,
            rows=rows,
        )

    def nbytes(self) -> int:
        """Bytes held by the counters (independent of rows)."""
        return int(self._counts.nbytes + self._sums.nbytes + self._sumsq.nbytes)


def _layout(baseline: Baseline) -> tuple[_Slot, ...]:
    cols = list(baseline.columns)
    if baseline.prediction is not None:
        cols.append(baseline.prediction)
    slots = []
    c_off = s_off = 0
    for col in cols:
        if col.kind == "numeric":
            k = len(col.edges)
            c_size, s_size = 2 * k + 2, k + 1
        else:
            c_size, s_size = len(col.categories) + 2, 0
        cat_values, cat_index = _numeric_categories(col.categories)
        slots.append(
            _Slot(
                name=col.name,
                kind=col.kind,
                edges=np.asarray(col.edges, dtype=np.float64),
                categories=np.asarray(col.categories, dtype=str),
                count_offset=c_off,
                count_size=c_size,
                sum_offset=s_off,
                sum_size=s_size,
                cat_values=cat_values,
                cat_index=cat_index,
                lookup=_Codes({label: i for i, label in enumerate(col.categories)}),
            )
        )
        c_off += c_size
        s_off += s_size
    return tuple(slots)


def _layout_from_sizes(names: list[str], kinds: list[str], sizes: list[int], n_sums: int) -> tuple[_Slot, ...]:
    """Slots without edges/categories: enough to merge, subtract and unpack, not to update."""
    if not len(names) == len(kinds) == len(sizes):
        raise ValueError("live.columns, live.kinds and live.sizes must have matching lengths.")
    slots = []
    c_off = s_off = 0
    for name, kind, size in zip(names, kinds, sizes, strict=True):
        if kind not in ("numeric", "categorical") or size < 2 or (kind == "numeric" and size % 2):
            raise ValueError(f"live.kinds/live.sizes are invalid for column {name!r}.")
        s_size = size // 2 if kind == "numeric" else 0
        slots.append(
            _Slot(
                name=name,
                kind=cast(ColumnKind, kind),
                edges=np.zeros(0, dtype=np.float64),
                categories=np.zeros(0, dtype=str),
                count_offset=c_off,
                count_size=size,
                sum_offset=s_off,
                sum_size=s_size,
                cat_values=np.zeros(0),
                cat_index=np.zeros(0, dtype=np.int64),
                lookup=_Codes(),
            )
        )
        c_off += size
        s_off += s_size
    if s_off != n_sums:
        raise ValueError("live.sums does not match live.sizes.")
    return tuple(slots)


def layout_fingerprint(baseline: Baseline) -> str:
    """Digest of the bins and categories live statistics are laid on."""
    h = hashlib.sha256()
    cols = list(baseline.columns) + ([baseline.prediction] if baseline.prediction is not None else [])
    for col in cols:
        h.update(col.name.encode())
        h.update(col.kind.encode())
        h.update(np.asarray(col.edges, dtype=np.float64).tobytes())
        h.update("\x00".join(col.categories).encode())
        h.update(b"\x01")
    h.update(b"p" if baseline.prediction is not None else b"-")
    return h.hexdigest()[:16]


def _field(data: Mapping[str, Any], key: str, types: Any, where: str, default: Any = ...) -> Any:
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


def _list(data: Mapping[str, Any], key: str, types: tuple[type, ...], where: str, default: Any = ...) -> list[Any]:
    value = _field(data, key, list, where, default)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, types):
            kinds = "/".join(t.__name__ for t in types)
            raise ValueError(f"{where}.{key} must hold only {kinds} values.")
    return cast(list[Any], value)
