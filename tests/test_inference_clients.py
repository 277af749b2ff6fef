"""Clients nobody here wrote, at their defaults, against `mlgitops serve` and through
`mlgitops up`'s gateways: NVIDIA's tritonclient (HTTP and gRPC), the kserve SDK's REST client,
an MLServer-style ``content_type: "pd"`` request and the MLflow scoring formats.

kserve and tritonclient.grpc both register the ``inference.*`` protobuf messages in protobuf's
default pool and cannot be imported into one process: the kserve client runs in a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from support import servers as support
from support.data import FEATURES, make_frame, train
from support.net import free_port
from support.waits import wait_until

from mlgitops import settings
from mlgitops.controller import run

pytestmark = pytest.mark.process

COMMIT = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"

KSERVE_CLIENT = r"""
import asyncio, json, sys
import grpc
import numpy as np
from kserve import (InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest,
                    RESTConfig)

base, name, rows = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]))
grpc_address, version = sys.argv[4], sys.argv[5]

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2"))  # v1 is its default
    out = {"live": await client.is_server_live(base),
           "ready": await client.is_server_ready(base),
           "model_ready": await client.is_model_ready(base, name)}
    for binary in (True, False):
        x = InferInput(name="input", shape=list(rows.shape), datatype="FP64")
        x.set_data_from_numpy(rows, binary_data=binary)
        request = InferRequest(model_name=name, infer_inputs=[x], request_id=f"k-{binary}",
                               parameters={"binary_data_output": binary})
        response = await client.infer(base, request, model_name=name)
        out[f"binary={binary}"] = {"id": response.id,
                                   "predict": response.outputs[0].as_numpy().tolist()}
    await client.close()
    rpc = InferenceGRPCClient(grpc_address)
    out["grpc_ready"] = await rpc.is_model_ready(name)
    x = InferInput(name="input", shape=list(rows.shape), datatype="FP64")
    x.set_data_from_numpy(rows)
    response = await rpc.infer(InferRequest(model_name=name, infer_inputs=[x],
                                            model_version=version[:9], request_id="g-1"))
    out["grpc"] = {"id": response.id, "version": response.model_version,
                   "predict": response.outputs[0].as_numpy().tolist()}
    try:
        await rpc.infer(InferRequest(model_name=name, infer_inputs=[x], model_version="0" * 40))
    except grpc.aio.AioRpcError as exc:
        out["grpc_wrong_version"] = [exc.code().name, exc.details()]
    await rpc.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def kserve_clients(base: str, name: str, rows: np.ndarray, *, grpc_address: str,
                   version: str) -> dict[str, Any]:
    """The kserve SDK's REST client (binary and JSON tensors) and its gRPC client (pinned to
    a version), in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-c", KSERVE_CLIENT, base, name, json.dumps(rows.tolist()),
         grpc_address, version],
        capture_output=True, text=True, timeout=120, env=support.env(), check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def tritonclient_http(address: str, name: str, frame: pd.DataFrame, *,
                      version: str) -> dict[str, Any]:
    """What a Triton user does first: health, metadata, infer with the client's defaults
    (binary tensors in and out), with JSON tensors, and pinned to a version."""
    import tritonclient.http as th

    client = th.InferenceServerClient(address)
    out: dict[str, Any] = {
        "live": client.is_server_live(), "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(name),
        "pinned_ready": client.is_model_ready(name, model_version=version[:7]),
        "wrong_ready": client.is_model_ready(name, model_version="0000000"),
        "extensions": client.get_server_metadata()["extensions"],
        "versions": client.get_model_metadata(name)["versions"],
    }
    x = th.InferInput("input", list(frame.shape), "FP64")
    x.set_data_from_numpy(frame.to_numpy())  # binary_data=True: the default
    out["binary"] = client.infer(name, [x]).as_numpy("predict").tolist()
    columns = []
    for col in frame.columns:
        t = th.InferInput(col, [len(frame)], "FP64")
        t.set_data_from_numpy(frame[col].to_numpy(), binary_data=False)
        columns.append(t)
    result = client.infer(name, columns, model_version=version,
                          outputs=[th.InferRequestedOutput("predict", binary_data=False)])
    out["json"] = result.as_numpy("predict").tolist()
    out["json_version"] = result.get_response()["model_version"]
    with pytest.raises(th.InferenceServerException) as err:
        client.infer(name, [x], model_version="deadbeefcafe")
    out["wrong_version"] = (err.value.status(), err.value.message())
    client.close()
    return out


def tritonclient_grpc(address: str, name: str, frame: pd.DataFrame, *,
                      version: str) -> dict[str, Any]:
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(address)
    out: dict[str, Any] = {
        "live": client.is_server_live(), "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(name, model_version=version),
        "versions": client.get_model_metadata(name, as_json=True)["versions"],
    }
    x = tg.InferInput("input", list(frame.shape), "FP64")
    x.set_data_from_numpy(frame.to_numpy())
    out["predict"] = client.infer(name, [x], model_version=version[:10]).as_numpy(
        "predict").tolist()
    with pytest.raises(tg.InferenceServerException) as err:
        client.infer("no-such-model", [x])
    out["unknown_model"] = (err.value.status(), err.value.message())
    with pytest.raises(tg.InferenceServerException) as err:
        client.infer(name, [x], model_version="0000000")
    out["wrong_version"] = (err.value.status(), err.value.message())
    client.close()
    return out


def mlserver_pd(base: str, name: str, frame: pd.DataFrame) -> httpx.Response:
    """MLServer's pandas codec: one tensor per column, ``parameters.content_type: "pd"``."""
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [{"name": c, "shape": [len(frame), 1], "datatype": "FP64",
                    "parameters": {"content_type": "np"}, "data": frame[c].tolist()}
                   for c in frame.columns],
    }
    return httpx.post(f"{base}/v2/models/{name}/infer", json=body, timeout=20)


def mlflow_formats(url: str, frame: pd.DataFrame) -> list[httpx.Response]:
    bodies = [
        {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}},
        {"dataframe_records": frame.to_dict("records")},
        {"instances": frame.to_numpy().tolist()},
        {"inputs": {c: frame[c].tolist() for c in frame.columns}},
    ]
    out = [httpx.post(url, json=b, timeout=20) for b in bodies]
    out.append(httpx.post(url, content=frame.to_csv(index=False),
                          headers={"content-type": "text/csv"}, timeout=20))
    return out


def check_all(*, http_base: str, invocations: str, grpc_address: str, name: str,
              frame: pd.DataFrame, expected: list[Any], version: str) -> None:
    hp = tritonclient_http(http_base.removeprefix("http://"), name, frame, version=version)
    assert hp["live"] and hp["ready"] and hp["model_ready"] and hp["pinned_ready"]
    assert not hp["wrong_ready"]
    assert "binary_tensor_data" in hp["extensions"] and hp["versions"] == [version]
    assert hp["binary"] == expected and hp["json"] == expected
    assert hp["json_version"] == version
    assert hp["wrong_version"][0] == "404" and f"version {version} does" in hp["wrong_version"][1]

    gp = tritonclient_grpc(grpc_address, name, frame, version=version)
    assert gp["live"] and gp["ready"] and gp["model_ready"] and gp["versions"] == [version]
    assert gp["predict"] == expected
    assert gp["unknown_model"][0] == "StatusCode.NOT_FOUND", gp
    assert gp["wrong_version"][0] == "StatusCode.NOT_FOUND"
    assert f"version {version} does" in gp["wrong_version"][1]

    ks = kserve_clients(http_base, name, frame.to_numpy(), grpc_address=grpc_address,
                        version=version)
    assert ks["live"] and ks["ready"] and ks["model_ready"] and ks["grpc_ready"]
    for binary in (True, False):  # (kserve's REST response drops model_version)
        got = ks[f"binary={binary}"]
        assert got["predict"] == expected and got["id"] == f"k-{binary}"
    assert ks["grpc"] == {"id": "g-1", "version": version, "predict": expected}
    assert ks["grpc_wrong_version"][0] == "NOT_FOUND"
    assert f"version {version} does" in ks["grpc_wrong_version"][1]

    r = mlserver_pd(http_base, name, frame)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == expected

    for r in mlflow_formats(invocations, frame):
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": expected}


# ------------------------------------------------------------------------ mlgitops serve
@pytest.fixture(scope="module")
def served() -> Iterator[tuple[support.Server, int]]:
    server = support.start_standby(support.numeric_model(), version=COMMIT, grpc_port=0)
    try:
        m = re.search(r"v2 gRPC API on [^\s]+:(\d+)", server.log_text())
        assert m, server.log_text()
        yield server, int(m.group(1))
    finally:
        server.stop()


def test_clients_against_mlgitops_serve(served: tuple[support.Server, int]) -> None:
    server, grpc_port = served
    model = support.numeric_model()
    frame = model.frame.iloc[:11].reset_index(drop=True)
    check_all(http_base=server.url, invocations=f"{server.url}/invocations",
              grpc_address=f"127.0.0.1:{grpc_port}", name="numeric", frame=frame,
              expected=model.expected(frame), version=COMMIT)


def test_mlserver_pd_request_with_string_and_boolean_columns(
    mixed_server: support.Server,
) -> None:
    model = support.mixed_model()
    frame = model.frame.iloc[:5].reset_index(drop=True)
    kinds = {"amount": "FP64", "count": "INT64", "color": "BYTES", "member": "BOOL"}
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [{"name": c, "shape": [5], "datatype": kinds[c], "data": frame[c].tolist(),
                    **({"parameters": {"content_type": "str"}} if c == "color" else {})}
                   for c in frame.columns],
    }
    with mixed_server.client() as c:
        r = c.post("/v2/models/mixed/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == model.expected(frame)
        body["parameters"] = {"content_type": "dataframe"}
        r = c.post("/v2/models/mixed/infer", json=body)
    assert r.status_code == 422 and "content_type 'dataframe' is not supported" in r.text


# --------------------------------------------------------------------------- mlgitops up
@pytest.fixture()
def controller(repo: Path) -> Iterator[run.Controller]:
    cfg = settings.controller(repo, port=free_port(), grpc_port=0, poll_seconds=2.0,
                              monitor=False)
    with run.running(cfg) as ctl:
        yield ctl


def test_clients_through_the_gateways_of_mlgitops_up(
    publish_version: Callable[..., str], controller: run.Controller
) -> None:
    commit = publish_version()
    base = controller.base_url

    def serving() -> bool:
        try:
            r = httpx.get(f"{base}/v2/models/credit", timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json().get("version") == commit

    wait_until(serving, what="the first version serving")
    assert controller.grpc_port
    frame = make_frame(30, seed=4)[FEATURES]
    expected = np.asarray(train(make_frame(), seed=0).predict(frame)).tolist()
    check_all(http_base=base, invocations=f"{base}/models/credit/invocations",
              grpc_address=f"127.0.0.1:{controller.grpc_port}", name="credit", frame=frame,
              expected=expected, version=commit)
    info = json.loads((controller.state_dir / run.CONTROLLER_FILE).read_text())
    assert info["grpcPort"] == controller.grpc_port


def test_the_grpc_gateway_answers_for_models_it_does_not_serve(repo: Path) -> None:
    """No model yet: the gateway is live but not ready, and a model call is NOT_FOUND."""
    import tritonclient.grpc as tg

    cfg = settings.controller(repo, port=free_port(), grpc_port=0, poll_seconds=60.0,
                              monitor=False)
    with run.running(cfg) as ctl:
        client = tg.InferenceServerClient(f"127.0.0.1:{ctl.grpc_port}")
        assert client.is_server_live() and client.is_server_ready()  # nothing to wait for
        assert client.get_server_metadata(as_json=True)["name"] == "mlgitops"
        with pytest.raises(tg.InferenceServerException) as err:
            client.get_model_metadata("credit")
        assert "NOT_FOUND" in str(err.value.status())
        assert "no version of model 'credit' is serving here" in err.value.message()
        client.close()
