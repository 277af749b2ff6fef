"""Per-column drift measures and dataset verdicts, mirroring Evidently 0.7's DataDriftPreset.

Method choice (evidently/legacy/calculations/stattests/registry.py `_get_default_stattest`),
made on the non-missing **reference** size n and the distinct values u of reference ∪ current:

| reference      | numeric                         | categorical               |
|----------------|---------------------------------|---------------------------|
| n <= 1000      | u <= 5: chi-square (z if u <= 2); else K-S p <= 0.05 | chi-square p < 0.05 (z-test if u <= 2) |
| n > 1000       | u <= 5: Jensen-Shannon; else normed Wasserstein >= 0.1 | Jensen-Shannon >= 0.1 |

A dataset drifts when the share of drifted features is >= `share` (0.5). Missing values (NaN,
None, +-inf) are dropped first, as Evidently does.

Two paths compute the same verdicts:
- `compare_arrays` (and `compare_matrices`, which `mlgitops.drift.compare` calls, with
  `compare_counts` for string columns) works on raw values and reproduces Evidently's numbers
  (scipy's to ~1e-12): all columns at once, from one sort per matrix (`ecdf`, `counts`). `column_drift_exact` is the same computation one column
  at a time, kept as the plain reference (and for method overrides).
- `compare_stats` works on a `Baseline` and `LiveStats` only (cost independent of rows): K-S,
  chi-square, z and Jensen-Shannon on category/value counts are exact; the Wasserstein distance
  is exact unless the two CDFs cross inside a bin (see `stats.DEFAULT_BINS`).

Pure: numpy, plus scipy for the Kolmogorov-Smirnov and chi-square distributions (exact two-sample
K-S probabilities are a lattice-path computation scipy already implements; copying it is not
worth the risk of disagreeing with Evidently).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special as sp_special
from scipy import stats as sp_stats

from mlgitops.core import counts, ecdf, stats
from mlgitops.core.stats import ColumnKind

SMALL_REFERENCE = 1000
"""Evidently uses p-value tests up to this many reference values, distances above."""
FEW_VALUES = 5
"""Numeric columns with at most this many distinct values are tested like categories."""
KS_EXACT_MAX_N = 10000
"""scipy's ks_2samp computes exact p-values up to this sample size, asymptotic ones above."""

THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
}
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
METHODS = frozenset(THRESHOLDS)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ColumnDrift:
    """Drift verdict of one column. p-value methods drift below, distances at or above threshold."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    kind: ColumnKind


@dataclass(frozen=True)
class DriftReport:
    """Per-column verdicts and the dataset verdict (share of drifted features >= share_threshold)."""

    columns: tuple[ColumnDrift, ...]
    prediction: ColumnDrift | None
    share: float
    share_threshold: float
    drifted: bool
    rows: int
    reference_rows: int

    def column(self, name: str) -> ColumnDrift:
        """Verdict of feature `name`."""
        for col in self.columns:
            if col.column == name:
                return col
        raise KeyError(f"The drift report has no column {name!r}.")

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        """Names of the drifted features."""
        return tuple(c.column for c in self.columns if c.drifted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (NaN scores become None)."""

        def col(c: ColumnDrift) -> dict[str, Any]:
            d = asdict(c)
            d["score"] = None if math.isnan(c.score) else c.score
            return d

        return {
            "drifted": self.drifted,
            "share": self.share,
            "shareThreshold": self.share_threshold,
            "rows": self.rows,
            "referenceRows": self.reference_rows,
            "columns": [col(c) for c in self.columns],
            "prediction": None if self.prediction is None else col(self.prediction),
        }


def choose_method(*, kind: ColumnKind, reference_count: int, distinct: int) -> str:
    """Evidently's default method for a column (`distinct`: values in reference ∪ current)."""
    if reference_count <= SMALL_REFERENCE:
        if kind == "numeric" and distinct > FEW_VALUES:
            return "ks"
        return "chisquare" if distinct > 2 else "z"
    if kind == "numeric" and distinct > FEW_VALUES:
        return "wasserstein"
    return "jensenshannon"


def verdict(method: str, score: float, threshold: float) -> bool:
    """Whether `score` means drift (Evidently: K-S p <= t; chi-square, z p < t; distances >= t)."""
    if method == "ks":
        return score <= threshold
    if method in P_VALUE_METHODS:
        return score < threshold
    return score >= threshold


def dataset_verdict(
    columns: tuple[ColumnDrift, ...],
    *,
    prediction: ColumnDrift | None,
    share: float,
    rows: int,
    reference_rows: int,
) -> DriftReport:
    """Assemble a report: the dataset drifts when drifted features / features >= share."""
    drifted_share = sum(c.drifted for c in columns) / len(columns) if columns else 0.0
    return DriftReport(
        columns=columns,
        prediction=prediction,
        share=drifted_share,
        share_threshold=share,
        drifted=bool(columns) and drifted_share >= share,
        rows=rows,
        reference_rows=reference_rows,
    )


# ---------------------------------------------------------------------------------------------
# Statistics on counts (shared by both paths)


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided two-sample K-S p-value for statistic `d`, exactly as scipy's ks_2samp (auto mode).

    Up to 10000 values scipy's exact lattice-path probability applies; it depends only on
    (d, n, m), so it is evaluated on two tiny-valued samples of sizes n and m with the same
    statistic. Above, Smirnov's asymptotic distribution is used as scipy does.
    """
    if max(n, m) > KS_EXACT_MAX_N:
        en = n * m / (n + m)
        return float(np.clip(sp_stats.kstwo.sf(d, round(en)), 0.0, 1.0))
    g = math.gcd(n, m)
    ng, mg = n // g, m // g
    lcm = ng * m
    h = round(d * lcm)
    if h == 0:
        return 1.0
    # a*mg - b*ng == h with 0 <= a <= n, 0 <= b <= m gives |a/n - b/m| == h/lcm.
    a = (h * pow(mg, -1, ng)) % ng if ng > 1 else 0
    b = (a * mg - h) // ng
    while b < 0:
        a, b = a + ng, b + mg
    ref = np.repeat([0.0, 1.0], [a, n - a])
    cur = np.repeat([0.0, 1.0], [b, m - b])
    return float(sp_stats.ks_2samp(ref, cur).pvalue)


def chisquare_pvalue(reference: FloatArray, current: FloatArray) -> float:
    """Evidently's chi-square test: current counts against reference counts scaled to its size."""
    n, m = reference.sum(), current.sum()
    expected = reference * (m / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (current - expected) ** 2 / expected
    stat = float(terms.sum())
    dof = len(reference) - 1
    if dof < 1:
        return float("nan")
    return float(sp_special.chdtrc(dof, stat))


def z_pvalue(reference: FloatArray, current: FloatArray) -> float:
    """Evidently's two-proportion z-test on two categories (counts of the first and the rest)."""
    n, m = float(reference.sum()), float(current.sum())
    if len(reference) == 1:
        return 1.0  # one value on both sides (Evidently's special case)
    p1 = float(reference[1:].sum()) / n
    p2 = float(current[1:].sum()) / m
    pooled = (p1 * n + p2 * m) / (n + m)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1.0 / n + 1.0 / m)) if 0 < pooled < 1 else math.nan
    if math.isnan(z):
        return float("nan")
    cdf = 0.5 * math.erfc(-abs(z) / math.sqrt(2.0))
    return 2.0 * (1.0 - cdf)


def jensenshannon(reference: FloatArray, current: FloatArray) -> float:
    """Jensen-Shannon distance (natural log) of two count vectors, as scipy.spatial.distance."""
    p = reference / reference.sum()
    q = current / current.sum()
    mid = (p + q) / 2.0
    js = (_rel_entr(p, mid).sum() + _rel_entr(q, mid).sum()) / 2.0
    return float(math.sqrt(max(float(js), 0.0)))


def _rel_entr(x: FloatArray, y: FloatArray) -> FloatArray:
    out = np.zeros_like(x)
    pos = x > 0
    out[pos] = x[pos] * np.log(x[pos] / y[pos])
    return out


def psi(reference: FloatArray, current: FloatArray) -> float:
    """Population stability index with Evidently's zero filling of empty bins."""
    r = _fill_zeroes(reference / reference.sum())
    c = _fill_zeroes(current / current.sum())
    return float(np.sum((r - c) * np.log(r / c)))


def _fill_zeroes(percents: FloatArray) -> FloatArray:
    nonzero = percents[percents != 0]
    smallest = float(nonzero.min()) if len(nonzero) else 1.0
    fill = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return np.where(percents == 0, fill, percents)


def _on_counts(method: str, reference: FloatArray, current: FloatArray) -> float:
    """A method evaluated on aligned count vectors (categories or values)."""
    if method == "chisquare":
        return chisquare_pvalue(reference, current)
    if method == "z":
        return z_pvalue(reference, current)
    if method == "jensenshannon":
        return jensenshannon(reference, current)
    if method == "psi":
        return psi(reference, current)
    raise ValueError(f"Method {method!r} does not apply to category counts; use chisquare, z, jensenshannon or psi.")


# ---------------------------------------------------------------------------------------------
# Exact path: raw values


def compare_arrays(
    reference: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    *,
    kinds: Mapping[str, ColumnKind] | None = None,
    share: float = 0.5,
    method_overrides: Mapping[str, str] | None = None,
) -> DriftReport:
    """Drift of every reference column, computed on raw values exactly as Evidently does.

    Columns with a method override go through `column_drift_exact` one by one; all others are
    encoded as numbers (categories as their rank among the labels) and compared together by
    `compare_matrices`.
    """
    if not reference:
        raise ValueError("The reference has no columns to compare.")
    missing = [name for name in reference if name not in current]
    if missing:
        raise ValueError(f"The current data lacks columns {missing}; pass only shared columns.")
    kinds = kinds or {}
    overrides = method_overrides or {}
    _check_methods(overrides)
    ref_arrays = {name: np.asarray(values) for name, values in reference.items()}
    cur_arrays = {name: np.asarray(current[name]) for name in reference}
    resolved = {name: kinds.get(name) or stats.infer_kind(arr) for name, arr in ref_arrays.items()}
    together = [name for name in ref_arrays if name not in overrides]
    encoded = [encode(name, ref_arrays[name], cur_arrays[name], kind=resolved[name]) for name in together]
    by_name = dict(
        zip(
            together,
            compare_matrices(
                together,
                [resolved[name] for name in together],
                _stack([r for r, _ in encoded]),
                _stack([c for _, c in encoded]),
            ),
            strict=True,
        )
    )
    for name, method in overrides.items():
        if name in ref_arrays:
            by_name[name] = column_drift_exact(
                name, ref_arrays[name], cur_arrays[name], kind=resolved[name], method=method
            )
    last = next(reversed(ref_arrays))
    return dataset_verdict(
        tuple(by_name[name] for name in ref_arrays),
        prediction=None,
        share=share,
        rows=len(cur_arrays[last]),
        reference_rows=len(ref_arrays[last]),
    )


def encode(
    name: str, reference: npt.NDArray[Any], current: npt.NDArray[Any], *, kind: ColumnKind
) -> tuple[FloatArray, FloatArray]:
    """One column as floats for `compare_matrices`: numbers as they are, categories as the rank
    of their label among all labels (what `stats.to_labels` writes); NaN for missing values."""
    if kind == "numeric":
        return _as_float(reference, name), _as_float(current, name)
    if reference.dtype.kind in "iufb" and current.dtype.kind in "iufb":
        ref, cur = reference.astype(np.float64), current.astype(np.float64)
        # numbers label injectively (1.0 and 1 both read "1"), so values stand for labels
        if np.all(np.abs(np.nan_to_num(ref)) < 2**53) and np.all(np.abs(np.nan_to_num(cur)) < 2**53):
            return ref, cur
    ref_labels, ref_present = stats.to_labels(reference)
    cur_labels, cur_present = stats.to_labels(current)
    labels = np.concatenate([ref_labels[ref_present], cur_labels[cur_present]])
    _, rank = np.unique(labels, return_inverse=True)
    ref_codes = np.full(len(ref_labels), np.nan)
    cur_codes = np.full(len(cur_labels), np.nan)
    split = int(ref_present.sum())
    ref_codes[ref_present] = rank[:split]
    cur_codes[cur_present] = rank[split:]
    return ref_codes, cur_codes


def _as_float(values: npt.NDArray[Any], name: str) -> FloatArray:
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Column {name!r} is numeric in the reference but not in the current data.") from exc


def _stack(columns: list[FloatArray]) -> FloatArray:
    """Columns as rows of one matrix, shorter ones padded with NaN (missing)."""
    width = max((len(c) for c in columns), default=0)
    if all(len(c) == width for c in columns):
        return np.array(columns, dtype=np.float64).reshape(len(columns), width)
    out = np.full((len(columns), width), np.nan)
    for i, col in enumerate(columns):
        out[i, : len(col)] = col
    return out


def compare_matrices(
    names: Sequence[str],
    kinds: Sequence[ColumnKind],
    reference: FloatArray,
    current: FloatArray,
    *,
    overwrite_current: bool = False,
) -> list[ColumnDrift]:
    """Drift of many columns at once with Evidently's default methods.

    Row i of `reference` (columns x reference rows) and `current` holds column `names[i]`:
    numbers, or for a categorical column any numbers that are equal exactly where the labels
    are (see `encode`); NaN and +-inf are missing. Both matrices are sorted once along their
    rows. Numeric columns with more than five distinct reference values get K-S or Wasserstein
    from the sorted rows directly (`ecdf.ks_sorted`, `ecdf.wasserstein_sorted`); the others
    (categories, few values) are merged (`ecdf.merge`) for their distinct values and counts.
    ``overwrite_current`` lets the sort reuse `current` (a float64 array the caller gives up).
    """
    if reference.shape[0] != len(names) or current.shape[0] != len(names) or len(kinds) != len(names):
        raise ValueError("compare_matrices needs one name, kind, reference row and current row per column.")
    ref_sorted, ref_count = ecdf.sort_rows(reference)
    cur_sorted, cur_count = ecdf.sort_rows(current, in_place=overwrite_current and current.dtype == np.float64)
    empty = np.flatnonzero(ref_count == 0)
    if len(empty):
        raise ValueError(
            f"Column {names[int(empty[0])]!r} has no values in the reference; drop it or fix the reference."
        )
    methods = np.full(len(names), "missing", dtype=object)
    scores = np.full(len(names), np.nan)
    numeric = np.array([kind == "numeric" for kind in kinds], dtype=bool)
    smooth = numeric & (ecdf.distinct_sorted(ref_sorted, ref_count) > FEW_VALUES) & (cur_count > 0)
    small = ref_count <= SMALL_REFERENCE
    for rows, method in ((np.flatnonzero(smooth & small), "ks"), (np.flatnonzero(smooth & ~small), "wasserstein")):
        for part in ecdf.chunks(len(rows), cur_sorted.shape[1]):
            sel = rows[part]
            r, n, c, m = _rows(ref_sorted, sel), ref_count[sel], _rows(cur_sorted, sel), cur_count[sel]
            # both statistics are symmetric: lay the intervals on the smaller side (less work)
            grid = (c, m, r, n) if c.shape[1] < r.shape[1] else (r, n, c, m)
            if method == "ks":
                scores[sel] = ks_pvalues(ecdf.ks_sorted(*grid), n, m)
            else:
                scores[sel] = ecdf.wasserstein_sorted(*grid) / np.maximum(ecdf.row_std(_rows(reference, sel)), 0.001)
            methods[sel] = method
    rest = np.flatnonzero(~smooth & (cur_count > 0))
    for part in ecdf.chunks(len(rest), ref_sorted.shape[1] + cur_sorted.shape[1]):
        sel = rest[part]
        n, m = ref_count[sel], cur_count[sel]
        merged = ecdf.merge(_rows(ref_sorted, sel), n, _rows(cur_sorted, sel), m)
        chosen = np.array(
            [
                choose_method(kind=kinds[i], reference_count=int(c), distinct=int(d))
                for i, c, d in zip(sel.tolist(), n, ecdf.distinct(merged), strict=True)
            ],
            dtype=object,
        )
        methods[sel] = chosen
        ks = np.flatnonzero(chosen == "ks")
        scores[sel[ks]] = ks_pvalues(ecdf.ks_statistic(merged)[ks], n[ks], m[ks])
        wd = np.flatnonzero(chosen == "wasserstein")
        ref_std = ecdf.row_std(_rows(reference, sel[wd]))
        scores[sel[wd]] = ecdf.wasserstein(merged)[wd] / np.maximum(ref_std, 0.001)
        on_counts = np.flatnonzero(np.isin(chosen, ("chisquare", "z", "jensenshannon")))
        ref_values, cur_values = ecdf.value_counts(merged, on_counts)
        scores[sel[on_counts]] = _count_scores(chosen[on_counts], ref_values, cur_values)
    return _verdicts(names, kinds, methods, scores)


def compare_counts(
    names: Sequence[str], kinds: Sequence[ColumnKind], reference: FloatArray, current: FloatArray
) -> list[ColumnDrift]:
    """Drift of many columns from their value counts, as `compare_matrices` gives on the values.

    Row i of `reference` and `current` (columns x keys) counts the non-missing values of column
    `names[i]` per key, keys in ascending order of value (label rank for categories: the z-test
    sets the first key against the rest), zero for keys neither side has. Columns are tested
    with Evidently's count methods (chi-square, z, Jensen-Shannon), which is what
    `choose_method` picks for categories and for numbers with at most five distinct values.
    """
    if reference.shape != current.shape or reference.shape[0] != len(names) or len(kinds) != len(names):
        raise ValueError("compare_counts needs one name, kind, reference row and current row per column.")
    n = reference.sum(axis=1)
    m = current.sum(axis=1)
    empty = np.flatnonzero(n == 0)
    if len(empty):
        raise ValueError(
            f"Column {names[int(empty[0])]!r} has no values in the reference; drop it or fix the reference."
        )
    seen = np.count_nonzero((reference > 0) | (current > 0), axis=1)
    methods = np.full(len(names), "missing", dtype=object)
    scores = np.full(len(names), np.nan)
    present = np.flatnonzero(m > 0)
    chosen = np.array(
        [choose_method(kind=kinds[i], reference_count=int(n[i]), distinct=int(seen[i])) for i in present.tolist()],
        dtype=object,
    )
    if np.isin(chosen, ("ks", "wasserstein")).any():
        raise ValueError("compare_counts tests counts only; compare numbers with many values by compare_matrices.")
    methods[present] = chosen
    scores[present] = _count_scores(chosen, reference[present], current[present])
    return _verdicts(names, kinds, methods, scores)


def _count_scores(chosen: npt.NDArray[Any], reference: FloatArray, current: FloatArray) -> FloatArray:
    """Scores of rows of aligned counts, each by its method (chi-square, z or Jensen-Shannon)."""
    out = np.full(len(chosen), np.nan)
    for method, test in (
        ("chisquare", counts.chisquare_pvalues),
        ("z", counts.z_pvalues),
        ("jensenshannon", counts.jensenshannon),
    ):
        which = chosen == method
        if which.any():
            out[which] = test(reference[which], current[which])
    return out


def _verdicts(
    names: Sequence[str], kinds: Sequence[ColumnKind], methods: npt.NDArray[Any], scores: FloatArray
) -> list[ColumnDrift]:
    return [
        _all_missing(name, kind)
        if method == "missing"
        else ColumnDrift(
            column=name,
            method=method,
            score=score,
            threshold=THRESHOLDS[method],
            drifted=verdict(method, score, THRESHOLDS[method]),
            kind=kind,
        )
        for name, kind, method, score in zip(names, kinds, methods.tolist(), scores.tolist(), strict=True)
    ]


def _rows(matrix: FloatArray, rows: npt.NDArray[np.intp]) -> FloatArray:
    """`matrix[rows]`, as a view when the rows are consecutive."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
        return matrix[int(rows[0]) : int(rows[-1]) + 1]
    return matrix[rows]


def ks_pvalues(d: FloatArray, n: npt.NDArray[np.int64], m: npt.NDArray[np.int64]) -> FloatArray:
    """`ks_pvalue` of many columns: Smirnov's distribution at once where scipy uses it."""
    out = np.empty(len(d))
    large = np.maximum(n, m) > KS_EXACT_MAX_N
    if large.any():
        en = np.round(n[large] * m[large] / (n[large] + m[large]))
        out[large] = np.clip(sp_stats.kstwo.sf(d[large], en), 0.0, 1.0)
    for i in np.flatnonzero(~large).tolist():  # exact lattice paths: small samples only
        out[i] = ks_pvalue(float(d[i]), int(n[i]), int(m[i]))
    return out


def column_drift_exact(
    name: str,
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    *,
    kind: ColumnKind,
    method: str | None = None,
) -> ColumnDrift:
    """One column's drift on raw values."""
    if kind == "numeric":
        ref = _finite(np.asarray(reference), name)
        cur = _finite(np.asarray(current), name)
        ref_keys: npt.NDArray[Any] = ref
        cur_keys: npt.NDArray[Any] = cur
    else:
        ref_labels, ref_present = stats.to_labels(reference)
        cur_labels, cur_present = stats.to_labels(current)
        ref_keys, cur_keys = ref_labels[ref_present], cur_labels[cur_present]
    if len(ref_keys) == 0:
        raise ValueError(f"Column {name!r} has no values in the reference; drop it or fix the reference.")
    if len(cur_keys) == 0:
        return _all_missing(name, kind)
    keys, inverse = np.unique(np.concatenate([ref_keys, cur_keys]), return_inverse=True)
    chosen = method or choose_method(kind=kind, reference_count=len(ref_keys), distinct=len(keys))
    threshold = THRESHOLDS[chosen]
    if chosen == "ks":
        score = ks_pvalue(_ks_statistic(ref, cur), len(ref), len(cur)) if kind == "numeric" else _not_numeric(name)
    elif chosen == "wasserstein":
        score = _wasserstein_norm(ref, cur) if kind == "numeric" else _not_numeric(name)
    elif chosen in ("jensenshannon", "psi") and kind == "numeric" and len(np.unique(ref)) > 20:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0].astype(np.float64)
        c = np.histogram(cur, edges)[0].astype(np.float64)
        score = jensenshannon(r, c) if chosen == "jensenshannon" else psi(r, c)
    else:
        r = np.bincount(inverse[: len(ref_keys)], minlength=len(keys)).astype(np.float64)
        c = np.bincount(inverse[len(ref_keys) :], minlength=len(keys)).astype(np.float64)
        score = _on_counts(chosen, r, c)
    return ColumnDrift(
        column=name,
        method=chosen,
        score=score,
        threshold=threshold,
        drifted=verdict(chosen, score, threshold),
        kind=kind,
    )


def _finite(values: npt.NDArray[Any], name: str) -> FloatArray:
    try:
        x = values.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Column {name!r} is numeric in the reference but not in the current data.") from exc
    return x[np.isfinite(x)]


def _not_numeric(name: str) -> float:
    raise ValueError(f"Column {name!r} is categorical; K-S and Wasserstein need a numeric column.")


def _all_missing(name: str, kind: ColumnKind) -> ColumnDrift:
    """A column with no current values at all is reported as drifted (Evidently refuses it)."""
    return ColumnDrift(column=name, method="missing", score=1.0, threshold=1.0, drifted=True, kind=kind)


def _ks_statistic(ref: FloatArray, cur: FloatArray) -> float:
    ref, cur = np.sort(ref), np.sort(cur)
    both = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(ref, both, side="right") / len(ref)
    cdf_cur = np.searchsorted(cur, both, side="right") / len(cur)
    diff = cdf_ref - cdf_cur
    return float(max(np.clip(-diff.min(), 0, 1), diff.max()))


def _wasserstein_norm(ref: FloatArray, cur: FloatArray) -> float:
    """First Wasserstein distance normed by max(std(reference), 0.001), as Evidently."""
    ref_s, cur_s = np.sort(ref), np.sort(cur)
    both = np.sort(np.concatenate([ref_s, cur_s]))
    deltas = np.diff(both)
    cdf_ref = np.searchsorted(ref_s, both[:-1], side="right") / len(ref_s)
    cdf_cur = np.searchsorted(cur_s, both[:-1], side="right") / len(cur_s)
    distance = float(np.sum(np.abs(cdf_ref - cdf_cur) * deltas))
    return distance / max(float(np.std(ref)), 0.001)


def _check_methods(overrides: Mapping[str, str]) -> None:
    bad = {k: v for k, v in overrides.items() if v not in METHODS}
    if bad:
        raise ValueError(f"Unknown drift methods {bad}; choose from {sorted(METHODS)}.")


# ---------------------------------------------------------------------------------------------
# Fast path: baseline profile vs live counters


def compare_stats(
    baseline: stats.Baseline,
    live: stats.LiveStats,
    *,
    share: float = 0.5,
    method_overrides: Mapping[str, str] | None = None,
) -> DriftReport:
    """Drift of the live window against the baseline, from counters only (cost independent of rows)."""
    if live.fingerprint != stats.layout_fingerprint(baseline):
        raise ValueError("The live statistics were collected on another baseline; compare against that one.")
    overrides = method_overrides or {}
    _check_methods(overrides)
    columns = tuple(
        column_drift_binned(col, live.column(col.name), method=overrides.get(col.name)) for col in baseline.columns
    )
    prediction = None
    live_pred = live.prediction()
    if baseline.prediction is not None and live_pred is not None and live_pred.count + live_pred.missing > 0:
        prediction = column_drift_binned(baseline.prediction, live_pred, method=overrides.get("prediction"))
    return dataset_verdict(
        columns, prediction=prediction, share=share, rows=live.rows, reference_rows=baseline.row_count
    )


def column_drift_binned(
    reference: stats.ColumnBaseline, current: stats.ColumnCounts, *, method: str | None = None
) -> ColumnDrift:
    """One column's drift from its baseline profile and live counters."""
    name, kind = reference.name, reference.kind
    if reference.count == 0:
        raise ValueError(f"Column {name!r} has no values in the baseline; rebuild the baseline.")
    if current.count == 0:
        return _all_missing(name, kind)
    if kind == "categorical":
        ref_counts = np.asarray(reference.counts, dtype=np.float64)
        cur_counts = current.counts.astype(np.float64)
        ref_counts, cur_counts = _with_other(ref_counts, cur_counts, current.other)
        distinct = len(ref_counts)
        chosen = method or choose_method(kind=kind, reference_count=reference.count, distinct=distinct)
        if chosen in ("ks", "wasserstein"):
            _not_numeric(name)
        score = _on_counts(chosen, ref_counts, cur_counts)
    else:
        chosen, score = _numeric_binned(reference, current, method)
    threshold = THRESHOLDS[chosen]
    return ColumnDrift(
        column=name,
        method=chosen,
        score=score,
        threshold=threshold,
        drifted=verdict(chosen, score, threshold),
        kind=kind,
    )


def _with_other(ref: FloatArray, cur: FloatArray, other: int) -> tuple[FloatArray, FloatArray]:
    """Keep keys seen on either side; unseen current values form one extra key.

    Merging unseen keys is exact for Jensen-Shannon (a key absent from the reference contributes
    linearly in its current share) and keeps chi-square at p = 0 (infinite statistic).
    """
    if other:
        ref = np.append(ref, 0.0)
        cur = np.append(cur, float(other))
    seen = (ref > 0) | (cur > 0)
    return ref[seen], cur[seen]


def _numeric_binned(
    reference: stats.ColumnBaseline, current: stats.ColumnCounts, method: str | None
) -> tuple[str, float]:
    edges = np.asarray(reference.edges, dtype=np.float64)
    fine = current.counts.astype(np.float64)
    gaps, points = fine[0::2], fine[1::2]
    if reference.exact_edges:
        # distinct values of reference ∪ current: reference values, plus at least one value per
        # occupied gap (a lower bound, which only matters when it is <= 5)
        distinct = len(edges) + int(np.count_nonzero(gaps))
    else:
        distinct = reference.distinct  # > bins + 1 > 5 by construction
    chosen = method or choose_method(kind="numeric", reference_count=reference.count, distinct=distinct)
    ref_bins = np.asarray(reference.counts, dtype=np.float64)
    if chosen == "ks":
        return chosen, ks_pvalue(_ks_statistic_binned(reference, fine), reference.count, current.count)
    if chosen == "wasserstein":
        return chosen, _wasserstein_binned(reference, current)
    if reference.exact_edges and (chosen in ("chisquare", "z") or len(edges) <= 20):
        # value counts: reference values (exact), current values off the grid as one extra key
        ref_values = ref_bins[1:]
        ref_counts, cur_counts = _with_other(ref_values, points, int(gaps.sum()))
        return chosen, _on_counts(chosen, ref_counts, cur_counts)
    # PSI / Jensen-Shannon on many distinct values: the baseline's bins stand in for Evidently's
    # Sturges bins of the combined data (not recoverable from counters).
    return chosen, _on_counts(chosen, ref_bins, current.bin_counts.astype(np.float64))


def _ks_statistic_binned(reference: stats.ColumnBaseline, cur_fine: FloatArray) -> float:
    """K-S statistic from counts at and between the edges.

    Between two edges the reference CDF is flat and the current CDF rises, so the largest gap
    sits at an edge (left or right limit): with all distinct reference values as edges this is
    exactly scipy's statistic.
    """
    n = reference.count
    ref_bins = np.asarray(reference.counts, dtype=np.float64)
    ref_fine = np.zeros(2 * len(reference.edges) + 1)
    if reference.exact_edges:
        ref_fine[1::2] = ref_bins[1:]
    else:  # quantile edges: put each bin's mass just above its left edge (approximation)
        ref_fine[0::2] = ref_bins
    cdf_ref = np.cumsum(ref_fine) / n
    cdf_cur = np.cumsum(cur_fine) / cur_fine.sum()
    diff = cdf_ref - cdf_cur
    return float(max(np.clip(-diff.min(), 0, 1), diff.max()))


def _cdf_integrals(edges: FloatArray, counts: FloatArray, sums: FloatArray) -> FloatArray:
    """Integral of the empirical CDF over each side-right bin; tails as integrals of F and 1-F.

    For a bin [a, b): every value below a contributes (b - a), a value x in the bin contributes
    (b - x); so the integral is (below * (b - a) + count * b - sum) / n.
    """
    n = float(counts.sum())
    below = np.cumsum(counts) - counts
    out = np.empty(len(counts))
    out[0] = counts[0] * edges[0] - sums[0]
    width = np.diff(edges)
    out[1:-1] = below[1:-1] * width + counts[1:-1] * edges[1:] - sums[1:-1]
    out[-1] = sums[-1] - counts[-1] * edges[-1]
    return out / n


def _wasserstein_binned(reference: stats.ColumnBaseline, current: stats.ColumnCounts) -> float:
    """Normed Wasserstein distance from per-bin counts and sums (exact unless CDFs cross in a bin)."""
    edges = np.asarray(reference.edges, dtype=np.float64)
    ref = _cdf_integrals(edges, np.asarray(reference.counts, dtype=np.float64), np.asarray(reference.sums))
    cur = _cdf_integrals(edges, current.bin_counts.astype(np.float64), current.sums)
    distance = float(np.abs(ref - cur).sum())
    return distance / max(reference.std, 0.001)
