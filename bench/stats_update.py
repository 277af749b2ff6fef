"""Cost of folding one request batch into the live statistics (`core.stats.LiveStats.update`).

    .venv/bin/python bench/stats_update.py [--rounds 15]

One 64-row batch of 20 features (17 numeric, 3 categorical) plus a numeric prediction, the
shape `bench/recording.py` serves, folded into the live counters of a 5,000-row baseline.
Baseline, same run: the same counters computed the plain way, one ``np.searchsorted`` and two
``np.bincount`` per numeric column and a Python loop over the categorical values. Interleaved
rounds; medians. This replaced a timed unit test (``test_update_is_vectorized_enough``): speed
is measured here, side by side, and never asserted by a test on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from mlgitops.core import stats

#: A loud alarm, not a target: the fold stays well under the 1.6 ms of a RandomForest predict.
BUDGET_US = 2000.0


def _plain(base: stats.Baseline, rows: dict[str, Any], pred: Any) -> int:
    """The counters of ``rows`` computed a column at a time, the obvious way."""
    total = 0
    for name, values in rows.items():
        col = base.column(name)
        if col.kind == "numeric":
            edges = np.asarray(col.edges)
            x = np.asarray(values, dtype=float)
            x = x[np.isfinite(x)]
            left = np.searchsorted(edges, x, side="left")
            total += int(np.bincount(left, minlength=len(edges) + 1).sum())
            total += int(np.bincount(np.searchsorted(edges, x, side="right"), weights=x,
                                     minlength=len(edges) + 1).size)
        else:
            counts: dict[Any, int] = {}
            for v in np.asarray(values).tolist():
                counts[v] = counts.get(v, 0) + 1
            total += len(counts)
    return total + int(np.asarray(pred).size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ref: dict[str, Any] = {f"x{i}": rng.normal(size=5000) for i in range(17)}
    ref |= {"c1": rng.choice(["a", "b", "c"], 5000), "c2": rng.integers(0, 4, 5000),
            "c3": rng.random(5000) < 0.5}
    base = stats.build_baseline(ref, predictions=rng.normal(size=5000))
    live = stats.LiveStats.empty(base)
    rows = {k: v[:64].copy() for k, v in ref.items()}
    pred = rng.normal(size=64)
    number = 200
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(args.rounds):
        ours.append(timeit.timeit(lambda: live.update(rows, pred), number=number) / number * 1e6)
        plain.append(timeit.timeit(lambda: _plain(base, rows, pred), number=number) / number * 1e6)
    mine, theirs = statistics.median(ours), statistics.median(plain)
    table = Table(title=f"one 64-row x 20-feature batch, median of {args.rounds} rounds")
    table.add_column("fold")
    table.add_column("us per batch", justify="right")
    table.add_column("vs baseline", justify="right")
    table.add_row("plain per-column search (baseline)", f"{theirs:.0f}", "1.00x")
    table.add_row("LiveStats.update", f"{mine:.0f}", f"{theirs / mine:.2f}x faster")
    console = Console()
    console.print(table)
    ok = mine < BUDGET_US
    console.print(f"Budget: <= {BUDGET_US:.0f} us per batch -> "
                  + ("[green]met[/green]" if ok else "[red]not met[/red]"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
