"""Drift measures shared by both paths: method choice, verdicts, the report, and the
statistics computed on counts (K-S p-values, chi-square, z, Jensen-Shannon, PSI)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

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


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided two-sample K-S p-value for statistic `d`, exactly as scipy's ks_2samp (auto mode).

    Up to 10000 values scipy's exact lattice-path probability applies; it depends only on
    (d, n, m), so it is evaluated on two tiny-valued samples of sizes n and m with the same
    statistic. Above, Smirnov's asymptotic distribution is used as scipy does.
    """
    from scipy import stats as sp_stats  # lazily: importing scipy.stats takes ~0.5 s

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
    from scipy import special as sp_special  # lazily: its import is most of this module's

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


def on_counts(method: str, reference: FloatArray, current: FloatArray) -> float:
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


def not_numeric(name: str) -> float:
    """Raise: K-S and Wasserstein need a numeric column (``name`` is categorical)."""
    raise ValueError(f"Column {name!r} is categorical; K-S and Wasserstein need a numeric column.")


def all_missing(name: str, kind: ColumnKind) -> ColumnDrift:
    """A column with no current values at all is reported as drifted (Evidently refuses it)."""
    return ColumnDrift(column=name, method="missing", score=1.0, threshold=1.0, drifted=True, kind=kind)


def check_methods(overrides: Mapping[str, str]) -> None:
    """ValueError naming the unknown methods among ``overrides``."""
    bad = {k: v for k, v in overrides.items() if v not in METHODS}
    if bad:
        raise ValueError(f"Unknown drift methods {bad}; choose from {sorted(METHODS)}.")
