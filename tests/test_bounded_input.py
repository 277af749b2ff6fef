"""Bounded input: body limits before reading, header and body deadlines, short error messages.

A real `mlgitops up` (its own process, so its memory can be measured) with a real model server
behind it, and the shared `mlgitops serve` of the server tests; clients are raw sockets where
the test must control exactly which bytes are sent, and when.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import test_server_support as support
from conftest import FEATURES, free_port, make_frame, train, wait_until

from mlgitops import settings
from mlgitops.server import standby

SECRET = b"s3cret"
READ_TIMEOUT = 2.0  # the gateway's MLGITOPS_READ_TIMEOUT_SECONDS in these tests
SERVER_TIMEOUT = 5.0  # the model servers' default header and body deadline
MiB = 1024 * 1024


# ------------------------------------------------------------------------------ raw HTTP
def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def seconds_until_closed(sock: socket.socket, *, limit: float) -> tuple[float, bytes]:
    """How long until the peer closes ``sock`` (reading what it sends); fails after ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - started, received
            received += chunk
    except ConnectionResetError:
        return time.monotonic() - started, received
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {limit:.0f}s") from None


def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..`` or ``%2F``)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
        return support.read_response(sock)


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of process ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def requests_seen(metrics: str, route: str) -> float:
    """The server's ``mlgitops_requests_total`` for ``route``, all codes together."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("mlgitops_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------- controller
@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    port: int
    repo: Path
    version: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def served_invocations(self) -> float:
        """Requests the model's server has seen on /invocations (its metrics, via the gateway)."""
        return requests_seen(httpx.get(f"{self.base}/models/credit/metrics").text, "/invocations")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`mlgitops up` in its own process, serving one model, with a webhook secret."""
    import mlgitops
    from mlgitops.authoring import repository

    repo = tmp_path_factory.mktemp("bounded") / "models-repo"
    repository.init(repo)
    frame = make_frame()
    version = str(mlgitops.publish(train(frame), frame, name="credit", repo=repo,
                                   target="label", quiet=True))
    port = free_port()
    env = {**os.environ, "MLGITOPS_WEBHOOK_SECRET": SECRET.decode(),
           "MLGITOPS_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlgitops.cli", "up", "--repo", str(repo), "--port", str(port),
         "--no-monitor"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    ctl = Up(proc, port, repo, version)

    def serving() -> bool:
        try:
            r = httpx.get(f"{ctl.base}/v2/models/credit", timeout=2)
            return r.status_code == 200 and r.json()["version"] == version
        except httpx.HTTPError:
            return False

    try:
        wait_until(serving, what="the controller serving credit", timeout=120)
        yield ctl
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def signed(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------ webhook limits
def test_a_300_mb_webhook_is_refused_before_its_body_and_memory_stays_flat(up: Up) -> None:
    rss_before, peak_before = memory_mb(up.proc.pid)
    claimed = 300 * MiB
    with connect(up.port) as sock:
        sock.sendall(
            b"POST /hooks/github HTTP/1.1\r\nHost: t\r\nX-GitHub-Event: push\r\n"
            b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{\"ref\": \"refs/heads/main\"" % claimed
        )
        status, _, body = support.read_response(sock, timeout=3)  # the 413 comes first
        assert status == 413, body
        assert "MLGITOPS_WEBHOOK_MAX_BYTES" in json.loads(body)["error"]
        # then send the 300 MB anyway: the gateway reads a bounded amount and hangs up
        sent = 0
        chunk = b"x" * MiB
        with pytest.raises(OSError):  # the gateway hangs up while we send
            while sent < claimed:
                sock.sendall(chunk)
                sent += len(chunk)
            raise AssertionError("the gateway read all 300 MB")
    time.sleep(0.5)
    rss_after, peak_after = memory_mb(up.proc.pid)
    print(f"controller RSS {rss_before:.0f} MB -> {rss_after:.0f} MB, peak {peak_before:.0f} -> "
          f"{peak_after:.0f} MB after {sent / MiB:.0f} MiB sent of a claimed 300 MiB")
    assert peak_after - peak_before < 40, (peak_before, peak_after)


def test_a_chunked_webhook_is_cut_at_the_limit(up: Up) -> None:
    url = f"{up.base}/hooks/github"
    sent = []

    def body() -> Iterator[bytes]:
        for _ in range(8):  # 4 MiB, no Content-Length
            sent.append(1)
            yield b"x" * (MiB // 2)

    r = httpx.post(url, content=body(), headers={"X-GitHub-Event": "push",
                                                  "X-Hub-Signature-256": signed(b"anything")},
                   timeout=10)
    assert r.status_code == 413, r.text
    assert "exceeds 1048576 bytes" in r.json()["error"]
    # a push that fits is still accepted, and a wrong signature still refused
    good = json.dumps({"ref": "refs/heads/main"}).encode()
    ok = httpx.post(url, content=good, headers={"X-GitHub-Event": "push",
                                                "X-Hub-Signature-256": signed(good)})
    assert ok.status_code == 202, ok.text
    bad = httpx.post(url, content=good, headers={"X-GitHub-Event": "push",
                                                 "X-Hub-Signature-256": signed(b"other")})
    assert bad.status_code == 401 and "X-Hub-Signature-256" in bad.json()["error"]


def test_the_git_hook_body_is_bounded(up: Up) -> None:
    with connect(up.port) as sock:
        sock.sendall(b"POST /hooks/git HTTP/1.0\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                     % (50 * MiB))
        status, _, body = support.read_response(sock, timeout=3)
    assert status == 413, body
    ok = httpx.post(f"{up.base}/hooks/git", content=b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/main\n")
    assert ok.status_code == 202, ok.text


# --------------------------------------------------------------------- inference limits
def test_an_oversized_inference_body_is_413_at_the_gateway_and_never_reaches_the_server(
    up: Up,
) -> None:
    before = up.served_invocations()
    with connect(up.port) as sock:
        sock.sendall(
            b"POST /models/credit/invocations HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            b'{"dataframe_records": [' % (200 * MiB)
        )
        status, _, body = support.read_response(sock, timeout=3)
    assert status == 413, body
    error = json.loads(body)["error"]
    assert "209715200 bytes" in error and "MLGITOPS_MAX_BODY_BYTES" in error
    assert up.served_invocations() == before  # the server never saw it

    def chunks() -> Iterator[bytes]:  # 12 MiB, no Content-Length: cut at 10 MiB
        yield b'{"dataframe_records": ['
        for _ in range(24):
            yield b'{"f0": 1.0},' * (MiB // 24)

    r = httpx.post(f"{up.base}/models/credit/invocations", content=chunks(),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413, r.text
    rows = make_frame(3, seed=1)[FEATURES].to_dict(orient="records")
    ok = httpx.post(f"{up.base}/models/credit/invocations", json={"dataframe_records": rows})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 3


def test_a_large_body_within_the_limit_streams_through(up: Up) -> None:
    """Over the gateway's buffer (1 MiB), under the limit: streamed to the server, answered."""
    rows = make_frame(20000, seed=2)[FEATURES].to_dict(orient="records")
    body = json.dumps({"dataframe_records": rows}).encode()
    assert MiB < len(body) < 10 * MiB
    r = httpx.post(f"{up.base}/models/credit/invocations", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["predictions"]) == 20000


def test_the_gateway_limit_follows_the_servers_default() -> None:
    assert settings.GatewaySettings().max_body_bytes == standby.DEFAULT_MAX_BODY_BYTES


# ------------------------------------------------------------------- header and body time
def test_the_gateway_closes_a_half_sent_header(up: Up) -> None:
    with connect(up.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Half: ")
        seconds, received = seconds_until_closed(sock, limit=20)
    print(f"gateway: half-sent header closed after {seconds:.2f}s")
    assert seconds < READ_TIMEOUT + 1.5
    assert received.startswith(b"HTTP/1.1 408")


def test_a_head_sent_a_byte_at_a_time_meets_the_same_deadline(up: Up) -> None:
    """Slowloris: bytes keep coming, but the head must be complete by the deadline."""
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 100
    started = time.monotonic()
    with connect(up.port) as sock:
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        _, received = seconds_until_closed(sock, limit=20)
    assert time.monotonic() - started < READ_TIMEOUT + 1.5
    assert received.startswith(b"HTTP/1.1 408")
    # a head that pauses but completes in time is served, on a connection kept alive
    with connect(up.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHo")
        time.sleep(READ_TIMEOUT / 2)
        sock.sendall(b"st: t\r\n\r\n")
        assert support.read_response(sock)[0] == 200
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert support.read_response(sock)[0] == 200


def test_the_gateway_closes_a_stalled_body_and_a_silent_connection(up: Up) -> None:
    with connect(up.port) as sock:
        sock.sendall(b"POST /hooks/git HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        seconds, _ = seconds_until_closed(sock, limit=20)
    assert seconds < READ_TIMEOUT + 1.5
    with connect(up.port) as sock:
        seconds, received = seconds_until_closed(sock, limit=20)
    assert seconds < READ_TIMEOUT + 1.5 and received == b""


def test_the_gateway_refuses_an_oversized_header(up: Up) -> None:
    for head in (b"X-Big: " + b"a" * 40000,  # still arriving
                 b"X-Big: " + b"a" * 40000 + b"\r\n\r\n",  # complete, in one piece
                 b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(400)) + b"\r\n"):
        with connect(up.port) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n" + head)
            status, _, body = support.read_response(sock)
        assert status == 431, body


def test_the_server_closes_a_half_sent_header(numeric_server: support.Server) -> None:
    with connect(numeric_server.port) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Ty")
        seconds, received = seconds_until_closed(sock, limit=30)
    print(f"mlgitops serve: half-sent header closed after {seconds:.2f}s")
    assert seconds < SERVER_TIMEOUT + 1.5
    assert received.startswith(b"HTTP/1.1 408")


def test_the_server_closes_a_stalled_body(numeric_server: support.Server) -> None:
    with connect(numeric_server.port) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"instances\": [")
        seconds, _ = seconds_until_closed(sock, limit=30)
    assert seconds < SERVER_TIMEOUT + 1.5
    with numeric_server.client() as c:  # and it still serves
        assert c.get("/v2/health/ready").status_code == 200


def test_the_server_refuses_an_oversized_header_and_a_declared_oversized_body(
    numeric_server: support.Server,
) -> None:
    with connect(numeric_server.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 40000)
        status, _, _ = support.read_response(sock)
    assert status == 431
    with connect(numeric_server.port) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n{" % (300 * MiB))
        status, _, body = support.read_response(sock, timeout=3)
    assert status == 413 and "--max-body-bytes" in json.loads(body)["error"]


# ------------------------------------------------------------------------ error messages
LONG = "k" * 200_000


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/invocations", {"dataframe_records": [{LONG: 1.0}]}),
        ("/invocations", {LONG: 1, "instances": []}),
        ("/invocations", {"dataframe_split": {"columns": [LONG], "data": [[1.0]]}}),
        ("/v2/models/numeric/infer",
         {"inputs": [{"name": LONG, "shape": [1], "datatype": "FP64", "data": [1.0]}]}),
        ("/v2/models/numeric/infer",
         {"inputs": [{"name": "x0", "shape": [1], "datatype": LONG, "data": [1.0]}]}),
        ("/v2/models/numeric/infer", {"inputs": [], "outputs": [{"name": LONG}]}),
    ],
    ids=["record key", "top-level key", "split column", "tensor name", "datatype", "output"],
)
def test_server_errors_quote_client_input_briefly(
    numeric_server: support.Server, path: str, payload: object
) -> None:
    with numeric_server.client() as c:
        r = c.post(path, json=payload)
    assert 400 <= r.status_code < 500, r.text[:300]
    assert len(r.json()["error"]) < 600, r.text[:300]


def test_server_errors_stay_short_and_fast_for_many_repeated_columns(
    numeric_server: support.Server,
) -> None:
    names = ["x0"] * 50_000 + ["y" * 300 + str(i) for i in range(50)]
    started = time.monotonic()
    with numeric_server.client() as c:
        r = c.post("/invocations", json={"dataframe_split": {"columns": names, "data": [[1.0]]}})
    assert r.status_code == 422, r.text[:300]
    assert len(r.json()["error"]) < 1100
    assert time.monotonic() - started < 3


def test_gateway_errors_quote_client_input_briefly(up: Up) -> None:
    status, _, body = get(up.port, "/v2/models/" + "n" * 20000)
    assert status == 404
    assert len(json.loads(body)["error"]) < 300
    status, _, body = get(up.port, "/models/credit/" + "p" * 20000)  # the server's 404
    assert status == 404
    assert len(json.loads(body)["error"]) < 600


# -------------------------------------------------------------------------------- reports
def test_reports_are_served_and_nothing_else(up: Up) -> None:
    state = settings.state_dir(up.repo)
    folder = state / "reports" / "credit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "20260101T000000000Z-abc-revert.html").write_text("<html>drift</html>")
    (folder / "20260101T000000000Z-abc-revert.summary.json").write_text('{"drift": true}')
    (state / "secret.json").write_text('{"secret": 1}')
    (folder / "link.html").symlink_to(state / "secret.json")
    (folder / ".hidden.html").write_text("hidden")
    (folder / "notes.txt").write_text("not a report")
    outside = state / "reports" / "other"
    outside.symlink_to(state, target_is_directory=True)

    r = httpx.get(f"{up.base}/reports/credit/20260101T000000000Z-abc-revert.html")
    assert r.status_code == 200 and r.text == "<html>drift</html>"
    assert r.headers["content-type"].startswith("text/html")
    assert "sandbox" in r.headers["content-security-policy"]
    r = httpx.get(f"{up.base}/reports/credit/20260101T000000000Z-abc-revert.summary.json")
    assert r.status_code == 200 and r.json() == {"drift": True}

    refused = [
        "/reports/credit/link.html",                # a symlink
        "/reports/credit/.hidden.html",             # not a plain name
        "/reports/credit/notes.txt",                # not html/json
        "/reports/credit/missing.html",             # no such file
        "/reports/credit/../secret.json",           # traversal, sent as is
        "/reports/credit/..%2Fsecret.json",         # encoded traversal
        "/reports/credit/%2e%2e%2fsecret.json",
        "/reports/..%2Fsecret.json/x.json",
        "/reports/other/secret.json",               # a symlinked model directory
        "/reports/Not_A_Name/x.html",               # not a model name
        "/reports/credit/sub/x.html",
    ]
    for path in refused:
        status, _, body = get(up.port, path)
        assert status == 404, (path, body[:200])
        assert b'"secret": 1' not in body and "report" in json.loads(body)["error"], (path, body)

    status, headers, body = get(up.port, "/reports/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    # the index lists decisions (here: credit's deploy), never the files planted beside them
    assert re.search(r"href='/reports/credit/credit-\d{8}T\d{6}-deploy-[0-9a-f]{6}'", page), page
    assert "link.html" not in page and "hidden" not in page and "other" not in page
    listing = httpx.get(f"{up.base}/reports/credit/?format=json").json()["reports"]
    urls = {e["file"]: e["url"] for e in listing}
    assert urls["20260101T000000000Z-abc-revert.html"] == (
        "/reports/credit/20260101T000000000Z-abc-revert.html")
    assert not {"link.html", ".hidden.html", "notes.txt"} & set(urls), urls
