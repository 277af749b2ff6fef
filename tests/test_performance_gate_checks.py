"""What validation checks of a version's evaluation as data (no model loads): the record's
file and sha256, and that spec.performance names metrics of the model's kind."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from mlgitops import errors
from mlgitops.adapters import evaluation
from mlgitops.authoring import validate
from mlgitops.core import manifest, trust
from mlgitops.core.performance.spec import MetricThreshold, PerformancePolicy

pytestmark = pytest.mark.fast

DEP = manifest.ModelDeployment(name=manifest.ModelName("credit"), model_path="models/credit",
                               digest=manifest.Digest("sha256:" + "a" * 64))


def version(tmp_path: Path, *, kind: str = "classifier") -> Path:
    d = tmp_path / "credit"
    d.mkdir()
    pd.DataFrame({"f0": [0.1, 0.2], "label": [0, 1]}).to_parquet(d / evaluation.DATA)
    metrics = {"accuracy": 1.0} if kind == "classifier" else {"mae": 0.0}
    (d / evaluation.RECORD).write_text(json.dumps(evaluation.record(
        kind="classifier" if kind == "classifier" else "regressor", metrics=metrics,
        sha=evaluation.sha256(d / evaluation.DATA),
        rows=2, label="label")))
    return d


def check(d: Path, perf: PerformancePolicy) -> None:
    validate.check_evaluation(d, dataclasses.replace(DEP, performance=perf),
                              policy=trust.DEFAULT, recompute=False)


def test_a_consistent_record_passes(tmp_path: Path) -> None:
    check(version(tmp_path), PerformancePolicy(metric="accuracy", max_drop=0.1, gate=(
        MetricThreshold("f1", min_relative_change=0.0),)))


def test_a_regression_metric_on_a_classifier_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelError, match=r"names mae, but the model is a classifier; use "
                                                 r"accuracy, f1, roc_auc, log_loss"):
        check(version(tmp_path), PerformancePolicy(metric="mae"))


def test_a_gate_or_max_drop_without_evaluation_says_to_publish_with_it(tmp_path: Path) -> None:
    empty = tmp_path / "credit"
    empty.mkdir()
    for perf in (PerformancePolicy(gate=(MetricThreshold("accuracy", threshold=0.5),)),
                 PerformancePolicy(metric="accuracy", max_drop=0.1)):
        with pytest.raises(errors.ModelError, match=r"publish with --evaluation eval\.parquet"):
            check(empty, perf)
    check(empty, PerformancePolicy(metric="accuracy", minimum=0.5))  # needs no evaluation


def test_edited_evaluation_data_is_caught_by_its_sha256(tmp_path: Path) -> None:
    d = version(tmp_path)
    pd.DataFrame({"f0": [9.0, 9.0], "label": [1, 1]}).to_parquet(d / evaluation.DATA)
    with pytest.raises(errors.ModelError, match=r"its sha256 is not the one evaluation\.json names"):
        check(d, PerformancePolicy())
    (d / evaluation.RECORD).write_text("{\"data\": 1}")
    with pytest.raises(errors.ModelError, match="cannot be read"):
        check(d, PerformancePolicy())
