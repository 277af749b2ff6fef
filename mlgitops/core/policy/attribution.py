"""Attribution measure: a window's live counters against another version's reference.

Live counters are laid on the serving version's bins and categories; `laid_on` re-bins another
version's numeric reference on those bins, `against` measures one column against it (the one
categorical comparison: `core.decisions` shows the same numbers), and `fit_share` counts the
drifted features, what rule 4 (attribution) compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgitops.core import drift, stats


def laid_on(reference: stats.ColumnBaseline, onto: stats.ColumnBaseline) -> stats.ColumnBaseline | None:
    """A numeric ``reference`` re-binned on ``onto``'s edges (None: no values to re-bin).

    Live counters are laid on the serving version's bins; to compare them with another
    version's reference, that reference is re-binned from its quantile sample (every value up
    to 1000 reference rows, else 1000 evenly spaced order statistics), each value weighing
    ``count / len(sample)``. The edges never count as exact, so drift methods use the bin
    counts and sums only.
    """
    if reference.kind != "numeric" or onto.kind != "numeric" or reference.count == 0:
        return None
    x = np.asarray(reference.sample, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return None
    edges = np.asarray(onto.edges, dtype=np.float64)
    idx = np.searchsorted(edges, x, side="right")
    weight = reference.count / len(x)
    raw = np.bincount(idx, minlength=len(edges) + 1) * weight
    counts = np.floor(raw).astype(np.int64)
    short = reference.count - int(counts.sum())
    if short > 0:  # largest remainders, so the counts add up to the reference count
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    sums = np.bincount(idx, weights=x, minlength=len(edges) + 1) * weight
    distinct = reference.distinct + (1 if reference.distinct == len(edges) else 0)
    return stats.ColumnBaseline(
        name=onto.name, kind="numeric", edges=onto.edges,
        counts=tuple(int(c) for c in counts), categories=(), count=reference.count,
        mean=reference.mean, std=reference.std, sample=reference.sample,
        missing=reference.missing, sums=tuple(float(v) for v in sums), distinct=distinct,
    )


_ON_COUNTS = {
    "chisquare": drift.chisquare_pvalue,
    "z": drift.z_pvalue,
    "jensenshannon": drift.jensenshannon,
}


@dataclass(frozen=True)
class Measure:
    """One column of a window against a reference: the method, its score, threshold, verdict."""

    method: str
    score: float | None
    """None when nothing could be measured (no live values, or none the reference knows)."""
    threshold: float
    drifted: bool


def against(reference: stats.ColumnBaseline, onto: stats.ColumnBaseline,
            live: stats.ColumnCounts) -> Measure | None:
    """``live`` (counted on ``onto``'s bins/categories) against another version's ``reference``.

    None when the two columns are of different kinds or ``reference`` has no values (nothing
    to compare: `fit_share` counts the column as drifted).
    """
    if reference.kind != onto.kind or reference.count == 0:
        return None
    if onto.kind == "numeric":
        laid = laid_on(reference, onto)
        if laid is None:
            return None
        d = drift.column_drift_binned(laid, live)
        return Measure(d.method, d.score, d.threshold, d.drifted)
    return _categorical(reference, onto, live)


def _categorical(reference: stats.ColumnBaseline, onto: stats.ColumnBaseline,
                 live: stats.ColumnCounts) -> Measure:
    """Live category counts (laid on ``onto``'s categories) against ``reference``'s.

    Reference labels ``onto`` does not know meet the live values ``onto`` does not know (both
    are "other"), so a category the serving version dropped is compared, not lost.
    """
    if live.count == 0:
        return Measure("chisquare", None, drift.THRESHOLDS["chisquare"], True)
    known = dict(zip(reference.categories, reference.counts, strict=True))
    ref = np.asarray([known.pop(c, 0) for c in onto.categories] + [sum(known.values())],
                     dtype=np.float64)
    cur = np.append(live.counts.astype(np.float64), float(live.other))
    seen = (ref > 0) | (cur > 0)
    ref, cur = ref[seen], cur[seen]
    method = drift.choose_method(kind="categorical", reference_count=reference.count,
                                 distinct=len(ref))
    threshold = drift.THRESHOLDS[method]
    if ref.sum() == 0:
        return Measure(method, None, threshold, True)
    score = _ON_COUNTS[method](ref, cur)
    return Measure(method, score, threshold, drift.verdict(method, score, threshold))


def fit_share(reference: stats.Baseline, onto: stats.Baseline, window: stats.LiveStats) -> float | None:
    """Share of features of ``window`` (laid on ``onto``) that drift against ``reference``.

    None when the two versions do not have the same features of the same kinds.
    """
    if [(c.name, c.kind) for c in reference.columns] != [(c.name, c.kind) for c in onto.columns]:
        return None
    if not onto.columns:
        return None
    drifted = 0
    for col in onto.columns:
        measure = against(reference.column(col.name), col, window.column(col.name))
        drifted += measure is None or measure.drifted  # nothing to compare counts as drifted
    return drifted / len(onto.columns)
