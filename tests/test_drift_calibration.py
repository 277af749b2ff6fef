"""Calibration against Evidently's DataDriftPreset (real evidently, no mocks).

Cases: synthetic frames whose columns each get a random shift (none, mean, scale, mixture,
category frequencies, unseen categories, discrete and tied values, missing values) with
references below and above Evidently's 1000-row switch, and the datasets bundled with
scikit-learn split by a feature, by the target, and at random.

- `mlgitops.drift.compare` (exact path) must agree with Evidently's per-column verdict and
  method on >= 99% of columns (it is designed to agree on all of them).
- `compare_stats` (binned path, what the monitor runs) must agree on >= 97%: K-S, chi-square, z
  and Jensen-Shannon are exact on counters; only the binned Wasserstein distance can move a
  score sitting within ~1% of its 0.1 threshold to the other side.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

import mlgitops.drift
from mlgitops.core import drift, stats

os.environ.setdefault("DO_NOT_TRACK", "true")

# ~45 s on a quiet 2-core machine (Evidently renders plotly widgets per column); allow a loaded CI box
pytestmark = [pytest.mark.process, pytest.mark.timeout(900)]

EXACT_AGREEMENT = 0.99
BINNED_AGREEMENT = 0.97
N_COLUMNS = 24


@dataclass(frozen=True)
class Case:
    name: str
    reference: pd.DataFrame
    current: pd.DataFrame


Column = Callable[[np.random.Generator, int, int], tuple[Any, Any]]


def _numeric(rng: np.random.Generator, n: int, m: int) -> tuple[Any, Any]:
    scenario = rng.choice(["none", "mean", "scale", "mixture", "skewed", "ties"])
    size = rng.uniform(0.0, 0.35)
    ref = rng.normal(size=n)
    if scenario == "none":
        cur = rng.normal(size=m)
    elif scenario == "mean":
        cur = rng.normal(loc=size, size=m)
    elif scenario == "scale":
        cur = rng.normal(scale=1 + size, size=m)
    elif scenario == "mixture":
        cur = np.where(rng.random(m) < size / 2, rng.normal(2.0, size=m), rng.normal(size=m))
    elif scenario == "skewed":
        ref, cur = rng.lognormal(size=n), rng.lognormal(mean=size / 2, size=m)
    else:
        ref, cur = np.round(rng.normal(size=n), 1), np.round(rng.normal(loc=size / 2, size=m), 1)
    if rng.random() < 0.2:  # missing values on both sides
        ref = np.where(rng.random(n) < 0.05, np.nan, ref)
        cur = np.where(rng.random(m) < 0.05, np.nan, cur)
    return ref, cur


def _discrete(rng: np.random.Generator, n: int, m: int) -> tuple[Any, Any]:
    values = np.array([0.0, 1.0, 2.5, 4.0])[: rng.integers(2, 5)]
    p = rng.dirichlet(np.full(len(values), 5.0))
    q = p + rng.uniform(0, 0.1) * (rng.dirichlet(np.ones(len(values))) - p)
    return rng.choice(values, n, p=p), rng.choice(values, m, p=q / q.sum())


def _categorical(rng: np.random.Generator, n: int, m: int) -> tuple[Any, Any]:
    k = int(rng.integers(2, 7))
    labels = np.array([f"c{i}" for i in range(k)])
    p = rng.dirichlet(np.full(k, 4.0))
    q = p + rng.uniform(0, 0.15) * (rng.dirichlet(np.ones(k)) - p)
    ref = rng.choice(labels, n, p=p)
    cur = rng.choice(labels, m, p=q / q.sum())
    if rng.random() < 0.1:  # a category the reference never saw
        cur = np.where(rng.random(m) < 0.01, "new", cur)
    return ref.astype(object), cur.astype(object)


def _integers(rng: np.random.Generator, n: int, m: int) -> tuple[Any, Any]:
    lam = 30.0
    return rng.poisson(lam, n), rng.poisson(lam * (1 + rng.uniform(0, 0.08)), m)


GENERATORS: list[Column] = [_numeric] * 12 + [_discrete] * 3 + [_categorical] * 7 + [_integers] * 2


def synthetic_cases() -> Iterator[Case]:
    sizes = [(300, 500), (600, 1000), (1000, 800), (1500, 1000), (3000, 2000), (2500, 600)]
    for i, (n, m) in enumerate(sizes):
        rng = np.random.default_rng(1000 + i)
        ref, cur = {}, {}
        for j, gen in enumerate(GENERATORS):
            ref[f"col{j}"], cur[f"col{j}"] = gen(rng, n, m)
        yield Case(f"synthetic-{n}x{m}", pd.DataFrame(ref), pd.DataFrame(cur))


def sklearn_cases() -> Iterator[Case]:
    loaders = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }
    for name, load in loaders.items():
        bunch = load(as_frame=True)
        frame: pd.DataFrame = bunch.frame.drop(columns=["target"]).astype(float)
        target = bunch.frame["target"]
        by_feature = frame.iloc[:, 0] <= frame.iloc[:, 0].median()
        yield Case(f"{name}-by-{frame.columns[0]}", frame[by_feature], frame[~by_feature])
        by_target = target.rank(method="first") <= len(target) / 2
        yield Case(f"{name}-by-target", frame[by_target], frame[~by_target])
        shuffled = frame.sample(frac=1.0, random_state=0)
        half = len(frame) // 2
        yield Case(f"{name}-random", shuffled.iloc[:half], shuffled.iloc[half:])


def _evidently(case: Case) -> drift.DriftReport:
    from mlgitops.adapters import evidently_reports

    return evidently_reports.evidently_verdicts(case.reference, case.current)


@dataclass(frozen=True)
class Outcome:
    case: Case
    evidently: drift.DriftReport
    exact: drift.DriftReport
    binned: drift.DriftReport


def _binned(case: Case) -> drift.DriftReport:
    baseline = mlgitops.drift.build_baseline(case.reference)
    kinds = {c.name: c.kind for c in baseline.columns}
    live = stats.LiveStats.empty(baseline)
    for part in np.array_split(np.arange(len(case.current)), 4):
        rows = case.current.iloc[part]
        live.update({k: mlgitops.drift.column_values(rows[k], kinds[k]) for k in kinds}, None)
    return drift.compare_stats(baseline, live)


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    cases = [*synthetic_cases(), *sklearn_cases()]
    importlib.import_module("evidently.presets")  # once, before forking the two workers
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("fork")) as pool:
        evidently = list(pool.map(_evidently, cases))
    return [
        Outcome(case, ev, mlgitops.drift.compare(case.reference, case.current), _binned(case))
        for case, ev in zip(cases, evidently, strict=True)
    ]


def _pairs(outcomes: list[Outcome], path: str) -> list[tuple[str, drift.ColumnDrift, drift.ColumnDrift]]:
    pairs = []
    for o in outcomes:
        ours = getattr(o, path)
        for ev in o.evidently.columns:
            pairs.append((o.case.name, ev, ours.column(ev.column)))
    return pairs


def _agreement(pairs: list[tuple[str, drift.ColumnDrift, drift.ColumnDrift]]) -> tuple[float, list[str]]:
    misses = [
        f"{case}:{ev.column} evidently {ev.method}={ev.score:.4g} {ev.drifted} vs {ours.method}={ours.score:.4g} {ours.drifted}"
        for case, ev, ours in pairs
        if (ev.drifted, ev.method) != (ours.drifted, ours.method)
    ]
    return 1 - len(misses) / len(pairs), misses


def test_there_are_enough_verdicts_for_the_percentages_to_mean_something(outcomes: list[Outcome]) -> None:
    pairs = _pairs(outcomes, "exact")
    assert len(pairs) >= 300
    methods = {ev.method for _, ev, _ in pairs}
    assert methods >= {"ks", "chisquare", "z", "wasserstein", "jensenshannon"}
    drifted = sum(ev.drifted for _, ev, _ in pairs)
    assert 0.2 < drifted / len(pairs) < 0.8  # both verdicts are well represented


def test_compare_agrees_with_evidently(outcomes: list[Outcome]) -> None:
    pairs = _pairs(outcomes, "exact")
    agreement, misses = _agreement(pairs)
    print(f"\nexact path: {agreement:.2%} of {len(pairs)} column verdicts agree with Evidently")
    assert agreement >= EXACT_AGREEMENT, misses
    close = [abs(ev.score - ours.score) <= 1e-6 * max(1.0, abs(ev.score)) for _, ev, ours in pairs]
    assert sum(close) / len(close) >= EXACT_AGREEMENT
    for o in outcomes:
        assert o.exact.share == pytest.approx(o.evidently.share)
        assert o.exact.drifted == o.evidently.drifted, o.case.name


def test_compare_stats_agrees_with_evidently(outcomes: list[Outcome]) -> None:
    pairs = _pairs(outcomes, "binned")
    agreement, misses = _agreement(pairs)
    print(f"\nbinned path: {agreement:.2%} of {len(pairs)} column verdicts agree with Evidently; misses: {misses}")
    assert agreement >= BINNED_AGREEMENT, misses
    dataset = sum(o.binned.drifted == o.evidently.drifted for o in outcomes) / len(outcomes)
    assert dataset >= 0.9
