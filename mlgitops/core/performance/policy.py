"""The performance revert decision (issue 20, item 5): pure, evidence returned as data.

Given ``spec.performance``, the realized metric of the new version and of the previous version
on the same labelled rows, and the new version's own offline evaluation:

- **keep** while fewer than ``minRows`` rows are labelled, or while the metric is within the
  policy (not below ``minimum``, not more than ``maxDrop`` worse than the evaluation);
- **revert** when the policy is breached *and* the previous version would have done
  measurably better on the same rows (attribution) and ``action`` is ``revert``;
- **alert** otherwise ("both versions degrade: the world changed", or ``action: alert``).

"Measurably better" is a one-sided test at `ALPHA` (5 %) on the paired rows:

- accuracy: the exact McNemar test — of the rows exactly one version got right, the share the
  previous version got right is tested against 1/2 with the binomial tail
  (`mcnemar_p`); rows both got right or both got wrong carry no information about which is better;
- every other metric: a paired bootstrap (`paired_bootstrap_p`) — the same resampled rows are
  scored for both versions `RESAMPLES` times with a fixed seed; the p-value is the share of
  resamples in which the previous version is *not* better (ties count against it), plus one,
  over resamples plus one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mlgitops.core.performance import names
from mlgitops.core.performance.spec import PerformancePolicy

ALPHA = 0.05
RESAMPLES = 1000

Action = Literal["revert", "alert", "keep"]


def mcnemar_p(new_correct: Sequence[bool], previous_correct: Sequence[bool]) -> float:
    """One-sided exact McNemar p-value that the previous version is more accurate.

    ``b`` rows only the previous version got right, ``c`` only the new one: P(X >= b) for
    X ~ Binomial(b + c, 1/2). 1.0 when no row is discordant."""
    new = np.asarray(new_correct, dtype=bool)
    prev = np.asarray(previous_correct, dtype=bool)
    if new.shape != prev.shape:
        raise ValueError("the two versions must be scored on the same rows")
    b = int(np.sum(prev & ~new))
    c = int(np.sum(new & ~prev))
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(b, n + 1))
    return min(1.0, float(tail / 2**n))


Score = Callable[[np.ndarray, np.ndarray], float]


def paired_bootstrap_p(score: Score, y: np.ndarray, new_out: np.ndarray,
                       previous_out: np.ndarray, *, greater_is_better: bool,
                       resamples: int = RESAMPLES, seed: int = 0) -> float:
    """One-sided paired-bootstrap p-value that the previous version scores better.

    ``score(y, out)`` is the metric (scikit-learn's, passed in at the edge); ``*_out`` are what
    it takes (labels, probabilities or values) row for row. Resamples that cannot be scored
    (one class only, for ROC AUC) are skipped."""
    n = len(y)
    if n == 0 or len(new_out) != n or len(previous_out) != n:
        raise ValueError("the two versions must be scored on the same, non-empty rows")
    return _bootstrap(lambda idx: (score(y[idx], new_out[idx]), score(y[idx], previous_out[idx])),
                      n, greater_is_better=greater_is_better, resamples=resamples, seed=seed)


def _bootstrap(pair: Callable[[np.ndarray], tuple[float | None, float | None]], n: int, *,
               greater_is_better: bool, resamples: int, seed: int) -> float:
    """(resamples in which the previous version is not better + 1) / (scored resamples + 1);
    ``pair(idx)`` scores (new, previous) on the rows ``idx``."""
    rng = np.random.default_rng(seed)
    not_better = 0
    scored = 0
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        try:
            a, b = pair(idx)
        except ValueError:
            continue
        if a is None or b is None:
            continue
        scored += 1
        better = b > a if greater_is_better else b < a
        not_better += not better
    return (not_better + 1) / (scored + 1)


@dataclass(frozen=True)
class Outputs:
    """What one version answered for the labelled rows, row for row."""

    prediction: np.ndarray
    #: class probabilities, one column per class of ``classes`` (classifiers that give them)
    proba: np.ndarray | None = None


def observe(policy: PerformancePolicy, *, y: np.ndarray, new: Outputs,
            previous: Outputs | None, classes: Sequence[object] = (),
            evaluation: float | None = None, resamples: int = RESAMPLES,
            seed: int = 0) -> Observation:
    """The `Observation` `decide` takes, from the labelled rows and both versions' answers on
    them: the policy's metric for each (`metrics`, exactly scikit-learn's) and the attribution
    test (McNemar for accuracy, the paired bootstrap otherwise)."""
    from mlgitops.core.performance import metrics

    m = policy.metric
    if m is None:
        raise ValueError("the policy names no metric")
    regressor = names.kind(m) == "regressor"
    labels = list(classes) or None

    def value(out: Outputs, idx: np.ndarray | None = None) -> float | None:
        rows = slice(None) if idx is None else idx
        if regressor:
            got = metrics.regression(y[rows], out.prediction[rows])
        else:
            got = metrics.classification(y[rows], out.prediction[rows],
                                         None if out.proba is None else out.proba[rows], labels)
        return got.get(m)

    new_value = value(new)
    if new_value is None:
        raise ValueError(f"{m} is undefined on these rows for the new version")
    if previous is None:
        return Observation(rows=len(y), new=new_value, previous=None, evaluation=evaluation)
    prev_value = value(previous)
    if m == "accuracy":
        p = mcnemar_p(new.prediction == y, previous.prediction == y)
        method = "exact McNemar"
    else:
        p = _bootstrap(lambda idx: (value(new, idx), value(previous, idx)), len(y),
                       greater_is_better=names.greater_is_better(m), resamples=resamples,
                       seed=seed)
        method = f"paired bootstrap ({resamples} resamples)"
    return Observation(rows=len(y), new=new_value, previous=prev_value, evaluation=evaluation,
                       p_value=None if prev_value is None else p, method=method)


@dataclass(frozen=True)
class Observation:
    """What the Monitor measured for one window of labelled rows."""

    rows: int
    new: float
    #: the previous version's value on the same rows (None: no previous version)
    previous: float | None
    #: the new version's own offline evaluation (None: published without --evaluation)
    evaluation: float | None
    #: the attribution test's p-value (None: not computed, e.g. no previous version)
    p_value: float | None = None
    method: str = ""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    evidence: dict[str, object] = field(default_factory=dict)


def breaches(policy: PerformancePolicy, value: float, evaluation: float | None) -> list[str]:
    """How ``value`` breaks the policy (empty: it does not)."""
    m = policy.metric
    if m is None:
        return []
    better = names.greater_is_better(m)
    out = []
    if policy.minimum is not None and (value < policy.minimum if better else value > policy.minimum):
        out.append(f"{m} {value:.6g} is {'below' if better else 'above'} the "
                   f"{'minimum' if better else 'maximum'} {policy.minimum:.6g}")
    if policy.max_drop is not None and evaluation is not None:
        drop = evaluation - value if better else value - evaluation
        if drop > policy.max_drop:
            out.append(f"{m} {value:.6g} is {drop:.6g} worse than the version's own evaluation "
                       f"{evaluation:.6g} (maxDrop {policy.max_drop:.6g})")
    return out


def decide(policy: PerformancePolicy, obs: Observation, *, alpha: float = ALPHA) -> Decision:
    """Revert, alert or keep, with the evidence for the decision page."""
    evidence: dict[str, object] = {
        "metric": policy.metric, "rows": obs.rows, "new": obs.new, "previous": obs.previous,
        "evaluation": obs.evaluation, "pValue": obs.p_value, "method": obs.method,
        "alpha": alpha, "minRows": policy.min_rows, "minimum": policy.minimum,
        "maxDrop": policy.max_drop}
    if policy.metric is None or policy.action == "none":
        return Decision("keep", "no performance policy acts on this model", evidence)
    if obs.rows < policy.min_rows:
        return Decision("keep", f"{obs.rows} of the {policy.min_rows} labelled rows needed so "
                        "far", evidence)
    found = breaches(policy, obs.new, obs.evaluation)
    evidence["breaches"] = found
    if not found:
        return Decision("keep", f"{policy.metric} {obs.new:.6g} on {obs.rows} labelled rows is "
                        "within the policy", evidence)
    what = "; ".join(found)
    if obs.previous is None or obs.p_value is None:
        return Decision("alert", f"{what}; there is no previous version scored on the same "
                        "rows, so nothing to revert to", evidence)
    attributable = obs.p_value < alpha
    evidence["attributable"] = attributable
    if not attributable:
        return Decision("alert", f"{what}; the previous version scores {obs.previous:.6g} on "
                        f"the same {obs.rows} rows, not measurably better ({obs.method} "
                        f"p = {obs.p_value:.3g} >= {alpha}): both versions degrade: the world "
                        "changed", evidence)
    if policy.action == "alert":
        return Decision("alert", f"{what}; the previous version would have done better "
                        f"({obs.previous:.6g}, {obs.method} p = {obs.p_value:.3g}); "
                        "spec.performance.action is alert", evidence)
    return Decision("revert", f"{what}; the previous version scores {obs.previous:.6g} on the "
                    f"same {obs.rows} rows, measurably better ({obs.method} "
                    f"p = {obs.p_value:.3g} < {alpha})", evidence)
