"""The vectorized drift path equals the one-column reference computation (`column_drift_exact`).

`compare_matrices` (what `mlgitops.drift.compare` and `compare_arrays` run) sorts all columns
at once; `column_drift_exact` is the straightforward per-column code it replaced, kept as the
reference. Same methods, same verdicts, scores equal to float rounding; the sorted-row
statistics equal scipy's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sp_stats

import mlgitops.drift
from mlgitops.core import drift, ecdf
from mlgitops.core.drift import quantiles
from tests import test_drift_calibration as calibration

pytestmark = pytest.mark.fast


def reference_report(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, drift.ColumnDrift]:
    """The pre-vectorization computation: one column at a time on raw values."""
    kinds = mlgitops.drift.column_kinds(reference)
    return {
        name: drift.column_drift_exact(
            name,
            mlgitops.drift.column_values(reference[name], kind),
            mlgitops.drift.column_values(current[name], kind),
            kind=kind,
        )
        for name, kind in kinds.items()
    }


def assert_same(fast: drift.DriftReport, slow: dict[str, drift.ColumnDrift]) -> None:
    assert [c.column for c in fast.columns] == list(slow)
    for col in fast.columns:
        ref = slow[col.column]
        assert (col.method, col.drifted, col.kind, col.threshold) == (ref.method, ref.drifted, ref.kind, ref.threshold)
        if np.isnan(ref.score):
            assert np.isnan(col.score)
        else:
            assert col.score == pytest.approx(ref.score, **tolerance(ref)), col.column


def tolerance(col: drift.ColumnDrift) -> dict[str, float]:
    """How close `compare` keeps a score to scipy's: large-reference Wasserstein scores come
    from float32 sorts within `quantiles.TOLERANCE` (absolute below 1, relative above), the
    others from float64 arithmetic."""
    if col.method == "wasserstein":
        return {"rel": quantiles.TOLERANCE, "abs": quantiles.TOLERANCE}
    return {"rel": 1e-9, "abs": 1e-12}


@pytest.mark.parametrize(
    "case",
    [*calibration.synthetic_cases(), *calibration.sklearn_cases()],
    ids=lambda c: c.name,
)
def test_calibration_cases_give_the_reference_verdicts(case: calibration.Case) -> None:
    assert_same(mlgitops.drift.compare(case.reference, case.current), reference_report(case.reference, case.current))


def _column(draw: Any, kind: str, size: int, rng: np.random.Generator) -> Any:
    if kind == "normal":
        return rng.normal(draw(st.floats(-1, 1)), draw(st.floats(0.5, 2)), size)
    if kind == "ties":
        return np.round(rng.normal(size=size), draw(st.integers(0, 2)))
    if kind == "few":
        values = np.array([-1.5, 0.0, 2.0, 7.25, 1e6, -0.0])[: draw(st.integers(1, 6))]
        return rng.choice(values, size)
    if kind == "gaps":  # missing numbers of every sort
        x = rng.normal(size=size)
        x[rng.random(size) < draw(st.floats(0, 0.5))] = rng.choice([np.nan, np.inf, -np.inf])
        return x
    if kind == "huge":  # values the shifted search rounds together
        return 1e15 + rng.integers(0, 50, size) * draw(st.sampled_from([0.125, 1.0, 3.0]))
    if kind == "ints":
        return rng.integers(0, draw(st.integers(1, 30)), size)
    labels = np.array(["a", "b", "c", "d", "e", "f", None], dtype=object)[: draw(st.integers(2, 7))]
    return rng.choice(labels, size)


@st.composite
def frames(draw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.sampled_from([3, 12, 40, 400, 1000, 1001, 1800]))
    m = draw(st.sampled_from([1, 5, 60, 900, 2500]))
    kinds = draw(st.lists(st.sampled_from(["normal", "ties", "few", "gaps", "huge", "ints", "labels"]), min_size=1, max_size=6))
    reference = pd.DataFrame({f"c{i}": _column(draw, k, n, rng) for i, k in enumerate(kinds)})
    current = pd.DataFrame({f"c{i}": _column(draw, k, m, rng) for i, k in enumerate(kinds)})
    return reference, current


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_random_frames_give_the_reference_verdicts(pair: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = pair
    try:
        slow = reference_report(reference, current)
    except ValueError as exc:  # e.g. a column with no reference values: the same sentence
        with pytest.raises(ValueError, match="has no values in the reference"):
            mlgitops.drift.compare(reference, current)
        assert "has no values in the reference" in str(exc)
        return
    if not slow:  # only label columns with no label at all: nothing to compare
        with pytest.raises(ValueError, match="No numeric or categorical columns"):
            mlgitops.drift.compare(reference, current)
        return
    assert_same(mlgitops.drift.compare(reference, current), slow)
    arrays = drift.compare_arrays(
        {k: mlgitops.drift.column_values(reference[k], c.kind) for k, c in slow.items()},
        {k: mlgitops.drift.column_values(current[k], c.kind) for k, c in slow.items()},
        kinds={k: c.kind for k, c in slow.items()},
    )
    assert_same(arrays, slow)


def _ragged(rng: np.random.Generator, k: int, width: int, *, ties: bool) -> np.ndarray[Any, Any]:
    x = rng.normal(size=(k, width))
    if ties:
        x = np.round(x, 1)
    x[rng.random((k, width)) < 0.1] = np.nan
    return x


@pytest.mark.parametrize("ties", [False, True])
def test_sorted_row_statistics_equal_scipy(ties: bool) -> None:
    rng = np.random.default_rng(3)
    for n, m in [(1, 5), (5, 1), (50, 70), (300, 2000), (1200, 900)]:
        ref, cur = _ragged(rng, 4, n, ties=ties), _ragged(rng, 4, m, ties=ties) * 1.2 + 0.1
        rs, rn = ecdf.sort_rows(ref)
        cs, cn = ecdf.sort_rows(cur)
        w = ecdf.wasserstein_sorted(rs, rn, cs, cn)
        d = ecdf.ks_sorted(rs, rn, cs, cn)
        merged = ecdf.merge(rs, rn, cs, cn)
        for j in range(4):
            a, b = ref[j][np.isfinite(ref[j])], cur[j][np.isfinite(cur[j])]
            if len(a) == 0 or len(b) == 0:
                continue
            assert w[j] == pytest.approx(sp_stats.wasserstein_distance(a, b), rel=1e-12)
            assert ecdf.wasserstein(merged)[j] == pytest.approx(sp_stats.wasserstein_distance(a, b), rel=1e-12)
            assert d[j] == pytest.approx(sp_stats.ks_2samp(a, b).statistic, abs=1e-15)
            assert ecdf.ks_statistic(merged)[j] == pytest.approx(d[j], abs=1e-15)


def test_count_below_equals_searchsorted_where_the_shift_rounds_values_together() -> None:
    rng = np.random.default_rng(4)
    rows = np.sort(np.stack([1e15 + rng.integers(0, 40, 300) * 0.125, rng.normal(size=300) * 1e-300]), axis=1)
    queries = np.sort(np.stack([1e15 + rng.integers(0, 40, 50) * 0.125, rng.normal(size=50) * 1e-300]), axis=1)
    counts = np.array([300, 300])
    expected = np.stack([np.searchsorted(rows[j], queries[j]) for j in range(2)])
    assert (ecdf.count_below(rows, counts, queries) == expected).all()
    assert (ecdf.count_below_shifted(rows, counts, queries) == expected).all()
    assert (ecdf.count_below(rows, counts, queries[:, :5]) == expected[:, :5]).all()  # all rows at once
    spanning = np.array([[-1e308, 0.0, 1e308]])  # a span no shift can hold: searched row by row
    assert ecdf.count_below(spanning, np.array([3]), np.array([[0.0, 1e308, 2.0]])).tolist() == [[1, 2, 2]]


@pytest.mark.parametrize("width", [1, 7, ecdf.ROW_SEARCH_QUERIES, 200])
def test_count_below_row_by_row_and_all_at_once_agree(width: int) -> None:
    rng = np.random.default_rng(width)
    rows, counts = ecdf.sort_rows(_ragged(rng, 5, 300, ties=True))
    queries = np.round(rng.normal(size=(5, width)), 1)
    queries[rng.random((5, width)) < 0.2] = np.nan  # padding: counts every value
    queries[0, 0] = -0.0
    expected = np.stack([np.searchsorted(rows[j, : counts[j]], queries[j]) for j in range(5)])
    assert (ecdf.count_below(rows, counts, queries) == expected).all()
    assert (ecdf.count_below_shifted(rows, counts, queries) == expected).all()


def test_compare_leaves_the_frames_as_they_were() -> None:
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"x": rng.normal(size=400), "c": rng.choice(["a", "b"], 400)})
    current = pd.DataFrame({"x": rng.normal(size=300)[::-1], "c": rng.choice(["a", "b", None], 300)})
    ref_copy, cur_copy = reference.copy(), current.copy()
    mlgitops.drift.compare(reference, current)
    pd.testing.assert_frame_equal(reference, ref_copy)
    pd.testing.assert_frame_equal(current, cur_copy)


def test_counts_give_what_the_values_give() -> None:
    rng = np.random.default_rng(9)
    names, kinds = ["two", "three", "large", "gone"], ["categorical"] * 4
    ref_values = np.stack([rng.integers(0, 2, 1500), rng.integers(0, 3, 1500), rng.integers(0, 4, 1500), np.zeros(1500)])
    cur_values = np.stack([rng.integers(0, 2, 300), rng.integers(1, 3, 300), rng.integers(0, 5, 300), np.full(300, np.nan)])
    ref_values[:, :700] = ref_values[:, :700] % 2  # a reference of 700 values: p-value tests
    small = ref_values.copy()
    small[:, 700:] = np.nan
    for reference in (ref_values, small):
        expected = drift.compare_matrices(names, kinds, reference, cur_values)
        keys = np.arange(5.0)[None, :, None]
        counted = drift.compare_counts(
            names,
            kinds,
            (reference[:, None, :] == keys).sum(axis=2).astype(np.float64),
            (cur_values[:, None, :] == keys).sum(axis=2).astype(np.float64),
        )
        assert [c.method for c in counted] == [c.method for c in expected]
        assert {c.method for c in counted} >= ({"z", "chisquare", "missing"} if reference is small else {"jensenshannon"})
        assert counted == expected


def test_counts_refuse_what_they_cannot_test() -> None:
    with pytest.raises(ValueError, match="has no values in the reference"):
        drift.compare_counts(["c"], ["categorical"], np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="by compare_matrices"):
        drift.compare_counts(["x"], ["numeric"], np.ones((1, 9)), np.ones((1, 9)))


@pytest.mark.parametrize("width", [1, 50, ecdf.ROW_RUNNING_SUM, 3000])
def test_leading_sums_row_by_row_and_all_at_once_equal_the_running_sum(width: int) -> None:
    rng = np.random.default_rng(width)
    rows = rng.normal(size=(3, width)) * 1e3
    lengths = np.sort(rng.integers(0, width + 1, (3, 40)), axis=1)
    running = np.concatenate([np.zeros((3, 1)), np.cumsum(rows, axis=1)], axis=1)
    expected = np.take_along_axis(running, lengths, axis=1)
    assert np.array_equal(ecdf.leading_sums(rows, lengths), expected)
    assert ecdf.leading_sums(rows, np.zeros((3, 2), dtype=np.int64)).tolist() == [[0.0, 0.0]] * 3


def test_sort_rows_counts_values_whose_sum_overflows() -> None:
    values = np.array([[1e308, 1e308, -2.0], [np.inf, 3.0, np.nan]])
    x, counts = ecdf.sort_rows(values)
    assert counts.tolist() == [3, 1]
    assert x[0].tolist() == [-2.0, 1e308, 1e308]
    assert x[1, 0] == 3.0 and np.isnan(x[1, 1:]).all()
    assert np.isinf(values[1, 0])  # the input is left alone
