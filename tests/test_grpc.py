"""The v2 gRPC API of `mlgitops serve --grpc-port`: real server processes (two workers sharing
the port), NVIDIA's tritonclient and raw `inference.GRPCInferenceService` stubs (Triton's
generated messages: the same wire format, nobody here wrote them)."""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import servers as support

pytestmark = pytest.mark.process

COMMIT = "5e1f00d2a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1"


def grpc_port(server: support.Server) -> int:
    m = re.search(r"v2 gRPC API on [^\s]+:(\d+)", server.log_text())
    assert m, server.log_text()
    return int(m.group(1))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[support.Server, int]]:
    model = support.numeric_model()
    stats = tmp_path_factory.mktemp("grpc-stats")
    args = [str(model.path), "--port", "0", "--grpc-port", "0", "--workers", "2",
            "--name", "numeric", "--version", COMMIT, "--max-body-bytes", "64KiB",
            "--stats-dir", str(stats)]
    for t in model.trusted:
        args += ["--trust", t]
    server = support.start_cli(args, name="grpc")
    try:
        yield server, grpc_port(server)
    finally:
        assert server.stop() == 0, server.log_text()


def stub(port: int) -> tuple[Any, Any]:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return service_pb2, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_tritonclient_grpc_at_its_defaults(served: tuple[support.Server, int]) -> None:
    import tritonclient.grpc as tg

    _, port = served
    model = support.numeric_model()
    frame = model.frame.iloc[:8]
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("numeric") and client.is_model_ready("numeric", COMMIT[:7])
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "mlgitops" and "binary_tensor_data" in meta["extensions"]
    model_meta = client.get_model_metadata("numeric", as_json=True)
    assert model_meta["versions"] == [COMMIT]
    assert [t["name"] for t in model_meta["inputs"]] == list(frame.columns)
    # one 2-D tensor (raw_input_contents, the client's default)
    x = tg.InferInput("input", list(frame.shape), "FP64")
    x.set_data_from_numpy(frame.to_numpy())
    result = client.infer("numeric", [x], model_version=COMMIT, request_id="r-1")
    assert result.as_numpy("predict").tolist() == model.expected(frame)
    assert result.get_response().model_version == COMMIT and result.get_response().id == "r-1"
    # one tensor per column, FP32 and INT64 among them
    inputs = []
    for i, col in enumerate(frame.columns):
        dtype, values = ("FP32", frame[col].to_numpy(np.float32)) if i == 0 else (
            "FP64", frame[col].to_numpy())
        t = tg.InferInput(col, [len(frame)], dtype)
        t.set_data_from_numpy(values)
        inputs.append(t)
    out = client.infer("numeric", inputs, model_version=COMMIT[:12],
                       outputs=[tg.InferRequestedOutput("predict")])
    as_fp32 = frame.assign(**{frame.columns[0]: frame[frame.columns[0]].astype(np.float32)})
    assert out.as_numpy("predict").tolist() == model.expected(as_fp32)
    with pytest.raises(tg.InferenceServerException) as err:
        client.infer("numeric", [x], model_version="deadbee")
    assert "NOT_FOUND" in str(err.value.status()) and f"version {COMMIT} does" in err.value.message()


def test_typed_contents_decode_like_raw(served: tuple[support.Server, int]) -> None:
    pb, s = stub(served[1])
    model = support.numeric_model()
    frame = model.frame.iloc[:5]
    req = pb.ModelInferRequest(model_name="numeric")
    for col in frame.columns:
        t = req.inputs.add(name=col, datatype="FP64", shape=[5])
        t.contents.fp64_contents.extend(frame[col].tolist())
    reply = s.ModelInfer(req)
    assert np.frombuffer(reply.raw_output_contents[0], "<i8").tolist() == model.expected(frame)
    assert reply.outputs[0].datatype == "INT64" and list(reply.outputs[0].shape) == [5]
    req = pb.ModelInferRequest(model_name="numeric")
    t = req.inputs.add(name="input", datatype="INT64", shape=[1, 6])
    t.contents.int64_contents.extend([0, 1, 0, -1, 2, 0])
    reply = s.ModelInfer(req)
    assert np.frombuffer(reply.raw_output_contents[0], "<i8").tolist() == model.expected(
        frame.iloc[:1].assign(**dict(zip(frame.columns, [0.0, 1.0, 0.0, -1.0, 2.0, 0.0], strict=True))))


def refused(call: Any, request: Any) -> tuple[str, str]:
    import grpc

    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=20)
    return err.value.code().name, err.value.details()


def test_refusals_carry_the_http_sentence_as_a_grpc_code(served: tuple[support.Server, int]) -> None:
    pb, s = stub(served[1])
    ok = np.zeros((2, 6), "<f8").tobytes()

    def infer(**fields: Any) -> Any:
        req = pb.ModelInferRequest(model_name=fields.pop("model", "numeric"), **fields)
        return req

    def matrix(req: Any, shape: list[int], raw: bytes | None = None, dtype: str = "FP64") -> Any:
        req.inputs.add(name="input", datatype=dtype, shape=shape)
        if raw is not None:
            req.raw_input_contents.append(raw)
        return req

    cases = [
        (matrix(infer(model="other"), [2, 6], ok), "NOT_FOUND", "No model named 'other'"),
        (matrix(infer(model_version="0000000"), [2, 6], ok), "NOT_FOUND", f"version {COMMIT} does"),
        (matrix(infer(model_version=COMMIT[:5]), [2, 6], ok), "NOT_FOUND", "at least 7 characters"),
        (matrix(infer(), [2, 6], ok[:40]), "INVALID_ARGUMENT", "has 40 bytes of raw data"),
        (matrix(infer(), [10**15, 6], ok), "INVALID_ARGUMENT", "needs 48000000000000000"),
        (matrix(infer(), [-1, 6], ok), "INVALID_ARGUMENT", "non-negative integers"),
        (matrix(infer(), [2, 7], np.zeros(14).tobytes()), "INVALID_ARGUMENT", "shape [rows, 6]"),
        (matrix(infer(), [2, 6], np.full(12, np.inf).tobytes()), "INVALID_ARGUMENT",
         "column 'x0' row 0 is infinite"),
        (matrix(infer(), [2, 6]), "INVALID_ARGUMENT", "has 0 values in contents.fp64_contents"),
        (matrix(infer(), [2, 6], ok, dtype="FP16"), "INVALID_ARGUMENT", "needs 24"),
        (matrix(infer(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="proba")]),
                [2, 6], ok), "INVALID_ARGUMENT", "no output(s) 'proba'"),
        (infer(), "INVALID_ARGUMENT", "'inputs' must be a non-empty list"),
    ]
    two_raw = matrix(infer(), [2, 6], ok)
    two_raw.raw_input_contents.append(ok)
    cases.append((two_raw, "INVALID_ARGUMENT", "1 inputs but 2 raw_input_contents"))
    for request, code, words in cases:
        got_code, details = refused(s.ModelInfer, request)
        assert (got_code, words in details) == (code, True), (request, got_code, details)
    big = matrix(infer(), [10000, 6], np.zeros(60000, "<f8").tobytes())
    assert refused(s.ModelInfer, big)[0] == "RESOURCE_EXHAUSTED"  # --max-body-bytes 64KiB
    code, details = refused(s.ModelReady, pb.ModelReadyRequest(name="numeric", version="feedbeef"))
    assert code == "NOT_FOUND" and COMMIT in details
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{served[1]}")
    unknown = channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex")
    code, _ = refused(unknown, b"")
    assert code == "UNIMPLEMENTED"


def test_grpc_goes_through_the_batcher_stats_and_metrics(served: tuple[support.Server, int]) -> None:
    import tritonclient.grpc as tg

    server, port = served
    model = support.numeric_model()
    frame = support.numeric_frame(200, seed=3)

    def one(i: int) -> list[int]:
        client = tg.InferenceServerClient(f"127.0.0.1:{port}")
        x = tg.InferInput("input", [1, 6], "FP64")
        x.set_data_from_numpy(frame.iloc[i : i + 1].to_numpy())
        out: list[int] = client.infer("numeric", [x]).as_numpy("predict").tolist()
        return out

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = [v for part in pool.map(one, range(len(frame))) for v in part]
    assert got == model.expected(frame)
    with server.client() as c:
        metrics = c.get("/metrics").text
        ok = re.search(r'mlgitops_requests_total\{route="grpc ModelInfer",code="200"\} (\d+)', metrics)
        assert ok and int(ok.group(1)) >= 200, metrics
        batches = re.search(r"mlgitops_batch_size_count (\d+)", metrics)
        assert batches and int(batches.group(1)) < 200 + 50  # requests shared predict calls
        deadline = time.monotonic() + 20
        rows = 0
        while time.monotonic() < deadline and rows < 200:
            doc = c.get("/v2/models/numeric/stats").json()
            rows = sum(w["worker"]["live"]["rows"] for w in doc["workers"])
            time.sleep(0.2)
    assert rows >= 200  # the live statistics saw every gRPC row


def test_a_grpc_port_in_use_is_refused_with_a_sentence(tmp_path: Path) -> None:
    model = support.numeric_model()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        args = [str(model.path), "--port", "0", "--grpc-port", str(port)]
        for t in model.trusted:
            args += ["--trust", t]
        with pytest.raises(RuntimeError) as err:
            support.start_cli(args, name="grpc-taken")
    assert f"cannot serve gRPC on 127.0.0.1:{port}" in str(err.value)
    assert "--grpc-port" in str(err.value)


@pytest.mark.fast
def test_the_gateway_reads_the_model_name_and_nothing_else() -> None:
    """`grpc_gateway.model_name` against messages serialized by protobuf itself, fields in
    any order, and bytes that are no message."""
    from mlgitops.controller import grpc_gateway
    from mlgitops.server import grpc_predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name="crédit-risk", model_version=COMMIT, id="x" * 300,
                               raw_input_contents=[b"\x00" * 70000])
    req.inputs.add(name="input", datatype="FP64", shape=[1, 6])
    req.parameters["priority"].int64_param = 3
    data = req.SerializeToString()
    assert grpc_gateway.model_name(data) == "crédit-risk"
    # field 1 after the others (a valid encoding protobuf parsers accept)
    tail_first = data[data.index(b"\x12"):] + data[: data.index(b"\x12")]
    assert pb.ModelInferRequest.FromString(tail_first).model_name == "crédit-risk"
    assert grpc_gateway.model_name(tail_first) == "crédit-risk"
    assert grpc_gateway.model_name(pb.ModelReadyRequest(name="m", version="v").SerializeToString()) == "m"
    assert grpc_gateway.model_name(b"") == ""
    for garbage in (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x05ab", b"\x0f",
                    b"\x0a\x02\xff\xfe"):
        with pytest.raises((ValueError, UnicodeDecodeError)):
            grpc_gateway.model_name(garbage)
