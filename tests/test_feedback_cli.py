"""Labels back end to end: `mlgitops up` (a real controller, gateway and server process),
inference through the gateway, `mlgitops feedback` from a Parquet file, `mlgitops status`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from support.data import FEATURES, make_frame
from support.net import free_port
from support.waits import wait_until

from mlgitops import settings
from mlgitops.adapters import prediction_log
from mlgitops.controller import run
from mlgitops.demo.embedded import wait_for_version

pytestmark = pytest.mark.process

CLI = [sys.executable, "-m", "mlgitops.cli"]


def mlgitops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_labels_from_the_cli_show_in_status_as_sklearn_computes_them(
        repo: Path, publish_version: Callable[..., str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGITOPS_PREDICTION_LOG_INTERVAL", "1")  # servers write within ~2 s
    v1 = publish_version()
    cfg = settings.controller(repo, port=free_port(), monitor=False)
    frame = make_frame(50, seed=7)
    with run.running(cfg) as ctl:
        wait_for_version(ctl.base_url, "credit", v1)
        ids = []
        with httpx.Client(base_url=ctl.base_url, timeout=30) as c:
            for i in range(40):
                r = c.post("/v2/models/credit/infer", json={"inputs": [
                    {"name": f, "datatype": "FP64", "shape": [1], "data": [float(frame[f][i])]}
                    for f in FEATURES]})
                assert r.status_code == 200, r.text
                assert r.headers["x-request-id"] == r.json()["id"]
                ids.append(r.json()["id"])
            inv = c.post("/models/credit/invocations", headers={"X-Request-Id": "batch-1"},
                         json={"dataframe_split": {"columns": FEATURES,
                                                   "data": frame[FEATURES][40:].values.tolist()}})
            assert inv.status_code == 200 and inv.headers["x-request-id"] == "batch-1"
        ids += [f"batch-1:{i}" for i in range(10)]
        logs = prediction_log.Directory(settings.state_dir(repo.resolve()) / "stats")
        wait_until(lambda: set(ids) <= set(logs.read("credit")["id"]), timeout=60,
                   what="the prediction log holds every id")
        truth = ((frame.f0 + frame.f1 > 0.4) & (frame.f2 > -1.5)).astype(int)  # not the model
        labels = tmp_path / "labels.parquet"
        pd.DataFrame({"rid": [*ids, "never-served"], "y": [*truth.tolist(), 0]}).to_parquet(labels)
        sent = mlgitops("feedback", "credit", "--labels", str(labels), "--id-column", "rid",
                        "--label-column", "y", "--repo", str(repo))
        assert sent.returncode == 0, sent.stderr
        assert "51 labels sent; 51 new, 0 updated, 1 for ids no kept prediction has" in sent.stdout
        again = mlgitops("feedback", "credit", "--labels", str(labels), "--id-column", "rid",
                         "--label-column", "y", "--repo", str(repo))
        assert "0 new, 51 updated" in again.stdout, again.stdout + again.stderr
        wrong = mlgitops("feedback", "credit", "--labels", str(labels), "--id-column", "id",
                         "--repo", str(repo))
        assert wrong.returncode == 1 and "has no column 'id'" in wrong.stderr
        status = mlgitops("status", "--repo", str(repo), "--json")
        table = mlgitops("status", "--repo", str(repo), "--wide")
    assert status.returncode == 0, status.stderr
    (perf,) = json.loads(status.stdout)["performance"]
    assert perf["labels"] == 51 and perf["unmatched"] == 1
    (version,) = perf["versions"]
    logged = logs.read("credit").set_index("id").loc[ids]
    pred = logged["prediction"].to_numpy()
    proba = logged[[prediction_log.proba_column(0), prediction_log.proba_column(1)]].to_numpy()
    y = truth.to_numpy()
    assert (version["version"], version["labelled"], version["rows"]) == (v1, 50, 50)
    assert version["realized"] == {"accuracy": skm.accuracy_score(y, pred),
                                   "f1": skm.f1_score(y, pred),
                                   "roc_auc": skm.roc_auc_score(y, proba[:, 1]),
                                   "log_loss": skm.log_loss(y, proba)}
    assert np.isclose(version["estimated"]["accuracy"], proba.max(axis=1).mean())
    assert "CBPE" in table.stdout and "accuracy" in table.stdout
