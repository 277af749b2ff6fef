"""Live statistics of inference workers on disk: the file format and the monitor's reader.

Each worker process of a server owns two files in the stats directory, each rewritten
atomically (temporary file + ``os.replace``) with its *cumulative* state:

``worker-<worker_id>.json`` (small; the server rewrites it every ~0.5 s while traffic flows)::

    {"format": 1, "workerId": "...", "pid": 123, "name": "...", "version": "<commit>",
     "digest": "sha256:...", "updatedAt": <unix seconds>, "live": <LiveStats.to_dict()>}

``sample-<worker_id>.json`` (the bounded reservoir: a uniform sample of the rows the worker
scored, for human-readable reports; rewritten less often, and on exit)::

    {"format": 1, "workerId": "...", "version": "<commit>", "updatedAt": ...,
     "rows": n, "seen": N, "columns": {"<col>": [...], ..., "prediction": [...]},
     "recent": {"columns": {...}}}

``recent`` holds the worker's last rows in order (at most `RECENT_ROWS`; the last one is row
``seen - 1`` of its stream): `window_sample` cuts a closed window's own rows out of it.

Counters only grow, so the monitor keeps an earlier `Snapshot` as a cursor and `window`
subtracts it: the rows scored since then, summed over workers (a worker that appeared since
counts from zero; a worker's file stays after it exits, with its final counts).

May NOT: import the server or the controller; a reader never writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from mlgitops import errors
from mlgitops.core import stats

FORMAT = 1
PREFIX = "worker-"
SAMPLE_PREFIX = "sample-"
SUFFIX = ".json"
DEFAULT_SAMPLE_SIZE = 2000
RECENT_ROWS = 5000
"""The most recent rows a worker keeps in order (a window's sample is cut out of them)."""
WINDOW_SAMPLE_ROWS = 5000
"""At most this many rows of a closed window are sampled (uniformly) for its reports."""


@dataclass(frozen=True)
class WorkerStats:
    """One worker's cumulative statistics as last published."""

    worker_id: str
    version: str
    digest: str
    pid: int
    updated_at: float
    live: stats.LiveStats
    sample: pd.DataFrame = field(repr=False)
    seen: int = 0
    """Rows of the worker's stream the sample file covers (its recent rows end there)."""
    recent: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    """The worker's last rows in order, the last one row ``seen - 1``."""


@dataclass(frozen=True)
class Snapshot:
    """Everything the stats directory held at one read."""

    workers: Mapping[str, WorkerStats]
    sample: pd.DataFrame = field(repr=False)
    versions: frozenset[str]
    read_at: float = 0.0

    @property
    def stats(self) -> dict[str, stats.LiveStats]:
        """Cumulative live statistics keyed by worker id."""
        return {wid: w.live for wid, w in self.workers.items()}

    @property
    def rows(self) -> int:
        """Rows scored by all workers (cumulative)."""
        return sum(w.live.rows for w in self.workers.values())


def worker_file(stats_dir: Path, worker_id: str) -> Path:
    return stats_dir / f"{PREFIX}{worker_id}{SUFFIX}"


def sample_file(stats_dir: Path, worker_id: str) -> Path:
    return stats_dir / f"{SAMPLE_PREFIX}{worker_id}{SUFFIX}"


def write_worker(
    stats_dir: Path,
    *,
    worker_id: str,
    version: str,
    digest: str,
    live: stats.LiveStats,
    sample_frame: pd.DataFrame | None,
    seen: int | None = None,
    name: str = "",
    pid: int | None = None,
    recent_frame: pd.DataFrame | None = None,
) -> Path:
    """Atomically replace the worker's statistics (and its sample, when given); the path.

    ``sample_frame`` None leaves the sample file as it is (samples are written less often).
    """
    now = time.time()
    if sample_frame is not None:
        sample_doc = {
            "format": FORMAT,
            "workerId": worker_id,
            "version": version,
            "updatedAt": now,
            "rows": len(sample_frame),
            "seen": live.rows if seen is None else seen,
            "columns": {
                str(c): _jsonable(sample_frame[c].to_numpy()) for c in sample_frame.columns
            },
        }
        if recent_frame is not None:
            sample_doc["recent"] = {"columns": {
                str(c): _jsonable(recent_frame[c].to_numpy()) for c in recent_frame.columns}}
        _replace(sample_file(stats_dir, worker_id), sample_doc)
    doc = {
        "format": FORMAT,
        "workerId": worker_id,
        "pid": os.getpid() if pid is None else pid,
        "name": name,
        "version": version,
        "digest": digest,
        "updatedAt": now,
        "live": live.to_dict(),
    }
    target = worker_file(stats_dir, worker_id)
    _replace(target, doc)
    return target


def _replace(target: Path, doc: dict[str, Any]) -> None:
    stats_dir = target.parent
    tmp = stats_dir / f".{target.name}.{os.getpid()}.tmp"
    try:
        stats_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise errors.RuntimeFailure(
            f"cannot write live statistics to {target} ({exc}); check the stats directory"
        ) from exc


def _jsonable(values: np.ndarray[Any, Any]) -> list[Any]:
    if values.dtype.kind in "fiub":
        out: list[Any] = values.tolist()
        return out
    return [
        v if v is None or isinstance(v, (str, int, float, bool)) else str(v)
        for v in values.tolist()
    ]


def read(
    stats_dir: Path,
    *,
    version: str | None = None,
    baseline: stats.Baseline | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> Snapshot:
    """Read every worker's file (only ``version``'s when given) and merge the samples.

    The merged sample takes from each worker in proportion to the rows it scored, so it stays
    a uniform sample of all traffic, at most ``sample_size`` rows. Files being replaced or
    unreadable are skipped (the next read sees them).
    """
    workers: dict[str, WorkerStats] = {}
    versions: set[str] = set()
    try:
        entries = sorted(stats_dir.iterdir())
    except FileNotFoundError:
        entries = []
    except OSError as exc:
        raise errors.RuntimeFailure(f"cannot list the stats directory {stats_dir} ({exc})") from exc
    for path in entries:
        if not (path.name.startswith(PREFIX) and path.name.endswith(SUFFIX)):
            continue
        doc = _load(path)
        if doc is None:
            continue
        worker_version = str(doc.get("version", ""))
        versions.add(worker_version)
        if version is not None and worker_version != version:
            continue
        worker = _read_worker(path, doc, baseline=baseline)
        if worker is not None:
            workers[worker.worker_id] = worker
    return Snapshot(
        workers=workers,
        sample=_merge_samples(list(workers.values()), sample_size),
        versions=frozenset(versions),
        read_at=time.time(),
    )


def _load(path: Path) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None
    return doc


def _read_worker(
    path: Path, doc: dict[str, Any], *, baseline: stats.Baseline | None
) -> WorkerStats | None:
    try:
        worker_id = str(doc["workerId"])
    except (KeyError, TypeError):
        return None
    return _worker(doc, _read_sample(sample_file(path.parent, worker_id)), baseline=baseline)


def _worker(doc: dict[str, Any], sampled: tuple[pd.DataFrame, int | None, pd.DataFrame], *,
            baseline: stats.Baseline | None, key: str | None = None) -> WorkerStats | None:
    try:
        worker_id = key or str(doc["workerId"])
        live = stats.LiveStats.from_dict(doc["live"], baseline=baseline)
        sample, seen, recent = sampled
        return WorkerStats(
            worker_id=worker_id,
            version=str(doc.get("version", "")),
            digest=str(doc.get("digest", "")),
            pid=int(doc.get("pid", 0)),
            updated_at=float(doc.get("updatedAt", 0.0)),
            live=live,
            sample=sample,
            seen=seen if seen is not None else live.rows,
            recent=recent,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _read_sample(path: Path) -> tuple[pd.DataFrame, int | None, pd.DataFrame]:
    try:
        return _sample(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return pd.DataFrame(), None, pd.DataFrame()


def _sample(doc: Any) -> tuple[pd.DataFrame, int | None, pd.DataFrame]:
    try:
        columns = doc.get("columns") or {}
        frame = pd.DataFrame({str(k): v for k, v in columns.items()})
        recent_doc = doc.get("recent")
        recent_columns = (recent_doc.get("columns") or {}) if isinstance(recent_doc, dict) else {}
        recent = pd.DataFrame({str(k): v for k, v in recent_columns.items()})
        return frame, int(doc.get("seen", len(frame))), recent
    except (AttributeError, TypeError, ValueError):
        return pd.DataFrame(), None, pd.DataFrame()


# over HTTP: a server's stats route exports its directory; a reader merges replicas -------------

def export(stats_dir: Path) -> dict[str, Any]:
    """Every worker's published document and sample in ``stats_dir``, as one JSON document
    (what a server's ``GET /v2/models/{name}/stats`` answers)."""
    workers = []
    try:
        entries = sorted(stats_dir.iterdir())
    except OSError:
        entries = []
    for path in entries:
        if not (path.name.startswith(PREFIX) and path.name.endswith(SUFFIX)):
            continue
        doc = _load(path)
        if doc is None or "workerId" not in doc:
            continue
        try:
            sample = orjson.loads(sample_file(stats_dir, str(doc["workerId"])).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            sample = None
        workers.append({"worker": doc, "sample": sample})
    return {"format": FORMAT, "workers": workers}


def from_exports(
    exports: Mapping[str, Any],
    *,
    version: str,
    baseline: stats.Baseline | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> Snapshot:
    """One `Snapshot` of several servers' exports (replica name -> `export` document): their
    workers keyed ``<replica>/<worker id>``, so `window` subtracts each replica's own counters."""
    workers: dict[str, WorkerStats] = {}
    versions: set[str] = set()
    for replica, doc in sorted(exports.items()):
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            continue
        for item in doc.get("workers") or ():
            wdoc = item.get("worker") if isinstance(item, dict) else None
            if not isinstance(wdoc, dict):
                continue
            worker_version = str(wdoc.get("version", ""))
            versions.add(worker_version)
            if worker_version != version:
                continue
            key = f"{replica}/{wdoc.get('workerId')}"
            sampled = (_sample(item["sample"]) if item.get("sample")
                       else (pd.DataFrame(), None, pd.DataFrame()))
            worker = _worker(wdoc, sampled, baseline=baseline, key=key)
            if worker is not None:
                workers[key] = worker
    return Snapshot(workers=workers, sample=_merge_samples(list(workers.values()), sample_size),
                    versions=frozenset(versions), read_at=time.time())


def _merge_samples(workers: list[WorkerStats], sample_size: int) -> pd.DataFrame:
    frames = [w for w in workers if len(w.sample)]
    if not frames:
        return pd.DataFrame()
    total = sum(max(w.seen, len(w.sample)) for w in frames)
    rng = np.random.default_rng(0)
    parts = []
    for w in frames:
        weight = max(w.seen, len(w.sample)) / total if total else 0.0
        quota = min(len(w.sample), round(sample_size * weight))
        if quota <= 0:
            continue
        if quota < len(w.sample):
            idx = np.sort(rng.choice(len(w.sample), size=quota, replace=False))
            parts.append(w.sample.iloc[idx])
        else:
            parts.append(w.sample)
    if not parts:
        return pd.DataFrame(columns=frames[0].sample.columns)
    return pd.concat(parts, ignore_index=True)


def window(
    current: Snapshot,
    since: Snapshot | None,
    *,
    version: str | None = None,
    baseline: stats.Baseline | None = None,
) -> stats.LiveStats:
    """Rows scored between ``since`` and ``current``, summed over workers.

    A worker absent from ``since`` counts from zero. Only ``version``'s workers are summed
    when given. With no worker, returns empty statistics laid on ``baseline`` when given,
    else raises `errors.Waiting`.
    """
    total: stats.LiveStats | None = None
    for wid, worker in sorted(current.workers.items()):
        if version is not None and worker.version != version:
            continue
        part = worker.live
        before = since.workers.get(wid) if since is not None else None
        if before is not None:
            try:
                part = worker.live.since(before.live)
            except ValueError:  # a different stream under the same id: count it all
                part = worker.live
        try:
            total = part if total is None else total.merge(part)
        except ValueError as exc:
            raise errors.BaselineError(
                f"worker {wid} recorded statistics on a different baseline than the others "
                f"({exc}); read one version at a time (version=...)"
            ) from exc
    if total is None:
        if baseline is not None:
            return stats.LiveStats.empty(baseline)
        raise errors.Waiting("no server worker has published live statistics yet", delay=1.0)
    return total


@dataclass(frozen=True)
class WindowSample:
    """The sampled rows of one closed window, and how much of the window they cover."""

    frame: pd.DataFrame = field(repr=False)
    rows: int
    """Rows the window had (what its statistics counted)."""
    available: int
    """Rows of the window the workers' recent rows held (the frame is these, or a uniform
    sample of at most ``size`` of them)."""
    pending: int
    """Rows of the window the sample files do not cover yet (written within the publisher's
    sample interval): read again for a complete sample."""


def window_sample(current: Snapshot, since: Snapshot | None, *, version: str | None = None,
                  rows_from: Snapshot | None = None, size: int = WINDOW_SAMPLE_ROWS,
                  seed: int = 0) -> WindowSample:
    """The rows scored between ``since`` and ``current`` (the rows `window` counts), from each
    worker's recent rows (as read in ``rows_from``, a later read, when given); a uniform sample
    of ``size`` of them when there are more.

    Per worker the window is rows ``[since's count, current's count)`` of its stream (from 0
    when absent from ``since`` or restarted). Rows older than a worker's `RECENT_ROWS` are
    gone (a window larger than that keeps its newest rows); rows newer than its sample file
    are ``pending``.
    """
    parts: list[pd.DataFrame] = []
    rows = available = pending = 0
    for wid, worker in sorted(current.workers.items()):
        if version is not None and worker.version != version:
            continue
        end = worker.live.rows
        before = since.workers.get(wid) if since is not None else None
        start = before.live.rows if before is not None and before.live.rows <= end else 0
        rows += end - start
        held = (rows_from.workers.get(wid) if rows_from is not None else worker) or worker
        covered = held.seen
        if covered < start:  # the sample file is older than the window
            pending += end - start
            continue
        first = covered - len(held.recent)
        lo, hi = max(start, first), min(end, covered)
        pending += max(0, end - max(covered, start))
        if hi > lo:
            parts.append(held.recent.iloc[lo - first:hi - first])
            available += hi - lo
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(frame) > size:
        idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=size, replace=False))
        frame = frame.iloc[idx].reset_index(drop=True)
    return WindowSample(frame, rows, available, pending)


def signature(stats_dir: Path) -> tuple[tuple[str, int, int, int], ...] | None:
    """Name, inode, size and mtime of every file in ``stats_dir`` (None when it cannot be listed).

    Writers replace files atomically (a new inode each time) and at most every half second
    (a new mtime), so an equal signature means the same contents.
    """
    try:
        with os.scandir(stats_dir) as it:
            found = []
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                found.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    return tuple(sorted(found))


def etag(stats_dir: Path) -> str | None:
    """An HTTP entity tag of what `export` would answer for ``stats_dir`` (from its `signature`:
    a remote monitor asks with ``If-None-Match`` and an idle server answers 304)."""
    sig = signature(stats_dir)
    if sig is None:
        return None
    return '"' + hashlib.sha256(repr(sig).encode()).hexdigest()[:24] + '"'


class SnapshotCache:
    """Parsed snapshots by (model, version), reused while what they were read from is unchanged
    (an equal ``source`` key) and for the same baseline object; the least recently used go
    first. The monitor reads every model every second, and most of a fleet is idle.
    Thread-safe: the monitor's loop and its report thread both read."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple[Hashable, stats.Baseline | None,
                                                        Snapshot]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, version: str, *, source: Hashable,
            baseline: stats.Baseline | None) -> Snapshot | None:
        with self._lock:
            hit = self._items.get((name, version))
            if hit is None or hit[0] != source or hit[1] is not baseline:
                return None
            self._items.move_to_end((name, version))
            return hit[2]

    def put(self, name: str, version: str, snap: Snapshot, *, source: Hashable,
            baseline: stats.Baseline | None) -> None:
        with self._lock:
            self._items[(name, version)] = (source, baseline, snap)
            self._items.move_to_end((name, version))
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Directory:
    """The live statistics of every served version under ``root`` (``<root>/<name>/<version>/``).

    A ``LiveStatsSource`` of the controller: `read` and `window` above, per model and version.
    A version whose files did not change since the last read (same `signature`) is not parsed
    again (`SnapshotCache`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache = SnapshotCache()

    def path(self, name: str, version: str) -> Path:
        return self.root / name / version

    def read(self, name: str, version: str, *,
             baseline: stats.Baseline | None = None) -> Snapshot:
        path = self.path(name, version)
        sig = signature(path)  # before the read: a write meanwhile only costs a parse later
        if sig is None:
            return read(path, version=version, baseline=baseline)
        snap = self._cache.get(name, version, source=sig, baseline=baseline)
        if snap is None:
            snap = read(path, version=version, baseline=baseline)
            self._cache.put(name, version, snap, source=sig, baseline=baseline)
        return snap

    def window(self, current: Snapshot, since: Snapshot | None, *, version: str,
               baseline: stats.Baseline) -> stats.LiveStats:
        return window(current, since, version=version, baseline=baseline)

    def serves_elsewhere(self, name: str, version: str) -> bool:
        """False: the files alone cannot tell whether their writer still runs (a runtime that
        knows its processes can, e.g. ``local_runtime.StatsFiles``)."""
        return False
