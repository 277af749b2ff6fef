"""Load generators for the serving benchmark: ``wrk`` (preferred) or an async Python client.

Both POST one fixed JSON body to one URL at a fixed concurrency for a fixed duration, on
loopback only, and report requests/s, p50 and p99 latency and non-2xx/errors.
``wrk`` is C and light (it competes least with the servers for the 2 cores); install it with
``apt-get update && apt-get install -y wrk``. The Python client runs in a separate process.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("MLGITOPS_BENCH_BODY"), "rb"):read("*a")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"status_errors": %d, "socket_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise ValueError(f"{url}: the benchmark only sends traffic to loopback addresses")


def pinned(cpus: str | None) -> list[str]:
    """The command prefix that runs a process on ``cpus`` only (``taskset -c``; none: as is)."""
    if cpus is None:
        return []
    if shutil.which("taskset") is None:
        raise RuntimeError("pinning to CPUs needs taskset (util-linux)")
    return ["taskset", "-c", cpus]


def run_wrk(
    url: str, body: bytes, *, concurrency: int, duration: float, threads: int = 1,
    cpus: str | None = None,
) -> LoadResult:
    """Drive ``url`` with wrk (on ``cpus`` when given); returns its measurements."""
    _check_loopback(url)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA)
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        cmd = [
            *pinned(cpus),
            "wrk",
            f"-t{min(threads, concurrency)}",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=duration + 60,
            env={"MLGITOPS_BENCH_BODY": str(body_file), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line[len("RESULT ") :])
            return LoadResult(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                failures=data["status_errors"] + data["socket_errors"],
            )
    raise RuntimeError(
        f"wrk failed (exit {proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}"
    )


async def _client(url: str, body: bytes, *, concurrency: int, duration: float) -> LoadResult:
    import httpx

    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        deadline = time.perf_counter() + duration

        async def one_loop() -> None:
            nonlocal failures
            headers = {"content-type": "application/json"}
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=body, headers=headers)
                    if r.status_code >= 300:
                        failures += 1
                except httpx.HTTPError:
                    failures += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(one_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0
        )

    return LoadResult(len(latencies), elapsed, pct(0.50), pct(0.99), failures)


def run_python(
    url: str, body: bytes, *, concurrency: int, duration: float, cpus: str | None = None
) -> LoadResult:
    """Drive ``url`` with an httpx async client in a separate process (on ``cpus`` when given)."""
    _check_loopback(url)
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(body)
        f.flush()
        here = str(Path(__file__).parent)
        code = (
            f"import json,sys,asyncio; sys.path.insert(0, {here!r}); import _load; "
            f"r = asyncio.run(_load._client({url!r}, open({f.name!r},'rb').read(), "
            f"concurrency={concurrency}, duration={duration})); "
            "print(json.dumps(r.__dict__))"
        )
        proc = subprocess.run(
            [*pinned(cpus), sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=duration + 120,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the Python load client failed: {proc.stderr[-800:]}")
    return LoadResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def run(
    url: str, body: bytes, *, concurrency: int, duration: float, tool: str = "auto",
    cpus: str | None = None,
) -> LoadResult:
    """wrk when installed (or ``tool='wrk'``), else the Python client; on ``cpus`` if given."""
    if tool == "wrk" or (tool == "auto" and have_wrk()):
        return run_wrk(url, body, concurrency=concurrency, duration=duration, cpus=cpus)
    return run_python(url, body, concurrency=concurrency, duration=duration, cpus=cpus)
