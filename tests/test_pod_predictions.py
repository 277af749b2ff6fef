"""The operator's copy of its pods' prediction logs keeps per pod the rows and the age the pods
keep (`PodPredictions._prune`), and a gone pod's folder goes with its last segment. Real
segments written by the servers' own writer; the copying itself is in tests/k8s/test_ground_truth."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest

from mlgitops.adapters import prediction_log
from mlgitops.adapters.kubernetes import Cluster
from mlgitops.adapters.kubernetes.pod_predictions import PodPredictions

pytestmark = pytest.mark.fast

NOW = 1_000_000.0


def write(folder: Path, worker: str, times: list[float], rows: int) -> None:
    writer = prediction_log.Writer(folder, worker_id=worker, max_rows=10**9,
                                   max_age_seconds=10**9, clock=lambda: NOW)
    for t in times:
        writer.append({"request": np.array([f"r{t}"] * rows), "row": np.arange(rows),
                       "rows": np.full(rows, rows), "version": np.array(["v"] * rows),
                       "time": np.full(rows, t)})


def test_the_copy_keeps_the_pods_bounds_and_drops_a_gone_pods_folder(tmp_path: Path) -> None:
    copy = PodPredictions(cast(Cluster, None), "ns", tmp_path, max_rows=25,
                          max_age_seconds=100.0, clock=lambda: NOW)
    live = prediction_log.directory(tmp_path / "credit" / "pod-a")
    write(live, "w1", [NOW - 50, NOW - 40, NOW - 30, NOW - 20], rows=10)  # 40 rows > 25
    write(live, "w2", [NOW - 500], rows=10)  # too old
    gone = prediction_log.directory(tmp_path / "credit" / "pod-b")
    write(gone, "w1", [NOW - 400, NOW - 300], rows=5)  # all too old
    copy._prune("credit")
    kept = prediction_log.segments(live)
    assert [(s.worker, s.newest) for s in kept] == [("w1", NOW - 30), ("w1", NOW - 20)]
    assert not (tmp_path / "credit" / "pod-b").exists()
    frame = prediction_log.Directory(tmp_path).read("credit")
    assert len(frame) == 20 and set(frame["time"]) == {NOW - 30, NOW - 20}
