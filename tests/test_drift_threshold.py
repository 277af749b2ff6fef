"""Large frames whose columns sit just above and just below Evidently's 0.1 Wasserstein
threshold: `mlgitops.drift.compare` gives Evidently's verdicts, column by column and for the
data set (real Evidently's DataDriftPreset, run here; no recorded numbers).

Each column's current values are a copy of its reference moved so that the normed distance is
0.1 +- gap: shifted (the distance is the shift) or stretched around the mean (the distance is
the stretch times the mean absolute deviation). Gaps from 1e-3 down to 1e-9 put some columns
inside the float32 error bound (recomputed from float64 sorts) and some outside it.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import mlgitops.drift
from mlgitops.adapters import evidently_reports
from mlgitops.core.drift import DriftReport, quantiles

os.environ.setdefault("DO_NOT_TRACK", "true")

pytestmark = pytest.mark.fast

THRESHOLD = 0.1
GAPS = (1e-3, 1e-6, 1e-9)


def near_threshold(base: np.ndarray, how: str, gap: float) -> np.ndarray:
    """`base` moved to a normed Wasserstein distance of 0.1 + gap from `base` itself."""
    std = float(np.std(base))
    if how == "shift":
        return base + (THRESHOLD + gap) * std
    mean = float(np.mean(base))
    return mean + (base - mean) * (1.0 + (THRESHOLD + gap) * std / float(np.mean(np.abs(base - mean))))


def frames(rows: int, *, current_rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference of `rows` and a current frame of `current_rows` (rows is a multiple of it:
    the reference repeats each base value, which keeps the distance what the construction says)."""
    rng = np.random.default_rng(seed)
    repeat = rows // current_rows
    reference, current = {}, {}
    for how in ("shift", "stretch"):
        for gap in GAPS:
            for sign in (1.0, -1.0):
                base = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 4.0), size=current_rows)
                name = f"{how}{'+' if sign > 0 else '-'}{gap:g}"
                reference[name] = np.repeat(base, repeat)
                current[name] = near_threshold(base, how, sign * gap)
    return pd.DataFrame(reference), pd.DataFrame(current)


def assert_same_verdicts(ours: DriftReport, theirs: DriftReport) -> None:
    for col in theirs.columns:
        mine = ours.column(col.column)
        assert (mine.method, mine.drifted) == (col.method, col.drifted) == ("wasserstein", "+" in col.column)
        assert mine.score == pytest.approx(col.score, abs=quantiles.TOLERANCE), col.column
    assert (ours.share, ours.drifted) == (theirs.share, theirs.drifted) == (0.5, True)


@pytest.mark.parametrize(
    ("rows", "current_rows"), [(60_000, 60_000), (60_000, 30_000)], ids=["same-size", "half-size-current"]
)
def test_columns_at_the_threshold_get_evidentlys_verdicts(rows: int, current_rows: int) -> None:
    reference, current = frames(rows, current_rows=current_rows, seed=rows + current_rows)
    assert_same_verdicts(
        mlgitops.drift.compare(reference, current), evidently_reports.evidently_verdicts(reference, current)
    )
