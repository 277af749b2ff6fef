"""`Directory`: the controller's ``LiveStatsSource`` over ``<root>/<name>/<version>/``, with a
cache of parsed snapshots (`SnapshotCache`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

from mlgitops.adapters.stats_store.windows import window
from mlgitops.adapters.stats_store.worker_files import Snapshot, read, signature
from mlgitops.core import stats


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
