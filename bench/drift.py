"""Drift cost: Evidently's DataDriftPreset vs mlgitops' exact comparison and its monitor.

    .venv/bin/python bench/drift.py [--sizes 1000,10000,100000,1000000] [--repeat 5]
                                    [--reference-rows 5000] [--evidently-max-rows N]

Takes ~8 minutes on 2 cores, most of it Evidently at 1M rows (run once there);
``--evidently-max-rows 100000`` skips that and finishes in ~2 minutes.

For each window size, on 20 numeric + 3 categorical columns (half of them shifted):
- Evidently: `Report([DataDriftPreset()]).run(current, reference)` (what a report costs);
- mlgitops compare: `mlgitops.drift.compare(reference, current)`, numeric columns at once from
  one sort per frame, string columns from label counts; next to it, the per-column computation it replaced
  (`core.drift.column_drift_exact` column by column on the same arrays: "before");
- mlgitops monitor, end to end: ingest, what the inference server does while it scores
  (`Recorder.record` of every 64-row batch, then the fold of the queued rows into the live
  counters and the reservoir, `Recorder.flush`), plus the check the monitor runs per window
  (`compare_stats(baseline, live)`);
plus per-column verdict agreement with Evidently, and the monitor's memory (LiveStats JSON).
Times are medians of ``--repeat`` runs, Evidently and mlgitops alternating in the same run: the
table shows wall-clock time, the line after each size CPU time, which other load on a shared
machine moves less.
The reference has 5000 rows so that Evidently's large-reference methods (normed Wasserstein,
Jensen-Shannon) apply. Targets (issue 11): compare and the monitor each >= 100x Evidently at
100k rows.
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
from mlgitops.server import recorder, schema

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


def batches(arrays: dict[str, np.ndarray[Any, Any]], rows: int) -> list[schema.Batch]:
    """The window as the server's decoded 64-row batches (decoding is not the monitor's cost)."""
    return [
        schema.Batch(rows=min(BATCH, rows - start), columns={k: v[start : start + BATCH] for k, v in arrays.items()})
        for start in range(0, rows, BATCH)
    ]


def ingest(baseline: stats.Baseline, window: list[schema.Batch]) -> stats.LiveStats:
    """What a server worker spends on statistics while it scores the window."""
    rec = recorder.Recorder(baseline, seed=0)
    for batch in window:
        rec.record(batch, None)
    rec.flush()
    return rec.live


def per_column(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, stats.ColumnKind]) -> list[drift.ColumnDrift]:
    """The computation `compare` replaced: one column at a time on raw values."""
    return [
        drift.column_drift_exact(
            name,
            mlgitops.drift.column_values(reference[name], kind),
            mlgitops.drift.column_values(current[name], kind),
            kind=kind,
        )
        for name, kind in kinds.items()
    ]


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
    parser.add_argument("--repeat", type=int, default=5)
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

    table = Table(title="Drift: Evidently DataDriftPreset vs mlgitops compare and monitor (medians)")
    for col in (
        "window rows",
        "Evidently\nDataDriftPreset",
        "compare\n(after)",
        "per column\n(before)",
        "Evidently\n/ compare",
        "monitor ingest\nwindow | per row",
        "monitor\ncheck",
        "Evidently /\n(ingest+check)",
        "columns agreeing\ncompare | monitor",
        "drifted share\nEv | compare | monitor",
    ):
        table.add_column(col, justify="right")
    memory: dict[int, tuple[int, int, int]] = {}
    skipped: list[int] = []
    single_runs: list[int] = []
    ok = True
    for rows in sizes:
        current = make_frame(rows, drifted=True, seed=rows)
        arrays = {k: mlgitops.drift.column_values(current[k], kinds[k]) for k in kinds}
        window = batches(arrays, rows)
        run_evidently = args.evidently_max_rows is None or rows <= args.evidently_max_rows
        ev_repeat = args.repeat if rows <= EVIDENTLY_REPEAT_MAX_ROWS else 1
        if run_evidently and ev_repeat < args.repeat:
            single_runs.append(rows)
        times: dict[str, list[float]] = {}
        results: dict[str, Any] = {}
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("compare", lambda: mlgitops.drift.compare(reference, current)),  # noqa: B023
            ("before", lambda: per_column(reference, current, kinds)),  # noqa: B023
            ("ingest", lambda: ingest(baseline, window)),  # noqa: B023
        ]
        cpu: dict[str, list[float]] = {}
        if run_evidently:
            steps.append(("evidently", lambda: evidently_reports.evidently_verdicts(reference, current)))  # noqa: B023
        for i in range(args.repeat):  # alternate, so background load hits every contender alike
            for name, fn in steps:
                if name == "evidently" and i >= ev_repeat:
                    continue
                start, start_cpu = time.perf_counter(), time.process_time()
                results[name] = fn()
                times.setdefault(name, []).append(time.perf_counter() - start)
                cpu.setdefault(name, []).append(time.process_time() - start_cpu)
        live = results["ingest"]
        check_time, check = timed(lambda: drift.compare_stats(baseline, live), max(args.repeat, 20))  # noqa: B023
        med = {k: statistics.median(v) for k, v in times.items()}
        exact = results["compare"]
        before = results["before"]
        if [(c.method, c.drifted) for c in exact.columns] != [(c.method, c.drifted) for c in before]:
            console.print(f"[red]{rows:,} rows: compare and the per-column computation disagree[/red]")
            ok = False
        as_dict = live.to_dict()
        counters = len(as_dict["counts"]) + len(as_dict["sums"]) + len(as_dict["sumsq"])
        memory[rows] = (counters, live.nbytes(), len(json.dumps(as_dict)))
        ev = results.get("evidently")
        if ev is None:
            skipped.append(rows)
        monitor = med["ingest"] + check_time
        table.add_row(
            f"{rows:,}",
            "skipped" if ev is None else fmt(med["evidently"]),
            fmt(med["compare"]),
            fmt(med["before"]),
            "-" if ev is None else f"{med['evidently'] / med['compare']:,.0f}x",
            f"{fmt(med['ingest'])} | {fmt(med['ingest'] / rows)}",
            fmt(check_time),
            "-" if ev is None else f"{med['evidently'] / monitor:,.0f}x",
            "-" if ev is None else f"{agreement(exact, ev)} | {agreement(check, ev)}",
            ("-" if ev is None else f"{ev.share:.2f}") + f" | {exact.share:.2f} | {check.share:.2f}",
        )
        cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
        console.print(
            f"  done: {rows:,} rows; CPU time (does not move with other load): compare "
            f"{fmt(cpu_med['compare'])}, before {fmt(cpu_med['before'])}, ingest {fmt(cpu_med['ingest'])}"
            + (
                ""
                if ev is None
                else f", Evidently {fmt(cpu_med['evidently'])}: Evidently / compare "
                f"{cpu_med['evidently'] / cpu_med['compare']:,.0f}x, Evidently / (ingest+check) "
                f"{cpu_med['evidently'] / (cpu_med['ingest'] + check_time):,.0f}x"
            )
        )
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
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
