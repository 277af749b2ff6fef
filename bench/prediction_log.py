"""Cost of keeping scored rows for labels (the prediction log): server CPU with it on vs off.

    .venv/bin/python bench/prediction_log.py [--rounds 10] [--seconds 5] [--concurrency 32] [--no-pin]

Serves one LogisticRegression MLflow model (20 numeric features, the cheapest model to score,
so keeping rows weighs most; a classifier, so the log computes class probabilities too)
twice at once, both recording live statistics: ``mlgitops.server`` with the prediction log
(the default) and with ``MLGITOPS_PREDICTION_LOG=off``. Both are driven alike (single-
row requests, and 64-row requests, in MLflow's ``dataframe_split`` format, at a fixed
concurrency), in interleaved rounds, by the harness of `recording.py` (`_cpu_share`): it
prints the server CPU per request and per row, and the share spent on the log two ways,
**accounted** (``mlgitops_prediction_log_cpu_seconds_total`` on /metrics: thread CPU time of
queueing, predict_proba, building and writing segments, pruning) and **A/B** (the cross-check),
as `recording.py`'s docstring explains; pinned to CPUs likewise (``--no-pin``).

Target (issue 20): <= 5% for single-row and for 64-row requests, on the accounted share.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cpu_share

FEATURE = _cpu_share.Feature(
    title="Prediction log",
    short="the prediction log",
    counter="mlgitops_prediction_log_cpu_seconds_total",
    settle_seconds=3.5,  # the log tells its CPU after each write (at least every 2 s here)
    tmp_prefix="mlgitops-prediction-log-",
    servers=lambda base, tmp: {label: [*base, "--stats-dir", str(tmp / label.replace(" ", "-"))]
                               for label in ("log on", "log off")},
    # the log on writes at least every 2 s (default 30 s): each round pays for its writes
    envs=lambda env: {"log on": {**env, "MLGITOPS_PREDICTION_LOG_INTERVAL": "2"},
                      "log off": {**env, "MLGITOPS_PREDICTION_LOG": "off"}},
)


if __name__ == "__main__":
    raise SystemExit(_cpu_share.run(FEATURE, __doc__))
