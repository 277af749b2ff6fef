"""Helpers for the server tests (no tests here): real models, real server processes.

Models are built once per test session (cached in a temporary directory); server processes
are started as ``python -m mlgitops.server`` subprocesses on loopback, shared by key across
the server test files and stopped at the end of the session (and at exit, whatever happens).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

NUMERIC = [f"x{i}" for i in range(6)]
START_TIMEOUT = 90.0
_ROOT = Path(tempfile.mkdtemp(prefix="mlgitops-server-tests-"))
_PROCS: list[subprocess.Popen[bytes]] = []
_SHARED: dict[str, Server] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    trusted: tuple[str, ...]
    frame: pd.DataFrame = field(repr=False)
    estimator: Any = field(repr=False)

    def expected(self, frame: pd.DataFrame) -> list[Any]:
        out: list[Any] = np.asarray(
            self.estimator.predict(frame[list(self.frame.columns)])
        ).tolist()
        return out


def numeric_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(NUMERIC))), columns=NUMERIC)


def mixed_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(100, 20, n),
            "count": rng.integers(0, 50, n).astype(np.int64),
            "color": rng.choice(["red", "green", "blue"], n),
            "member": rng.random(n) > 0.5,
        }
    )


def _write_baseline(model_dir: Path, frame: pd.DataFrame, predictions: Any) -> None:
    from mlgitops.core import stats

    baseline = stats.build_baseline(
        {c: frame[c].to_numpy() for c in frame.columns}, predictions=np.asarray(predictions)
    )
    (model_dir / "baseline.json").write_text(json.dumps(baseline.to_dict()))


@functools.cache
def numeric_model() -> Model:
    """A random forest on six doubles (all-double signature: the matrix fast path)."""
    from sklearn.ensemble import RandomForestClassifier

    from mlgitops.adapters import mlflow_models

    frame = numeric_frame()
    y = (frame.x0 + frame.x1 > 0).astype(int)
    est = RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0).fit(frame, y)
    path = _ROOT / "models" / "numeric"
    _, trusted = mlflow_models.save(est, path, example=frame)
    _write_baseline(path, frame, est.predict(frame))
    return Model("numeric", path, trusted, frame, est)


@functools.cache
def mixed_model() -> Model:
    """A pipeline over a double, a long, a string and a boolean column (the frame path)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from mlgitops.adapters import mlflow_models

    frame = mixed_frame()
    y = ((frame["amount"] > 100) ^ (frame["color"] == "red")).astype(int)
    est = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["amount", "count"]),
                        ("cat", OneHotEncoder(handle_unknown="error"), ["color"]),
                        ("flag", "passthrough", ["member"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, y)
    path = _ROOT / "models" / "mixed"
    _, trusted = mlflow_models.save(est, path, example=frame)
    _write_baseline(path, frame, est.predict(frame))
    return Model("mixed", path, trusted, frame, est)


def python() -> str:
    return sys.executable


def env() -> dict[str, str]:
    return {**os.environ, "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"}


class Server:
    """A server process on loopback; `stop` (SIGTERM to its group, then SIGKILL) always."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, name: str, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.name = name
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def client(self, timeout: float = 20.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self, grace: float = 15.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # nothing of the group may survive
            os.killpg(self.proc.pid, signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _popen(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=env(),
        start_new_session=True,
    )
    _PROCS.append(proc)
    return proc


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The next JSON line on stdout, within ``timeout`` seconds."""
    assert proc.stdout is not None
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not box:
        raise TimeoutError(f"no line from the server within {timeout}s")
    if not box[0]:
        raise EOFError(f"the server closed stdout (exit {proc.poll()})")
    value: dict[str, Any] = json.loads(box[0])
    return value


def standby_process(tag: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A ``--standby`` process that announced itself."""
    log = _ROOT / f"{tag}-{time.monotonic_ns()}.log"
    proc = _popen([python(), "-m", "mlgitops.server", "--standby"], log)
    event = _read_line(proc, START_TIMEOUT)
    assert event["event"] == "standby", event
    return proc, log


def spec_for(model: Model, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model_dir": str(model.path),
        "name": model.name,
        "version": "c0ffee" + model.name,
        "digest": "sha256:test",
        "trusted_types": list(model.trusted),
        "host": "127.0.0.1",
        "port": 0,
        "workers": 1,
        "max_batch_size": 64,
        "max_delay_ms": 2,
        "stats_dir": None,
        "record_stats": False,
    }
    spec.update(overrides)
    return spec


def start_standby(model: Model, **overrides: Any) -> Server:
    """Start a server through the standby protocol and wait until it answers."""
    proc, log = standby_process(model.name)
    spec = spec_for(model, **overrides)
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(spec) + "\n").encode())
    proc.stdin.flush()
    event = _read_line(proc, START_TIMEOUT)
    if event["event"] != "ready":
        proc.kill()
        raise RuntimeError(f"server did not start: {event}: {log.read_text(errors='replace')}")
    server = Server(proc, int(event["port"]), str(spec["name"]), log)
    wait_answering(server)
    return server


def start_cli(args: list[str], *, name: str) -> Server:
    """Start ``python -m mlgitops.server MODEL_DIR ...`` and parse its port from the log."""
    log = _ROOT / f"cli-{name}-{time.monotonic_ns()}.log"
    proc = _popen([python(), "-m", "mlgitops.server", *args], log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        m = re.search(r"on http://[^:]+:(\d+) with", log.read_text(errors="replace"))
        if m:
            server = Server(proc, int(m.group(1)), name, log)
            wait_answering(server)
            return server
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited {proc.returncode}: {log.read_text(errors='replace')}"
            )
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"server did not start: {log.read_text(errors='replace')}")


def wait_answering(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited: {server.log_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"server not ready: {server.log_text()}")


def shared(key: str) -> Server:
    """One server per key for the whole session (started on first use)."""
    with _LOCK:
        server = _SHARED.get(key)
        if server is not None and server.proc.poll() is None:
            return server
        if key == "numeric":
            server = start_standby(numeric_model())
        elif key == "mixed":
            server = start_standby(mixed_model())
        else:
            raise KeyError(key)
        _SHARED[key] = server
        return server


def stop_shared() -> None:
    with _LOCK:
        for server in _SHARED.values():
            server.stop()
        _SHARED.clear()


@atexit.register
def _cleanup() -> None:
    for proc in _PROCS:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(_ROOT, ignore_errors=True)


def root() -> Path:
    return _ROOT


def read_response(sock: socket.socket, *, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body) read off ``sock`` within ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]
