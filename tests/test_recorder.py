"""The server's recorder: queue on the request path, fold later, same counters as one update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlgitops.core import stats
from mlgitops.server import recorder, schema

pytestmark = pytest.mark.fast

NAMES = [f"f{i}" for i in range(6)]


def _baseline() -> stats.Baseline:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3000, len(NAMES)))
    return stats.build_baseline({n: ref[:, j] for j, n in enumerate(NAMES)}, predictions=(ref[:, 0] > 0).astype(int))


def test_record_only_queues_and_the_fold_equals_one_update() -> None:
    base = _baseline()
    rec = recorder.Recorder(base, seed=0)
    rng = np.random.default_rng(1)
    data = rng.normal(0.1, 1.2, size=(500, len(NAMES)))
    data[rng.random(data.shape) < 0.05] = np.nan
    preds = (data[:, 1] > 0).astype(np.int64)
    sizes = [1, 1, 3, 64, 31, 400]
    start = 0
    for size in sizes:
        rows = data[start : start + size]
        rec.record(schema.Batch(rows=len(rows), matrix=rows, names=NAMES), preds[start : start + size])
        start += size
    assert rec.live.rows == 0 and rec.seen == 0  # nothing counted on the request path
    live, sample, seen = rec.snapshot()
    assert live.rows == seen == 500
    assert len(sample["f0"]) == min(500, rec.capacity)
    one = stats.LiveStats.empty(base)
    one.update({n: data[:, j] for j, n in enumerate(NAMES)}, preds)
    assert live.to_dict()["counts"] == one.to_dict()["counts"]
    assert np.allclose(live.to_dict()["sums"], one.to_dict()["sums"], rtol=1e-12)


def test_a_full_queue_is_folded_by_the_caller() -> None:
    rec = recorder.Recorder(_baseline(), flush_rows=100)
    rows = np.zeros((40, len(NAMES)))
    for _ in range(3):
        rec.record(schema.Batch(rows=40, matrix=rows, names=NAMES), np.zeros(40, dtype=np.int64))
    assert rec.live.rows == 120  # the third batch reached 100 queued rows
    rec.record(schema.Batch(rows=40, matrix=rows, names=NAMES), np.zeros(40, dtype=np.int64))
    assert rec.live.rows == 120 and rec.snapshot()[0].rows == 160


def test_batches_of_mixed_kinds_are_merged_by_column() -> None:
    base = stats.build_baseline(
        {"x": np.arange(100.0), "c": np.array(["a", "b", "c", "d"] * 25, dtype=object)}, predictions=None
    )
    rec = recorder.Recorder(base, seed=0)
    rec.record(schema.Batch(rows=2, columns={"x": np.array([1.0, 2.0]), "c": np.array(["a", "z"], dtype=object)}), None)
    rec.record(schema.Batch(rows=1, columns={"x": np.array([np.nan]), "c": np.array([None], dtype=object)}), None)
    live = rec.snapshot()[0]
    assert live.column("c").other == 1 and live.column("c").missing == 1
    assert live.column("x").missing == 1 and live.column("x").count == 2


def test_the_cpu_spent_recording_is_counted_and_told_once(tmp_path: Path) -> None:
    """`cpu_seconds` grows with queueing, folding and writing; the publisher tells each second
    to its counter once (the sum of what it told equals the recorder's total)."""
    rec = recorder.Recorder(_baseline(), seed=0)
    told: list[float] = []
    pub = recorder.Publisher(rec, tmp_path, worker_id="w", name="m", version="v",
                             digest="sha256:" + "0" * 64, on_cpu=told.append)
    assert rec.cpu_seconds == 0.0
    rows = np.random.default_rng(2).normal(size=(64, len(NAMES)))
    for _ in range(200):
        rec.record(schema.Batch(rows=64, matrix=rows, names=NAMES), np.zeros(64, dtype=np.int64))
    queued = rec.cpu_seconds
    assert queued > 0.0  # queueing alone is counted
    pub.publish(with_sample=True)
    assert rec.cpu_seconds > queued  # the fold of 12,800 rows and the writes
    pub.publish(with_sample=True)
    assert len(told) == 2 and all(t >= 0 for t in told)
    assert sum(told) == rec.cpu_seconds


def test_the_first_rows_reach_the_sample_file_without_waiting_out_an_empty_write(
        tmp_path: Path) -> None:
    """The publisher's first write (before any request) must not start the sample interval:
    else a window closing within ``sample_interval`` of the first rows had no sample at all."""
    from mlgitops.adapters import stats_store

    base = _baseline()
    rec = recorder.Recorder(base, seed=0)
    pub = recorder.Publisher(rec, tmp_path, worker_id="w", name="m", version="v",
                             digest="sha256:" + "0" * 64, sample_interval=3600)
    pub.publish()  # the server has started: nothing recorded yet
    assert stats_store.read(tmp_path, version="v", baseline=base).sample.empty
    rows = np.random.default_rng(3).normal(size=(50, len(NAMES)))
    rec.record(schema.Batch(rows=50, matrix=rows, names=NAMES), np.zeros(50, dtype=np.int64))
    pub.publish()
    assert len(stats_store.read(tmp_path, version="v", baseline=base).sample) == 50
    rec.record(schema.Batch(rows=50, matrix=rows, names=NAMES), np.zeros(50, dtype=np.int64))
    pub.publish()  # now the interval runs: the counts are written, the sample waits
    snap = stats_store.read(tmp_path, version="v", baseline=base)
    assert snap.workers["w"].live.rows == 100 and len(snap.sample) == 50


def test_a_host_booted_seconds_ago_writes_its_first_sample_at_once(tmp_path: Path) -> None:
    """``time.monotonic`` counts from boot: 3 s after boot, with a 5 s sample interval, the
    first rows' sample is still written at once ("never written" is -inf, not 0.0), and the
    next one waits out the interval on the same injected clock."""
    from mlgitops.adapters import stats_store

    now = [3.0]  # seconds since boot
    base = _baseline()
    rec = recorder.Recorder(base, seed=0)
    pub = recorder.Publisher(rec, tmp_path, worker_id="w", name="m", version="v",
                             digest="sha256:" + "0" * 64, sample_interval=5.0,
                             clock=lambda: now[0])
    rows = np.random.default_rng(5).normal(size=(30, len(NAMES)))
    rec.record(schema.Batch(rows=30, matrix=rows, names=NAMES), np.zeros(30, dtype=np.int64))
    pub.publish()
    assert len(stats_store.read(tmp_path, version="v", baseline=base).sample) == 30
    rec.record(schema.Batch(rows=30, matrix=rows, names=NAMES), np.zeros(30, dtype=np.int64))
    now[0] = 7.9  # 4.9 s later: within the interval, the sample waits
    pub.publish()
    assert len(stats_store.read(tmp_path, version="v", baseline=base).sample) == 30
    now[0] = 8.0  # the interval has run out
    pub.publish()
    assert len(stats_store.read(tmp_path, version="v", baseline=base).sample) == 60


def test_an_idle_version_is_not_parsed_again_and_a_new_write_is_read(tmp_path: Path) -> None:
    """The monitor's `Directory` reuses the parsed snapshot of files that did not change (same
    inode, size and mtime: writers replace files atomically), and reads them again after a
    write or for another baseline."""
    from mlgitops.adapters import stats_store

    base = _baseline()
    version_dir = tmp_path / "m" / "v"
    rec = recorder.Recorder(base, seed=0)
    pub = recorder.Publisher(rec, version_dir, worker_id="w", name="m", version="v",
                             digest="sha256:" + "0" * 64)
    rows = np.random.default_rng(4).normal(size=(40, len(NAMES)))
    rec.record(schema.Batch(rows=40, matrix=rows, names=NAMES), np.zeros(40, dtype=np.int64))
    pub.publish(with_sample=True)
    directory = stats_store.Directory(tmp_path)
    first = directory.read("m", "v", baseline=base)
    assert first.rows == 40 and len(first.sample) == 40
    assert directory.read("m", "v", baseline=base) is first  # nothing changed: not parsed again
    other = _baseline()
    assert directory.read("m", "v", baseline=other) is not first  # another baseline: read again
    rec.record(schema.Batch(rows=40, matrix=rows, names=NAMES), np.zeros(40, dtype=np.int64))
    pub.publish(with_sample=True)
    again = directory.read("m", "v", baseline=base)
    assert again is not first and again.rows == 80 and len(again.sample) == 80
    assert directory.read("m", "v", baseline=base) is again
    # a directory that does not exist (yet) is empty and never cached
    assert directory.read("m", "gone", baseline=base).rows == 0


def test_a_window_sample_is_the_rows_of_that_window_and_waits_for_unwritten_ones(
        tmp_path: Path) -> None:
    """The monitor's window sample is exactly the rows scored between two reads (not the
    version's reservoir): rows before the window are left out; rows the sample file does not
    hold yet are ``pending`` until a later read (``rows_from``) has them; more rows than
    ``size`` are a uniform sample of the window's rows."""
    from mlgitops.adapters import stats_store

    base = _baseline()
    now = [100.0]
    rec = recorder.Recorder(base, seed=0, recent=500)
    pub = recorder.Publisher(rec, tmp_path, worker_id="w", name="m", version="v",
                             digest="sha256:" + "0" * 64, sample_interval=5.0,
                             clock=lambda: now[0])

    def send(first: int, n: int) -> None:  # rows numbered first..first+n-1 in column f0
        rows = np.zeros((n, len(NAMES)))
        rows[:, 0] = np.arange(first, first + n)
        rec.record(schema.Batch(rows=n, matrix=rows, names=NAMES), np.zeros(n, dtype=np.int64))

    send(0, 120)
    pub.publish()
    cursor = stats_store.read(tmp_path, version="v", baseline=base)  # a window closed here
    send(120, 80)
    pub.publish()  # within the sample interval: the counts are written, the rows are not
    current = stats_store.read(tmp_path, version="v", baseline=base)
    got = stats_store.window_sample(current, cursor, version="v")
    assert (got.rows, got.available, got.pending) == (80, 0, 80)
    send(200, 30)  # the next window's rows
    now[0] += 5.0
    pub.publish()
    later = stats_store.read(tmp_path, version="v", baseline=base)
    got = stats_store.window_sample(current, cursor, version="v", rows_from=later)
    assert (got.rows, got.available, got.pending) == (80, 80, 0)
    assert got.frame["f0"].tolist() == list(range(120, 200))
    assert "prediction" in got.frame.columns
    first = stats_store.window_sample(cursor, None, version="v", rows_from=later)
    assert first.frame["f0"].tolist() == list(range(120))
    small = stats_store.window_sample(current, cursor, version="v", rows_from=later, size=20)
    assert len(small.frame) == 20 and set(small.frame["f0"]) <= set(range(120, 200))
