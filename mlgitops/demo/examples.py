"""Example data for the demo, the notebook and the example model: a credit-risk population.

``shift`` moves the population (older, more indebted applicants): a model trained on one
population and served to the other is what drift looks like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FEATURES = ("income", "debt_ratio", "age", "credit_lines", "utilization", "late_payments")
TARGET = "default"


def credit_population(n: int, *, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """``n`` applicants with a ``default`` label; ``shift`` in [0, 1] moves the population."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(mean=10.8 - 0.3 * shift, sigma=0.45, size=n)
    debt_ratio = np.clip(rng.beta(2 + 3 * shift, 5, size=n), 0, 1)
    age = np.clip(rng.normal(40 + 12 * shift, 11, size=n), 18, 90)
    credit_lines = rng.poisson(4 + 3 * shift, size=n).astype(float)
    utilization = np.clip(rng.beta(2 + 2 * shift, 4 - 1.5 * shift, size=n), 0, 1)
    late = rng.poisson(0.4 + 1.2 * shift, size=n).astype(float)
    logit = (
        -2.0
        - 0.9 * (np.log(income) - 10.8)
        + 3.0 * (debt_ratio - 0.3)
        + 2.5 * (utilization - 0.35)
        + 0.6 * late
        - 0.01 * (age - 40)
        + (2.5 * shift) * (debt_ratio - 0.3) * 4  # the relation itself changes when shifted
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "income": income.round(2),
            "debt_ratio": debt_ratio,
            "age": age.round(1),
            "credit_lines": credit_lines,
            "utilization": utilization,
            "late_payments": late,
            TARGET: y,
        }
    )


def train_credit_model(frame: pd.DataFrame, *, trees: int = 50, seed: int = 0) -> Any:
    """A RandomForest on the credit features."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=trees, max_depth=8, random_state=seed, n_jobs=1)
    return model.fit(frame[list(FEATURES)], frame[TARGET])
