"""The kubelet stand-in's API calls wait out an API server that is away (refused connections,
503 while it starts) with a bounded back-off, and raise at once on a real answer (404)."""

from __future__ import annotations

import http.server
import json
import threading
import types
import urllib.error
from collections.abc import Iterator
from typing import Any, ClassVar, cast

import certifi
import pytest

from mlgitops.devcluster.cluster import TestCluster, free_port
from mlgitops.devcluster.kubelet_net import Api, Backoff, Unreachable, transient

pytestmark = pytest.mark.fast


class _Flaky(http.server.BaseHTTPRequestHandler):
    """503 for the first ``unavailable`` requests, then 200 (or 404 under /missing)."""

    unavailable = 0
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        if type(self).unavailable > 0:
            type(self).unavailable -= 1
            code, body = 503, {"message": "etcd is starting"}
        elif self.path.startswith("/missing"):
            code, body = 404, {"message": "not found"}
        else:
            code, body = 200, {"ok": True}
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        return


def api_for(server: str, patience: float) -> Api:
    stand_in = types.SimpleNamespace(server=server, token="t", ca_path=certifi.where())
    return Api(cast(TestCluster, stand_in), patience=patience)


@pytest.fixture()
def flaky() -> Iterator[str]:
    _Flaky.unavailable, _Flaky.seen = 0, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_starting_api_server_is_waited_for(flaky: str) -> None:
    _Flaky.unavailable = 3
    assert api_for(flaky, patience=30).request("GET", "/api") == {"ok": True}
    assert len(_Flaky.seen) == 4


def test_a_real_answer_is_raised_at_once(flaky: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        api_for(flaky, patience=30).request("GET", "/missing")
    assert err.value.code == 404 and len(_Flaky.seen) == 1


def test_without_patience_or_past_it_the_call_is_unreachable(flaky: str) -> None:
    _Flaky.unavailable = 100
    with pytest.raises(Unreachable, match="did not answer within 0 s"):
        api_for(flaky, patience=0).request("GET", "/api")
    assert len(_Flaky.seen) == 1
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=r"ConnectionRefused|URLError"):
        api_for(nobody, patience=0.5).request("GET", "/api")


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    b = Backoff(0.1, 1.0)
    delays = [b.next() for _ in range(6)]
    assert all(base <= d <= base * 1.2 for d, base in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0], strict=True))
    b.reset()
    assert 0.1 <= b.next() <= 0.12
    with pytest.raises(ValueError, match="first <= cap"):
        Backoff(2.0, 1.0)


def test_what_counts_as_an_outage() -> None:
    assert transient(ConnectionRefusedError()) and transient(TimeoutError())
    assert transient(urllib.error.URLError(ConnectionResetError()))
    refused = urllib.error.HTTPError("u", 503, "unavailable", cast(Any, {}), None)
    missing = urllib.error.HTTPError("u", 404, "not found", cast(Any, {}), None)
    assert transient(refused) and not transient(missing) and not transient(ValueError())
