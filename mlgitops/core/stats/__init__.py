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

Modules: `baseline` (building and reading baselines), `layout` (where each column lives in
the counters), `live` (the live-statistics engine). Import the names below from here.
"""

from mlgitops.core.stats.baseline import (
    DEFAULT_BINS,
    INTEGER_CARDINALITY_LIMIT,
    SAMPLE_LIMIT,
    SCHEMA_VERSION,
    Baseline,
    ColumnBaseline,
    ColumnKind,
    build_baseline,
    infer_kind,
    to_labels,
)
from mlgitops.core.stats.layout import PREDICTION, layout_fingerprint
from mlgitops.core.stats.live import ColumnCounts, LiveStats

__all__ = [
    "DEFAULT_BINS",
    "INTEGER_CARDINALITY_LIMIT",
    "PREDICTION",
    "SAMPLE_LIMIT",
    "SCHEMA_VERSION",
    "Baseline",
    "ColumnBaseline",
    "ColumnCounts",
    "ColumnKind",
    "LiveStats",
    "build_baseline",
    "infer_kind",
    "layout_fingerprint",
    "to_labels",
]
