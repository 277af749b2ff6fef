"""Protocol benchmark: HTTP JSON vs HTTP binary tensors vs gRPC, on one mlgitops server.

    .venv/bin/python bench/protocols.py [--duration 6] [--rounds 3] [--rows 1,1000]

Builds the RandomForest benchmark model of bench/serving.py (50 trees, 20 numeric features),
serves it once (``python -m mlgitops.server DIR --grpc-port P --workers auto``) and drives it
with three clients, each in a process of its own, at concurrency 1 and 32, with single rows and
1,000-row batches:

* HTTP JSON: ``POST /v2/models/rf/infer``, one FP64 tensor ``[rows, 20]`` as JSON ``data``
  (encoded per request with orjson straight from the numpy array, the fastest JSON encoder in
  Python), the JSON response decoded;
* HTTP binary: the same request with Triton's binary tensor data extension (the JSON header,
  the raw float64 bytes, ``Inference-Header-Content-Length``; binary output), the response's
  raw output read with numpy;
* gRPC: ``inference.GRPCInferenceService/ModelInfer`` with ``raw_input_contents``, the
  request message built and serialized per request, the response parsed.

Each of the ``concurrency`` simulated clients has a connection of its own (HTTP keep-alive, a
gRPC channel with its own subchannel), so the kernel spreads them over the workers alike.

Every client encodes each request from the numpy rows and decodes each response, as a real
client does (the protocols differ exactly there); HTTP uses aiohttp (the lightest asyncio HTTP
client), gRPC uses grpc.aio. Before measuring, the three answers of the same rows are checked
to be equal. The measurements are interleaved (each cell's duration split into ``--rounds``),
so background load hits the protocols alike; req/s is over all rounds, p50/p99 the medians of
the rounds'. Clients share the machine's cores with the server: these are what this machine
does. "CPU ms/req" is the CPU time (user + system) per request of the server's process group
(including the work a run left queued) and of the client process while it sends: unlike req/s it does not
move with other load on the machine; "CPU vs JSON" is how many requests of that protocol cost
the CPU of one JSON request (client and server together). The verdicts use req/s.

Targets (issue 10): gRPC and binary single-row throughput at least JSON's; 1,000-row batches
at least 3x faster with binary or gRPC than with JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # the benchmark model, server start/stop

PY = sys.executable
PROTOCOLS = ("http-json", "http-binary", "grpc")
HEADER = "Inference-Header-Content-Length"

# The client: one process per measurement, given the protocol, rows, concurrency and duration.
_CLIENT = r'''
import asyncio, json, sys, time
import numpy as np, orjson

protocol, http_url, grpc_addr, rows_file, concurrency, duration = sys.argv[1:7]
concurrency, duration = int(concurrency), float(duration)
x = np.load(rows_file)
latencies, failures = [], 0

def json_body():
    return orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP64",
                                     "data": x.reshape(-1)}]}, option=orjson.OPT_SERIALIZE_NUMPY)

def binary_body():
    raw = x.astype("<f8").tobytes()
    head = orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP64",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}})
    return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}

async def http_loop(session, deadline, url):
    global failures
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        if protocol == "http-json":
            body, headers = json_body(), {"Content-Type": "application/json"}
        else:
            body, headers = binary_body()
        async with session.post(url, data=body, headers=headers) as r:
            content = await r.read()
            if r.status != 200:
                failures += 1
            elif protocol == "http-json":
                out = np.asarray(orjson.loads(content)["outputs"][0]["data"])
            else:
                n = int(r.headers["Inference-Header-Content-Length"])
                out = np.frombuffer(content[n:], "<i8")
        latencies.append(time.perf_counter() - t0)

async def grpc_loop(call, deadline):
    global failures
    from mlgitops.server import grpc_predict_v2_pb2 as pb
    import grpc
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        request = pb.ModelInferRequest(model_name="rf")
        request.inputs.add(name="input", datatype="FP64", shape=list(x.shape))
        request.raw_input_contents.append(x.astype("<f8").tobytes())
        try:
            reply = pb.ModelInferResponse.FromString(await call(request.SerializeToString()))
            out = np.frombuffer(reply.raw_output_contents[0], "<i8")
        except grpc.RpcError:
            failures += 1
        latencies.append(time.perf_counter() - t0)

async def main():
    import aiohttp, grpc
    from mlgitops.server import grpc_predict_v2_pb2
    deadline = time.perf_counter() + duration
    started, cpu = time.perf_counter(), time.process_time()
    if protocol == "grpc":  # one connection per concurrent client, as HTTP has
        options = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(grpc_addr, options=options)
                    for _ in range(concurrency)]
        calls = [ch.unary_unary("/inference.GRPCInferenceService/ModelInfer") for ch in channels]
        await asyncio.gather(*(grpc_loop(call, deadline) for call in calls))
        for ch in channels:
            await ch.close()
    else:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = http_url + "/v2/models/rf/infer"
            await asyncio.gather(*(http_loop(session, deadline, url) for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0
    print(json.dumps({"requests": len(latencies), "seconds": elapsed, "p50_ms": pct(0.5),
                      "p99_ms": pct(0.99), "failures": failures, "client_cpu": cpu}))

asyncio.run(main())
'''


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int
    client_cpu: float = 0.0
    server_cpu: float = 0.0


def drive(protocol: str, *, http_url: str, grpc_addr: str, rows_file: Path, concurrency: int,
          duration: float) -> Run:
    proc = subprocess.run(
        [PY, "-c", _CLIENT, protocol, http_url, grpc_addr, str(rows_file), str(concurrency),
         str(duration)],
        capture_output=True, text=True, timeout=duration + 120, check=False,
        env={**os.environ, "DO_NOT_TRACK": "true"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the {protocol} client failed: {proc.stderr[-1500:]}")
    return Run(**json.loads(proc.stdout.strip().splitlines()[-1]))


def same_answers(http_url: str, grpc_addr: str, x: object) -> list[int]:
    """The three protocols' predictions of the same rows (they must be equal)."""
    import grpc
    import httpx
    import numpy as np
    import orjson

    from mlgitops.server import grpc_predict_v2_pb2 as pb

    arr = np.asarray(x)
    tensor = {"name": "input", "shape": list(arr.shape), "datatype": "FP64"}
    r = httpx.post(f"{http_url}/v2/models/rf/infer",
                   json={"inputs": [{**tensor, "data": arr.reshape(-1).tolist()}]}, timeout=60)
    r.raise_for_status()
    by_json = r.json()["outputs"][0]["data"]
    raw = arr.astype("<f8").tobytes()
    head = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}})
    r = httpx.post(f"{http_url}/v2/models/rf/infer", content=head + raw,
                   headers={HEADER: str(len(head))}, timeout=60)
    r.raise_for_status()
    by_binary = np.frombuffer(r.content[int(r.headers[HEADER]):], "<i8").tolist()
    request = pb.ModelInferRequest(model_name="rf", raw_input_contents=[raw])
    request.inputs.add(**tensor)
    with grpc.insecure_channel(grpc_addr) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        reply = pb.ModelInferResponse.FromString(call(request.SerializeToString(), timeout=60))
    by_grpc = np.frombuffer(reply.raw_output_contents[0], "<i8").tolist()
    if not by_json == by_binary == by_grpc:
        raise AssertionError("the protocols disagree on the same rows")
    return list(by_json)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--rows", default="1,1000", help="rows per request, comma-separated")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated")
    parser.add_argument("--workers", default="auto", help="server workers")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    sizes = [int(v) for v in args.rows.split(",")]
    levels = [int(v) for v in args.concurrency.split(",")]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mlgitops-bench-protocols-") as tmp:
        root = Path(tmp)
        console.print("building the RandomForest benchmark model (50 trees, 20 features) …")
        (model,) = serving.build_models(root / "models", ["rf"])
        port = serving.free_port()
        cmd = [PY, "-m", "mlgitops.server", str(model.path), "--port", str(port),
               "--grpc-port", "0", "--workers", args.workers, "--name", "rf",
               "--max-body-bytes", "64MiB"]
        for t in model.trusted:
            cmd += ["--trust", t]
        log = root / "server.log"
        env = {**os.environ, "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"}
        with serving.serving(cmd, port, env, log) as (url, pgid):
            found = re.search(r"v2 gRPC API on [^\s]+:(\d+)", log.read_text())
            if not found:
                raise RuntimeError(f"the server serves no gRPC: {log.read_text()[-2000:]}")
            grpc_addr = f"127.0.0.1:{found.group(1)}"
            rng = np.random.default_rng(1)
            files = {}
            for n in sizes:
                x = rng.normal(size=(n, len(serving.FEATURES)))
                files[n] = root / f"rows-{n}.npy"
                np.save(files[n], x)
                same_answers(url, grpc_addr, x)
                for protocol in PROTOCOLS:  # warm every path
                    drive(protocol, http_url=url, grpc_addr=grpc_addr, rows_file=files[n],
                          concurrency=2, duration=0.5)
            console.print(f"server: {args.workers} worker(s) on {url} and {grpc_addr}; the "
                          f"three protocols give the same predictions; load {load[0]:.1f}")
            cells: dict[tuple[int, int, str], list[Run]] = {}
            for n in sizes:
                for c in levels:
                    for _ in range(args.rounds):
                        for protocol in PROTOCOLS:
                            server_before = serving.cpu_seconds(pgid)
                            run = drive(protocol, http_url=url, grpc_addr=grpc_addr,
                                        rows_file=files[n], concurrency=c,
                                        duration=args.duration / args.rounds)
                            serving.settle(pgid)  # the work the run left queued counts too
                            run = dataclasses.replace(
                                run, server_cpu=serving.cpu_seconds(pgid) - server_before)
                            cells.setdefault((n, c, protocol), []).append(run)
    results = []
    for (n, c, protocol), runs in cells.items():
        requests = sum(r.requests for r in runs)
        seconds = sum(r.seconds for r in runs)
        results.append({
            "rows": n, "concurrency": c, "protocol": protocol,
            "rps": requests / seconds if seconds else 0.0,
            "rows_per_s": n * requests / seconds if seconds else 0.0,
            "p50_ms": statistics.median(r.p50_ms for r in runs),
            "p99_ms": statistics.median(r.p99_ms for r in runs),
            "failures": sum(r.failures for r in runs),
            "server_cpu_ms": 1000 * sum(r.server_cpu for r in runs) / max(requests, 1),
            "client_cpu_ms": 1000 * sum(r.client_cpu for r in runs) / max(requests, 1),
        })
    by = {(r["rows"], r["concurrency"], r["protocol"]): r for r in results}
    table = Table(title=f"HTTP JSON vs HTTP binary vs gRPC (RandomForest, 20 features; load "
                  f"{load[0]:.1f} at start)")
    for col in ("rows", "conc.", "protocol", "req/s", "p50 ms", "p99 ms", "fail",
                "req/s vs JSON", "server CPU ms/req", "client CPU ms/req", "CPU vs JSON"):
        table.add_column(col, justify="right" if col != "protocol" else "left")
    verdicts = []
    for n in sizes:
        for c in levels:
            base = by[(n, c, "http-json")]
            for protocol in PROTOCOLS:
                r = by[(n, c, protocol)]
                ratio = r["rps"] / base["rps"] if base["rps"] else float("nan")
                cpu = r["server_cpu_ms"] + r["client_cpu_ms"]
                base_cpu = base["server_cpu_ms"] + base["client_cpu_ms"]
                r["vs_json"] = ratio
                r["cpu_vs_json"] = base_cpu / cpu if cpu else float("nan")
                table.add_row(str(n), str(c), protocol, f"{r['rps']:,.0f}",
                              f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", str(r["failures"]),
                              f"{ratio:.2f}x", f"{r['server_cpu_ms']:.2f}",
                              f"{r['client_cpu_ms']:.2f}", f"{r['cpu_vs_json']:.2f}x")
            best = max(by[(n, c, p)]["vs_json"] for p in ("http-binary", "grpc"))
            if n == 1:
                ok = all(by[(n, c, p)]["vs_json"] >= 1.0 for p in ("http-binary", "grpc"))
                verdicts.append((f"{n} row, concurrency {c}: binary and gRPC >= JSON", ok))
            elif n >= 1000:
                verdicts.append((f"{n} rows, concurrency {c}: binary or gRPC >= 3x JSON "
                                 f"(best {best:.2f}x)", best >= 3.0))
    console.print(table)
    for text, ok in verdicts:
        console.print(f"[{'green' if ok else 'red'}]{'met' if ok else 'NOT met'}[/]: {text}")
    if args.json is not None:
        args.json.write_text(json.dumps({"load": load, "results": results}, indent=2))
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
