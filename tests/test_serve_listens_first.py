"""``mlgitops serve`` listens before it loads the model: a connection made meanwhile (a kubelet's
startup probe) waits in the listen backlog and is answered as soon as the server is ready, not
refused and tried again a probe period later."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import servers as support

pytestmark = pytest.mark.process

COMMIT = "5e1f00d2a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_probe_made_while_the_model_loads_is_answered_when_it_is_ready(tmp_path: Path) -> None:
    model = support.numeric_model()
    port = free_port()
    args = [support.python(), "-m", "mlgitops.server", str(model.path), "--port", str(port),
            "--name", "numeric", "--version", COMMIT, "--no-stats"]
    for t in model.trusted:
        args += ["--trust", t]
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=support.env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"never listened: {log.read_text()}"
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                time.sleep(0.01)
        with conn:
            # listening, and the model not loaded yet (scikit-learn alone takes a second)
            assert "serving numeric" not in log.read_text()
            conn.settimeout(60)
            conn.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: probe\r\n\r\n")
            status = conn.recv(64).split(b"\r\n")[0]
        assert status == b"HTTP/1.1 200 OK", status
        assert "serving numeric" in log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
