"""Drift measures: known shifts detected, none not; scores equal scipy's; both paths agree."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp_stats
from scipy.spatial import distance

import mlgitops.drift
from mlgitops.core import drift, stats
from mlgitops.notebook import drift as drift_impl

Arrays = dict[str, np.ndarray[Any, Any]]


def frames(n: int, m: int, *, shift: float, seed: int = 0) -> tuple[Arrays, Arrays]:
    rng = np.random.default_rng(seed)

    def make(size: int, s: float) -> Arrays:
        p = np.array([0.5, 0.3, 0.2]) + np.array([-1, 0.5, 0.5]) * min(s, 0.4)
        return {
            "num": rng.normal(loc=s, size=size),
            "wide": rng.normal(scale=1 + s, size=size),
            "cat": rng.choice(["a", "b", "c"], size=size, p=p),
            "binary": rng.choice(["yes", "no"], size=size, p=[0.5 + min(s, 0.4), 0.5 - min(s, 0.4)]),
            "few": rng.choice([0.0, 1.0, 2.0], size=size, p=p),
        }

    return make(n, 0.0), make(m, shift)


def binned(ref: Arrays, cur: Arrays, *, batches: int = 3) -> drift.DriftReport:
    base = stats.build_baseline(ref, predictions=None)
    live = stats.LiveStats.empty(base)
    for part in np.array_split(np.arange(len(next(iter(cur.values())))), batches):
        live.update({k: v[part] for k, v in cur.items()}, None)
    return drift.compare_stats(base, live)


@pytest.mark.parametrize("n", [600, 3000], ids=["small-reference", "large-reference"])
def test_methods_follow_evidentlys_defaults(n: int) -> None:
    ref, cur = frames(n, 800, shift=0.0)
    methods = {c.column: c.method for c in drift.compare_arrays(ref, cur).columns}
    if n <= 1000:
        assert methods == {"num": "ks", "wide": "ks", "cat": "chisquare", "binary": "z", "few": "chisquare"}
    else:
        expected = {"num": "wasserstein", "wide": "wasserstein", "cat": "jensenshannon"}
        assert methods == expected | {"binary": "jensenshannon", "few": "jensenshannon"}
    assert {c.column: c.method for c in binned(ref, cur).columns} == methods


@pytest.mark.parametrize("n", [600, 3000], ids=["small-reference", "large-reference"])
def test_known_shift_is_detected_and_no_shift_is_not(n: int) -> None:
    still = drift.compare_arrays(*frames(n, 1000, shift=0.0, seed=1))
    moved = drift.compare_arrays(*frames(n, 1000, shift=0.6, seed=1))
    # Evidently's chi-square takes reference frequencies as exact, so it is anti-conservative:
    # an unshifted categorical column may still flag; the dataset verdict must not.
    assert not still.drifted and still.share < 0.5
    assert not still.column("num").drifted and not still.column("wide").drifted
    assert moved.drifted and moved.share == 1.0
    assert moved.drifted_columns == ("num", "wide", "cat", "binary", "few")


def test_scores_equal_scipy_on_the_exact_path() -> None:
    rng = np.random.default_rng(7)
    for n, m in [(800, 1000), (1000, 1000), (500, 20000), (300, 301), (1000, 7)]:
        a, b = rng.normal(size=n), rng.normal(0.1, 1.1, size=m)
        got = drift.column_drift_exact("x", a, b, kind="numeric")
        assert got.score == pytest.approx(sp_stats.ks_2samp(a, b).pvalue, abs=1e-9, rel=1e-9)
        w = drift.column_drift_exact("x", a, b, kind="numeric", method="wasserstein")
        expected = sp_stats.wasserstein_distance(a, b) / max(np.std(a), 0.001)
        assert w.score == pytest.approx(expected, rel=1e-9)

    ref = rng.choice(list("abcd"), size=700, p=[0.4, 0.3, 0.2, 0.1])
    cur = rng.choice(list("abcd"), size=900, p=[0.3, 0.3, 0.3, 0.1])
    r = np.array([np.sum(ref == k) for k in "abcd"], dtype=float)
    c = np.array([np.sum(cur == k) for k in "abcd"], dtype=float)
    chi = drift.column_drift_exact("c", ref, cur, kind="categorical")
    assert chi.method == "chisquare"
    assert chi.score == pytest.approx(sp_stats.chisquare(c, r * c.sum() / r.sum()).pvalue, rel=1e-9, abs=1e-12)
    js = drift.column_drift_exact("c", ref, cur, kind="categorical", method="jensenshannon")
    assert js.score == pytest.approx(distance.jensenshannon(r / r.sum(), c / c.sum()), abs=1e-12)


def test_z_test_matches_the_two_proportion_formula() -> None:
    ref = np.array(["a"] * 300 + ["b"] * 200)
    cur = np.array(["a"] * 250 + ["b"] * 250)
    got = drift.column_drift_exact("b", ref, cur, kind="categorical")
    p1, p2, pooled = 0.4, 0.5, 450 / 1000
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / 500 + 1 / 500))
    assert got.method == "z"
    assert got.score == pytest.approx(2 * (1 - sp_stats.norm.cdf(abs(z))), abs=1e-12)
    same = drift.column_drift_exact("b", np.array(["a"] * 5), np.array(["a"] * 3), kind="categorical")
    assert same.score == 1.0 and not same.drifted


def test_psi_is_available_as_a_method() -> None:
    ref, cur = frames(2000, 2000, shift=0.5, seed=3)
    report = drift.compare_arrays(ref, cur, method_overrides={"num": "psi", "cat": "psi"})
    assert report.column("num").method == "psi" and report.column("num").drifted
    assert report.column("cat").method == "psi" and report.column("cat").drifted
    with pytest.raises(ValueError, match="Unknown drift methods"):
        drift.compare_arrays(ref, cur, method_overrides={"num": "magic"})


@pytest.mark.parametrize("n", [600, 3000], ids=["small-reference", "large-reference"])
@pytest.mark.parametrize("shift", [0.0, 0.08, 0.3])
def test_binned_path_agrees_with_exact_path(n: int, shift: float) -> None:
    ref, cur = frames(n, 1500, shift=shift, seed=11)
    exact, fast = drift.compare_arrays(ref, cur), binned(ref, cur)
    for e, f in zip(exact.columns, fast.columns, strict=True):
        assert (e.column, e.method, e.drifted) == (f.column, f.method, f.drifted)
        if e.method == "wasserstein":
            # exact unless the CDFs cross inside a bin; noise-level distances cross often
            assert f.score == pytest.approx(e.score, rel=0.02, abs=5e-3)
        else:  # K-S, chi-square, z and Jensen-Shannon on counts are exact
            assert f.score == pytest.approx(e.score, rel=1e-9, abs=1e-12)
    assert exact.share == fast.share


def test_binned_ks_is_exact_with_ties() -> None:
    rng = np.random.default_rng(5)
    ref = {"r": np.round(rng.normal(size=400), 1)}
    cur = {"r": np.round(rng.normal(0.1, size=900), 1)}
    e, f = drift.compare_arrays(ref, cur).column("r"), binned(ref, cur).column("r")
    assert e.method == f.method == "ks"
    assert f.score == pytest.approx(e.score, rel=1e-12)


def test_all_missing_current_column_is_reported_as_drift() -> None:
    base = stats.build_baseline({"x": np.arange(50.0)}, predictions=None)
    live = stats.LiveStats.empty(base)
    live.update({"x": np.full(20, np.nan)}, None)
    col = drift.compare_stats(base, live).column("x")
    assert col.method == "missing" and col.drifted


def test_prediction_drift_is_reported_but_not_counted_in_the_share() -> None:
    rng = np.random.default_rng(2)
    base = stats.build_baseline({"x": rng.normal(size=500)}, predictions=rng.integers(0, 2, 500))
    live = stats.LiveStats.empty(base)
    live.update({"x": rng.normal(size=500)}, np.ones(500, dtype=int))
    report = drift.compare_stats(base, live)
    assert report.prediction is not None and report.prediction.drifted
    assert report.share == 0.0 and not report.drifted
    assert report.to_dict()["prediction"]["method"] == "z"


def test_public_compare_on_frames_and_its_errors() -> None:
    ref, cur = frames(500, 500, shift=0.5, seed=4)
    reference, current = pd.DataFrame(ref), pd.DataFrame(cur)
    result = mlgitops.drift.compare(reference, current)
    assert result.drifted and result.share == 1.0
    assert {c.column: (c.drifted, c.method) for c in result.columns}["num"] == (True, "ks")
    table = mlgitops.drift.to_frame(result)
    assert list(table.columns) == ["column", "kind", "method", "score", "threshold", "drifted"]
    with pytest.raises(ValueError, match=r"current frame lacks columns \['cat'\]; pass columns="):
        mlgitops.drift.compare(reference, current.drop(columns=["cat"]))
    subset = mlgitops.drift.compare(reference, current.drop(columns=["cat"]), columns=["num", "few"])
    assert [c.column for c in subset.columns] == ["num", "few"]
    assert subset.to_dict()["drifted"] is True


def test_frames_with_missing_values_and_pandas_dtypes() -> None:
    rng = np.random.default_rng(9)
    reference = pd.DataFrame(
        {
            "x": np.where(rng.random(400) < 0.1, np.nan, rng.normal(size=400)),
            "s": pd.Series(rng.choice(np.array(["u", "v", None], dtype=object), 400), dtype="string"),
            "k": pd.Categorical(rng.choice(["p", "q", "r"], 400)),
            "i": pd.array(rng.integers(0, 3, 400), dtype="Int64"),
        }
    )
    result = mlgitops.drift.compare(reference, reference.sample(frac=1.0, random_state=1))
    assert {c.column: c.kind for c in result.columns} == {
        "x": "numeric",
        "s": "categorical",
        "k": "categorical",
        "i": "categorical",
    }
    assert not result.drifted
    base = mlgitops.drift.build_baseline(reference)
    assert base.column("x").missing == int(reference.x.isna().sum())


def test_a_large_window_compared_in_threads_equals_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """From `PARALLEL_VALUES` rows on, numeric columns are split over threads: the same report,
    column for column and bit for bit, as the single-threaded comparison."""
    rng = np.random.default_rng(7)
    names = [f"n{i}" for i in range(7)]
    ref = pd.DataFrame(rng.normal(size=(2000, 7)), columns=names)
    cur = pd.DataFrame(rng.normal(0.05, 1.1, size=(3000, 7)), columns=names)
    cur.iloc[::97, 2] = np.nan  # missing values in one group
    ref["few"], cur["few"] = rng.integers(0, 4, 2000).astype(float), rng.integers(0, 5, 3000).astype(float)
    ref["c"], cur["c"] = rng.choice(["a", "b"], 2000), rng.choice(["a", "b", "z"], 3000)
    monkeypatch.setattr(drift_impl, "PARALLEL_VALUES", 10**9)
    one = mlgitops.drift.compare(ref, cur)
    monkeypatch.setattr(drift_impl, "PARALLEL_VALUES", 0)
    monkeypatch.setattr(drift_impl.os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert len(drift_impl._groups(8, 3000)) == 3
    threaded = mlgitops.drift.compare(ref, cur)
    assert threaded == one
    assert [c.column for c in threaded.columns] == [*names, "few", "c"]
