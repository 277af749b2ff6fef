"""A data scientist's own pipeline through the ground-truth features (issue 20, off the demo's
path): a scikit-learn Pipeline with a ColumnTransformer (SimpleImputer and a scaler on numeric
columns, a OneHotEncoder on a string column) classifying loan applicants as ``"default"`` or
``"repaid"``, on frames with missing values (NaN in numeric columns, None in the string column).

Real parts only: a model repository with a bare remote and its validating hook, `mlgitops up`'s
wiring (controller, gateway, server processes keeping their prediction logs), labels back
through ``mlgitops.feedback``, the previous version scored in the sandbox, ``mlgitops publish
--evaluation`` from the shell.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm
from support import servers as support
from support.net import free_port, version_at
from support.pipelines import (
    FEATURES,
    NAME,
    NUMERIC,
    TARGET,
    applicants,
    loan_pipeline,
    mislabelled,
    records,
)
from support.repos import amend
from support.waits import wait_until

import mlgitops
from mlgitops import settings
from mlgitops.adapters import git, prediction_log, prediction_log_labels
from mlgitops.authoring import repository
from mlgitops.controller import decision_pages, performance, run
from mlgitops.core import layout

pytestmark = pytest.mark.process

CLI = [sys.executable, "-m", "mlgitops.cli"]


@pytest.mark.timeout(900)
def test_an_own_pipeline_with_missing_values_is_logged_measured_and_reverted_on_its_labels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGITOPS_PREDICTION_LOG_INTERVAL", "0.2")
    monkeypatch.setenv("MLGITOPS_PERFORMANCE_SECONDS", "0.5")
    monkeypatch.setenv("MLGITOPS_MLFLOW", "0")
    work = tmp_path / "models-repo"
    bare = repository.init(work)
    a, held_out = applicants(2000, seed=1), applicants(500, seed=3)
    model_1 = loan_pipeline(a)
    v1 = str(mlgitops.publish(model_1, a, name=NAME, repo=work, target=TARGET, quiet=True,
                              push=False, evaluation_frame=held_out, message="loan v1"))
    amend(work, NAME, {"performance": {"metric": "accuracy", "minimum": 0.75,
                                       "minRows": 400}}, message="spec.performance")
    wrong = mislabelled(a)
    model_2 = loan_pipeline(wrong)
    v2 = str(mlgitops.publish(model_2, wrong, name=NAME, repo=work, target=TARGET, quiet=True,
                              evaluation_frame=mislabelled(held_out), message="loan v2"))
    assert git.rev_parse(bare, "main") == v2  # the hook took the evaluation data

    live = applicants(400, seed=7)
    assert live.income.isna().any() and live.region.isna().any()
    x = live[FEATURES]
    cfg = settings.controller(work, port=free_port(), poll_seconds=5.0)
    with run.running(cfg) as ctl:
        mon = ctl.monitor
        assert mon is not None
        base = ctl.base_url
        wait_until(lambda: version_at(base, NAME) == v2, timeout=240, what="v2 serving")
        ids: list[str] = []
        answers: list[Any] = []
        for k in range(0, len(live), 50):
            r = httpx.post(f"{base}/models/{NAME}/invocations", headers={"X-Request-Id": f"b{k}"},
                           json={"dataframe_records": records(live.iloc[k:k + 50])}, timeout=30)
            assert r.status_code == 200, r.text
            answers += r.json()["predictions"]
            ids += [f"b{k}:{i}" for i in range(len(live.iloc[k:k + 50]))]
        # the pipeline's own answers, rows with missing values included
        assert answers == model_2.predict(x).tolist()

        log = prediction_log.Directory(settings.state_dir(work) / performance.STATS)

        def kept() -> pd.DataFrame:
            frame = log.read(NAME)
            return frame[frame["version"] == v2] if len(frame) else frame

        wait_until(lambda: len(kept()) == len(live), timeout=60, what="v2's rows in its log")
        rows = kept().set_index("id").loc[ids]
        # the log keeps the rows as they were sent: NaN and None where values were missing
        for c in NUMERIC:
            got = rows[f"{prediction_log.INPUT}{c}"].to_numpy(dtype=np.float64)
            np.testing.assert_array_equal(np.isnan(got), x[c].isna().to_numpy())
            np.testing.assert_array_equal(got[~np.isnan(got)], x[c].dropna().to_numpy())
        region = rows[f"{prediction_log.INPUT}region"]
        assert [None if pd.isna(v) else v for v in region] == [
            None if pd.isna(v) else v for v in x.region]
        classes = list(model_2.classes_)
        proba = rows[[prediction_log.proba_column(c) for c in classes]].to_numpy()
        np.testing.assert_allclose(proba, model_2.predict_proba(x), rtol=0, atol=1e-12)

        # labels come back late: a third of them are not known yet (None) the first time
        later = np.arange(len(live)) % 3 == 0
        sent = mlgitops.feedback(NAME, ids, live[TARGET].where(~later, None), url=base)
        assert (sent["received"], sent["skipped"], sent["unknown"]) == (
            len(live) - later.sum(), later.sum(), 0), sent
        sent = mlgitops.feedback(NAME, ids, live[TARGET], url=base)
        assert (sent["new"], sent["updated"], sent["unknown"]) == (
            later.sum(), len(live) - later.sum(), 0), sent

        # realized metrics are exactly scikit-learn's on the same rows
        figures = performance.measure(
            NAME, log, prediction_log_labels.Labels(settings.state_dir(work) / performance.LABELS),
            window_seconds=None).overall
        (fig,) = [f for f in figures if f.version == v2]
        y, pred = live[TARGET].to_numpy(), rows["prediction"].to_numpy()
        assert fig.labelled == len(live)
        assert fig.realized == {
            "accuracy": skm.accuracy_score(y, pred),
            "f1": skm.f1_score(y, pred, pos_label=classes[1], labels=classes),
            "roc_auc": skm.roc_auc_score(y == classes[1], proba[:, 1]),
            "log_loss": skm.log_loss(y, proba, labels=classes)}
        # CBPE: the mean probability of the class each row was predicted as
        picked = proba[np.arange(len(pred)), [classes.index(p) for p in pred]]
        assert fig.estimated["accuracy"] == pytest.approx(float(picked.mean()), abs=1e-12)

        # v2 is less accurate on these rows than v1 (scored in the sandbox on the same NaN and
        # None inputs, read back from the log): reverted, with the evidence on its page
        wait_until(lambda: version_at(base, NAME) not in (v2, None), timeout=240, what="the revert")
        (entry,) = git.log(bare, "main", [], limit=1)
        assert entry.trailers[layout.TRAILER_REVERTS] == v2
        assert git.tree_id(bare, entry.commit, layout.model_path(NAME)) == git.tree_id(
            bare, v1, layout.model_path(NAME))
        (decision,) = [d for _, d in mon.performance_decisions if d.action == "revert"]
        ev = dict(decision.evidence)
        assert ev["rows"] == len(live)
        assert ev["new"] == skm.accuracy_score(y, pred)
        assert ev["previous"] == skm.accuracy_score(y, model_1.predict(x))
        assert ev["evaluation"] == pytest.approx(1.0)  # its own (mislabelled) evaluation
        assert mon.dispatcher.wait(120, only=(decision_pages.Pages,))
        page = httpx.get(entry.trailers[layout.TRAILER_REPORT], timeout=10)
        assert page.status_code == 200 and str(ev["previous"]) in page.text


def save_mlflow_model(estimator: Any, path: Path, example: pd.DataFrame) -> None:
    import mlflow.sklearn

    mlflow.sklearn.save_model(estimator, str(path), serialization_format="skops",
                              skops_trusted_types=["numpy.dtype"], input_example=example)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(900)
def test_the_hook_holds_a_worse_pipeline_on_evaluation_data_with_missing_values(
        tmp_path: Path) -> None:
    """``mlgitops publish --evaluation eval.csv`` from the shell, the data scientist's CSV
    files (pandas reads a missing string as NaN, and the pipeline is fitted on that) with NaN
    in numeric and string columns; the gate in the remote's hook; the served answers to rows
    whose string is null are the pipeline's own on the same rows."""
    work = tmp_path / "models-repo"
    bare = repository.init(work)
    reference, evaluation = tmp_path / "train.csv", tmp_path / "eval.csv"
    applicants(2000, seed=1).to_csv(reference, index=False)
    applicants(500, seed=3).to_csv(evaluation, index=False)
    a, held_out = pd.read_csv(reference), pd.read_csv(evaluation)
    assert held_out.income.isna().any() and held_out.region.isna().any()
    model_1 = loan_pipeline(a)
    for version, model in (("v1", model_1), ("v2", loan_pipeline(mislabelled(a)))):
        save_mlflow_model(model, tmp_path / version, a[FEATURES].head(5))

    first = cli("publish", NAME, "--model", str(tmp_path / "v1"), "--reference", str(reference),
                "--target", TARGET, "--evaluation", str(evaluation), "--repo", str(work),
                "--no-push")
    assert first.returncode == 0, first.stdout + first.stderr
    amend(work, NAME, {"performance": {"gate": [{"metric": "accuracy", "minRelativeChange": 0}]}},
          message="spec.performance")
    git.push(work)  # the hook recomputes v1's evaluation in the sandbox: the same numbers
    v1 = git.rev_parse(bare, "main")
    model_dir = work / layout.model_path(NAME)
    accuracy_1 = yaml.safe_load((model_dir / "evaluation.json").read_text())["metrics"]["accuracy"]
    assert accuracy_1 == skm.accuracy_score(held_out[TARGET], model_1.predict(held_out[FEATURES]))

    # v1 served: a null string reaches the pipeline as the NaN it was fitted on
    rows = held_out[held_out.region.isna()]
    as_none = rows.assign(region=None)  # what a null would give the pipeline unconverted
    assert (model_1.predict(as_none[FEATURES]) != model_1.predict(rows[FEATURES])).any()
    server = support.start_cli([str(model_dir), "--port", "0", "--workers", "1", "--name", NAME,
                                "--version", v1, "--no-stats"], name="loan")
    try:
        with server.client() as c:
            r = c.post("/invocations", json={"dataframe_records": records(rows)})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == model_1.predict(rows[FEATURES]).tolist()
    finally:
        assert server.stop() == 0, server.log_text()

    second = cli("publish", NAME, "--model", str(tmp_path / "v2"), "--reference", str(reference),
                 "--target", TARGET, "--evaluation", str(evaluation), "--repo", str(work))
    assert second.returncode != 0, second.stdout
    said = second.stdout + second.stderr
    assert "accuracy" in said and f"{accuracy_1:.4g}"[:5] in said, said
    assert "Traceback" not in said, said
    assert git.rev_parse(bare, "main") == v1  # held: main did not move
