"""What a model pod's two commands load, and that what they load late still works.

``mlgitops serve`` loads gRPC only with ``--grpc-port`` (else on the first relayed call) and
pandas only where a frame is built; ``mlgitops fetch-model`` loads no estimator library. Each
check runs a fresh interpreter (the test process has everything loaded already), and a real
server without ``--grpc-port`` answers a relayed gRPC call.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from support import servers as support

pytestmark = pytest.mark.process

COMMIT = "5e1f00d2a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1"
RELAY = "/v2/grpc/inference.GRPCInferenceService"


def loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    """The ``watched`` top-level modules a fresh interpreter holds after running ``code``."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted(m for m in {list(watched)!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, env=support.env())
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_serving_modules_load_neither_grpc_nor_pandas() -> None:
    # what `mlgitops serve` imports before it loads the model (the model then loads sklearn)
    code = ("import mlgitops.cli.pod, mlgitops.server.cli, mlgitops.server.supervisor, "
            "mlgitops.server.app, mlgitops.adapters.stats_store, mlgitops.adapters.prediction_log")
    assert loaded_after(code, ("grpc", "pandas", "pyarrow", "scipy", "sklearn")) == []


def test_the_standby_preload_still_loads_grpc_and_pandas() -> None:
    code = "from mlgitops.server import supervisor; supervisor.preload()"
    assert loaded_after(code, ("grpc", "pandas", "sklearn")) == ["grpc", "pandas", "sklearn"]


def test_fetch_model_loads_no_estimator_library() -> None:
    # with what its checks load when the version has an evaluation record
    code = ("import mlgitops.cli.pod, mlgitops.server.fetch, mlgitops.adapters.evaluation, "
            "mlgitops.authoring.gates, mlgitops.core.performance.names")
    assert loaded_after(code, ("sklearn", "skops", "scipy", "pandas", "mlflow", "grpc")) == []


def test_a_server_without_grpc_relays_grpc_calls() -> None:
    from mlgitops.server import app, grpc_service
    from mlgitops.server import grpc_predict_v2_pb2 as pb

    assert app.GRPC_RELAY == grpc_service.RELAY
    model = support.numeric_model()
    args = [str(model.path), "--port", "0", "--name", "numeric", "--version", COMMIT, "--no-stats"]
    for t in model.trusted:
        args += ["--trust", t]
    server = support.start_cli(args, name="no-grpc")
    try:
        unknown = httpx.post(f"{server.url}{RELAY}/Nope", content=b"", timeout=20)
        assert unknown.status_code == 404
        assert "ModelInfer" in unknown.text
        ready = httpx.post(f"{server.url}{RELAY}/ModelReady",
                           content=pb.ModelReadyRequest(name="numeric").SerializeToString(),
                           timeout=20)
        assert ready.status_code == 200, ready.text
        assert pb.ModelReadyResponse.FromString(ready.content).ready is True
    finally:
        assert server.stop() == 0, server.log_text()
