"""The A/B harness behind `recording.py` and `prediction_log.py`: one feature of the serving
process on and off, server CPU per request in interleaved rounds, and the feature's own count of
its CPU (a counter on /metrics) over the server's whole CPU in the same round.

Each bench gives a `Feature` (its two server command lines, environments, counter) and its
docstring; `run` parses the shared options (``--rounds --seconds --concurrency --tool
--no-pin``) and prints the table and the target line.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import _load
import serving

TARGET = 0.05


@dataclass(frozen=True)
class Feature:
    """What one bench switches: the first server of `servers` has it on, the second off."""

    title: str
    """The table's title, e.g. "Recording live statistics"."""
    short: str
    """Its name in columns and the target line, e.g. "recording"."""
    counter: str
    """The server's /metrics counter of the CPU seconds the feature spent."""
    settle_seconds: float
    """How long after a round the counter is up to date."""
    tmp_prefix: str
    servers: Callable[[list[str], Path], dict[str, list[str]]]
    """(base command, temporary directory) -> {label on: command, label off: command}."""
    envs: Callable[[Mapping[str, str]], dict[str, dict[str, str]]]
    """The environment of each label's server, from the bench's own."""


def run(feature: Feature, doc: str | None) -> int:
    """Parse the command line, measure ``feature`` on and off in interleaved rounds, print."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    with tempfile.TemporaryDirectory(prefix=feature.tmp_prefix) as tmp_s:
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
        servers = feature.servers(base, tmp)
        envs = feature.envs(env)
        on_label, off_label = list(servers)
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
                        spent_before = _counter(urls[label], feature.counter)
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
                        time.sleep(feature.settle_seconds)  # until the server has told its CPU
                        used = serving.cpu_seconds(groups[label]) - before
                        if label == on_label:
                            accounted.setdefault(size, []).append((_counter(urls[label], feature.counter) - spent_before) / used)
                        failures += res.failures
                        cpu.setdefault((label, size), []).append(used / max(res.requests, 1) * 1e6)
                        rps.setdefault((label, size), []).append(res.requests / res.seconds)
    table = Table(
        title=(
            f"{feature.title}, LogisticRegression, concurrency {args.concurrency}, load by {tool}, "
            + ("server (1 worker) on CPU 0 and load on CPU 1" if pin else "2 workers, unpinned")
            + f": medians of {args.rounds} interleaved rounds of {args.seconds:.0f}s"
        )
    )
    for col in ("rows/request", "server", "req/s", "server CPU µs/request", "µs/row",
                f"{feature.short}, accounted", f"{feature.short}, A/B"):
        table.add_column(col, justify="right")
    ok = failures == 0
    for size in bodies:
        on = statistics.median(cpu[(on_label, size)])
        off = statistics.median(cpu[(off_label, size)])
        share = statistics.median(
            1 - b / a for a, b in zip(cpu[(on_label, size)], cpu[(off_label, size)], strict=True)
        )
        own = statistics.median(accounted[size])
        ok &= own <= TARGET
        for label, value in ((off_label, off), (on_label, on)):
            table.add_row(
                str(size),
                label,
                f"{statistics.median(rps[(label, size)]):,.0f}",
                f"{value:,.0f}",
                f"{value / size:,.1f}",
                "" if label == off_label else f"{own * 100:.1f}%",
                "baseline" if label == off_label else f"{share * 100:+.1f}%",
            )
    console.print(table)
    for size in bodies:
        pairs = zip(cpu[(on_label, size)], cpu[(off_label, size)], strict=True)
        console.print(f"{size}-row requests, each round: accounted "
                      + " ".join(f"{a * 100:.1f}%" for a in accounted[size])
                      + "; A/B " + " ".join(f"{(1 - off / on) * 100:+.1f}%" for on, off in pairs))
    console.print(f"failed requests: {failures}")
    console.print(
        f"Target: {feature.short} <= {TARGET:.0%} of server CPU (accounted), single-row and 64-row requests -> "
        + ("[green]met[/green]" if ok else "[red]not met[/red]")
    )
    return 0 if ok else 1


def _counter(url: str, name: str) -> float:
    """The /metrics counter ``name`` of the server at ``url`` (0 when it counts nothing)."""
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0
