"""Baseline profiles and live statistics: algebra, round-trips, unseen values, memory."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlgitops.core import stats

pytestmark = pytest.mark.fast


def reference(n: int = 800, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=n),
        "skew": rng.lognormal(size=n),
        "color": rng.choice(["red", "green", "blue"], size=n),
        "small_int": rng.integers(0, 4, size=n),
        "flag": rng.random(n) < 0.3,
    }


def batch(n: int, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    return reference(n, seed)


@pytest.fixture(scope="module", params=[800, 5000], ids=["small-reference", "large-reference"])
def baseline(request: pytest.FixtureRequest) -> stats.Baseline:
    rng = np.random.default_rng(1)
    return stats.build_baseline(reference(request.param), predictions=rng.normal(size=request.param))


def test_kinds_follow_evidentlys_inference(baseline: stats.Baseline) -> None:
    kinds = {c.name: c.kind for c in baseline.columns}
    assert kinds == {
        "x": "numeric",
        "skew": "numeric",
        "color": "categorical",
        "small_int": "categorical",  # integers with <= 10 distinct values
        "flag": "categorical",
    }
    assert stats.infer_kind(np.arange(11)) == "numeric"
    assert stats.infer_kind(np.arange(10)) == "categorical"


def test_small_reference_keeps_every_value_and_large_one_quantile_edges(baseline: stats.Baseline) -> None:
    x = baseline.column("x")
    assert x.count + x.missing == baseline.row_count
    assert sum(x.counts) == x.count and len(x.counts) == len(x.edges) + 1
    if baseline.row_count <= stats.SAMPLE_LIMIT:
        assert x.exact_edges and len(x.sample) == x.count
    else:
        assert not x.exact_edges and len(x.edges) == stats.DEFAULT_BINS + 1
        assert len(x.sample) == stats.SAMPLE_LIMIT
    assert x.counts[0] == 0  # the lowest edge is the reference minimum


def test_baseline_round_trips_through_json(baseline: stats.Baseline) -> None:
    data = json.loads(json.dumps(baseline.to_dict()))
    assert data["schemaVersion"] == 1
    assert stats.Baseline.from_dict(data) == baseline


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(schemaVersion=2), "schemaVersion"),
        (lambda d: d.pop("rowCount"), "rowCount"),
        (lambda d: d["columns"][0].update(kind="text"), "columns[0].kind"),
        (lambda d: d["columns"][0].update(counts=[1, 2]), "columns[0].counts"),
        (lambda d: d["columns"][2].update(categories=["a", "a", "b"]), "columns[2]"),
        (lambda d: d["columns"][0].update(mean="high"), "columns[0].mean"),
    ],
)
def test_bad_baseline_fields_are_named(baseline: stats.Baseline, mutate: Any, field: str) -> None:
    data = json.loads(json.dumps(baseline.to_dict()))
    mutate(data)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        stats.Baseline.from_dict(data)


def test_merge_and_since_are_counter_algebra(baseline: stats.Baseline) -> None:
    a, b, c = batch(100, 10), batch(37, 11), batch(64, 12)
    preds = np.arange(100.0), np.arange(37.0), np.arange(64.0)
    stream = stats.LiveStats.empty(baseline)
    stream.update(a, preds[0])
    cursor = stream.copy()
    stream.update(b, preds[1])
    stream.update(c, preds[2])

    window = stats.LiveStats.empty(baseline)
    window.update(b, preds[1])
    window.update(c, preds[2])
    since, expected = stream.since(cursor).to_dict(), window.to_dict()
    floats = ("sums", "sumsq")
    assert {k: v for k, v in since.items() if k not in floats} == {
        k: v for k, v in expected.items() if k not in floats
    }
    for key in floats:  # float sums subtract up to rounding
        np.testing.assert_allclose(since[key], expected[key], rtol=1e-9, atol=1e-9)

    only_a = stats.LiveStats.empty(baseline)
    only_a.update(a, preds[0])
    merged = only_a.merge(window)
    assert merged.rows == stream.rows == 201
    assert merged.to_dict()["counts"] == stream.to_dict()["counts"]
    with pytest.raises(ValueError, match="earlier snapshot"):
        cursor.since(stream)


def test_update_counts_match_the_baseline_of_the_same_rows() -> None:
    ref = reference(700, 3)
    base = stats.build_baseline(ref, predictions=None)
    live = stats.LiveStats.empty(base)
    for start in range(0, 700, 64):
        live.update({k: v[start : start + 64] for k, v in ref.items()}, None)
    for col in base.columns:
        counts = live.column(col.name)
        if col.kind == "numeric":
            assert tuple(counts.bin_counts) == col.counts
            np.testing.assert_allclose(counts.sums, col.sums)
        else:
            assert tuple(counts.counts) == col.counts and counts.other == 0


def test_unseen_categories_go_to_other_and_missing_values_are_counted_apart() -> None:
    base = stats.build_baseline(
        {"c": np.array(["a", "b", "a"]), "n": np.array([1.0, 2.0, 3.0])}, predictions=None
    )
    live = stats.LiveStats.empty(base)
    live.update(
        {"c": np.array(["a", "zzz", None, "b"], dtype=object), "n": np.array([np.nan, 2.0, np.inf, 2.5])},
        None,
    )
    c, n = live.column("c"), live.column("n")
    assert (tuple(c.counts), c.other, c.missing) == ((1, 1), 1, 1)
    assert n.missing == 2 and n.count == 2
    # fine codes: 2.0 sits on an edge (odd code), 2.5 between edges (even code)
    assert n.counts[3] == 1 and n.counts[4] == 1


def test_numeric_looking_categories_match_numbers_and_strings_alike() -> None:
    base = stats.build_baseline({"k": np.array([0, 1, 2, 1])}, predictions=None)
    for values in (np.array([1, 2, 7]), np.array([1.0, 2.0, 7.0]), np.array(["1", "2", "7"])):
        live = stats.LiveStats.empty(base)
        live.update({"k": values}, None)
        assert tuple(live.column("k").counts) == (0, 1, 1) and live.column("k").other == 1


def test_memory_and_json_size_do_not_grow_with_rows(baseline: stats.Baseline) -> None:
    small, large = stats.LiveStats.empty(baseline), stats.LiveStats.empty(baseline)
    small.update(batch(1000, 5), np.zeros(1000))
    for seed in range(20):
        large.update(batch(5000, seed), np.zeros(5000))
    assert small.nbytes() == large.nbytes()
    assert len(small.to_dict()["counts"]) == len(large.to_dict()["counts"])


def test_live_stats_round_trip_with_and_without_baseline(baseline: stats.Baseline) -> None:
    live = stats.LiveStats.empty(baseline)
    live.update(batch(300, 7), np.ones(300))
    data = json.loads(json.dumps(live.to_dict()))
    again = stats.LiveStats.from_dict(data, baseline=baseline)
    assert again.to_dict() == live.to_dict()
    again.update(batch(10, 8), np.ones(10))  # keeps counting
    detached = stats.LiveStats.from_dict(data)
    assert detached.merge(live).rows == 600
    assert detached.column("color").counts.tolist() == live.column("color").counts.tolist()
    with pytest.raises(ValueError, match="baseline="):
        detached.update(batch(1, 1), None)


def test_stats_from_another_baseline_do_not_combine() -> None:
    one = stats.build_baseline(reference(300, 1), predictions=None)
    two = stats.build_baseline(reference(300, 2), predictions=None)
    with pytest.raises(ValueError, match="different baselines"):
        stats.LiveStats.empty(one).merge(stats.LiveStats.empty(two))


def _reference_counts(edges: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> tuple[Any, Any, float, int]:
    """One numeric column counted the plain way: a search per value (fine counts, bin sums)."""
    x = values[np.isfinite(values)]
    left = np.searchsorted(edges, x, side="left")
    at_edge = (left < len(edges)) & (edges[np.minimum(left, len(edges) - 1)] == x)
    fine = np.bincount(2 * left + at_edge, minlength=2 * len(edges) + 1)
    sums = np.bincount(np.searchsorted(edges, x, side="right"), weights=x, minlength=len(edges) + 1)
    return fine, sums, float(np.dot(x, x)), len(values) - len(x)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    reference_rows=st.sampled_from([5, 40, 900, 3000]),
    batch_rows=st.sampled_from([1, 7, 64, 5000]),
    batches=st.integers(1, 3),
)
def test_numeric_counting_equals_a_search_per_value(seed: int, reference_rows: int, batch_rows: int, batches: int) -> None:
    """The sort-based counting of `LiveStats.update` gives the counters a per-value search gives:
    ties on edges, values between and beyond the edges, missing values of every sort, -0.0."""
    rng = np.random.default_rng(seed)
    ref = {
        "smooth": rng.normal(size=reference_rows),
        "ties": np.round(rng.normal(size=reference_rows), 1),
        "few": rng.choice([-0.0, 1.0, 2.5], reference_rows),
        "far": 1e12 + rng.integers(0, 30, reference_rows) * 0.5,
    }
    base = stats.build_baseline(ref, predictions=None)
    live = stats.LiveStats.empty(base)
    seen: dict[str, list[np.ndarray[Any, Any]]] = {k: [] for k in ref}
    for _ in range(batches):
        batch = {
            "smooth": rng.normal(0.2, 1.3, batch_rows),
            "ties": np.round(rng.normal(size=batch_rows), 1),
            "few": rng.choice([0.0, -0.0, 1.0, 2.5, 3.0], batch_rows),
            "far": 1e12 + rng.integers(-5, 35, batch_rows) * 0.5,
        }
        for values in batch.values():
            values[rng.random(batch_rows) < 0.1] = rng.choice([np.nan, np.inf, -np.inf])
        live.update(batch, None)
        for k, v in batch.items():
            seen[k].append(v)
    for name in ref:
        col = live.column(name)
        fine, sums, sumsq, missing = _reference_counts(np.asarray(base.column(name).edges), np.concatenate(seen[name]))
        assert col.counts.tolist() == fine.tolist(), name
        assert col.missing == missing
        assert col.sums == pytest.approx(sums, rel=1e-12, abs=1e-9)
        assert col.sumsq == pytest.approx(sumsq, rel=1e-12)
    assert live.rows == batches * batch_rows


def test_a_bad_batch_changes_nothing() -> None:
    base = stats.build_baseline({"x": np.arange(50.0), "c": np.array(["a", "b"] * 25)}, predictions=None)
    live = stats.LiveStats.empty(base)
    with pytest.raises(ValueError, match="lacks feature 'c'"):
        live.update({"x": np.arange(10.0)}, None)
    assert live.rows == 0 and live.to_dict()["counts"] == stats.LiveStats.empty(base).to_dict()["counts"]
