"""The worker files: what each worker process writes, and reading a stats directory back.

See the package docstring for the format. Every file is rewritten atomically (temporary
file + ``os.replace``); a reader never writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:  # pandas loads where a frame is built, not on a server's start
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
    recent: pd.DataFrame = field(default_factory=lambda: empty_frame(), repr=False)
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


def empty_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame()


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
        doc = load_doc(path)
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
        sample=merge_samples(list(workers.values()), sample_size),
        versions=frozenset(versions),
        read_at=time.time(),
    )


def load_doc(path: Path) -> dict[str, Any] | None:
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
    return parse_worker(doc, _read_sample(sample_file(path.parent, worker_id)), baseline=baseline)


def parse_worker(doc: dict[str, Any], sampled: tuple[pd.DataFrame, int | None, pd.DataFrame], *,
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
    import pandas as pd

    try:
        return parse_sample(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return pd.DataFrame(), None, pd.DataFrame()


def parse_sample(doc: Any) -> tuple[pd.DataFrame, int | None, pd.DataFrame]:
    import pandas as pd

    try:
        columns = doc.get("columns") or {}
        frame = pd.DataFrame({str(k): v for k, v in columns.items()})
        recent_doc = doc.get("recent")
        recent_columns = (recent_doc.get("columns") or {}) if isinstance(recent_doc, dict) else {}
        recent = pd.DataFrame({str(k): v for k, v in recent_columns.items()})
        return frame, int(doc.get("seen", len(frame))), recent
    except (AttributeError, TypeError, ValueError):
        return pd.DataFrame(), None, pd.DataFrame()


def merge_samples(workers: list[WorkerStats], sample_size: int) -> pd.DataFrame:
    import pandas as pd

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
