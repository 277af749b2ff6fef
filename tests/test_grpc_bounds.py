"""Bounded gRPC (issue 15): calls that send their headers and never a message cannot starve a
gRPC port. Forty such calls (a real grpc channel whose request iterator blocks: the headers go
out, the message never does) against the controller's gRPC gateway and against a model
server's gRPC port; ``ServerLive`` keeps answering, and the stalled calls are ended at the
receive deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from support import servers as support

from mlgitops.adapters import grpc_limits
from mlgitops.controller import grpc_gateway
from mlgitops.controller import reconciler as rec

pytestmark = pytest.mark.process

SERVICE = "/inference.GRPCInferenceService/"
STALLED = 40


class Stalled:
    """``count`` calls of ``method`` whose request message never comes (until `release`)."""

    def __init__(self, port: int, method: str, count: int) -> None:
        self.release_event = threading.Event()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = self.channel.stream_unary(SERVICE + method)
        self.futures = [call.future(self._never(), timeout=60) for _ in range(count)]

    def wait_connected(self) -> None:
        """Until the channel carrying the calls is connected: their headers then go out at once,
        ahead of any call on a channel connected later (the stalled calls' CANCELLED codes below
        show that each reached the server)."""
        grpc.channel_ready_future(self.channel).result(timeout=30)

    def _never(self) -> Iterator[bytes]:
        self.release_event.wait()
        return
        yield b""

    def release(self) -> None:
        self.release_event.set()
        self.channel.close()


def live(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = channel.unary_unary(SERVICE + "ServerLive")(b"", timeout=5)
    return answer == b"\x08\x01"  # ServerLiveResponse(live=True)


def test_the_gateway_keeps_answering_while_calls_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpc_limits, "RECEIVE_SECONDS", 2.0)
    gateway = grpc_gateway.Gateway(router=rec.Router(), statuses=list, max_body_bytes=1 << 20)
    port = gateway.start("127.0.0.1", 0)
    stalled = Stalled(port, "ModelInfer", STALLED)
    try:
        stalled.wait_connected()
        began = time.monotonic()
        assert live(port)
        assert time.monotonic() - began < 5
        # the stalled calls are ended at the receive deadline (cancelled by the server)
        codes = {_code(f) for f in stalled.futures}
        assert codes == {grpc.StatusCode.CANCELLED}, codes
        assert live(port)
    finally:
        stalled.release()
        gateway.stop(grace=0.5)


def test_a_model_servers_grpc_port_keeps_answering_while_calls_stall(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model = support.numeric_model()
    args = [str(model.path), "--port", "0", "--grpc-port", "0", "--workers", "1",
            "--name", "numeric", "--version", "c" * 40, "--no-stats"]
    for t in model.trusted:
        args += ["--trust", t]
    server = support.start_cli(args, name="grpc-bounds")
    import re

    m = re.search(r"v2 gRPC API on [^\s]+:(\d+)", server.log_text())
    assert m, server.log_text()
    port = int(m.group(1))
    stalled = Stalled(port, "ModelInfer", STALLED)
    try:
        stalled.wait_connected()
        for _ in range(3):
            assert live(port)
        # real calls still work, directly and relayed by the controller's gateway
        from test_no_data_leaves import Backend

        router: rec.Router[Any] = rec.Router()
        router.set("numeric", Backend(server.url, version="c" * 40))
        gateway = grpc_gateway.Gateway(router=router, statuses=lambda: [{"name": "numeric"}],
                                       max_body_bytes=1 << 20)
        gateway_port = gateway.start("127.0.0.1", 0)
        try:
            for p in (port, gateway_port):
                assert infer(p, model) == model.expected(model.frame.iloc[:4])
        finally:
            gateway.stop(grace=0.5)
        first = stalled.futures[0]
        assert _code(first, timeout=grpc_limits.RECEIVE_SECONDS + 20) == (
            grpc.StatusCode.DEADLINE_EXCEEDED), first
        assert "No request message within" in str(first.exception())
    finally:
        stalled.release()
        assert server.stop() == 0, server.log_text()


def infer(port: int, model: Any) -> list[Any]:
    import tritonclient.grpc as tg

    frame = model.frame.iloc[:4]
    x = tg.InferInput("input", list(frame.shape), "FP64")
    x.set_data_from_numpy(frame.to_numpy())
    out: list[Any] = tg.InferenceServerClient(f"127.0.0.1:{port}").infer(
        "numeric", [x]).as_numpy("predict").tolist()
    return out


def _code(future: Any, timeout: float = 20.0) -> Any:
    try:
        future.result(timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_one_connection_carries_more_calls_than_its_stream_limit() -> None:
    """A finished call releases its HTTP/2 stream at once: more than `grpc_limits.MAX_STREAMS`
    calls in a row on one channel all answer (the receive watchdog used to keep each call's
    context, and so its stream, for `grpc_limits.RECEIVE_SECONDS`)."""
    gateway = grpc_gateway.Gateway(router=rec.Router(), statuses=list, max_body_bytes=1 << 20)
    port = gateway.start("127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(SERVICE + "ServerLive")
            answers = [call(b"", timeout=10) for _ in range(3 * grpc_limits.MAX_STREAMS)]
        assert answers == [b"\x08\x01"] * (3 * grpc_limits.MAX_STREAMS)
    finally:
        gateway.stop(grace=0.5)
