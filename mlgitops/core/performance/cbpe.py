"""Confidence-based performance estimation (CBPE, as NannyML does it): expected accuracy and
ROC AUC of a classifier from its predicted probabilities alone, before any label arrives.

The estimate is right on average when the probabilities are *calibrated* (of the rows scored
0.8, eight in ten are of that class). A model that is over- or under-confident, or data whose
relation to the label changed (concept drift), makes it wrong without warning: it is an
estimate, shown next to the realized figure, never a substitute for labels.

- Expected accuracy: the mean, over rows, of the probability of the predicted class
  (each row is right with that probability).
- Expected ROC AUC (binary; one-vs-rest macro for more classes): NannyML's construction. Sort
  rows by score; each row is a positive with probability p (its score) and a negative with
  1 - p; the expected true and false positive rates at each threshold are the cumulative
  sums of p and 1 - p over their totals, and the estimate is the area under that curve.

Pure: numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.core.performance.metrics import Scores

CAVEAT = ("Estimated from the model's own probabilities (CBPE): right on average only when "
          "they are calibrated, and blind to a change in how the label depends on the inputs.")
FloatArray = npt.NDArray[np.float64]


def estimate(proba: Sequence[Sequence[float]] | FloatArray,
             y_pred: Sequence[Any] | npt.NDArray[Any] | None = None,
             labels: Sequence[Any] | None = None) -> Scores:
    """Expected accuracy and ROC AUC of rows scored with class probabilities ``proba`` (one
    column per class, in the order of ``labels``). ``y_pred`` (the served predictions) picks
    the predicted class of each row; without it, the most probable class."""
    scores = np.asarray(proba, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        return Scores(omitted={m: "no scored rows with probabilities"
                               for m in ("accuracy", "roc_auc")})
    if scores.shape[1] < 2:
        return Scores(omitted={m: "one class only" for m in ("accuracy", "roc_auc")})
    if not np.all(np.isfinite(scores)):
        return Scores(omitted={m: "some class probabilities are not finite numbers"
                               for m in ("accuracy", "roc_auc")})
    if y_pred is None or labels is None:
        picked = np.argmax(scores, axis=1)
    else:
        index = {c: j for j, c in enumerate(labels)}
        predicted = list(np.asarray(y_pred, dtype=object).tolist())
        if any(p not in index for p in predicted):
            picked = np.argmax(scores, axis=1)
        else:
            picked = np.array([index[p] for p in predicted])
    values = {"accuracy": float(np.mean(scores[np.arange(len(scores)), picked]))}
    omitted: dict[str, str] = {}
    if scores.shape[1] == 2:
        auc = expected_auc(scores[:, 1])
    else:
        aucs = [expected_auc(scores[:, j]) for j in range(scores.shape[1])]
        auc = None if any(a is None for a in aucs) else float(np.mean([a for a in aucs if a is not None]))
    if auc is None:
        omitted["roc_auc"] = "the probabilities expect no positive or no negative row"
    else:
        values["roc_auc"] = auc
    return Scores(values, omitted)


def expected_auc(score: FloatArray) -> float | None:
    """The expected ROC AUC of a binary score that is each row's calibrated probability of
    being positive (None when no positive or no negative is expected)."""
    order = np.argsort(-score, kind="stable")
    p = score[order]
    # rows with the same score cross the threshold together
    _, starts = np.unique(-p, return_index=True)
    ends = np.append(starts[1:], len(p))
    tp = np.cumsum(p)[ends - 1]
    fp = np.cumsum(1.0 - p)[ends - 1]
    total_p, total_n = float(p.sum()), float((1.0 - p).sum())
    if total_p <= 0.0 or total_n <= 0.0:
        return None
    tpr = np.concatenate([[0.0], tp / total_p])
    fpr = np.concatenate([[0.0], fp / total_n])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
