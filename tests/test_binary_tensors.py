"""Triton's binary tensor data extension and the versioned v2 routes, against real servers.

Raw bodies built by hand here (what ``tritonclient`` sends is tested in
test_inference_clients.py): every wrong size is a 400 with a sentence, checked before
anything is allocated, and the server keeps serving.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import httpx
import numpy as np
import pytest
from support import servers as support

pytestmark = pytest.mark.process

HEADER = "Inference-Header-Content-Length"


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {HEADER: str(len(head))}


def matrix_request(x: np.ndarray, **params: Any) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f8").tobytes()
    header = {
        "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP64",
             "parameters": {"binary_data_size": len(raw)}}
        ],
        **params,
    }
    return binary_body(header, raw)


def bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def split_response(r: httpx.Response) -> tuple[dict[str, Any], bytes]:
    length = int(r.headers[HEADER])
    return json.loads(r.content[:length]), r.content[length:]


def post(server: support.Server, body: bytes, headers: dict[str, str],
         path: str = "/v2/models/numeric/infer") -> httpx.Response:
    with server.client() as c:
        return c.post(path, content=body, headers=headers)


def test_binary_matrix_in_json_out_and_binary_out(numeric_server: support.Server) -> None:
    model = support.numeric_model()
    x = model.frame.iloc[:9].to_numpy()
    expected = model.expected(model.frame.iloc[:9])
    r = post(numeric_server, *matrix_request(x))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["outputs"][0]["data"] == expected
    r = post(numeric_server, *matrix_request(x, parameters={"binary_data_output": True}))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    header, raw = split_response(r)
    out = header["outputs"][0]
    assert out["datatype"] == "INT64" and out["shape"] == [9]
    assert out["parameters"] == {"binary_data_size": len(raw)} and "data" not in out
    assert np.frombuffer(raw, "<i8").tolist() == expected
    # the output's own parameter wins over the request's
    r = post(numeric_server, *matrix_request(
        x, parameters={"binary_data_output": True},
        outputs=[{"name": "predict", "parameters": {"binary_data": False}}]))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == expected


def test_binary_columns_mixed_with_json_columns(numeric_server: support.Server) -> None:
    model = support.numeric_model()
    frame = model.frame.iloc[:4]
    inputs, chunks = [], []
    for i, col in enumerate(frame.columns):
        values = frame[col].to_numpy()
        if i % 2:  # every other column as JSON data, the rest raw (FP32 and INT32 too)
            inputs.append({"name": col, "shape": [4], "datatype": "FP64", "data": values.tolist()})
            continue
        raw = values.astype("<f8").tobytes()
        chunks.append(raw)
        inputs.append({"name": col, "shape": [4, 1], "datatype": "FP64",
                       "parameters": {"binary_data_size": len(raw)}})
    r = post(numeric_server, *binary_body({"inputs": inputs}, *chunks))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == model.expected(frame)


def test_mixed_signature_bytes_bool_and_integers_raw(mixed_server: support.Server) -> None:
    model = support.mixed_model()
    frame = model.frame.iloc[:6]
    colors = bytes_tensor(frame["color"].tolist())
    amount = frame["amount"].to_numpy().astype("<f4").tobytes()  # FP32 into a double column
    count = frame["count"].to_numpy().astype("<i4").tobytes()  # INT32 into a long column
    member = frame["member"].to_numpy().astype(np.uint8).tobytes()
    header = {"inputs": [
        {"name": "amount", "shape": [6], "datatype": "FP32", "parameters": {"binary_data_size": len(amount)}},
        {"name": "count", "shape": [6], "datatype": "INT32", "parameters": {"binary_data_size": len(count)}},
        {"name": "color", "shape": [6], "datatype": "BYTES", "parameters": {"binary_data_size": len(colors)}},
        {"name": "member", "shape": [6], "datatype": "BOOL", "parameters": {"binary_data_size": len(member)}},
    ]}
    r = post(mixed_server, *binary_body(header, amount, count, colors, member),
             path="/v2/models/mixed/infer")
    assert r.status_code == 200, r.text
    expected_frame = frame.assign(amount=frame["amount"].astype(np.float32).astype(np.float64))
    assert r.json()["outputs"][0]["data"] == model.expected(expected_frame)


def raw_case(tensor: dict[str, Any], data: bytes, *, header_length: str | None = None,
             tail: bytes = b"") -> tuple[bytes, dict[str, str]]:
    body, headers = binary_body({"inputs": [tensor]}, data, tail)
    if header_length is not None:
        headers[HEADER] = header_length
    return body, headers


FP64_2x6 = np.arange(12, dtype="<f8").tobytes()


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 96}}, FP64_2x6,
                               header_length="abc"),
                     400, "Inference-Header-Content-Length is 'abc'", id="header-not-a-number"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 96}}, FP64_2x6,
                               header_length="999999"),
                     400, "but the body has", id="header-longer-than-body"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 96}}, FP64_2x6,
                               header_length="0"),
                     400, "says 0 bytes", id="header-zero"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 88}}, FP64_2x6[:88]),
                     400, "has 88 bytes of raw data, but shape [2, 6] of FP64 needs 96",
                     id="size-does-not-match-shape"),
        pytest.param(*raw_case({"name": "input", "shape": [10**12, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 96}}, FP64_2x6),
                     400, "needs 48000000000000", id="huge-shape-small-data"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 200}}, FP64_2x6),
                     400, "binary_data_size is 200, but only 96 bytes", id="size-past-the-end"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 96}}, FP64_2x6,
                               tail=b"\0" * 8),
                     400, "add up to 96", id="bytes-left-over"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": -8}}, b""),
                     400, "must be a non-negative integer", id="negative-size"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": True}}, b""),
                     400, "must be a non-negative integer", id="boolean-size"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "data": [0.0] * 12,
                                "parameters": {"binary_data_size": 96}}, FP64_2x6),
                     400, "both 'data' and parameters.binary_data_size", id="data-and-raw"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "BF16",
                                "parameters": {"binary_data_size": 48}}, FP64_2x6[:48]),
                     422, "cannot read as raw data", id="unknown-datatype"),
        pytest.param(*raw_case({"name": "input", "shape": [2, 6], "datatype": "FP64",
                                "parameters": {"binary_data_size": 96}},
                               np.array([1.0] * 7 + [np.nan] + [1.0] * 4, "<f8").tobytes()),
                     422, "column 'x1' row 1 is NaN", id="nan-names-column-and-row"),
        pytest.param(*raw_case({"name": "x0", "shape": [2], "datatype": "BOOL",
                                "parameters": {"binary_data_size": 2}}, b"\x01\x02"),
                     400, "a byte other than 0 or 1", id="bool-not-0-or-1"),
    ],
)
def test_bad_binary_requests_are_4xx_with_a_sentence(
    numeric_server: support.Server, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    r = post(numeric_server, body, headers)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (struct.pack("<I", 3) + b"red" + b"\x05\x00", "lacks its 4-byte length prefix"),
        (struct.pack("<I", 3) + b"red" + struct.pack("<I", 50) + b"blue", "says 50 bytes"),
        (bytes_tensor(["red", "blue", "green"]), "more BYTES elements than its shape"),
        (bytes_tensor(["red"]), "has 1 BYTES elements"),
        (struct.pack("<I", 2) + b"\xff\xfe" + bytes_tensor(["red"]), "not UTF-8"),
    ],
)
def test_bad_bytes_tensors(mixed_server: support.Server, data: bytes, words: str) -> None:
    frame = support.mixed_model().frame.iloc[:2]
    body, headers = binary_body({"inputs": [
        {"name": "amount", "shape": [2], "datatype": "FP64", "data": frame["amount"].tolist()},
        {"name": "count", "shape": [2], "datatype": "INT64", "data": frame["count"].tolist()},
        {"name": "member", "shape": [2], "datatype": "BOOL", "data": frame["member"].tolist()},
        {"name": "color", "shape": [2], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(data)}},
    ]}, data)
    r = post(mixed_server, body, headers, path="/v2/models/mixed/infer")
    assert r.status_code in (400, 422), r.text
    assert words in r.json()["error"]


def test_a_compressed_body_is_refused_with_a_sentence(numeric_server: support.Server) -> None:
    import gzip

    body, headers = matrix_request(np.zeros((2, 6)))
    r = post(numeric_server, gzip.compress(body), {**headers, "Content-Encoding": "gzip"})
    assert r.status_code == 415 and "send the body uncompressed" in r.json()["error"]


def test_random_binary_garbage_is_never_a_server_error(numeric_server: support.Server) -> None:
    rng = np.random.default_rng(7)
    with numeric_server.client() as c:
        for _ in range(60):
            size = int(rng.integers(0, 200))
            declared = int(rng.integers(-2, 300))
            shape = [int(d) for d in rng.integers(0, 2**40, size=int(rng.integers(1, 4)))]
            datatype = str(rng.choice(["FP64", "FP32", "BYTES", "BOOL", "INT8", "UINT64", "X"]))
            body, headers = binary_body(
                {"inputs": [{"name": str(rng.choice(["input", "x0"])), "shape": shape,
                             "datatype": datatype,
                             "parameters": {"binary_data_size": declared}}]},
                rng.bytes(size),
            )
            if rng.random() < 0.3:
                headers[HEADER] = str(int(rng.integers(0, len(body) + 5)))
            r = c.post("/v2/models/numeric/infer", content=body, headers=headers)
            assert 400 <= r.status_code < 500, (r.status_code, r.text)
            assert r.json()["error"]
        assert c.get("/v2/health/ready").status_code == 200


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
    numeric_server: support.Server,
) -> None:
    with socket.create_connection(("127.0.0.1", numeric_server.port), timeout=10) as s:
        s.sendall(
            b"POST /v2/models/numeric/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: 100\r\nContent-Length: 104857600\r\n\r\n"
        )
        status, _, body = support.read_response(s)
    assert status == 413, body[:200]
    assert b"--max-body-bytes" in body


# ------------------------------------------------------------------- versioned routes
def test_versioned_routes_pin_the_serving_version(numeric_server: support.Server) -> None:
    model = support.numeric_model()
    x = model.frame.iloc[:3].to_numpy()
    serving = "c0ffeenumeric"  # the shared server's version (not hex: exact match only)
    base = f"/v2/models/numeric/versions/{serving}"
    body = {"inputs": [{"name": "input", "shape": [3, 6], "datatype": "FP64",
                        "data": x.reshape(-1).tolist()}]}
    with numeric_server.client() as c:
        assert c.get(base).json()["versions"] == [serving]
        assert c.get(f"{base}/ready").json() == {"name": "numeric", "ready": True}
        r = c.post(f"{base}/infer", json=body)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == model.expected(
            model.frame.iloc[:3])
        for path in ("/v2/models/numeric/versions/c0ffee1", "/v2/models/numeric/versions/c0ffee1/ready"):
            r = c.get(path)
            assert r.status_code == 404
            assert "version c0ffeenumeric does" in r.json()["error"], r.text
        r = c.post("/v2/models/numeric/versions/abc/infer", json=body)
        assert r.status_code == 404 and "'abc'" in r.json()["error"]
        r = c.get("/v2/models/other/versions/c0ffeenumeric")
        assert r.status_code == 404 and "No model named 'other'" in r.json()["error"]
        meta = c.get("/v2").json()
        assert "binary_tensor_data" in meta["extensions"]
        metrics = c.get("/metrics").text
    assert 'route="/v2/models/{name}/versions/{version}/infer",code="200"' in metrics
