"""False alarms of a drift verdict by window size: how often windows of the very population a
model was trained on breach the drift policy (`core.drift.compare_stats` with Evidently's
per-column rules, the dataset share at 0.5, or the prediction drifting).

    .venv/bin/python bench/drift_false_alarms.py [--sizes 100,300,500,1000,2000] [--trials 200]
                                            [--references 5]

The reference is 1,500 rows of five standard-normal features (so Evidently's large-reference
rule applies: normed Wasserstein at 0.1) and a random forest's predictions; each window is
``size`` rows drawn from 20,000 more of the same population; the rate depends on how far the
reference sample sits from its population, so several references are drawn. This is why a
rollout step's drift check waits for ``spec.drift.windowRows`` (default 1,000) of the
candidate's rows. Takes ~10 s.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier

from mlgitops.core import drift, stats
from mlgitops.core.stats.baseline import build_baseline

FEATURES = [f"f{i}" for i in range(5)]


def rates(rng: np.random.Generator, sizes: list[int], trials: int) -> dict[int, tuple[float, float]]:
    """For one reference sample: per window size, the share of windows that breached and the
    share of (window, feature) pairs that drifted."""
    ref = rng.normal(size=(1500, len(FEATURES)))
    model = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(
        ref, ref[:, 0] + ref[:, 1] > 0)
    baseline = build_baseline({c: ref[:, i] for i, c in enumerate(FEATURES)},
                              predictions=model.predict(ref))
    live = rng.normal(size=(20000, len(FEATURES)))
    answers = model.predict(live)
    out = {}
    for size in sizes:
        breached = features = 0
        for _ in range(trials):
            rows = rng.choice(len(live), size, replace=False)
            window = stats.LiveStats.empty(baseline)
            window.update({c: live[rows, i] for i, c in enumerate(FEATURES)}, answers[rows])
            report = drift.compare_stats(baseline, window, share=0.5)
            drifted = sum(c.drifted for c in report.columns if c.column != "prediction")
            pred = any(c.drifted for c in report.columns if c.column == "prediction")
            features += drifted
            breached += drifted / len(FEATURES) >= 0.5 or pred
        out[size] = (breached / trials, features / (trials * len(FEATURES)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,300,500,1000,2000")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--references", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    found = [rates(rng, sizes, args.trials)
             for _ in track(range(args.references), description="reference samples")]
    table = Table(title=f"windows of the reference's own population: {args.references} "
                        f"references, {args.trials} windows each (median, range)")
    for col in ("rows", "windows that breach", "features that drift"):
        table.add_column(col, justify="right")
    for size in sizes:
        cells = []
        for k in (0, 1):
            got = sorted(f[size][k] for f in found)
            cells.append(f"{statistics.median(got):.1%} ({got[0]:.1%}-{got[-1]:.1%})")
        table.add_row(f"{size:,}", *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
