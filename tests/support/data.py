"""Model builders: the reference population and small real scikit-learn estimators."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FEATURES = [f"f{i}" for i in range(5)]


def make_frame(n: int = 1500, *, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A population: five numeric features and a label that depends on two of them."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(loc=shift, size=(n, len(FEATURES))), columns=FEATURES)
    x["label"] = ((x.f0 - shift) + (x.f1 - shift) > 0).astype(int)
    return x


def train(frame: pd.DataFrame, *, kind: str = "forest", seed: int = 0) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = frame[FEATURES], frame["label"]
    if kind == "forest":
        return RandomForestClassifier(n_estimators=10, max_depth=6, random_state=seed).fit(x, y)
    return LogisticRegression(C=1.0 + seed).fit(x, y)
