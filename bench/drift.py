"""Drift cost: Evidently's DataDriftPreset vs mlgitops' exact comparison and its monitor.

    .venv/bin/python bench/drift.py [--sizes 1000,10000,100000,1000000] [--repeat 5]
                                    [--reference-rows 5000] [--evidently-max-rows N]
                                    [--large-sizes 100000,1000000] [--only-large]

Takes ~8 minutes on 2 cores, most of it Evidently at 1M rows (run once there);
``--evidently-max-rows 100000`` skips that and finishes in ~2 minutes. The large-reference
case adds ~3 minutes (Evidently at 1M x 1M rows, once).

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

Large references (``--large-sizes``, default 100000,1000000; "" skips; ``--only-large`` skips
the windows above): a reference and a current frame of the same size, 20 numeric columns (the
current one shifted by 0.011 standard deviations more per column, so about half drift).
`compare`'s first call runs in a fresh process (``python -c``: numpy and pandas imported and the
frames built first, then ``import mlgitops.drift`` and the first call, each timed), ``--repeat``
such processes; warm calls run in this process; Evidently (warmed up) alternates with them,
once at 1M rows (a run takes minutes there). Ratios are of medians: Evidently / first call and
Evidently / warm call, wall and CPU. Target (issue 21): >= 100x at 100k and at 1M rows, first
call included, with the same per-column and dataset verdicts. Evidently's own first call would
add its import (seconds): the ratios use its warm time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


LARGE_FRAMES = """
import numpy as np, pandas as pd
def large_frames(rows):
    rng = np.random.default_rng(rows)
    ref = pd.DataFrame({f"num{i:02d}": rng.normal(size=rows) for i in range(20)})
    cur = pd.DataFrame({f"num{i:02d}": rng.normal(loc=0.011 * i, size=rows) for i in range(20)})
    return ref, cur
"""
"""The large-reference frames, as source: the fresh processes build them the same way."""

FIRST_CALL = LARGE_FRAMES + """
import json, sys, time
ref, cur = large_frames(int(sys.argv[1]))
start = time.perf_counter()
import mlgitops.drift
imported = time.perf_counter()
cpu = time.process_time()
report = mlgitops.drift.compare(ref, cur)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "wall": done - imported, "cpu": time.process_time() - cpu,
                  "drifted": [c.drifted for c in report.columns], "share": report.share}))
"""
"""A fresh process: frames built, then ``import mlgitops.drift`` and the first `compare`, timed."""


def large_frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    space: dict[str, Any] = {}
    exec(LARGE_FRAMES, space)  # our own constant, shared with the fresh processes
    frames: tuple[pd.DataFrame, pd.DataFrame] = space["large_frames"](rows)
    return frames


def first_call(rows: int) -> dict[str, Any]:
    """`compare`'s first call in a fresh process (and its import of mlgitops.drift)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL, str(rows)], check=True, capture_output=True, text=True, env=env, cwd=root
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def large_reference(console: Console, sizes: list[int], repeat: int) -> bool:
    """The large-reference case: first call (fresh processes), warm calls, Evidently; True when
    every verdict agrees."""
    table = Table(title="compare with a large reference: reference rows = current rows, 20 numeric columns (medians)")
    for col in (
        "rows",
        "Evidently\nDataDriftPreset",
        "import\nmlgitops.drift",
        "compare first call\n(fresh process)",
        "compare\nwarm",
        "Evidently /\nfirst call",
        "Evidently /\nwarm",
        "CPU: Evidently /\nfirst | warm",
        "verdicts agreeing\ncolumns | dataset",
        "largest\nscore gap",
    ):
        table.add_column(col, justify="right")
    ok = True
    for rows in sizes:
        reference, current = large_frames(rows)
        ev_repeat = repeat if rows <= EVIDENTLY_REPEAT_MAX_ROWS else 1
        mlgitops.drift.compare(reference, current)  # warm-up of this process
        firsts: list[dict[str, Any]] = []
        warm: list[tuple[float, float]] = []
        ev: list[tuple[float, float]] = []
        ours = theirs = None
        for i in range(repeat):  # alternate, so background load hits every contender alike
            firsts.append(first_call(rows))
            start, cpu = time.perf_counter(), time.process_time()
            ours = mlgitops.drift.compare(reference, current)
            warm.append((time.perf_counter() - start, time.process_time() - cpu))
            if i < ev_repeat:
                start, cpu = time.perf_counter(), time.process_time()
                theirs = evidently_reports.evidently_verdicts(reference, current)
                ev.append((time.perf_counter() - start, time.process_time() - cpu))
        assert ours is not None and theirs is not None
        med = {
            "ev": statistics.median(w for w, _ in ev),
            "ev_cpu": statistics.median(c for _, c in ev),
            "import": statistics.median(f["import"] for f in firsts),
            "first": statistics.median(f["wall"] for f in firsts),
            "first_cpu": statistics.median(f["cpu"] for f in firsts),
            "warm": statistics.median(w for w, _ in warm),
            "warm_cpu": statistics.median(c for _, c in warm),
        }
        same_columns = sum(ours.column(c.column).drifted == c.drifted for c in theirs.columns)
        same_first = all(f["drifted"] == [c.drifted for c in theirs.columns] for f in firsts)
        same_dataset = ours.drifted == theirs.drifted and ours.share == theirs.share
        ok = ok and same_columns == len(theirs.columns) and same_first and same_dataset
        gap = max(abs(ours.column(c.column).score - c.score) for c in theirs.columns)
        table.add_row(
            f"{rows:,}",
            fmt(med["ev"]) + ("" if ev_repeat > 1 else " (1 run)"),
            fmt(med["import"]),
            fmt(med["first"]),
            fmt(med["warm"]),
            f"{med['ev'] / med['first']:,.0f}x",
            f"{med['ev'] / med['warm']:,.0f}x",
            f"{med['ev_cpu'] / med['first_cpu']:,.0f}x | {med['ev_cpu'] / med['warm_cpu']:,.0f}x",
            f"{same_columns}/{len(theirs.columns)}{'' if same_first else ' (first call differs!)'} | "
            f"{'same' if same_dataset else 'DIFFERENT'} (share {theirs.share:.2f})",
            f"{gap:.1e}",
        )
        console.print(
            f"  done: {rows:,} rows; CPU: Evidently {fmt(med['ev_cpu'])}, compare first call "
            f"{fmt(med['first_cpu'])}, warm {fmt(med['warm_cpu'])}; first calls in {len(firsts)} fresh "
            f"processes, {len(warm)} warm calls, Evidently {len(ev)} run(s)"
        )
    console.print(table)
    return ok


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
    parser.add_argument("--large-sizes", default="100000,1000000", help='large-reference case sizes ("" skips it)')
    parser.add_argument("--only-large", action="store_true", help="run the large-reference case only")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    large_sizes = [int(s) for s in args.large_sizes.split(",") if s]
    console = Console(width=200)
    if args.only_large:
        evidently_reports.evidently_verdicts(*(f.head(300) for f in large_frames(300)))  # import + warm-up
        return 0 if large_reference(console, large_sizes, args.repeat) else 1

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
    if large_sizes:
        ok = large_reference(console, large_sizes, args.repeat) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
