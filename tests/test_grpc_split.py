"""The controller's gRPC gateway routes a model's calls by the rollout's split, as HTTP does.

Real parts in this process: the gRPC gateway (`controller.grpc_gateway.Gateway`) on a loopback
port, a real gRPC client, and two HTTP backends (threads) standing for the stable and the
candidate version's servers: each answers the relayed call with its own name, so which version
answered each call is read from the answer itself and from the trailing metadata.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from mlgitops.adapters.kubernetes.workloads import PodHandle
from mlgitops.controller import grpc_gateway
from mlgitops.controller.router import Router, Split

pytestmark = pytest.mark.fast

INFER = f"/{grpc_gateway.SERVICE}/ModelInfer"
REQUEST = b"\x0a\x06credit"  # ModelInferRequest(model_name="credit")


class _Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = self.server.said.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def backend(said: str) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.said = said  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_canary_split_reaches_grpc_calls_keyed_by_metadata_and_a_shadow_answers_stable(
        ) -> None:
    router: Router[PodHandle] = Router()
    with backend("stable") as stable_url, backend("candidate") as cand_url:
        stable = PodHandle("credit", "v1", "sha256:1", stable_url)
        cand = PodHandle("credit", "v2", "sha256:2", cand_url)
        router.set("credit", stable)
        gw = grpc_gateway.Gateway(router=router, statuses=lambda: [{"name": "credit"}],
                                  max_body_bytes=1 << 20)
        port = gw.start("127.0.0.1", 0)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            infer = channel.unary_unary(INFER)

            def call(user: str | None = None) -> tuple[str, str | None]:
                meta = (("x-client", user),) if user else None
                answer, done = infer.with_call(REQUEST, metadata=meta, timeout=30)
                named = dict(done.trailing_metadata() or ()).get(grpc_gateway.VERSION_KEY)
                return answer.decode(), named

            assert call() == ("stable", "v1")
            # a canary step at 50%, keyed by the x-client header: one client, one version
            router.set_split("credit", Split(cand, "canary", 50, 1, "x-client"))
            seen: collections.Counter[str] = collections.Counter()
            for i in range(40):
                first = call(f"user-{i}")
                assert call(f"user-{i}") == first  # the same client stays put
                assert first[1] == {"stable": "v1", "candidate": "v2"}[first[0]]
                seen[first[0]] += 1
            assert seen["stable"] > 0 and seen["candidate"] > 0
            counters = router.counters["credit"]
            assert counters.requests["candidate"] == 2 * seen["candidate"]
            assert counters.requests["stable"] == 2 * seen["stable"]
            assert router.served[("credit", "v2")] == 2 * seen["candidate"]
            # a shadow: every call answered by the stable version
            router.set_split("credit", Split(cand, "shadow", 0, 0, "x-client"))
            assert {call(f"user-{i}") for i in range(20)} == {("stable", "v1")}
            # aborted (frozen): nothing reaches the candidate any more
            router.set_split("credit", Split(cand, "canary", 100, 1, "x-client"))
            assert call("user-1") == ("candidate", "v2")
            router.freeze("credit")
            assert {call(f"user-{i}") for i in range(20)} == {("stable", "v1")}
            channel.close()
        finally:
            gw.stop(grace=1.0)
