"""The server speaks KServe v2, the MLflow scoring protocol, Prometheus and OpenAPI."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from support import servers as support

pytestmark = pytest.mark.process


def rows(model: support.Model, n: int = 5, start: int = 0) -> pd.DataFrame:
    return model.frame.iloc[start : start + n].reset_index(drop=True)


def records(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


# ----------------------------------------------------------------------------- MLflow
def test_invocations_every_json_format_predicts_like_the_estimator(
    numeric_server: support.Server,
) -> None:
    model = support.numeric_model()
    frame = rows(model, 7)
    expected = model.expected(frame)
    split = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    reversed_split = {
        "columns": list(frame.columns[::-1]),
        "data": frame[frame.columns[::-1]].to_numpy().tolist(),
    }
    bodies = [
        {"dataframe_split": split},
        {"dataframe_split": reversed_split},
        {"dataframe_records": records(frame)},
        {"instances": records(frame)},
        {"instances": frame.to_numpy().tolist()},
        {"inputs": {c: frame[c].tolist() for c in frame.columns}},
        {"inputs": records(frame), "params": {}},
    ]
    with numeric_server.client() as c:
        for body in bodies:
            r = c.post("/invocations", json=body)
            assert r.status_code == 200, (body, r.text)
            assert r.json() == {"predictions": expected}


def test_invocations_csv(numeric_server: support.Server) -> None:
    model = support.numeric_model()
    frame = rows(model, 4)
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    with numeric_server.client() as c:
        r = c.post("/invocations", content=buf.getvalue(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": model.expected(frame)}


def test_mixed_types_through_every_protocol(mixed_server: support.Server) -> None:
    model = support.mixed_model()
    frame = rows(model, 6)
    expected = model.expected(frame)
    v2 = {
        "inputs": [
            {"name": "amount", "shape": [6], "datatype": "FP64", "data": frame["amount"].tolist()},
            {
                "name": "count",
                "shape": [6, 1],
                "datatype": "INT64",
                "data": [[v] for v in frame["count"].tolist()],
            },
            {"name": "color", "shape": [6], "datatype": "BYTES", "data": frame["color"].tolist()},
            {"name": "member", "shape": [6], "datatype": "BOOL", "data": frame["member"].tolist()},
        ]
    }
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    with mixed_server.client() as c:
        r = c.post("/invocations", json={"dataframe_records": records(frame)})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected
        r = c.post("/invocations", content=buf.getvalue(), headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected
        r = c.post("/v2/models/mixed/infer", json=v2)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == expected


# --------------------------------------------------------------------------------- v2
def test_v2_infer_named_tensors_and_single_matrix(numeric_server: support.Server) -> None:
    model = support.numeric_model()
    frame = rows(model, 3)
    expected = model.expected(frame)
    named = {
        "id": "req-1",
        "inputs": [
            {"name": col, "shape": [3], "datatype": "FP64", "data": frame[col].tolist()}
            for col in frame.columns
        ],
    }
    matrix = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [3, len(frame.columns)],
                "datatype": "FP64",
                "data": frame.to_numpy().tolist(),
            }
        ],
        "outputs": [{"name": "predict"}],
    }
    flat = {
        "inputs": [
            {
                "name": "x",
                "shape": [3, len(frame.columns)],
                "datatype": "FP64",
                "data": frame.to_numpy().ravel().tolist(),
            }
        ]
    }
    with numeric_server.client() as c:
        r = c.post("/v2/models/numeric/infer", json=named)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "req-1"
        assert body["model_name"] == "numeric"
        assert body["model_version"] == "c0ffeenumeric"
        out = body["outputs"][0]
        assert out == {"name": "predict", "datatype": "INT64", "shape": [3], "data": expected}
        for payload in (matrix, flat):
            r = c.post("/v2/models/numeric/infer", json=payload)
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == expected
            assert r.json()["id"]


def test_v2_metadata_health_and_server(numeric_server: support.Server) -> None:
    with numeric_server.client() as c:
        meta = c.get("/v2/models/numeric").json()
        assert meta["name"] == "numeric"
        assert meta["version"] == "c0ffeenumeric"
        assert meta["versions"] == ["c0ffeenumeric"]
        assert meta["platform"] == "mlflow-sklearn"
        assert [i["name"] for i in meta["inputs"]] == support.NUMERIC
        assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
        assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
        assert c.get("/v2/models/numeric/ready").json() == {"name": "numeric", "ready": True}
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2").json()["name"] == "mlgitops"
        assert c.get("/ping").status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/version").json()["version"] == "c0ffeenumeric"
        r = c.get("/v2/models/other")
        assert r.status_code == 404
        assert "numeric" in r.json()["error"]


def test_metrics_exposition(numeric_server: support.Server) -> None:
    model = support.numeric_model()
    with numeric_server.client() as c:
        c.post("/invocations", json={"dataframe_records": records(rows(model, 2))})
        c.post("/invocations", json={"dataframe_records": [{"nope": 1}]})
        text = c.get("/metrics").text
    lines = text.splitlines()
    assert any(
        line.startswith('mlgitops_requests_total{route="/invocations",code="200"}')
        for line in lines
    )
    assert any(
        line.startswith('mlgitops_requests_total{route="/invocations",code="422"}')
        for line in lines
    )
    assert "mlgitops_model_info{" in text
    assert 'version="c0ffeenumeric"' in text and 'digest="sha256:test"' in text
    assert "mlgitops_batch_size_bucket{" in text
    assert "mlgitops_request_duration_seconds_bucket{" in text
    rows_scored = next(line for line in lines if line.startswith("mlgitops_rows_scored_total "))
    assert float(rows_scored.split()[1]) >= 2
    for line in lines:  # every sample line is "name{labels} value"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_openapi_document_loads_in_schemathesis(numeric_server: support.Server) -> None:
    import schemathesis

    with numeric_server.client() as c:
        doc = c.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    assert len(list(schema.get_all_operations())) == 17
    paths = set(doc["paths"])
    assert {
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/versions/{version}/stats",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/stats",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/invocations",
        "/ping",
        "/health",
        "/version",
        "/metrics",
    } <= paths
