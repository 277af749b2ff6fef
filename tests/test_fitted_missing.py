"""Missing strings reach a model as its reference data wrote them (`adapters.fitted_missing`):
a OneHotEncoder fitted on NaN tells NaN from None, and mlgitops decodes a null string as None."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from mlgitops.adapters import fitted_missing
from mlgitops.core import layout

pytestmark = pytest.mark.fast


def frame(missing: object) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    f = pd.DataFrame({"region": rng.choice(["a", "b", "c"], 200).astype(object),
                      "x": rng.normal(size=200)})
    f.loc[f.index % 4 == 0, "region"] = missing
    return f


def test_the_columns_written_nan_are_found_and_none_or_numbers_are_not() -> None:
    f = frame(np.nan).assign(n=lambda d: d.x.where(d.index % 3 != 0), k=lambda d: d.region)
    f.loc[1, "k"] = None  # both markers: left as served
    assert fitted_missing.nan_columns(f) == ["region"]
    assert fitted_missing.nan_columns(frame(None)) == []
    assert fitted_missing.nan_columns(frame(np.nan).dropna()) == []


def test_a_nan_fitted_encoder_answers_a_none_row_as_its_nan_row() -> None:
    f = frame(np.nan)
    y = (f.region.isna() | (f.x > 0)).astype(int)
    est = make_pipeline(OneHotEncoder(handle_unknown="ignore"),
                        LogisticRegression()).fit(f[["region"]], y)
    served = f[["region"]].astype(object).where(f[["region"]].notna(), None)
    assert served.region.isna().any() and served.region.map(type).eq(type(None)).any()
    raw = est.predict_proba(served)
    assert not np.allclose(raw, est.predict_proba(f[["region"]]))  # the bug it prevents
    wrapped = fitted_missing.wrap(est, ["region"])
    np.testing.assert_array_equal(wrapped.predict_proba(served), est.predict_proba(f[["region"]]))
    np.testing.assert_array_equal(wrapped.predict(served), est.predict(f[["region"]]))
    assert list(wrapped.classes_) == [0, 1]
    assert served.region.map(type).eq(type(None)).any()  # the caller's frame is left alone
    assert fitted_missing.wrap(est, []) is est


def test_the_wrapper_has_only_the_methods_the_estimator_has() -> None:
    reg = fitted_missing.wrap(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), ["region"])
    assert not hasattr(reg, "predict_proba") and hasattr(reg, "predict")
    assert reg.predict(np.array([[2.0]]))[0] == pytest.approx(2.0)


def test_the_record_is_read_only_when_it_is_what_publish_writes(tmp_path: Path) -> None:
    info = tmp_path / layout.PUBLISH_INFO
    assert fitted_missing.read(tmp_path) == ()
    info.write_text(json.dumps({fitted_missing.KEY: ["region"]}))
    assert fitted_missing.read(tmp_path) == ("region",)
    for bad in ('{"missingStringsAsNaN": "region"}', "[1]", "not json"):
        info.write_text(bad)
        assert fitted_missing.read(tmp_path) == ()
