"""The prediction log and the label store on disk: bounded by rows, age and segments; labels
repeated are updates; what a server writes reads back with its row ids (fast: files only)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlgitops.adapters import prediction_log
from mlgitops.adapters import prediction_log_labels as labels_mod
from mlgitops.controller import performance
from mlgitops.server import predictions, schema

pytestmark = pytest.mark.fast


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _segment(n: int, at: float, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{start + i}" for i in range(n)], "version": "v1",
                         "time": at, "prediction": np.arange(n) % 2})


def test_the_log_keeps_at_most_its_rows_and_nothing_older_than_its_age(tmp_path: Path) -> None:
    clock = Clock(10_000.0)
    writer = prediction_log.Writer(tmp_path, worker_id="w0", max_rows=250, max_age_seconds=100,
                                   clock=clock)
    for k in range(5):
        writer.append(_segment(100, clock.now, start=100 * k))
        clock.now += 10
    kept = prediction_log.read(tmp_path)
    assert len(kept) == 200 and kept["id"].iloc[0] == "r300"  # the oldest segments went first
    clock.now += 200  # everything is past its age now: the next write prunes it
    writer.append(_segment(1, clock.now, start=999))
    assert prediction_log.read(tmp_path)["id"].tolist() == ["r999"]
    # a second writer of the same worker continues its numbering; another worker is left alone
    again = prediction_log.Writer(tmp_path, worker_id="w0", max_rows=250, max_age_seconds=100,
                                  clock=clock)
    other = prediction_log.Writer(tmp_path, worker_id="w1", max_rows=1, max_age_seconds=100,
                                  clock=clock)
    again.append(_segment(2, clock.now, start=1000))
    other.append(_segment(3, clock.now, start=2000))
    assert sorted(prediction_log.read(tmp_path)["id"]) == ["r1000", "r1001", "r2000", "r2001",
                                                           "r2002", "r999"]
    assert [s.worker for s in prediction_log.segments(tmp_path)] == ["w0", "w0", "w1"]


def test_what_a_worker_queues_reads_back_with_its_row_ids(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))

    class Model:
        estimator = model

    class Pred:
        matrix_path = True
        signature = type("Sig", (), {"names": ("a", "b", "c")})()

    pred = Pred()
    pred.model = Model()  # type: ignore[attr-defined]
    log = predictions.PredictionLog(
        prediction_log.Writer(tmp_path, worker_id="w0", max_rows=1000, max_age_seconds=1e10),
        pred, version="v9", clock=Clock(1234.0))  # type: ignore[arg-type]
    for rid, rows in (("one", x[:1]), ("three", x[1:4])):
        log.record(rid, schema.Batch(rows=len(rows), matrix=rows, names=["a", "b", "c"]),
                   model.predict(rows))
    assert log.due() is False  # 4 rows, and none has waited 30 s
    log.flush()
    back = prediction_log.read(tmp_path)
    assert back["id"].tolist() == ["one", "three:0", "three:1", "three:2"]
    assert back["version"].tolist() == ["v9"] * 4 and (back["time"] == 1234.0).all()
    assert np.array_equal(back[["input.a", "input.b", "input.c"]].to_numpy(), x[:4])
    assert np.array_equal(back[["proba.0", "proba.1"]].to_numpy(), model.predict_proba(x[:4]))
    assert prediction_log.classes_of(back) == [0, 1]
    assert predictions.row_ids("three", 3) == ["three:0", "three:1", "three:2"]


def test_labels_repeated_are_updates_and_compaction_keeps_the_latest(tmp_path: Path) -> None:
    clock = Clock(50.0)
    store = labels_mod.Labels(tmp_path, max_age_seconds=1000, clock=clock)
    store.add("m", ["a", "b"], [1, 0])
    store.add("m", ["b", "c", "c"], [1, "x", 0])  # b relabelled; c twice in one batch: last wins
    assert store.read("m").set_index("id")["label"].to_dict() == {"a": 1, "b": 1, "c": 0}
    assert store.known("m", ["a", "z"]) == {"a"}
    for i in range(labels_mod.COMPACT_AFTER):
        clock.now += 1
        store.add("m", [f"n{i}"], [i % 2])
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert len(files) < labels_mod.COMPACT_AFTER  # folded into one
    read = store.read("m").set_index("id")["label"]
    assert len(read) == 3 + labels_mod.COMPACT_AFTER and read["b"] == 1
    clock.now += 5000  # every label is past its age: the next compaction drops them
    for i in range(labels_mod.COMPACT_AFTER + 1):
        store.add("m", [f"late{i}"], [1])
    assert not store.read("m")["id"].str.startswith("n").any()


def test_the_join_types_labels_like_the_predictions() -> None:
    predictions_frame = pd.DataFrame({"id": ["a", "b", "c"], "version": "v", "time": 1.0,
                                      "prediction": np.array([1, 0, 1])})
    labels = pd.DataFrame({"id": ["a", "b", "zz"], "label": [1.0, True, 0], "received": 1.0})
    rows = performance.join(predictions_frame, labels)
    assert rows.label == [1, 1, None]
    assert performance.task_of(predictions_frame) == "classification"
    assert performance.task_of(predictions_frame.assign(prediction=[0.5, 1.5, 2.0])) == "regression"


def test_the_join_runs_on_the_fakes_per_version() -> None:
    from sklearn import metrics as skm

    from mlgitops.controller import fakes

    source, labels = fakes.FakePredictions(), fakes.FakeLabels()
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 40)
    pred = np.where(rng.random(40) < 0.8, truth, 1 - truth)
    source.add("m", pd.DataFrame({"id": [f"r{i}" for i in range(40)],
                                  "version": ["v1"] * 20 + ["v2"] * 20,
                                  "time": np.arange(40.0), "prediction": pred}))
    labels.add("m", [f"r{i}" for i in range(30)], truth[:30].tolist())
    labels.add("m", [f"r{i}" for i in range(30, 40)] + ["ghost"], [*truth[30:].tolist(), 1])
    labels.add("m", ["r0"], [int(truth[0])])  # again: an update
    perf = performance.measure("m", source, labels, window_seconds=None)
    assert (perf.labels, perf.unmatched) == (41, 1)
    v1, v2 = perf.overall
    assert (v1.version, v1.labelled, v2.version, v2.labelled) == ("v1", 20, "v2", 20)
    assert v2.realized["accuracy"] == skm.accuracy_score(truth[20:], pred[20:])
    assert v1.realized["f1"] == skm.f1_score(truth[:20], pred[:20])
    assert "predict_proba" in v1.omitted["roc_auc"] and v1.estimated == {}


def test_decision_pages_show_realized_and_estimated_with_the_caveat(tmp_path: Path) -> None:
    from sklearn import metrics as skm
    from sklearn.linear_model import LogisticRegression

    from mlgitops.controller import decision_pages
    from mlgitops.core import decisions
    from mlgitops.core.performance import cbpe

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] + rng.normal(scale=0.7, size=300) > 0).astype(int)
    model = LogisticRegression().fit(x[:100], y[:100])
    pred, proba = model.predict(x[100:]), model.predict_proba(x[100:])
    version = "b" * 40
    state = tmp_path / "state"
    prediction_log.Writer(prediction_log.directory(state / "stats" / "m" / version),
                          worker_id="w0", max_rows=10_000, max_age_seconds=1e10).append(
        pd.DataFrame({"id": [f"r{i}" for i in range(200)], "version": version, "time": 5.0,
                      "prediction": pred, "proba.0": proba[:, 0], "proba.1": proba[:, 1]}))
    labels_mod.Labels(state / "labels").add("m", [f"r{i}" for i in range(200)],
                                            y[100:].tolist())
    decision = decisions.Decision(
        id=decisions.make_id(model="m", kind=decisions.Kind.ALERT, at=10.0, version=version),
        model="m", kind=decisions.Kind.ALERT, at=10.0, version=version, previous_version=None,
        verdict="drifted")
    page = decision_pages.render(state / "reports", decision, clone=None)
    assert "Performance from labels" in page and "200 / 200" in page
    assert f"{skm.accuracy_score(y[100:], pred):.4f}" in page
    assert f"{skm.roc_auc_score(y[100:], proba[:, 1]):.4f}" in page
    assert "(est. " in page and html.escape(cbpe.CAVEAT) in page
