"""Exact drift: raw reference and current values, Evidently's numbers.

`compare_arrays` (and `compare_matrices`, which `mlgitops.drift.compare` calls, with
`compare_counts` for string columns) compute all columns at once from one sort per matrix
(`ecdf`, `counts`); `column_drift_exact` is the same computation one column at a time, kept
as the plain reference (and for method overrides).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.core import ecdf, stats
from mlgitops.core.drift import quantiles
from mlgitops.core.drift.measures import (
    FEW_VALUES,
    KS_EXACT_MAX_N,
    SMALL_REFERENCE,
    THRESHOLDS,
    ColumnDrift,
    DriftReport,
    FloatArray,
    all_missing,
    check_methods,
    choose_method,
    dataset_verdict,
    jensenshannon,
    ks_pvalue,
    not_numeric,
    on_counts,
    psi,
    verdict,
)
from mlgitops.core.stats import ColumnKind


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
    check_methods(overrides)
    ref_arrays = {name: np.asarray(values) for name, values in reference.items()}
    cur_arrays = {name: np.asarray(current[name]) for name in reference}
    resolved = {name: kinds.get(name) or stats.infer_kind(arr) for name, arr in ref_arrays.items()}
    together = [name for name in ref_arrays if name not in overrides]
    encoded = [encode(name, ref_arrays[name], cur_arrays[name], kind=resolved[name]) for name in together]
    by_name = dict(
        zip(
            together,
            compare_columns(
                together,
                [resolved[name] for name in together],
                [r for r, _ in encoded],
                [c for _, c in encoded],
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


def compare_columns(
    names: Sequence[str],
    kinds: Sequence[ColumnKind],
    reference: Sequence[FloatArray],
    current: Sequence[FloatArray],
) -> list[ColumnDrift]:
    """`compare_matrices` on columns given one by one (1-D float64 arrays, NaN and +-inf
    missing; left as they are): numeric columns with more than 1000 reference values go through
    `quantiles.normed_wasserstein` (two float32 sorts a column, verdicts exact, scores within
    `quantiles.TOLERANCE`); the others, and any it declines, are stacked and compared by
    `compare_matrices`."""
    if not len(names) == len(kinds) == len(reference) == len(current):
        raise ValueError("compare_columns needs one name, kind, reference and current column per column.")
    found: dict[int, ColumnDrift] = {}
    threshold = THRESHOLDS["wasserstein"]
    work = quantiles.Workspace()
    for i, kind in enumerate(kinds):
        if kind != "numeric" or len(reference[i]) <= SMALL_REFERENCE:
            continue
        scored = quantiles.normed_wasserstein(
            reference[i],
            current[i],
            threshold=threshold,
            min_reference=SMALL_REFERENCE,
            few_values=FEW_VALUES,
            work=work,
        )
        if scored is not None:
            found[i] = ColumnDrift(
                column=names[i],
                method="wasserstein",
                score=scored.score,
                threshold=threshold,
                drifted=verdict("wasserstein", scored.score, threshold),
                kind=kind,
            )
    rest = [i for i in range(len(names)) if i not in found]
    if rest:
        others = compare_matrices(
            [names[i] for i in rest],
            [kinds[i] for i in rest],
            _stack([reference[i] for i in rest]),
            _stack([current[i] for i in rest]),
            overwrite_current=True,
        )
        found.update(zip(rest, others, strict=True))
    return [found[i] for i in range(len(names))]


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
    from mlgitops.core import counts  # lazily: it imports scipy.special (~0.3 s)

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
        all_missing(name, kind)
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
    from scipy import stats as sp_stats  # lazily: importing scipy.stats takes ~0.5 s

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
        return all_missing(name, kind)
    keys, inverse = np.unique(np.concatenate([ref_keys, cur_keys]), return_inverse=True)
    chosen = method or choose_method(kind=kind, reference_count=len(ref_keys), distinct=len(keys))
    threshold = THRESHOLDS[chosen]
    if chosen == "ks":
        score = ks_pvalue(_ks_statistic(ref, cur), len(ref), len(cur)) if kind == "numeric" else not_numeric(name)
    elif chosen == "wasserstein":
        score = _wasserstein_norm(ref, cur) if kind == "numeric" else not_numeric(name)
    elif chosen in ("jensenshannon", "psi") and kind == "numeric" and len(np.unique(ref)) > 20:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0].astype(np.float64)
        c = np.histogram(cur, edges)[0].astype(np.float64)
        score = jensenshannon(r, c) if chosen == "jensenshannon" else psi(r, c)
    else:
        r = np.bincount(inverse[: len(ref_keys)], minlength=len(keys)).astype(np.float64)
        c = np.bincount(inverse[len(ref_keys) :], minlength=len(keys)).astype(np.float64)
        score = on_counts(chosen, r, c)
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
