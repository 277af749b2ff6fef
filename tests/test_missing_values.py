"""Missing values are served (issue 16): a data scientist's own housing pipeline, imputing
``lot_size`` (10% missing in its training data), logged with ``mlflow.sklearn.log_model``,
published from the run with `mlgitops publish`, and served by a real `mlgitops serve` over every
protocol: rows with and without the missing value get the pipeline's own predictions; the live
statistics count the missing values; a required column's null keeps its clear 422.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import test_server_support as support
from conftest import wait_until

NUMERIC = ["sqft", "rooms", "lot_size", "age"]
COLUMNS = [*NUMERIC, "district"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# numpy.dtype (stored by OneHotEncoder) carries no code: the default trust policy admits it, so
# nothing here sets a trust flag


def housing_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = pd.DataFrame(
        {
            "sqft": rng.normal(1500, 300, n),
            "rooms": rng.integers(1, 6, n).astype(float),
            "lot_size": rng.normal(5000, 800, n),
            "age": rng.uniform(0, 80, n),
            "district": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    f.loc[rng.random(n) < 0.1, "lot_size"] = np.nan
    f["price"] = (
        100 * f.sqft + 5000 * f.rooms + 3 * f.lot_size.fillna(5000) - 300 * f.age
        + f.district.map({"north": 9000, "south": 0, "east": 3000, "west": -2000})
        + rng.normal(0, 1000, n)
    )
    return f


def housing_pipeline(frame: pd.DataFrame) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["district"]),
        ]
    )
    return Pipeline([("prep", prep), ("model", Ridge())]).fit(
        frame.drop(columns="price"), frame["price"]
    )


@pytest.fixture(scope="module")
def housing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[support.Server, int, Any, Path, Path]]:
    """The pipeline logged to MLflow, published from the run, served with gRPC and stats."""
    import mlflow
    import mlflow.sklearn

    from mlgitops.authoring import repository

    tmp = tmp_path_factory.mktemp("housing")
    frame = housing_frame()
    est = housing_pipeline(frame)
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    try:  # the artifacts in the test's directory, not the default ./mlruns
        experiment = mlflow.create_experiment("housing", artifact_location=(tmp / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.sklearn.log_model(
                est, name="model", serialization_format="skops",
                skops_trusted_types=["numpy.dtype"],
                input_example=frame.drop(columns="price").head(5),
            )
    finally:
        mlflow.set_tracking_uri(None)
    reference = tmp / "reference.parquet"
    frame.to_parquet(reference)
    repo = tmp / "repo"
    repository.init(repo)
    env = {**support.env(), "MLFLOW_TRACKING_URI": tracking}
    published = subprocess.run(
        [sys.executable, "-m", "mlgitops.cli", "publish", "house",
         "--model", f"runs:/{run.info.run_id}/model", "--reference", str(reference),
         "--repo", str(repo), "--target", "price"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert published.returncode == 0, published.stdout + published.stderr
    model_dir = repo / "models" / "house"
    mlmodel = (model_dir / "MLmodel").read_text()
    assert '"name": "lot_size", "required": false' in mlmodel.replace("\n    ", " ") or (
        '"required": false' in mlmodel), mlmodel
    stats_dir = tmp / "stats"
    server = support.start_cli(
        [str(model_dir), "--port", "0", "--grpc-port", "0", "--workers", "1", "--name", "house",
         "--version", COMMIT, "--stats-dir", str(stats_dir), "--max-delay-ms", "0"],
        name="housing",
    )
    try:
        m = re.search(r"v2 gRPC API on [^\s]+:(\d+)", server.log_text())
        assert m, server.log_text()
        yield server, int(m.group(1)), est, stats_dir, model_dir
    finally:
        assert server.stop() == 0, server.log_text()


def rows() -> pd.DataFrame:
    """Rows with and without the missing value (NaN in lot_size at rows 1, 3 and 4)."""
    f = housing_frame(n=6, seed=7).drop(columns="price")
    f.loc[[1, 3, 4], "lot_size"] = np.nan
    return f.reset_index(drop=True)


def nulls(values: pd.Series) -> list[Any]:
    return [None if pd.isna(v) else v for v in values.tolist()]


def expected(est: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(est.predict(frame[COLUMNS]), dtype=np.float64)


def same(got: Any, want: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-9, atol=1e-6)


def v2_tensors(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = [{"name": c, "shape": [len(frame)], "datatype": "FP64", "data": nulls(frame[c])}
           for c in NUMERIC]
    out.append({"name": "district", "shape": [len(frame)], "datatype": "BYTES",
                "data": frame["district"].tolist()})
    return out


def test_live_statistics_count_the_missing_values(housing: Any) -> None:
    """The first request this server scores (so the counts are exactly its rows)."""
    from mlgitops.adapters import stats_store
    from mlgitops.core import stats

    server, _, _, stats_dir, model_dir = housing
    baseline = stats.Baseline.from_dict(json.loads((model_dir / "baseline.json").read_text()))
    assert baseline.column("lot_size").missing > 0  # the reference had missing values
    frame = rows()
    assert stats_store.read(stats_dir, baseline=baseline).rows == 0
    with server.client() as c:
        r = c.post("/v2/models/house/infer", json={"inputs": v2_tensors(frame)})
        assert r.status_code == 200, r.text
    wait_until(lambda: stats_store.read(stats_dir, baseline=baseline).rows >= len(frame),
               timeout=30, what="the live statistics to take the request")
    snap = stats_store.read(stats_dir, baseline=baseline)
    assert snap.rows == len(frame)
    assert _missing(snap, "lot_size") == int(frame["lot_size"].isna().sum()) == 4
    assert _missing(snap, "sqft") == 0
    # the reservoir sample keeps the rows as sent: NaN where the value was missing
    wait_until(lambda: len(stats_store.read(stats_dir, baseline=baseline).sample) == len(frame),
               timeout=30, what="the sample to take the rows")
    sample = stats_store.read(stats_dir, baseline=baseline).sample
    assert int(sample["lot_size"].isna().sum()) == 4
    assert "Traceback" not in server.log_text(), server.log_text()


def test_v2_json_takes_null_and_nan_in_the_optional_column(housing: Any) -> None:
    server, _, est, _, _ = housing
    frame = rows()
    want = expected(est, frame)
    assert np.isfinite(want).all()
    with server.client() as c:
        r = c.post("/v2/models/house/infer", json={"inputs": v2_tensors(frame)})
        assert r.status_code == 200, r.text
        same(r.json()["outputs"][0]["data"], want)
        # NaN as JSON's NaN literal (what Python's json and many clients write)
        body = json.dumps({"inputs": [
            {"name": c_, "shape": [len(frame)], "datatype": "FP64", "data": frame[c_].tolist()}
            for c_ in NUMERIC] + [v2_tensors(frame)[-1]]})
        assert "NaN" in body
        r = c.post("/v2/models/house/infer", content=body,
                   headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        same(r.json()["outputs"][0]["data"], want)


def test_v2_binary_tensors_carry_nan(housing: Any) -> None:
    import tritonclient.http as th

    server, _, est, _, _ = housing
    frame = rows()
    client = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = []
    for c in NUMERIC:
        t = th.InferInput(c, [len(frame)], "FP64")
        t.set_data_from_numpy(frame[c].to_numpy(np.float64), binary_data=True)
        inputs.append(t)
    d = th.InferInput("district", [len(frame)], "BYTES")
    d.set_data_from_numpy(frame["district"].to_numpy(object), binary_data=True)
    inputs.append(d)
    result = client.infer("house", inputs)
    same(result.as_numpy("predict"), expected(est, frame))


def test_grpc_carries_nan(housing: Any) -> None:
    import tritonclient.grpc as tg

    _, port, est, _, _ = housing
    frame = rows()
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = []
    for c in NUMERIC:
        t = tg.InferInput(c, [len(frame)], "FP64")
        t.set_data_from_numpy(frame[c].to_numpy(np.float64))
        inputs.append(t)
    d = tg.InferInput("district", [len(frame)], "BYTES")
    d.set_data_from_numpy(frame["district"].to_numpy(object))
    inputs.append(d)
    same(client.infer("house", inputs).as_numpy("predict"), expected(est, frame))


def test_every_invocations_format_takes_missing_values(housing: Any) -> None:
    server, _, est, _, _ = housing
    frame = rows()
    want = expected(est, frame)
    records = [{c: (None if pd.isna(v) else v) for c, v in row.items()}
               for row in frame.to_dict(orient="records")]
    split = {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in records]}
    columnar = {c: nulls(frame[c]) for c in COLUMNS}
    bodies = {
        "dataframe_records": {"dataframe_records": records},
        "dataframe_split": {"dataframe_split": split},
        "instances": {"instances": records},
        "inputs (rows)": {"inputs": split["data"]},
        "inputs (columns)": {"inputs": columnar},
    }
    with server.client() as c:
        for what, body in bodies.items():
            r = c.post("/invocations", json=body)
            assert r.status_code == 200, (what, r.text)
            same(r.json()["predictions"], want)
        # pandas' own NaN (a JSON NaN literal) in a split
        r = c.post("/invocations", content=frame.to_json(orient="split", index=False)
                   .replace("null", "NaN").join(['{"dataframe_split": ', "}"]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        same(r.json()["predictions"], want)
        # CSV with empty cells
        csv = frame.to_csv(index=False)
        assert ",," in csv
        r = c.post("/invocations", content=csv, headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
        same(r.json()["predictions"], want)


def test_a_required_column_null_keeps_its_422(housing: Any) -> None:
    server, _, _, _, _ = housing
    frame = rows()
    records = [{c: (None if pd.isna(v) else v) for c, v in row.items()}
               for row in frame.to_dict(orient="records")]
    records[2]["sqft"] = None
    tensors = v2_tensors(frame)
    tensors[0]["data"][2] = None
    csv = frame.assign(sqft=[1.0, 2.0, None, 4.0, 5.0, 6.0]).to_csv(index=False)
    with server.client() as c:
        for r in (
            c.post("/invocations", json={"dataframe_records": records}),
            c.post("/v2/models/house/infer", json={"inputs": tensors}),
            c.post("/invocations", content=csv, headers={"content-type": "text/csv"}),
        ):
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert "'sqft' row 2" in error and "required" in error, error


def _missing(snap: Any, name: str) -> int:
    return sum(live.column(name).missing for live in snap.stats.values())


def test_curl_default_form_type_is_read_as_json(housing: Any) -> None:
    """``curl -d '{...}'`` sends application/x-www-form-urlencoded; a JSON body is read as
    JSON whatever the type says (Triton and KServe do the same)."""
    server, _, est, _, _ = housing
    frame = rows()
    form = {"content-type": "application/x-www-form-urlencoded"}
    body = json.dumps({"inputs": v2_tensors(frame)})
    r = httpx.post(f"{server.url}/v2/models/house/infer", content=body, headers=form)
    assert r.status_code == 200, r.text
    same(r.json()["outputs"][0]["data"], expected(est, frame))
    records = {"dataframe_split": {"columns": COLUMNS, "data": [
        [None if pd.isna(v) else v for v in row] for row in frame[COLUMNS].values.tolist()]}}
    r = httpx.post(f"{server.url}/invocations", content=json.dumps(records), headers=form)
    assert r.status_code == 200, r.text
    # a body that is not JSON under a type that is not JSON is still a 415
    r = httpx.post(f"{server.url}/invocations", content=b"sqft=1", headers=form)
    assert r.status_code == 415 and "not JSON" in r.json()["error"], r.text


def test_the_signature_decoders_give_scikit_learn_nan_and_none() -> None:
    """Every decoder, on a signature with an optional double, an integer and a string column
    the reference data had missing values in, and a required double."""
    from mlgitops.adapters.mlflow_models import Column
    from mlgitops.server import problems, protocols, schema

    sig = schema.Signature(
        [Column("x", "double"), Column("opt", "double", required=False),
         Column("n", "long"), Column("s", "string")],
        missing_ok=["n", "s"],
    )
    assert sig.nullable == {"opt", "n", "s"}
    batch = sig.from_records(
        [{"x": 1.0, "opt": None, "n": None, "s": None},
         {"x": 2.0, "opt": float("nan"), "n": 3, "s": "a"}], where="dataframe_records")
    cols = batch.columns
    assert np.isnan(cols["opt"]).all() and cols["n"].dtype == np.float64
    assert np.isnan(cols["n"][0]) and cols["n"][1] == 3.0
    assert cols["s"].tolist() == [None, "a"]
    csv = protocols.mlflow_csv(b"x,opt,n,s\n1,,,\n2,5,7,b\n", sig).columns
    assert np.isnan(csv["opt"][0]) and csv["opt"][1] == 5.0
    assert np.isnan(csv["n"][0]) and csv["s"].tolist() == [None, "b"]
    # a raw array (binary tensor) with NaN in the optional column
    arr = sig.coerce("opt", np.array([np.nan, 1.5]))
    assert np.isnan(arr[0]) and arr[1] == 1.5
    # infinity is no missing value, and a required column takes neither null nor NaN
    for bad, where in (
        ([{"x": 1.0, "opt": float("inf"), "n": 1, "s": "a"}], "'opt' row 0 is infinite"),
        ([{"x": None, "opt": 1.0, "n": 1, "s": "a"}], "'x' row 0 is null (a missing value), but "
                                                     "the column is required"),
        ([{"x": float("nan"), "opt": 1.0, "n": 1, "s": "a"}], "'x' row 0 is NaN"),
        ([{"x": 1.0, "opt": 1.0, "n": "7", "s": "a"}], "'n' row 0 is a string"),
    ):
        with pytest.raises(problems.Unprocessable, match=re.escape(where)):
            sig.from_records(bad, where="dataframe_records")
    with pytest.raises(problems.Unprocessable, match="'x' row 1 is empty"):
        protocols.mlflow_csv(b"x,opt,n,s\n1,,,\n,5,7,b\n", sig)
    # an all-double signature (the matrix path): null and NaN only in the optional column
    dbl = schema.Signature([Column("x", "double"), Column("opt", "double", required=False)])
    m = dbl.from_rows([[1.0, None], [2.0, float("nan")], [3.0, 4.0]], where="instances").matrix
    assert m is not None and np.isnan(m[:2, 1]).all() and m[2, 1] == 4.0
    m = dbl.from_matrix(np.array([1.0, np.nan, 2.0, 3.0]), rows=2, where="Tensor").matrix
    assert m is not None and np.isnan(m[0, 1])
    with pytest.raises(problems.Unprocessable, match="column 'x' row 1 is null"):
        dbl.from_rows([[1.0, None], [None, 2.0]], where="instances")
    with pytest.raises(problems.Unprocessable, match="column 'x' row 0 is NaN"):
        dbl.from_matrix(np.array([np.nan, 1.0]), rows=1, where="Tensor")


def test_the_gateway_passes_missing_values_through(housing: Any, tmp_path: Path) -> None:
    """The controller's gateway (the app `mlgitops up` serves) in front of the server."""
    from test_no_data_leaves import Backend, start_gateway

    from mlgitops.controller import gateway
    from mlgitops.controller import reconciler as rec

    server, _, est, _, _ = housing
    router: rec.Router[Any] = rec.Router()
    router.set("house", Backend(server.url, name="house", version=COMMIT))
    app = gateway.build(router=router, trigger=lambda why: None,
                        statuses=lambda: [{"name": "house"}], webhook_secret=None,
                        reports_root=tmp_path / "reports")
    url, srv, thread = start_gateway(app)
    try:
        frame = rows()
        want = expected(est, frame)
        r = httpx.post(f"{url}/v2/models/house/infer", json={"inputs": v2_tensors(frame)},
                       timeout=20)
        assert r.status_code == 200, r.text
        same(r.json()["outputs"][0]["data"], want)
        r = httpx.post(f"{url}/models/house/invocations", content=frame.to_csv(index=False),
                       headers={"content-type": "text/csv"}, timeout=20)
        assert r.status_code == 200, r.text
        same(r.json()["predictions"], want)
    finally:
        srv.should_exit = True
        thread.join(10)
