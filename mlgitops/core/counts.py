"""Count-based drift tests on many columns at once: chi-square, z and Jensen-Shannon.

Each function takes (columns x keys) matrices of reference and current counts, one row per
column, keys in the same order on both sides; a key neither side saw (zero padding for
columns with fewer keys) contributes nothing. Each row gives the number the one-column
function of the same name in `mlgitops.core.drift` gives on that row's seen keys.

Pure: numpy and scipy.special.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special as sp_special

FloatArray = npt.NDArray[np.float64]


def chisquare_pvalues(reference: FloatArray, current: FloatArray) -> FloatArray:
    """Evidently's chi-square test per row (NaN where fewer than two keys were seen)."""
    n = reference.sum(axis=1, keepdims=True)
    m = current.sum(axis=1, keepdims=True)
    seen = (reference > 0) | (current > 0)
    expected = reference * (m / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(seen, (current - expected) ** 2 / expected, 0.0)
    stat = terms.sum(axis=1)
    dof = np.count_nonzero(seen, axis=1) - 1
    pvalues: FloatArray = sp_special.chdtrc(np.maximum(dof, 1), stat)
    return np.where(dof < 1, np.nan, pvalues)


def z_pvalues(reference: FloatArray, current: FloatArray) -> FloatArray:
    """Evidently's two-proportion z-test per row (first key against the rest; 1.0 for one key)."""
    n = reference.sum(axis=1)
    m = current.sum(axis=1)
    p1 = reference[:, 1:].sum(axis=1) / n
    p2 = current[:, 1:].sum(axis=1) / m
    pooled = (p1 * n + p2 * m) / (n + m)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n + 1.0 / m))
    z = np.where((pooled > 0) & (pooled < 1), z, np.nan)
    cdf = 0.5 * sp_special.erfc(-np.abs(z) / np.sqrt(2.0))
    pvalues = 2.0 * (1.0 - cdf)
    single = np.count_nonzero((reference > 0) | (current > 0), axis=1) == 1
    return np.where(single, 1.0, pvalues)


def jensenshannon(reference: FloatArray, current: FloatArray) -> FloatArray:
    """Jensen-Shannon distance (natural log) per row, as scipy.spatial.distance."""
    p = reference / reference.sum(axis=1, keepdims=True)
    q = current / current.sum(axis=1, keepdims=True)
    mid = (p + q) / 2.0
    js = (_rel_entr(p, mid).sum(axis=1) + _rel_entr(q, mid).sum(axis=1)) / 2.0
    return np.asarray(np.sqrt(np.maximum(js, 0.0)), dtype=np.float64)


def _rel_entr(x: FloatArray, y: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log(x / y), 0.0)
