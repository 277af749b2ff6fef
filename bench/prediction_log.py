"""Cost of keeping scored rows for labels (the prediction log): server CPU with it on vs off.

    .venv/bin/python bench/prediction_log.py [--rounds 10] [--seconds 5] [--concurrency 32] [--no-pin]

Serves one LogisticRegression MLflow model (20 numeric features, the cheapest model to score,
so keeping rows weighs most; a classifier, so the log computes class probabilities too)
twice at once, both recording live statistics: ``mlgitops.server`` with the prediction log
(the default) and with ``MLGITOPS_PREDICTION_LOG=off``. Both are driven alike (single-
row requests, and 64-row requests, in MLflow's ``dataframe_split`` format, at a fixed
concurrency), in interleaved rounds so background load hits both alike. Per round it takes
the CPU time (user + system) of each server's whole process group per request and per row;
it prints the medians over rounds and the share of the logging server's CPU spent on the
log two ways:

- **accounted**: the server's own count of the CPU it spent on the log (thread CPU time of
  queueing, predict_proba, building and writing segments, pruning:
  ``mlgitops_prediction_log_cpu_seconds_total`` on /metrics) over its whole CPU time in the
  same round: both numbers come from the same process and seconds;
- **A/B**: ``1 - CPU(off) / CPU(on)`` between the two servers, the median of each round's pair
  (the two runs of a round are seconds apart). It includes what the accounting cannot see
  (cache effects, the allocator), but on a shared VM one round's pair differs by +-15%, so it
  is the cross-check, printed with every round's value.

Target (issue 20): <= 5% for single-row and for 64-row requests, on the accounted share.

On a machine with two or more CPUs the servers run one worker each pinned to CPU 0 and the
load generator is pinned to CPU 1 (``taskset``), so that neither competes with the other for
a core: on 2 cores, two workers plus wrk make the CPU per request swing by +-10% from round
to round, more than the effect measured. ``--no-pin`` measures the default two workers
unpinned.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _load
import serving

TARGET = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (medians over them)")
    parser.add_argument("--seconds", type=float, default=5.0, help="load per server and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-pin", action="store_true",
                        help="two workers per server, nothing pinned to a CPU")
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    server_cpus, load_cpus = ("0", "1") if pin else (None, None)

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tool = "wrk" if args.tool == "wrk" or (args.tool == "auto" and _load.have_wrk()) else "python"
    env = {**os.environ, "DO_NOT_TRACK": "true", "MLFLOW_ENABLE_TELEMETRY": "false"}
    with tempfile.TemporaryDirectory(prefix="mlgitops-prediction-log-") as tmp_s:
        tmp = Path(tmp_s)
        with console.status("building a LogisticRegression model (20 features)"):
            (model,) = serving.build_models(tmp / "models", ["lr"])
        rows64 = np.random.default_rng(1).normal(size=(64, len(serving.FEATURES))).tolist()
        bodies = {
            1: model.body,
            64: json.dumps({"dataframe_split": {"columns": serving.FEATURES, "data": rows64}}).encode(),
        }
        base = [*_load.pinned(server_cpus), sys.executable, "-m", "mlgitops.server", str(model.path),
                "--workers", "1" if pin else "auto", "--version", "bench"]
        for t in model.trusted:
            base += ["--trust", t]
        servers = {label: [*base, "--stats-dir", str(tmp / label.replace(" ", "-"))]
                   for label in ("log on", "log off")}
        # the log on writes at least every 2 s (default 30 s): each round pays for its writes
        envs = {"log on": {**env, "MLGITOPS_PREDICTION_LOG_INTERVAL": "2"},
                "log off": {**env, "MLGITOPS_PREDICTION_LOG": "off"}}
        cpu: dict[tuple[str, int], list[float]] = {}
        accounted: dict[int, list[float]] = {}
        rps: dict[tuple[str, int], list[float]] = {}
        failures = 0
        with contextlib.ExitStack() as stack:
            urls: dict[str, str] = {}
            groups: dict[str, int] = {}
            for label, cmd in servers.items():
                port = serving.free_port()
                with console.status(f"starting {label}"):
                    urls[label], groups[label] = stack.enter_context(
                        serving.serving([*cmd, "--port", str(port)], port, envs[label],
                                        tmp / f"{label}.log".replace(" ", "-"))
                    )
                    serving.warm(urls[label], model.body)
            for r in range(args.rounds):
                for size, body in bodies.items():
                    order = list(servers) if r % 2 == 0 else list(reversed(servers))
                    for label in order:
                        before = serving.cpu_seconds(groups[label])
                        spent_before = _log_cpu(urls[label])
                        with console.status(f"round {r + 1}/{args.rounds}: {label}, {size}-row requests"):
                            res = _load.run(
                                f"{urls[label]}/invocations",
                                body,
                                concurrency=args.concurrency,
                                duration=args.seconds,
                                tool=tool,
                                cpus=load_cpus,
                            )
                        serving.settle(groups[label])
                        time.sleep(3.5)  # the log tells its CPU after each write (at least every 2 s here)
                        used = serving.cpu_seconds(groups[label]) - before
                        if label == "log on":
                            accounted.setdefault(size, []).append((_log_cpu(urls[label]) - spent_before) / used)
                        failures += res.failures
                        cpu.setdefault((label, size), []).append(used / max(res.requests, 1) * 1e6)
                        rps.setdefault((label, size), []).append(res.requests / res.seconds)
    table = Table(
        title=(
            f"Prediction log, LogisticRegression, concurrency {args.concurrency}, load by {tool}, "
            + ("server (1 worker) on CPU 0 and load on CPU 1" if pin else "2 workers, unpinned")
            + f": medians of {args.rounds} interleaved rounds of {args.seconds:.0f}s"
        )
    )
    for col in ("rows/request", "server", "req/s", "server CPU µs/request", "µs/row",
                "log, accounted", "log, A/B"):
        table.add_column(col, justify="right")
    ok = failures == 0
    for size in bodies:
        on = statistics.median(cpu[("log on", size)])
        off = statistics.median(cpu[("log off", size)])
        share = statistics.median(
            1 - b / a for a, b in zip(cpu[("log on", size)], cpu[("log off", size)], strict=True)
        )
        own = statistics.median(accounted[size])
        ok &= own <= TARGET
        for label, value in (("log off", off), ("log on", on)):
            table.add_row(
                str(size),
                label,
                f"{statistics.median(rps[(label, size)]):,.0f}",
                f"{value:,.0f}",
                f"{value / size:,.1f}",
                "" if label == "log off" else f"{own * 100:.1f}%",
                "baseline" if label == "log off" else f"{share * 100:+.1f}%",
            )
    console.print(table)
    for size in bodies:
        pairs = zip(cpu[("log on", size)], cpu[("log off", size)], strict=True)
        console.print(f"{size}-row requests, each round: accounted "
                      + " ".join(f"{a * 100:.1f}%" for a in accounted[size])
                      + "; A/B " + " ".join(f"{(1 - off / on) * 100:+.1f}%" for on, off in pairs))
    console.print(f"failed requests: {failures}")
    console.print(
        f"Target: the prediction log <= {TARGET:.0%} of server CPU (accounted), single-row and 64-row requests -> "
        + ("[green]met[/green]" if ok else "[red]not met[/red]")
    )
    return 0 if ok else 1


def _log_cpu(url: str) -> float:
    """``mlgitops_prediction_log_cpu_seconds_total`` of the server at ``url`` (0: none)."""
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("mlgitops_prediction_log_cpu_seconds_total "):
            return float(line.split()[1])
    return 0.0


if __name__ == "__main__":
    raise SystemExit(main())
