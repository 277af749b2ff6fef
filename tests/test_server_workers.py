"""Forked workers, supervision, clean shutdown, standby errors, the CLI, and live statistics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support import servers as support
from support.waits import wait_until

from mlgitops import errors
from mlgitops.adapters import stats_store
from mlgitops.core import stats
from mlgitops.server import recorder, schema

pytestmark = pytest.mark.process


def _baseline(n: int = 500) -> stats.Baseline:
    frame = support.numeric_frame(n)
    return stats.build_baseline(
        {c: frame[c].to_numpy() for c in frame.columns}, predictions=np.zeros(n, dtype=np.int64)
    )


def _batch(frame: pd.DataFrame) -> schema.Batch:
    m = frame.to_numpy(dtype=np.float64)
    return schema.Batch(
        rows=len(frame), columns={c: m[:, j] for j, c in enumerate(frame.columns)}, matrix=m
    )


# ------------------------------------------------------------------------- recorder (unit)
@pytest.mark.fast
def test_reservoir_is_bounded_and_uniform() -> None:
    rec = recorder.Recorder(_baseline(), capacity=200, seed=1, flush_rows=1000)
    total = 0
    for i in range(100):
        frame = support.numeric_frame(97, seed=i)
        frame["x0"] = np.arange(total, total + len(frame), dtype=np.float64)  # row number
        rec.record(_batch(frame), np.ones(len(frame), dtype=np.int64))
        total += len(frame)
    live, sample, seen = rec.snapshot()
    assert seen == total == live.rows
    assert len(sample["x0"]) == 200 and len(sample["prediction"]) == 200
    positions = np.sort(sample["x0"]) / total  # Algorithm R: uniform over all rows seen
    assert 0.35 < positions.mean() < 0.65
    assert (positions < 0.5).sum() > 60 and (positions >= 0.5).sum() > 60
    assert len(set(sample["x0"].tolist())) == 200


@pytest.mark.fast
def test_memory_does_not_grow_with_traffic() -> None:
    rec = recorder.Recorder(_baseline(), capacity=100, flush_rows=512)
    frame = support.numeric_frame(64)
    for _ in range(50):
        rec.record(_batch(frame), np.zeros(64, dtype=np.int64))
    size_a = rec.live.nbytes() + sum(v.nbytes for v in rec._store.values())
    assert rec._queued_rows < 512
    for _ in range(500):
        rec.record(_batch(frame), np.zeros(64, dtype=np.int64))
    rec.flush()
    size_b = rec.live.nbytes() + sum(v.nbytes for v in rec._store.values())
    assert size_a == size_b
    assert rec.live.rows == 550 * 64


# ----------------------------------------------------------------------- stats store (unit)
@pytest.mark.fast
def test_store_round_trip_window_and_sample(tmp_path: Path) -> None:
    base = _baseline()
    a, b = stats.LiveStats.empty(base), stats.LiveStats.empty(base)
    fa, fb = support.numeric_frame(300, seed=1), support.numeric_frame(100, seed=2)
    a.update({c: fa[c].to_numpy() for c in fa}, np.zeros(300, dtype=np.int64))
    stats_store.write_worker(
        tmp_path,
        worker_id="a",
        version="v1",
        digest="d",
        live=a,
        sample_frame=fa.assign(prediction=0),
        seen=300,
    )
    first = stats_store.read(tmp_path)
    assert set(first.workers) == {"a"} and first.rows == 300 and first.versions == {"v1"}
    b.update({c: fb[c].to_numpy() for c in fb}, np.zeros(100, dtype=np.int64))
    a2 = a.copy()
    a2.update({c: fb[c].to_numpy() for c in fb}, np.zeros(100, dtype=np.int64))
    stats_store.write_worker(
        tmp_path, worker_id="a", version="v1", digest="d", live=a2, sample_frame=fa, seen=400
    )
    stats_store.write_worker(
        tmp_path, worker_id="b", version="v1", digest="d", live=b, sample_frame=fb, seen=100
    )
    (tmp_path / "worker-broken.json").write_text("{not json")
    second = stats_store.read(tmp_path, sample_size=100)
    assert set(second.workers) == {"a", "b"}
    win = stats_store.window(second, first)
    assert win.rows == 100 + 100  # a's new rows + all of b (absent before: counts from zero)
    assert stats_store.window(second, None).rows == 500
    assert len(second.sample) == 100  # proportional to rows: 80 from a, 20 from b
    assert not list(tmp_path.glob(".*.tmp"))
    assert stats_store.read(tmp_path, version="v2").workers == {}
    with pytest.raises(errors.Waiting):
        stats_store.window(stats_store.read(tmp_path / "nothing"), None)
    assert stats_store.window(stats_store.read(tmp_path / "nothing"), None, baseline=base).rows == 0


# --------------------------------------------------------------------------- live servers
@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stats")


@pytest.fixture(scope="module")
def two_workers(stats_dir: Path) -> Iterator[support.Server]:
    server = support.start_standby(
        support.numeric_model(), workers=2, stats_dir=str(stats_dir), record_stats=True
    )
    try:
        yield server
    finally:
        server.stop()


def _post_rows(server: support.Server, frame: pd.DataFrame) -> list[Any]:
    out = []
    with server.client() as c:
        for _, row in frame.iterrows():
            r = c.post(
                "/invocations", json={"dataframe_records": [{k: float(v) for k, v in row.items()}]}
            )
            assert r.status_code == 200, r.text
            out.extend(r.json()["predictions"])
    return out


def _wait_rows(
    stats_dir: Path, rows: int, timeout: float = 20.0, sample: int = 0
) -> stats_store.Snapshot:
    """The snapshot once ``rows`` rows (and ``sample`` sample rows, written every ~5 s) show."""
    deadline = time.monotonic() + timeout
    snap = stats_store.read(stats_dir)
    while (snap.rows < rows or len(snap.sample) < sample) and time.monotonic() < deadline:
        time.sleep(0.1)
        snap = stats_store.read(stats_dir)
    return snap


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def test_workers_record_live_statistics(two_workers: support.Server, stats_dir: Path) -> None:
    assert len(two_workers.worker_pids()) == 2
    frame = support.numeric_frame(150, seed=3)
    _post_rows(two_workers, frame)
    snap = _wait_rows(stats_dir, 150, sample=150)
    assert snap.rows == 150
    assert snap.versions == {"c0ffeenumeric"}
    assert all(w.digest == "sha256:test" for w in snap.workers.values())
    assert list(snap.sample.columns) == [*support.NUMERIC, "prediction"]
    assert len(snap.sample) == 150
    window = stats_store.window(snap, None)
    assert window.rows == 150
    assert window.column("x0").count == 150
    prediction = window.prediction()
    assert prediction is not None and prediction.count == 150
    # what recording cost is on /metrics: positive, a small part of the workers' CPU
    with two_workers.client() as c:
        line = next(x for x in c.get("/metrics").text.splitlines()
                    if x.startswith("mlgitops_stats_cpu_seconds_total "))
    spent = float(line.split()[1])
    used = sum(_cpu_seconds(pid) for pid in two_workers.worker_pids())
    assert 0.0 < spent < used, (spent, used)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_dead_worker_is_restarted(two_workers: support.Server) -> None:
    before = two_workers.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    pids = two_workers.worker_pids()
    while (len(pids) != 2 or before[0] in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = two_workers.worker_pids()
    assert len(pids) == 2 and before[0] not in pids
    support.wait_answering(two_workers)
    _post_rows(two_workers, support.numeric_frame(20, seed=4))
    with two_workers.client() as c:
        text = c.get("/metrics").text
    assert "mlgitops_worker_restarts_total 1" in text
    assert "mlgitops_workers 2" in text


def test_sigterm_to_the_group_stops_everything_and_flushes_stats(
    two_workers: support.Server, stats_dir: Path
) -> None:
    rows_before = stats_store.read(stats_dir).rows
    _post_rows(two_workers, support.numeric_frame(10, seed=5))
    pgid = two_workers.proc.pid
    os.killpg(pgid, signal.SIGTERM)
    assert two_workers.proc.wait(timeout=15) == 0
    wait_until(lambda: _group_alive(pgid) == [], timeout=10,
               what="every process of the group gone", detail=lambda: str(_group_alive(pgid)))
    # the final write on exit has every row, including the last ten, and the sample
    final = stats_store.read(stats_dir)
    assert final.rows >= rows_before + 10
    assert len(final.sample) == final.rows  # fewer rows than the reservoir holds


def test_standby_reports_errors_and_exits_2(tmp_path: Path) -> None:
    import socket

    bad_dir = tmp_path / "not-a-model"
    bad_dir.mkdir()
    holder = socket.socket()  # a port in use
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    procs = [support.standby_process(f"err{i}") for i in range(4)]
    lines = [
        json.dumps(support.spec_for(support.numeric_model(), model_dir=str(bad_dir))).encode()
        + b"\n",
        b'{"name": "x"}\n',
        None,  # stdin closes before a spec
        json.dumps(support.spec_for(support.numeric_model(), port=busy)).encode() + b"\n",
    ]
    try:
        for (p, _), line in zip(procs, lines, strict=True):
            assert p.stdin is not None
            if line is not None:
                p.stdin.write(line)
                p.stdin.flush()
            else:
                p.stdin.close()
        events = [support._read_line(p, 60) for p, _ in procs]
        codes = [p.wait(timeout=30) for p, _ in procs]
    finally:
        holder.close()
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
    assert [e["event"] for e in events] == ["error"] * 4, events
    assert "MLmodel" in events[0]["message"]
    assert "model_dir" in events[1]["message"]
    assert "stdin closed" in events[2]["message"]
    assert str(busy) in events[3]["message"]
    assert codes == [2, 2, 2, 2]


def _repo_with_manifest(tmp_path: Path, trusted: list[str]) -> Path:
    import shutil

    model = support.numeric_model()
    repo = tmp_path / "repo"
    shutil.copytree(model.path, repo / "models" / "credit")
    (repo / "manifests").mkdir()
    (repo / "manifests" / "credit.yaml").write_text(
        "apiVersion: mlgitops.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: credit}\n"
        f"spec:\n  model: {{path: models/credit, trustedTypes: {json.dumps(trusted)}}}\n"
    )
    return repo


def test_cli_reads_trusted_types_from_the_manifest(tmp_path: Path) -> None:
    repo = _repo_with_manifest(tmp_path, list(support.numeric_model().trusted))
    stats = tmp_path / "stats"
    server = support.start_cli(
        [
            str(repo / "models" / "credit"),
            "--port",
            "0",
            "--workers",
            "auto",
            "--version",
            "abc",
            "--no-stats",
            "--stats-dir",
            str(stats),
        ],
        name="credit",
    )
    try:
        with server.client() as c:
            meta = c.get("/v2/models/credit").json()
            assert meta["version"] == "abc"
            r = c.post("/invocations", json={"instances": [[0.1] * 6]})
            assert r.status_code == 200, r.text
            assert f"mlgitops_workers {os.cpu_count()}" in c.get("/metrics").text
        assert len(server.worker_pids()) == os.cpu_count()
        os.kill(server.proc.pid, signal.SIGTERM)  # the supervisor alone: it stops its workers
        assert server.proc.wait(timeout=15) == 0
        pgid = server.proc.pid
        wait_until(lambda: _group_alive(pgid) == [], timeout=10,
                   what="every process of the group gone", detail=lambda: str(_group_alive(pgid)))
        assert not stats.exists() or not any(stats.iterdir())  # --no-stats
    finally:
        server.stop()


def test_cli_without_trust_or_manifest_says_to_pass_trust(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            support.python(),
            "-m",
            "mlgitops.server",
            str(support.numeric_model().path),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=support.env(),
        check=False,
    )
    assert proc.returncode == 2
    assert "--trust" in proc.stderr


@pytest.mark.fast
def test_serve_command_is_a_click_command() -> None:
    import click

    from mlgitops.server.cli import parse_size, parse_workers, serve

    assert isinstance(serve, click.Command) and serve.name == "serve"
    assert (
        parse_size("10MB") == 10_000_000 and parse_size("1KiB") == 1024 and parse_size("512") == 512
    )
    assert parse_workers("auto") == 0 and parse_workers("3") == 3
    with pytest.raises(ValueError):
        parse_workers("0")


@pytest.mark.fast
def test_spec_line_round_trips() -> None:
    from mlgitops.server import standby

    spec = standby.ServeSpec(
        model_dir=Path("/m"),
        name="m",
        version="v",
        trusted_types=("a.B",),
        stats_dir=Path("/s"),
        port=8080,
        workers=2,
    )
    again = standby.ServeSpec.from_json(json.loads(standby.spec_line(spec)))
    assert again == spec
    with pytest.raises(ValueError, match="port"):
        standby.ServeSpec.from_json({**spec.to_json(), "port": 70000})
    with pytest.raises(ValueError, match="workers"):
        standby.ServeSpec.from_json({**spec.to_json(), "workers": "many"})
    assert (
        standby.ServeSpec.from_json({**spec.to_json(), "workers": "auto"}).worker_count
        == os.cpu_count()
    )


def test_the_stats_route_exports_every_worker_for_a_remote_monitor(tmp_path: Path) -> None:
    """GET /v2/models/{name}/stats exports both workers' counters; two replicas' exports merge
    into one snapshot whose window counts each replica's rows (what the operator reads)."""
    from mlgitops.adapters import stats_store

    two_workers = support.start_standby(
        support.numeric_model(), workers=2, stats_dir=str(tmp_path), record_stats=True)
    try:
        _check_stats_route(two_workers, stats_store)
    finally:
        two_workers.stop()


def _check_stats_route(two_workers: support.Server, stats_store: Any) -> None:
    _post_rows(two_workers, support.numeric_frame(40, seed=5))

    def exported() -> dict[str, Any]:
        with two_workers.client() as c:
            r = c.get(f"/v2/models/{two_workers.name}/stats")
        assert r.status_code == 200, r.text
        return dict(r.json())

    deadline = time.monotonic() + 20
    doc = exported()
    while sum(w["worker"]["live"]["rows"] for w in doc["workers"]) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
        doc = exported()
    version = doc["workers"][0]["worker"]["version"]
    one = stats_store.window(stats_store.from_exports({"pod-a": doc}, version=version), None)
    two = stats_store.window(stats_store.from_exports({"pod-a": doc, "pod-b": doc}, version=version), None)
    assert one.rows >= 40 and two.rows == 2 * one.rows
    # an unchanged directory answers its ETag with 304 and no body; a new write changes it
    with two_workers.client() as c:
        first = c.get(f"/v2/models/{two_workers.name}/stats")
        tag = first.headers["etag"]
        again = c.get(f"/v2/models/{two_workers.name}/stats", headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    _post_rows(two_workers, support.numeric_frame(10, seed=6))
    deadline = time.monotonic() + 20
    with two_workers.client() as c:
        changed = c.get(f"/v2/models/{two_workers.name}/stats", headers={"If-None-Match": tag})
        while changed.status_code == 304 and time.monotonic() < deadline:
            time.sleep(0.2)
            changed = c.get(f"/v2/models/{two_workers.name}/stats", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert sum(w["worker"]["live"]["rows"] for w in changed.json()["workers"]) >= 50
    with two_workers.client() as c:
        assert c.get("/v2/models/nope/stats").status_code == 404
