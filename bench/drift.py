"""Drift check cost: Evidently's DataDriftPreset vs mlgitops' monitor path and exact path.

    .venv/bin/python bench/drift.py [--sizes 1000,10000,100000,1000000] [--repeat 3]
                                    [--reference-rows 5000] [--evidently-max-rows N]

Takes ~8 minutes on 2 cores, most of it Evidently at 1M rows (run once there);
``--evidently-max-rows 100000`` skips that and finishes in ~2 minutes.

For each window size, on 20 numeric + 3 categorical columns (half of them shifted):
- Evidently: `Report([DataDriftPreset()]).run(current, reference)` (what a report costs);
- mlgitops ingest: `LiveStats.update` over the window in 64-row batches, as the inference
  server does while it scores (paid per row, spread over the window);
- mlgitops check: `compare_stats(baseline, live)`, what the monitor runs per window;
- mlgitops exact: `mlgitops.drift.compare(reference, current)` on the frames;
plus per-column verdict agreement with Evidently, and the monitor's memory (LiveStats JSON).
The reference has 5000 rows so that Evidently's large-reference methods (normed Wasserstein,
Jensen-Shannon) apply.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

import mlgitops.drift
from mlgitops.adapters import evidently_reports
from mlgitops.core import drift, stats

N_NUMERIC, N_CATEGORICAL, BATCH = 20, 3, 64
EVIDENTLY_REPEAT_MAX_ROWS = 100_000  # above, Evidently runs once (~3 min at 1M rows on 2 cores)


def make_frame(rows: int, *, drifted: bool, seed: int) -> pd.DataFrame:
    """20 numeric and 3 categorical columns; when `drifted`, every other column shifts a little more."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for i in range(N_NUMERIC):
        shift = 0.03 * i if drifted and i % 2 else 0.0
        data[f"num{i:02d}"] = rng.normal(loc=shift, scale=1.0 + shift, size=rows)
    for j in range(N_CATEGORICAL):
        p = np.array([0.5, 0.3, 0.2])
        if drifted and j % 2 == 0:
            p = np.array([0.35, 0.35, 0.3])
        data[f"cat{j}"] = rng.choice(np.array(["alpha", "beta", "gamma"], dtype=object), size=rows, p=p)
    return pd.DataFrame(data)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ingest(baseline: stats.Baseline, arrays: dict[str, np.ndarray[Any, Any]], rows: int) -> stats.LiveStats:
    live = stats.LiveStats.empty(baseline)
    for start in range(0, rows, BATCH):
        live.update({k: v[start : start + BATCH] for k, v in arrays.items()}, None)
    return live


def agreement(ours: drift.DriftReport, theirs: drift.DriftReport) -> str:
    same = sum(ours.column(c.column).drifted == c.drifted for c in theirs.columns)
    return f"{same}/{len(theirs.columns)}"


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument(
        "--evidently-max-rows",
        type=int,
        default=None,
        help="skip Evidently for windows larger than this (it can take minutes at 1M rows)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    console = Console(width=200)

    reference = make_frame(args.reference_rows, drifted=False, seed=0)
    baseline = mlgitops.drift.build_baseline(reference)
    kinds = {c.name: c.kind for c in baseline.columns}
    console.print(
        f"reference: {args.reference_rows} rows x {len(kinds)} columns "
        f"({N_NUMERIC} numeric, {N_CATEGORICAL} categorical); ingest in {BATCH}-row batches; "
        f"median of {args.repeat}"
    )
    evidently_reports.evidently_verdicts(reference.head(200), reference.tail(200))  # import + warm-up

    table = Table(title="Drift check: Evidently DataDriftPreset vs mlgitops")
    for col in (
        "window rows",
        "Evidently\nDataDriftPreset",
        "mlgitops check\ncompare_stats",
        "ingest: LiveStats.update\nwindow | per row",
        "mlgitops exact\ncompare",
        "Evidently\n/ check",
        "Evidently\n/ exact",
        "columns agreeing\ncheck | exact",
        "drifted share\nEv | check | exact",
    ):
        table.add_column(col, justify="right")
    memory: dict[int, tuple[int, int, int]] = {}
    skipped: list[int] = []
    single_runs: list[int] = []
    for rows in sizes:
        current = make_frame(rows, drifted=True, seed=rows)
        arrays = {k: mlgitops.drift.column_values(current[k], kinds[k]) for k in kinds}
        ingest_time, live = timed(lambda: ingest(baseline, arrays, rows), args.repeat)  # noqa: B023
        check_time, check = timed(lambda: drift.compare_stats(baseline, live), max(args.repeat, 20))  # noqa: B023
        exact_time, exact = timed(lambda: mlgitops.drift.compare(reference, current), args.repeat)  # noqa: B023
        as_dict = live.to_dict()
        counters = len(as_dict["counts"]) + len(as_dict["sums"]) + len(as_dict["sumsq"])
        memory[rows] = (counters, live.nbytes(), len(json.dumps(as_dict)))
        if args.evidently_max_rows is not None and rows > args.evidently_max_rows:
            skipped.append(rows)
            ev_time, ev = float("nan"), None
        else:
            ev_repeat = args.repeat if rows <= EVIDENTLY_REPEAT_MAX_ROWS else 1
            if ev_repeat < args.repeat:
                single_runs.append(rows)
            ev_time, ev = timed(lambda: evidently_reports.evidently_verdicts(reference, current), ev_repeat)  # noqa: B023
        table.add_row(
            f"{rows:,}",
            "skipped" if ev is None else fmt(ev_time),
            fmt(check_time),
            f"{fmt(ingest_time)} | {fmt(ingest_time / rows)}",
            fmt(exact_time),
            "-" if ev is None else f"{ev_time / check_time:,.0f}x",
            "-" if ev is None else f"{ev_time / exact_time:,.1f}x",
            "-" if ev is None else f"{agreement(check, ev)} | {agreement(exact, ev)}",
            ("-" if ev is None else f"{ev.share:.2f}") + f" | {check.share:.2f} | {exact.share:.2f}",
        )
        console.print(f"  done: {rows:,} rows")
    console.print(table)
    if single_runs:
        console.print(
            f"Evidently ran once (not {args.repeat} times) for windows of "
            f"{', '.join(f'{s:,}' for s in single_runs)} rows: one run takes minutes."
        )
    if skipped:
        console.print(f"Evidently skipped for windows of {', '.join(f'{s:,}' for s in skipped)} rows (--evidently-max-rows).")
    console.print("monitor memory (LiveStats after the window):")
    for rows, (counters, nbytes, json_bytes) in memory.items():
        console.print(
            f"  {rows:>9,} rows: {counters:,} numbers in to_dict, {nbytes:,} bytes of counters, "
            f"{json_bytes:,} bytes of JSON (digits grow with the counts)"
        )
    if len({(c, b) for c, b, _ in memory.values()}) != 1:
        console.print("[red]LiveStats size depends on rows[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
