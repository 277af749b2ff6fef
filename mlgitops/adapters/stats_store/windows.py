"""Closed windows: the counters since a cursor (`window`) and the window's own rows
(`window_sample`), summed over workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas loads where a frame is built, not on a server's start
    import pandas as pd

from mlgitops import errors
from mlgitops.adapters.stats_store.worker_files import (
    WINDOW_SAMPLE_ROWS,
    Snapshot,
)
from mlgitops.core import stats


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
    import pandas as pd

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
