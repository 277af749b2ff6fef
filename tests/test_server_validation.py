"""Bad input gets a 4xx with a sentence, never a 5xx: a table, hypothesis and schemathesis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import servers as support

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def numeric_client(numeric_server: support.Server) -> Iterator[httpx.Client]:
    with numeric_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def mixed_client(mixed_server: support.Server) -> Iterator[httpx.Client]:
    with mixed_server.client() as c:
        yield c


def good_row() -> dict[str, Any]:
    return {c: 0.5 for c in support.NUMERIC}


def mixed_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"amount": 90.0, "count": 3, "color": "red", "member": True}
    row.update(changes)
    return row


def with_(**changes: Any) -> dict[str, Any]:
    row = good_row()
    for k, v in changes.items():
        if v is _DROP:
            row.pop(k)
        else:
            row[k] = v
    return row


_DROP = object()
JSON = {"content-type": "application/json"}
INV = "/invocations"
V2 = "/v2/models/numeric/infer"

# (id, method, path, headers, body (bytes or JSON value), status, words the error must contain)
CASES: list[tuple[str, str, str, dict[str, str], Any, int, tuple[str, ...]]] = [
    (
        "missing column",
        "POST",
        INV,
        JSON,
        {"dataframe_records": [with_(x3=_DROP)]},
        422,
        ("x3", "lacks"),
    ),
    ("extra column", "POST", INV, JSON, {"dataframe_records": [with_(zz=1.0)]}, 422, ("zz",)),
    (
        "string for double",
        "POST",
        INV,
        JSON,
        {"dataframe_records": [with_(x1="1.5")]},
        422,
        ("x1", "string"),
    ),
    (
        "bool for double",
        "POST",
        INV,
        JSON,
        {"dataframe_records": [with_(x1=True)]},
        422,
        ("x1", "boolean"),
    ),
    (
        "null for double",
        "POST",
        INV,
        JSON,
        {"dataframe_records": [with_(x2=None)]},
        422,
        ("x2", "null"),
    ),
    (
        "NaN literal",
        "POST",
        INV,
        JSON,
        b'{"instances": [[1, 2, 3, 4, 5, NaN]]}',
        422,
        ("x5", "NaN"),
    ),
    (
        "Infinity literal",
        "POST",
        INV,
        JSON,
        b'{"instances": [[1, 2, 3, 4, Infinity, 6]]}',
        422,
        ("x4", "infinite"),
    ),
    (
        "overflowing number",
        "POST",
        INV,
        JSON,
        b'{"instances": [[1, 2, 3, 1e999, 5, 6]]}',
        422,
        ("x3",),
    ),
    ("short row", "POST", INV, JSON, {"instances": [[1, 2, 3]]}, 422, ("3 values", "6")),
    ("no rows", "POST", INV, JSON, {"dataframe_records": []}, 422, ("row",)),
    (
        "two formats",
        "POST",
        INV,
        JSON,
        {"instances": [good_row()], "inputs": [good_row()]},
        400,
        ("exactly one",),
    ),
    ("no format", "POST", INV, JSON, {"rows": [good_row()]}, 400, ("dataframe_split",)),
    ("not an object", "POST", INV, JSON, [1, 2, 3], 400, ("object",)),
    ("not JSON", "POST", INV, JSON, b"{not json", 400, ("JSON",)),
    ("empty body", "POST", INV, JSON, b"", 400, ("empty",)),
    (
        "split ragged",
        "POST",
        INV,
        JSON,
        {"dataframe_split": {"columns": support.NUMERIC, "data": [[1, 2]]}},
        422,
        ("2 values",),
    ),
    (
        "split unknown key",
        "POST",
        INV,
        JSON,
        {"dataframe_split": {"columns": support.NUMERIC, "data": [], "x": 1}},
        400,
        ("'x'",),
    ),
    (
        "csv bad number",
        "POST",
        INV,
        {"content-type": "text/csv"},
        b"x0,x1,x2,x3,x4,x5\n1,2,3,4,5,abc\n",
        422,
        ("x5", "abc"),
    ),
    (
        "csv nan",
        "POST",
        INV,
        {"content-type": "text/csv"},
        b"x0,x1,x2,x3,x4,x5\n1,2,nan,4,5,6\n",
        422,
        ("x2", "NaN"),
    ),
    (
        "csv header only",
        "POST",
        INV,
        {"content-type": "text/csv"},
        b"x0,x1,x2,x3,x4,x5\n",
        422,
        ("no rows",),
    ),
    (
        "csv missing column",
        "POST",
        INV,
        {"content-type": "text/csv"},
        b"x0,x1\n1,2\n",
        422,
        ("x2",),
    ),
    (
        "wrong content type",
        "POST",
        INV,
        {"content-type": "text/plain"},
        b"x0=1&x1=2",
        415,
        ("text/plain", "not JSON"),
    ),
    ("no content type", "POST", INV, {}, b"x0=1", 415, ("missing",)),
    (
        "v2 wrong content type",
        "POST",
        V2,
        {"content-type": "application/xml"},
        b"<a/>",
        415,
        ("application/xml", "not JSON"),
    ),
    (
        "v2 unknown model",
        "POST",
        "/v2/models/other/infer",
        JSON,
        {"inputs": []},
        404,
        ("other", "numeric"),
    ),
    ("v2 no inputs", "POST", V2, JSON, {"id": "1"}, 400, ("inputs",)),
    (
        "v2 shape mismatch",
        "POST",
        V2,
        JSON,
        {"inputs": [{"name": "m", "shape": [2, 6], "datatype": "FP64", "data": [1.0] * 6}]},
        422,
        ("shape",),
    ),
    (
        "v2 wrong width",
        "POST",
        V2,
        JSON,
        {"inputs": [{"name": "m", "shape": [1, 5], "datatype": "FP64", "data": [1.0] * 5}]},
        422,
        ("[rows, 6]",),
    ),
    (
        "v2 bytes for double",
        "POST",
        V2,
        JSON,
        {"inputs": [{"name": "x0", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
        422,
        ("BYTES", "FP64"),
    ),
    (
        "v2 missing column tensor",
        "POST",
        V2,
        JSON,
        {"inputs": [{"name": "x0", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        422,
        ("lacks", "x1"),
    ),
    (
        "v2 unknown output",
        "POST",
        V2,
        JSON,
        {
            "inputs": [{"name": "m", "shape": [1, 6], "datatype": "FP64", "data": [1.0] * 6}],
            "outputs": [{"name": "proba"}],
        },
        422,
        ("proba",),
    ),
    (
        "v2 string in FP64",
        "POST",
        V2,
        JSON,
        {"inputs": [{"name": "m", "shape": [1, 6], "datatype": "FP64", "data": [1.0] * 5 + ["x"]}]},
        422,
        ("x5", "string"),
    ),
    ("v2 tensor not an object", "POST", V2, JSON, {"inputs": [5]}, 400, ("inputs[0]",)),
    (
        "v2 negative shape",
        "POST",
        V2,
        JSON,
        {"inputs": [{"name": "m", "shape": [-1, 6], "datatype": "FP64", "data": []}]},
        400,
        ("shape",),
    ),
    ("wrong method infer", "GET", V2, {}, None, 405, ("GET", "POST")),
    ("wrong method invocations", "PUT", INV, JSON, {}, 405, ("PUT",)),
    ("wrong method metadata", "DELETE", "/v2/models/numeric", {}, None, 405, ("DELETE",)),
    ("unknown route", "GET", "/nope", {}, None, 404, ("/nope",)),
    ("unknown model metadata", "GET", "/v2/models/other", {}, None, 404, ("other",)),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_requests_get_a_sentence(
    numeric_client: httpx.Client,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
    words: tuple[str, ...],
) -> None:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    r = numeric_client.request(method, path, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert isinstance(message, str) and message.endswith(".")
    for word in words:
        assert word in message, (word, message)
    if status == 405:
        assert r.headers.get("allow")


MIXED_CASES = [
    ("float for long", mixed_row(count=1.5), ("count", "non-integer")),
    ("string for long", mixed_row(count="3"), ("count", "string")),
    ("long out of range", mixed_row(count=2**64), ("count",)),
    ("number for string", mixed_row(color=3), ("color", "number")),
    ("string for boolean", mixed_row(member="yes"), ("member", "string")),
    ("number for boolean", mixed_row(member=1), ("member", "number")),
    (
        "unknown category (the model raises)",
        mixed_row(color="purple"),
        ("could not score", "purple"),
    ),
]


@pytest.mark.parametrize(
    ("row", "words"), [c[1:] for c in MIXED_CASES], ids=[c[0] for c in MIXED_CASES]
)
def test_mixed_signature_types(
    mixed_client: httpx.Client, row: dict[str, Any], words: tuple[str, ...]
) -> None:
    r = mixed_client.post(INV, json={"dataframe_records": [row]})
    assert r.status_code == 422, r.text
    for word in words:
        assert word in r.json()["error"]


def test_oversized_body_is_413_with_and_without_content_length(
    numeric_server: support.Server,
) -> None:
    big = b'{"instances": [' + b"[1,2,3,4,5,6]," * (11 * 1024 * 1024 // 14) + b"[1,2,3,4,5,6]]}"

    def chunks() -> Iterator[bytes]:
        step = 1 << 20
        for i in range(0, len(big), step):
            yield big[i : i + step]

    with numeric_server.client(timeout=60) as c:
        r = c.post(INV, content=big, headers=JSON)
        assert r.status_code == 413, r.text
        assert "bytes" in r.json()["error"]
        r = c.post(INV, content=chunks(), headers=JSON)
        assert r.status_code == 413, r.text
        assert c.get("/v2/health/ready").status_code == 200


# ------------------------------------------------------------------------------ hypothesis
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
cells = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
)
names = st.sampled_from([*support.NUMERIC, "zz", ""])
rows = st.dictionaries(names, cells, max_size=8)
near_valid = st.one_of(
    st.fixed_dictionaries({"dataframe_records": st.lists(rows, max_size=4)}),
    st.fixed_dictionaries({"instances": st.lists(st.lists(cells, max_size=8), max_size=4)}),
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {
                    "columns": st.lists(names, max_size=7),
                    "data": st.lists(st.lists(cells, max_size=7), max_size=3),
                }
            )
        }
    ),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(names, st.lists(cells, max_size=3), max_size=7)}
    ),
    json_values,
)
tensor = st.fixed_dictionaries(
    {
        "name": names,
        "shape": st.lists(st.integers(min_value=-1, max_value=7), min_size=0, max_size=3),
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "fp64", "COMPLEX"]),
        "data": st.lists(cells, max_size=12) | st.lists(st.lists(cells, max_size=6), max_size=3),
    }
)
v2_bodies = st.one_of(
    st.fixed_dictionaries(
        {"inputs": st.lists(tensor, max_size=7)},
        optional={"id": json_values, "outputs": json_values},
    ),
    json_values,
)
_settings = settings(
    max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def _check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code >= 400:
        assert isinstance(body["error"], str) and body["error"]


@_settings
@given(body=near_valid)
def test_fuzz_invocations_never_5xx(numeric_client: httpx.Client, body: Any) -> None:
    _check_answer(numeric_client.post(INV, content=json.dumps(body).encode(), headers=JSON))


@_settings
@given(body=v2_bodies)
def test_fuzz_v2_never_5xx(numeric_client: httpx.Client, body: Any) -> None:
    _check_answer(numeric_client.post(V2, content=json.dumps(body).encode(), headers=JSON))


@_settings
@given(
    body=st.binary(max_size=64),
    ctype=st.sampled_from(
        ["application/json", "text/csv", "text/csv; charset=utf-8", "", "image/png"]
    ),
)
def test_fuzz_raw_bytes_never_5xx(numeric_client: httpx.Client, body: bytes, ctype: str) -> None:
    headers = {"content-type": ctype} if ctype else {}
    _check_answer(numeric_client.post(INV, content=body, headers=headers))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    row=st.fixed_dictionaries({"amount": cells, "count": cells, "color": cells, "member": cells})
)
def test_fuzz_mixed_types_never_5xx(mixed_client: httpx.Client, row: dict[str, Any]) -> None:
    _check_answer(
        mixed_client.post(
            INV, content=json.dumps({"dataframe_records": [row]}).encode(), headers=JSON
        )
    )


# ----------------------------------------------------------------------------- schemathesis
def test_schemathesis_finds_no_server_error(numeric_server: support.Server) -> None:
    """Every operation of /openapi.json, positive and negative data, all checks.

    ``positive_data_acceptance`` is excluded: the protocols' cross-field rules (a tensor's
    data matches its shape, all columns have the same length) are not expressible in
    OpenAPI, so schema-valid requests can still be invalid ones.
    """
    proc = subprocess.run(
        [
            str(support.Path(support.python()).parent / "st"),
            "run",
            f"{numeric_server.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "15",
            "--generation-deterministic",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=support.env(),
        check=False,
    )
    tail = proc.stdout[-6000:]
    assert "Server error" not in proc.stdout, tail
    assert proc.returncode == 0, tail
    assert numeric_server.proc.poll() is None
    assert "Traceback" not in numeric_server.log_text()
