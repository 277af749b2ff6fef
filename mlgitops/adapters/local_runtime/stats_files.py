"""The live statistics of this machine's servers, as the monitor reads them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mlgitops.adapters import stats_store
from mlgitops.adapters.local_runtime.processes import pid_alive

if TYPE_CHECKING:
    from mlgitops.adapters.local_runtime.runtime import LocalRuntime


class StatsFiles(stats_store.Directory):
    """Live statistics of this machine's servers: the stats store files their workers write.

    A version serves elsewhere while a process that wrote its statistics still runs (this
    process, which may read and write files in tests, does not count).
    """

    def __init__(self, root: Path, *, runtime: LocalRuntime | None = None) -> None:
        super().__init__(root)
        #: knows which versions its shared hosts still serve (a host outlives its models)
        self.runtime = runtime

    def serves_elsewhere(self, name: str, version: str) -> bool:
        snap = self.read(name, version)
        for w in snap.workers.values():
            if w.pid == os.getpid() or not pid_alive(w.pid):
                continue
            hosted = (None if self.runtime is None
                      else self.runtime.hosted_here(w.pid, name=name, version=version))
            if hosted is None or hosted:
                return True
        return False
