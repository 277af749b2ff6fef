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

Modules: `worker_files` (writing and reading the files), `windows` (a closed window's counters
and rows), `replicas` (the HTTP export and merging replicas), `directory` (the controller's
source over a stats root). Import the names below from here.
"""

from mlgitops.adapters.stats_store.directory import Directory, SnapshotCache
from mlgitops.adapters.stats_store.replicas import export, from_exports
from mlgitops.adapters.stats_store.windows import WindowSample, window, window_sample
from mlgitops.adapters.stats_store.worker_files import (
    DEFAULT_SAMPLE_SIZE,
    FORMAT,
    PREFIX,
    RECENT_ROWS,
    SAMPLE_PREFIX,
    SUFFIX,
    WINDOW_SAMPLE_ROWS,
    Snapshot,
    WorkerStats,
    etag,
    read,
    sample_file,
    signature,
    worker_file,
    write_worker,
)

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "FORMAT",
    "PREFIX",
    "RECENT_ROWS",
    "SAMPLE_PREFIX",
    "SUFFIX",
    "WINDOW_SAMPLE_ROWS",
    "Directory",
    "Snapshot",
    "SnapshotCache",
    "WindowSample",
    "WorkerStats",
    "etag",
    "export",
    "from_exports",
    "read",
    "sample_file",
    "signature",
    "window",
    "window_sample",
    "worker_file",
    "write_worker",
]
