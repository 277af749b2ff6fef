"""The prediction log on disk: what a server scored, kept to join labels later.

A worker appends segments (Parquet files) to its version's log directory, ``predictions/``
inside its stats directory: one row per scored row with its ``id`` (stored as the request's
id, row index and row count: `REQUEST`, `ROW`, `ROWS`), ``version``, ``time``
(seconds since the epoch), the input columns (``input.<column>``), the ``prediction`` and, for
classifiers with ``predict_proba``, one ``proba.<class>`` column per class (the class JSON
encoded: ``proba.0``, ``proba."yes"``). A segment's file name carries its worker, sequence
number, row count and newest time, so pruning reads no file: each worker keeps at most
``max_rows`` rows and nothing older than ``max_age_seconds``.

Files are written to a temporary name and renamed: a reader sees whole segments only.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas loads where a frame is built: a server's start does not pay for it
    import pandas as pd

from mlgitops import errors

DIRNAME = "predictions"
#: Stored per row instead of its id (cheaper on the server): the request's id, the row's
#: index in the request and the request's row count; `read` turns them into ``id``.
REQUEST = "request"
#: Segments a worker keeps at most (the oldest go first), whatever their rows.
MAX_SEGMENTS = 2000
ROW = "row"
ROWS = "rows"
INPUT = "input."
PROBA = "proba."
_SEGMENT = re.compile(r"seg-(?P<worker>[A-Za-z0-9_.-]+)-(?P<seq>\d{10})-(?P<rows>\d+)-(?P<newest>\d+)"
                      r"\.parquet")


def directory(stats_dir: Path) -> Path:
    """The prediction log of the version whose statistics are in ``stats_dir``."""
    return stats_dir / DIRNAME


def is_segment(name: str) -> bool:
    """Whether ``name`` is a segment's file name (nothing else may be read by name)."""
    return _SEGMENT.fullmatch(name) is not None


def proba_column(cls: Any) -> str:
    """The column of class ``cls``'s probability."""
    value = cls.item() if hasattr(cls, "item") else cls
    return PROBA + json.dumps(value)


def classes_of(frame: pd.DataFrame) -> list[Any]:
    """The classes of the probability columns of ``frame``, in column order."""
    return [json.loads(c[len(PROBA):]) for c in frame.columns if str(c).startswith(PROBA)]


@dataclass(frozen=True)
class Segment:
    path: Path
    worker: str
    seq: int
    rows: int
    newest: float


def segments(log_dir: Path) -> list[Segment]:
    """The segments in ``log_dir`` (every worker's), oldest first per worker."""
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise errors.RuntimeFailure(f"cannot list the prediction log {log_dir} ({exc})") from exc
    found = []
    for name in names:
        m = _SEGMENT.fullmatch(name)
        if m:
            found.append(Segment(log_dir / name, m["worker"], int(m["seq"]), int(m["rows"]),
                                 int(m["newest"]) / 1000.0))
    return sorted(found, key=lambda s: (s.worker, s.seq))


class Writer:
    """Appends one worker's segments and keeps its log within rows and age."""

    def __init__(self, log_dir: Path, *, worker_id: str, max_rows: int, max_age_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.log_dir = log_dir
        self.worker_id = re.sub(r"[^A-Za-z0-9_.]", "_", worker_id)
        self.max_rows = max_rows
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._seq = 1 + max((s.seq for s in segments(log_dir) if s.worker == self.worker_id),
                            default=0)

    def append(self, rows: pd.DataFrame | Mapping[str, Any]) -> Path | None:
        """Write ``rows`` (a frame, or column name -> array) as the next segment (nothing for
        no rows), then prune. Columns go to Parquet through Arrow directly, uncompressed, with
        dictionaries only for the ids and versions: for random floats compression and
        dictionaries cost CPU on the server and save nothing."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = (pa.table(dict(rows)) if isinstance(rows, Mapping)
                 else pa.Table.from_pandas(rows, preserve_index=False))
        if table.num_rows == 0:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        newest = int(float(table.column("time").to_numpy().max()) * 1000)
        name = f"seg-{self.worker_id}-{self._seq:010d}-{table.num_rows}-{newest}.parquet"
        self._seq += 1
        tmp = self.log_dir / f".{name}.tmp"
        pq.write_table(table, tmp, compression="none",
                       use_dictionary=[c for c in ("id", REQUEST, "version")
                                       if c in table.column_names],
                       write_statistics=False)
        os.replace(tmp, self.log_dir / name)
        self.prune()
        return self.log_dir / name

    def prune(self) -> None:
        """Delete this worker's segments past the age limit, then the oldest over the row cap."""
        own = [s for s in segments(self.log_dir) if s.worker == self.worker_id]
        cutoff = self.clock() - self.max_age_seconds
        keep = []
        for seg in own:
            if seg.newest < cutoff:
                seg.path.unlink(missing_ok=True)
            else:
                keep.append(seg)
        total = sum(s.rows for s in keep)
        count = len(keep)
        for seg in keep[:-1]:  # the newest segment stays, even alone over the row cap
            if total <= self.max_rows and count <= MAX_SEGMENTS:
                break
            seg.path.unlink(missing_ok=True)
            total -= seg.rows
            count -= 1


def read(log_dir: Path, *, since: float | None = None,
         ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Every kept row of ``log_dir`` (rows newer than ``since`` only, or with the given
    ``ids`` only), oldest first; an empty frame when there is none."""
    import pandas as pd

    frames = []
    wanted = None if ids is None else set(ids)
    for seg in segments(log_dir):
        if since is not None and seg.newest < since:
            continue
        try:
            frame = pd.read_parquet(seg.path)
        except FileNotFoundError:
            continue  # pruned under us
        except (OSError, ValueError) as exc:
            raise errors.RuntimeFailure(f"cannot read the prediction log segment {seg.path} "
                                        f"({exc})") from exc
        frame = _with_ids(frame)
        if since is not None:
            frame = frame[frame["time"] >= since]
        if wanted is not None:
            frame = frame[frame["id"].isin(wanted)]
        frames.append(frame)
    if not frames:
        return pd.DataFrame({"id": pd.Series(dtype=str), "version": pd.Series(dtype=str),
                             "time": pd.Series(dtype=float)})
    return pd.concat(frames, ignore_index=True).sort_values("time", kind="stable",
                                                            ignore_index=True)


def _with_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ``id`` column: the request's id for a one-row request, else
    ``<request id>:<row>`` (`server.predictions.row_ids`)."""
    if "id" in frame.columns or REQUEST not in frame.columns:
        return frame
    request = frame[REQUEST].astype(str)
    one = frame[ROWS].to_numpy() == 1
    ids = np.where(one, request.to_numpy(dtype=object),
                   (request + ":" + frame[ROW].astype(str)).to_numpy(dtype=object))
    out = frame.drop(columns=[REQUEST, ROW, ROWS])
    out.insert(0, "id", ids)
    out["version"] = out["version"].astype(str)
    return out


class Directory:
    """The prediction logs of this machine's servers: ``<root>/<model>/<version>/predictions``
    (the stats store's layout), read for the joins with labels."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str, *, since: float | None = None,
             ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Every kept row of model ``name``, all versions, oldest first."""
        import pandas as pd

        try:
            versions = sorted(p for p in (self.root / name).iterdir() if p.is_dir())
        except FileNotFoundError:
            versions = []
        except OSError as exc:
            raise errors.RuntimeFailure(f"cannot list {self.root / name} ({exc})") from exc
        frames = [read(directory(v), since=since, ids=ids) for v in versions]
        frames = [f for f in frames if len(f)]
        if not frames:
            return read(self.root / name / "-none-")
        return pd.concat(frames, ignore_index=True).sort_values("time", kind="stable",
                                                                ignore_index=True)
