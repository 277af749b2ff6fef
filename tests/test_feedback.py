"""Every prediction can be found again, and labels come back: real server processes (HTTP and
gRPC), their prediction logs on disk, and the gateway's feedback route over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from sklearn import metrics as skm
from support import servers as support
from support.net import free_port

from mlgitops.adapters import prediction_log
from mlgitops.controller import feedback, gateway
from mlgitops.controller import reconciler as rec

pytestmark = pytest.mark.process

COMMIT = "feed000d2a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1"[:40]
SECRET = "s3cret-for-feedback"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[support.Server, int, Path]]:
    model = support.numeric_model()
    root = tmp_path_factory.mktemp("feedback-stats")
    stats = root / "numeric" / COMMIT
    args = [str(model.path), "--port", "0", "--grpc-port", "0", "--workers", "2",
            "--name", "numeric", "--version", COMMIT, "--stats-dir", str(stats)]
    for t in model.trusted:
        args += ["--trust", t]
    old = os.environ.get("MLGITOPS_PREDICTION_LOG_INTERVAL")
    os.environ["MLGITOPS_PREDICTION_LOG_INTERVAL"] = "0.2"
    try:
        server = support.start_cli(args, name="feedback")
    finally:
        if old is None:
            os.environ.pop("MLGITOPS_PREDICTION_LOG_INTERVAL", None)
        else:
            os.environ["MLGITOPS_PREDICTION_LOG_INTERVAL"] = old
    import re

    port = int(re.search(r"v2 gRPC API on [^\s]+:(\d+)", server.log_text()).group(1))  # type: ignore[union-attr]
    try:
        yield server, port, root
    finally:
        assert server.stop() == 0, server.log_text()


def _infer(c: httpx.Client, rows: np.ndarray, rid: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"inputs": [{"name": "input", "datatype": "FP64",
                                        "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    if rid is not None:
        body["id"] = rid
    r = c.post("/v2/models/numeric/infer", json=body)
    assert r.status_code == 200, r.text
    return r


def _wait_logged(root: Path, ids: set[str], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        frame = prediction_log.Directory(root).read("numeric")
        if ids <= set(frame["id"]) or time.monotonic() > deadline:
            return frame
        time.sleep(0.2)


def test_every_response_carries_an_id_and_its_rows_are_logged(
        served: tuple[support.Server, int, Path]) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server, port, root = served
    model = support.numeric_model()
    rows = support.numeric_frame(8, seed=11).to_numpy()
    with server.client() as c:
        given = _infer(c, rows[:1], "req-1")
        assert given.json()["id"] == "req-1" and given.headers["x-request-id"] == "req-1"
        made = _infer(c, rows[1:4])
        rid = made.json()["id"]
        assert len(rid) == 32 and made.headers["x-request-id"] == rid
        inv = c.post("/invocations", json={"dataframe_split": {
            "columns": support.NUMERIC, "data": rows[4:6].tolist()}},
            headers={"X-Request-Id": "inv-7"})
        assert inv.status_code == 200 and inv.headers["x-request-id"] == "inv-7"
        fresh = c.post("/invocations", json={"dataframe_split": {
            "columns": support.NUMERIC, "data": rows[6:7].tolist()}})
        fresh_id = fresh.headers["x-request-id"]
        assert len(fresh_id) == 32
        too_long = _infer_raw(c, rows[:1], "x" * 200)
        assert too_long.status_code == 400 and "at most 128" in too_long.json()["error"]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    request = service_pb2.ModelInferRequest(model_name="numeric", id="grpc-1")
    tensor = request.inputs.add(name="input", datatype="FP64", shape=[1, 6])
    tensor.contents.fp64_contents.extend(rows[7].tolist())
    response, call = stub.ModelInfer.with_call(request)
    assert response.id == "grpc-1"
    assert ("x-request-id", "grpc-1") in tuple(call.initial_metadata())

    ids = {"req-1", f"{rid}:0", f"{rid}:1", f"{rid}:2", "inv-7:0", "inv-7:1", fresh_id, "grpc-1"}
    frame = _wait_logged(root, ids).set_index("id").loc[
        ["req-1", f"{rid}:0", f"{rid}:1", f"{rid}:2", "inv-7:0", "inv-7:1", fresh_id, "grpc-1"]]
    inputs = frame[[prediction_log.INPUT + n for n in support.NUMERIC]].to_numpy()
    assert np.array_equal(inputs, rows)
    assert frame["prediction"].tolist() == model.expected(support.numeric_frame(8, seed=11))
    proba = frame[[prediction_log.proba_column(c) for c in model.estimator.classes_]].to_numpy()
    assert np.array_equal(proba, model.estimator.predict_proba(rows))
    assert set(frame["version"]) == {COMMIT}
    assert (frame["time"] > time.time() - 600).all()


def _infer_raw(c: httpx.Client, rows: np.ndarray, rid: str) -> httpx.Response:
    return c.post("/v2/models/numeric/infer", json={"id": rid, "inputs": [
        {"name": "input", "datatype": "FP64", "shape": list(rows.shape),
         "data": rows.ravel().tolist()}]})


@pytest.fixture()
def gateway_url(served: tuple[support.Server, int, Path],
                tmp_path: Path) -> Iterator[tuple[str, feedback.Feedback]]:
    """The controller's gateway app with its feedback routes, on a real loopback port."""
    _, _, root = served
    fb = feedback.local(tmp_path / "state", root, webhook_secret=SECRET, api_token=None)
    app = gateway.build(router=rec.Router(), trigger=lambda _why: None,
                        statuses=lambda: [{"name": "numeric"}], webhook_secret=SECRET,
                        feedback=fb)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", fb
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _post(url: str, doc: Any, *, secret: str | None = SECRET) -> httpx.Response:
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(
            secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(f"{url}/v2/models/numeric/feedback", content=body, headers=headers,
                      timeout=30)


def test_labels_late_twice_or_unknown_lose_nothing_and_count_right(
        served: tuple[support.Server, int, Path], gateway_url: tuple[str, feedback.Feedback],
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, _, root = served
    url, fb = gateway_url
    rows = support.numeric_frame(60, seed=21).to_numpy()
    with server.client() as c:
        ids = [_infer(c, rows[i:i + 1], f"late-{i}").json()["id"] for i in range(60)]
    truth = (rows[:, 0] + rows[:, 1] > 0.3).astype(int)  # not the model's own rule
    _wait_logged(root, set(ids))

    first = _post(url, {"ids": [*ids[:40], "nobody-1"],
                                "labels": [*truth[:40].tolist(), 1]}).json()
    assert first == {"model": "numeric", "received": 41, "stored": 41, "new": 41, "updated": 0,
                     "repeatedInBatch": 0, "unknown": 1, "unknownIds": ["nobody-1"]}
    # the same ids again (one relabelled), the rest later, an id twice in one batch
    again = _post(url, {"ids": ids[:40] + ids[40:] + [ids[59]],
                                "labels": truth[:40].tolist() + truth[40:].tolist()
                                + [int(truth[59])]}).json()
    assert (again["new"], again["updated"], again["repeatedInBatch"], again["unknown"]) == (
        20, 40, 1, 0)

    # malformed batches are refused whole, with a sentence; nothing is stored by them
    bad = _post(url, {"ids": ["a", "b"], "labels": [1]})
    assert bad.status_code == 422 and "2 ids but 1 labels" in bad.json()["error"]
    assert _post(url, {"ids": ["a"], "labels": [None]}).status_code == 422
    unsigned = _post(url, {"ids": ["a"], "labels": [1]}, secret=None)
    assert unsigned.status_code == 401 and "X-Hub-Signature-256" in unsigned.json()["error"]
    assert _post(url, {"ids": ["a"], "labels": [1]}, secret="wrong").status_code == 401
    not_json = httpx.post(f"{url}/v2/models/numeric/feedback", content=b"{",
                          headers=_signed(b"{"))
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    unknown_model = httpx.post(f"{url}/v2/models/nope/feedback", content=b"{}",
                               headers=_signed(b"{}"))
    assert unknown_model.status_code == 404

    # the join: realized metrics equal sklearn's on the same rows, exactly
    perf = fb.measure("numeric")
    assert perf.labels == 61 and perf.unmatched == 1
    version = perf.overall[0]
    logged = prediction_log.Directory(root).read("numeric").set_index("id")
    labelled = logged.loc[ids]
    model = support.numeric_model()
    classes = list(model.estimator.classes_)
    proba = labelled[[prediction_log.proba_column(c) for c in classes]].to_numpy()
    pred = labelled["prediction"].to_numpy()
    assert version.labelled == 60
    assert version.realized == {
        "accuracy": skm.accuracy_score(truth, pred), "f1": skm.f1_score(truth, pred),
        "roc_auc": skm.roc_auc_score(truth, proba[:, 1]), "log_loss": skm.log_loss(truth, proba)}
    assert set(version.estimated) == {"accuracy", "roc_auc"}

    # on /metrics, and through the Python API (signed from the environment)
    text = httpx.get(f"{url}/metrics").text
    assert f'mlgitops_realized_performance{{model="numeric",version="{COMMIT}",metric="accuracy"}} ' \
           f"{version.realized['accuracy']!r}" in text
    monkeypatch.setenv("MLGITOPS_WEBHOOK_SECRET", SECRET)
    import mlgitops

    sent = mlgitops.feedback("numeric", np.array(ids[:3]), truth[:3], url=url)
    assert (sent["received"], sent["updated"], sent["new"]) == (3, 3, 0)


def _signed(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body,
                                                        hashlib.sha256).hexdigest()}
