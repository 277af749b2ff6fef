"""The metrics mlgitops computes, by name: the kind of model each is for and its direction.

Kept apart from the computation (scikit-learn) so that parsing a manifest imports nothing heavy.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["classifier", "regressor"]

#: name -> (kind of model, greater is better)
METRICS: dict[str, tuple[Kind, bool]] = {
    "accuracy": ("classifier", True),
    "f1": ("classifier", True),
    "roc_auc": ("classifier", True),
    "log_loss": ("classifier", False),
    "mae": ("regressor", False),
    "rmse": ("regressor", False),
    "r2": ("regressor", True),
}

#: Metrics whose values lie in [0, 1] (a threshold outside can never be met).
UNIT_INTERVAL = frozenset({"accuracy", "f1", "roc_auc"})


def kind(metric: str) -> Kind:
    return METRICS[metric][0]


def greater_is_better(metric: str) -> bool:
    return METRICS[metric][1]


def names_for(k: Kind) -> list[str]:
    return [m for m, (mk, _) in METRICS.items() if mk == k]


def spelled() -> str:
    """The metric names as a sentence fragment, by kind."""
    return (f"{', '.join(names_for('classifier'))} (classifiers) or "
            f"{', '.join(names_for('regressor'))} (regressors)")
