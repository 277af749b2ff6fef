"""No data leaves through a public port (issue 15): the gateway forwards a model server's
inference, metadata, health and metrics routes only, never its live statistics and sample,
whatever the spelling; a server's statistics route, the gateway's ``/status`` and (when a team
makes them private) ``/reports/`` answer only the API token. A real model server with live
statistics behind a real gateway (uvicorn on loopback), raw HTTP requests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from support import servers as support
from support.net import free_port
from support.waits import wait_until

from mlgitops import errors, settings
from mlgitops.controller import gateway
from mlgitops.controller import reconciler as rec

pytestmark = pytest.mark.process

TOKEN = "t0ken-for-the-tests"
COMMIT = "d" * 40


@dataclass(frozen=True)
class Backend:
    url: str
    name: str = "numeric"
    version: str = COMMIT
    digest: str = "sha256:" + "0" * 64

    @property
    def key(self) -> Any:
        return self.url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.Server]:
    """A model server with live statistics, started with MLGITOPS_API_TOKEN set."""
    model = support.numeric_model()
    stats = tmp_path_factory.mktemp("stats")
    args = [str(model.path), "--port", "0", "--workers", "1", "--name", "numeric",
            "--version", COMMIT, "--stats-dir", str(stats)]
    for t in model.trusted:
        args += ["--trust", t]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLGITOPS_API_TOKEN", TOKEN)
        srv = support.start_cli(args, name="token")
    try:
        frame = model.frame.iloc[:5]
        r = srv.client().post("/invocations", json={"dataframe_split": {
            "columns": list(frame.columns), "data": frame.values.tolist()}})
        assert r.status_code == 200, r.text
        yield srv
    finally:
        assert srv.stop() == 0, srv.log_text()


def start_gateway(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started, timeout=15, what="gateway")
    return f"http://127.0.0.1:{port}", srv, thread


@pytest.fixture()
def gateway_url(server: support.Server, tmp_path: Path) -> Iterator[str]:
    router: rec.Router[Any] = rec.Router()
    router.set("numeric", Backend(server.url))
    app = gateway.build(router=router, trigger=lambda why: None,
                        statuses=lambda: [{"name": "numeric"}], webhook_secret=None,
                        reports_root=tmp_path / "reports", api_token=TOKEN, reports_private=True)
    url, srv, thread = start_gateway(app)
    yield url
    srv.should_exit = True
    thread.join(10)


def raw_get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``GET path`` exactly as written (no client-side normalization of dots or slashes)."""
    host, port = base.removeprefix("http://").split(":")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
                     .encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


STATS_PATHS = [
    "/v2/models/numeric/stats",
    "/v2/models/numeric/stats/",
    f"/v2/models/numeric/versions/{COMMIT}/stats",
    "/v2/models/numeric//stats",
    "/v2/models/numeric/./stats",
    "/v2/models/numeric/x/../stats",
    "/v2/models/numeric/%73tats",
    "/v2/models/numeric/st%61ts",
    "/models/numeric/v2/models/numeric/stats",
    f"/models/numeric/v2/models/numeric/versions/{COMMIT}/stats",
    "/models/numeric//v2/models/numeric/stats",
    "/models/numeric/./v2/models/numeric/stats",
    "/models/numeric/v2/models/numeric/stats/",
    "/models/numeric/v2/models/numeric%2Fstats",
    "/models/numeric/v2/./models//numeric/./stats",
    "/models/numeric/x/../v2/models/numeric/stats",
    "/models/numeric/v2/models/numeric/stats?format=json",
]


def test_the_gateway_forwards_no_statistics_route(server: support.Server,
                                                  gateway_url: str) -> None:
    # the server itself answers its statistics to the token: the rows are there to leak
    direct = httpx.get(f"{server.url}/v2/models/numeric/stats",
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert direct.status_code == 200 and "workers" in direct.text
    for path in STATS_PATHS:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            status, body = raw_get(gateway_url, path, headers)
            assert status == 404, (path, status, body[:200])
            assert b"workers" not in body and b"sample" not in body, path
    # the public routes still pass
    assert raw_get(gateway_url, "/v2/models/numeric/ready")[0] == 200
    assert raw_get(gateway_url, "/models/numeric/metrics")[0] == 200
    assert raw_get(gateway_url, f"/v2/models/numeric/versions/{COMMIT}")[0] == 200
    assert raw_get(gateway_url, "/models/numeric/v2/models/numeric/ready")[0] == 200


def test_a_servers_statistics_route_needs_the_token(server: support.Server) -> None:
    url = f"{server.url}/v2/models/numeric/stats"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        r = httpx.get(url, headers=headers, timeout=10)
        assert r.status_code == 401, (headers, r.text)
        assert "MLGITOPS_API_TOKEN" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    ok = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert ok.status_code == 200


def test_status_and_private_reports_need_the_token(gateway_url: str) -> None:
    for path in ("/status", "/reports/", "/reports/numeric/", "/reports/numeric/x.html"):
        r = httpx.get(gateway_url + path, timeout=10)
        assert r.status_code == 401, (path, r.text)
        r = httpx.get(gateway_url + path, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=10)
        assert r.status_code != 401, (path, r.text)
    assert httpx.get(gateway_url + "/v2/health/live", timeout=10).status_code == 200


@pytest.mark.fast
def test_access_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLGITOPS_API_TOKEN", raising=False)
    monkeypatch.delenv("MLGITOPS_REPORTS_PRIVATE", raising=False)
    assert settings.access() == settings.AccessSettings()
    monkeypatch.setenv("MLGITOPS_REPORTS_PRIVATE", "1")
    with pytest.raises(errors.ConfigError, match="MLGITOPS_API_TOKEN is not"):
        settings.access()
    monkeypatch.setenv("MLGITOPS_API_TOKEN", TOKEN)
    assert settings.access() == settings.AccessSettings(api_token=TOKEN, reports_private=True)
    monkeypatch.setenv("MLGITOPS_OPERATOR_REPO_URL", "file:///x")
    monkeypatch.setenv("MLGITOPS_OPERATOR_NAMESPACE", "ns")
    monkeypatch.delenv("MLGITOPS_OPERATOR_HTTP_HOST", raising=False)
    assert settings.operator().http_host == "127.0.0.1"
    monkeypatch.setenv("MLGITOPS_OPERATOR_HTTP_HOST", "0.0.0.0")
    assert settings.operator().http_host == "0.0.0.0"
    monkeypatch.setenv("MLGITOPS_OPERATOR_API_TOKEN_SECRET", "mlgitops-api-token")
    assert settings.operator().api_token_secret == "mlgitops-api-token"
    monkeypatch.delenv("MLGITOPS_API_TOKEN")
    monkeypatch.delenv("MLGITOPS_REPORTS_PRIVATE")
    with pytest.raises(errors.ConfigError, match="MLGITOPS_API_TOKEN is not"):
        settings.operator()
