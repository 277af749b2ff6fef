"""A data scientist's own pipeline, off the demo's path: loan applicants with missing values
(NaN in numeric columns, None in a string column) and a scikit-learn Pipeline whose
ColumnTransformer imputes and scales the numbers and one-hot encodes the string, classifying
``"default"`` or ``"repaid"``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

NAME = "loan"
NUMERIC = ["income", "age", "debt_ratio"]
FEATURES = [*NUMERIC, "region"]
TARGET = "outcome"


def applicants(n: int, *, seed: int) -> pd.DataFrame:
    """Applicants with missing values: NaN in income and debt_ratio, None in region."""
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({
        "income": rng.lognormal(10.8, 0.4, n),
        "age": rng.normal(40, 11, n).round(1),
        "debt_ratio": rng.beta(2, 5, n),
        "region": rng.choice(["north", "south", "east", "west"], n).astype(object),
    })
    logit = 2.5 * (-0.5 - 1.5 * (np.log(f.income) - 10.8) + 5 * (f.debt_ratio - 0.3)
                   + f.region.map({"north": 1.0, "south": -1.0, "east": 0.0, "west": 0.5}))
    f[TARGET] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "default", "repaid")
    f.loc[rng.random(n) < 0.1, "income"] = np.nan
    f.loc[rng.random(n) < 0.1, "debt_ratio"] = np.nan
    f.loc[rng.random(n) < 0.1, "region"] = None
    return f


def mislabelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a wrong target (a label pipeline bug): older applicants "default"."""
    return frame.assign(**{TARGET: np.where(frame.age > 40, "default", "repaid")})


def loan_pipeline(frame: pd.DataFrame) -> Any:
    """The pipeline, fitted on ``frame``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
    ])
    return Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))]).fit(
        frame[FEATURES], frame[TARGET])


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows as a client sends them: a missing value is ``null``."""
    return [{c: (None if pd.isna(v) else v) for c, v in row.items()}
            for row in frame[FEATURES].astype(object).to_dict(orient="records")]
