"""What copying a pod's prediction log costs the pod (issue 20 on Kubernetes).

    .venv/bin/python bench/prediction_export.py [--rounds 5] [--seconds 5] [--concurrency 16]

Serves one LogisticRegression MLflow model (20 features) with its prediction log (written
every 2 s), as a pod does. Each round drives 64-row ``/invocations`` requests for
``--seconds``, waits for the log to be written, then copies the new segments exactly as the
operator does (`PodPredictions._copy`: the export listing, then each segment not copied yet,
byte for byte). It prints, per round and as medians, the server CPU spent scoring the round's
rows (the baseline, measured in the same run) and the server CPU spent answering the copy, and
their ratio; and the operator's wall time per copied row.

Target: the copy costs the server at most 5% of the CPU it spent serving the rows it copies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _load
import serving

TARGET = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    import numpy as np

    from mlgitops.adapters import prediction_log
    from mlgitops.adapters.kubernetes import Cluster
    from mlgitops.adapters.kubernetes.pod_predictions import PodPredictions

    env = {**os.environ, "DO_NOT_TRACK": "true", "MLFLOW_ENABLE_TELEMETRY": "false",
           "MLGITOPS_PREDICTION_LOG_INTERVAL": "2"}
    ratios, per_row = [], []
    with tempfile.TemporaryDirectory(prefix="mlgitops-export-") as tmp_s:
        tmp = Path(tmp_s)
        (model,) = serving.build_models(tmp / "models", ["lr"])
        rows64 = np.random.default_rng(1).normal(size=(64, len(serving.FEATURES))).tolist()
        body = json.dumps({"dataframe_split": {"columns": serving.FEATURES,
                                               "data": rows64}}).encode()
        stats = tmp / "stats"
        cmd = [sys.executable, "-m", "mlgitops.server", str(model.path), "--workers", "1",
               "--version", "bench", "--name", "bench", "--stats-dir", str(stats)]
        for t in model.trusted:
            cmd += ["--trust", t]
        port = serving.free_port()
        copy = PodPredictions(cast(Cluster, None), "bench", tmp / "copy", max_rows=10**9,
                              max_age_seconds=10**9)
        with serving.serving([*cmd, "--port", str(port)], port, env, tmp / "server.log") as (
                url, group):
            serving.warm(url, body)
            time.sleep(3)
            copy._copy("bench", "pod", url)  # the warm-up's rows
            for r in range(args.rounds):
                before = serving.cpu_seconds(group)
                res = _load.run(f"{url}/invocations", body, concurrency=args.concurrency,
                                duration=args.seconds, tool="python")
                time.sleep(3)  # the log is written (every 2 s) and the server is idle
                serving.settle(group)
                scored = serving.cpu_seconds(group) - before
                have = {s.path.name for s in prediction_log.segments(
                    prediction_log.directory(tmp / "copy" / "bench" / "pod"))}
                rows = sum(s.rows for s in prediction_log.segments(
                    prediction_log.directory(stats)) if s.path.name not in have)
                before = serving.cpu_seconds(group)
                began = time.perf_counter()
                copied = copy._copy("bench", "pod", url)
                wall = time.perf_counter() - began
                serving.settle(group)
                spent = serving.cpu_seconds(group) - before
                ratios.append(spent / scored)
                per_row.append(wall / max(rows, 1) * 1e6)
                print(f"round {r + 1}: {res.requests} requests, {rows} rows in {copied} "
                      f"segments; server CPU scoring {scored:.2f} s, answering the copy "
                      f"{spent * 1000:.1f} ms ({spent / scored:.2%}); copy {wall * 1000:.0f} ms")
    ratio = statistics.median(ratios)
    print(f"median: the copy costs the server {ratio:.2%} of the CPU it spent serving the "
          f"copied rows; the operator copies {statistics.median(per_row):.2f} µs/row")
    ok = ratio <= TARGET
    print(f"Target: <= {TARGET:.0%} -> {'met' if ok else 'not met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
