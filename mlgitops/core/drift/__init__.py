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
- `compare_arrays` (and `compare_columns`, which `mlgitops.drift.compare` calls, with
  `compare_counts` for string columns) works on raw values and reproduces Evidently's verdicts
  and numbers: numeric columns with a large reference (normed Wasserstein) one by one from
  float32 sorts with an error bound (`quantiles`: verdicts exact, scores within 1e-6), the others
  all at once from one sort per matrix (`compare_matrices`, `ecdf`, `counts`: scipy's numbers to
  ~1e-12). `column_drift_exact` is the same computation one column at a time, kept as the plain
  reference (and for method overrides).
- `compare_stats` works on a `Baseline` and `LiveStats` only (cost independent of rows): K-S,
  chi-square, z and Jensen-Shannon on category/value counts are exact; the Wasserstein distance
  is exact unless the two CDFs cross inside a bin (see `stats.DEFAULT_BINS`).

Pure: numpy, plus scipy for the Kolmogorov-Smirnov and chi-square distributions (exact two-sample
K-S probabilities are a lattice-path computation scipy already implements; copying it is not
worth the risk of disagreeing with Evidently).

Modules: `measures` (method choice, verdicts, the report, statistics on counts), `exact`
(raw values), `quantiles` (the large-reference Wasserstein score), `binned` (baseline vs live
counters). Import the names below from here.
"""

from mlgitops.core.drift.binned import column_drift_binned, compare_stats
from mlgitops.core.drift.exact import (
    column_drift_exact,
    compare_arrays,
    compare_columns,
    compare_counts,
    compare_matrices,
    encode,
    ks_pvalues,
)
from mlgitops.core.drift.measures import (
    FEW_VALUES,
    KS_EXACT_MAX_N,
    METHODS,
    P_VALUE_METHODS,
    SMALL_REFERENCE,
    THRESHOLDS,
    ColumnDrift,
    DriftReport,
    chisquare_pvalue,
    choose_method,
    dataset_verdict,
    jensenshannon,
    ks_pvalue,
    psi,
    verdict,
    z_pvalue,
)

__all__ = [
    "FEW_VALUES",
    "KS_EXACT_MAX_N",
    "METHODS",
    "P_VALUE_METHODS",
    "SMALL_REFERENCE",
    "THRESHOLDS",
    "ColumnDrift",
    "DriftReport",
    "chisquare_pvalue",
    "choose_method",
    "column_drift_binned",
    "column_drift_exact",
    "compare_arrays",
    "compare_columns",
    "compare_counts",
    "compare_matrices",
    "compare_stats",
    "dataset_verdict",
    "encode",
    "jensenshannon",
    "ks_pvalue",
    "ks_pvalues",
    "psi",
    "verdict",
    "z_pvalue",
]
