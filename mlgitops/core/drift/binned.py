"""Binned drift: a `Baseline` profile against `LiveStats` counters, at a cost independent of rows.

K-S, chi-square, z and Jensen-Shannon on category/value counts are exact; the Wasserstein
distance is exact unless the two CDFs cross inside a bin (see `stats.DEFAULT_BINS`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mlgitops.core import stats
from mlgitops.core.drift.measures import (
    THRESHOLDS,
    ColumnDrift,
    DriftReport,
    FloatArray,
    all_missing,
    check_methods,
    choose_method,
    dataset_verdict,
    ks_pvalue,
    not_numeric,
    on_counts,
    verdict,
)


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
    check_methods(overrides)
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
        return all_missing(name, kind)
    if kind == "categorical":
        ref_counts = np.asarray(reference.counts, dtype=np.float64)
        cur_counts = current.counts.astype(np.float64)
        ref_counts, cur_counts = _with_other(ref_counts, cur_counts, current.other)
        distinct = len(ref_counts)
        chosen = method or choose_method(kind=kind, reference_count=reference.count, distinct=distinct)
        if chosen in ("ks", "wasserstein"):
            not_numeric(name)
        score = on_counts(chosen, ref_counts, cur_counts)
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
        return chosen, on_counts(chosen, ref_counts, cur_counts)
    # PSI / Jensen-Shannon on many distinct values: the baseline's bins stand in for Evidently's
    # Sturges bins of the combined data (not recoverable from counters).
    return chosen, on_counts(chosen, ref_bins, current.bin_counts.astype(np.float64))


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
