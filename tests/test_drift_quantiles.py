"""The large-reference Wasserstein score (`core.drift.quantiles`) against scipy.

Float32 sorts with an error bound: scores within `TOLERANCE` of scipy's normed distance, the
float64 sorts taken exactly where the bound does not settle the verdict (near the threshold,
values beyond float32's range), columns it is not for declined.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp_stats

from mlgitops.core.drift import quantiles

pytestmark = pytest.mark.fast

THRESHOLD = 0.1


def score(reference: np.ndarray, current: np.ndarray) -> quantiles.Scored | None:
    return quantiles.normed_wasserstein(reference, current, threshold=THRESHOLD, min_reference=1000, few_values=5)


def scipy_score(reference: np.ndarray, current: np.ndarray) -> float:
    ref, cur = reference[np.isfinite(reference)], current[np.isfinite(current)]
    return float(sp_stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001))


@pytest.mark.parametrize(
    ("n", "m"), [(1001, 1001), (5000, 5000), (1500, 7), (2000, 3000), (7919, 104729), (30000, 12000)]
)
@pytest.mark.parametrize("shape", ["normal", "far-from-zero", "lognormal", "ties", "missing", "tiny-spread"])
def test_scores_equal_scipys_within_the_tolerance(n: int, m: int, shape: str) -> None:
    rng = np.random.default_rng(n + m)
    ref, cur = rng.normal(size=n), rng.normal(0.12, 1.1, size=m)
    if shape == "far-from-zero":
        ref, cur = ref + 1e6, cur + 1e6
    elif shape == "lognormal":
        ref, cur = rng.lognormal(size=n), rng.lognormal(0.1, size=m)
    elif shape == "ties":
        ref, cur = np.round(ref, 1), np.round(cur, 1)
    elif shape == "missing":
        ref[rng.random(n) < 0.1] = np.nan
        cur[rng.random(m) < 0.1] = np.inf
        cur[:3] = [np.nan, -np.inf, np.nan]
    elif shape == "tiny-spread":  # std below 0.001: Evidently's floor is the norm
        ref, cur = ref * 1e-5, cur * 1e-5
    got = score(ref, cur)
    if np.isfinite(ref).sum() <= 1000:  # missing values took it below Evidently's switch
        assert got is None
        return
    assert got is not None
    expected = scipy_score(ref, cur)
    assert got.score == pytest.approx(expected, abs=quantiles.TOLERANCE * max(1.0, expected), rel=0)
    assert (got.score >= THRESHOLD) == (expected >= THRESHOLD)


@pytest.mark.parametrize("gap", [1e-9, -1e-9, 1e-8, -1e-8])
def test_a_score_within_the_bound_of_the_threshold_is_computed_from_float64(gap: float) -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(5.0, 2.0, size=20000)
    cur = ref + (THRESHOLD + gap) * np.std(ref)  # a shifted copy: the distance is the shift
    got = score(ref, cur)
    assert got is not None and got.exact
    assert (got.score >= THRESHOLD) == (gap > 0)
    assert got.score == pytest.approx(scipy_score(ref, cur), rel=1e-12)


@pytest.mark.parametrize("gap", [1e-3, -1e-3, 1e-5, -1e-5])
def test_a_score_clear_of_the_bound_stays_on_float32(gap: float) -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(size=20000)
    cur = np.repeat(ref, 2)[::3] + (THRESHOLD + gap) * np.std(ref)  # another size, near the same shape
    got = score(ref, cur)
    assert got is not None and not got.exact
    expected = scipy_score(ref, cur)
    assert got.score == pytest.approx(expected, abs=quantiles.TOLERANCE)
    assert (got.score >= THRESHOLD) == (expected >= THRESHOLD)


def test_values_beyond_float32s_range_are_computed_from_float64() -> None:
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(size=3000) * 1e39, rng.normal(0.2, size=4000) * 1e39
    got = score(ref, cur)
    assert got is not None and got.exact
    assert got.score == pytest.approx(scipy_score(ref, cur), rel=1e-12)


def test_the_norm_is_numpys_std_bit_for_bit() -> None:
    rng = np.random.default_rng(6)
    ref = rng.normal(1e8, 3.0, size=4001)
    cur = ref + (THRESHOLD + 1e-12) * np.std(ref)  # forces float64 sorts: the score is distance / norm
    got = score(ref, cur)
    assert got is not None and got.exact
    assert got.score == quantiles.distance_sorted(np.sort(ref), np.sort(cur)) / np.std(ref)


def test_columns_it_is_not_for_are_declined() -> None:
    rng = np.random.default_rng(7)
    big = rng.normal(size=5000)
    assert score(rng.normal(size=1000), big) is None  # small reference: K-S
    assert score(np.concatenate([big[:1000], np.full(100, np.nan)]), big) is None  # 1000 values once NaN is out
    assert score(rng.integers(0, 5, size=5000).astype(float), big) is None  # five distinct values
    assert score(big, np.full(10, np.nan)) is None  # no current values
    assert score(big, np.empty(0)) is None
    assert score(np.full(5000, 1e308) * rng.choice([1.0, 1.5], 5000), big) is None  # the sum overflows


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 3), (3, 5), (4, 6), (7, 3), (12, 8)])
def test_the_quantile_coupling_gives_scipys_distance(n: int, m: int) -> None:
    rng = np.random.default_rng(n * 100 + m)
    a, b = np.sort(rng.normal(size=n)), np.sort(rng.normal(0.5, size=m))
    assert quantiles.distance_sorted(a, b) == pytest.approx(sp_stats.wasserstein_distance(a, b), rel=1e-12)
    if n != m:
        pieces = quantiles.coupling(n, m)
        assert pieces.a_weight.sum() + pieces.b_weight.sum() == pytest.approx(1.0, rel=1e-15)
