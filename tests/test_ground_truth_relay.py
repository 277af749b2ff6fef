"""Ground truth across the wire (issue 20 on Kubernetes): a real server process keeping its
prediction log. Its export routes give the segments byte for byte (what the Kubernetes
operator copies from each pod), refuse any other name, and answer only the API token when it
guards the server; the controller's gRPC gateway relays ``x-request-id`` metadata both ways, so
a gRPC prediction through it (or the server's own gRPC port) can be labelled too."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import servers as support

from mlgitops.adapters import prediction_log
from mlgitops.controller import grpc_gateway
from mlgitops.controller import reconciler as rec

pytestmark = pytest.mark.process

COMMIT = "9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7a8b9c0"
TOKEN = "relay-token"


class Handle:
    """The server process as a route of the gateway."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = url
        self.name, self.version, self.digest, self.where = "numeric", COMMIT, "", url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[support.Server, Path]]:
    model = support.numeric_model()
    stats = tmp_path_factory.mktemp("relay-stats")
    args = [str(model.path), "--port", "0", "--grpc-port", "0", "--workers", "1",
            "--name", "numeric", "--version", COMMIT, "--stats-dir", str(stats)]
    for t in model.trusted:
        args += ["--trust", t]
    saved = {k: os.environ.get(k) for k in ("MLGITOPS_PREDICTION_LOG_INTERVAL",
                                            "MLGITOPS_API_TOKEN")}
    os.environ.update(MLGITOPS_PREDICTION_LOG_INTERVAL="0.2", MLGITOPS_API_TOKEN=TOKEN)
    try:
        server = support.start_cli(args, name="relay")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield server, stats
    finally:
        assert server.stop() == 0, server.log_text()


def _logged(stats: Path, ids: set[str], timeout: float = 60.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = set(prediction_log.read(prediction_log.directory(stats))["id"])
        if ids <= found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_grpc_through_the_gateway_carries_x_request_id_and_the_row_is_logged_under_it(
        served: tuple[support.Server, Path]) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server, stats = served
    router: rec.Router[Handle] = rec.Router()
    router.set("numeric", Handle(server.url))
    gw = grpc_gateway.Gateway(router=router, statuses=lambda: [{"name": "numeric"}],
                              max_body_bytes=1 << 20)
    port = gw.start("127.0.0.1", 0)
    try:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        rows = support.numeric_frame(2, seed=5).to_numpy()

        def call(row: np.ndarray, given: str = "grpc-meta-1",
                 **fields: str) -> tuple[str, dict[str, str]]:
            request = service_pb2.ModelInferRequest(model_name="numeric", **fields)
            request.inputs.add(name="input", datatype="FP64", shape=[1, 6]
                               ).contents.fp64_contents.extend(row.tolist())
            response, c = stub.ModelInfer.with_call(
                request, metadata=(("x-request-id", given),))
            return response.id, dict(c.initial_metadata())

        rid, meta = call(rows[0])
        assert rid == "grpc-meta-1" and meta["x-request-id"] == "grpc-meta-1"
        rid, meta = call(rows[1], id="in-the-message")  # the message's own id wins
        assert rid == "in-the-message" and meta["x-request-id"] == "in-the-message"
        # the server's own gRPC port takes the metadata alike
        own = re.search(r"v2 gRPC API on [^\s]+:(\d+)", server.log_text())
        assert own, server.log_text()
        stub = service_pb2_grpc.GRPCInferenceServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{own.group(1)}"))
        rid, meta = call(rows[0], "grpc-direct")
        assert rid == "grpc-direct" and meta["x-request-id"] == "grpc-direct"
    finally:
        gw.stop()
    logged = {"grpc-meta-1", "in-the-message", "grpc-direct"}
    assert logged <= _logged(stats, logged)


def test_the_export_routes_give_the_segments_as_written_to_the_token_only(
        served: tuple[support.Server, Path]) -> None:
    server, stats = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with server.client() as c:
        r = c.post("/invocations", headers={"X-Request-Id": "exported", **auth},
                   json={"dataframe_split": {"columns": support.NUMERIC,
                                             "data": support.numeric_frame(3).to_numpy().tolist()}})
        assert r.status_code == 200, r.text
        _logged(stats, {"exported:0", "exported:1", "exported:2"})
        assert c.get("/v2/models/numeric/predictions").status_code == 401
        listed = c.get("/v2/models/numeric/predictions", headers=auth)
        assert listed.status_code == 200, listed.text
        doc = listed.json()
        on_disk = {s.path.name: s for s in prediction_log.segments(prediction_log.directory(stats))}
        assert doc["version"] == COMMIT
        assert {s["name"]: s["rows"] for s in doc["segments"]} == {
            n: s.rows for n, s in on_disk.items()}
        for name, seg in on_disk.items():
            got = c.get(f"/v2/models/numeric/predictions/{name}", headers=auth)
            assert got.status_code == 200 and got.content == seg.path.read_bytes()
        for bad in ("..stats.json", "seg-x.parquet", ".seg-a-0000000001-1-1.parquet.tmp"):
            refused = c.get(f"/v2/models/numeric/predictions/{bad}", headers=auth)
            assert refused.status_code == 404, refused.text
            assert "segment" in refused.json()["error"]
        assert c.get("/v2/models/other/predictions", headers=auth).status_code == 404
