"""Over HTTP: a server's stats route exports its directory; a reader merges replicas."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from mlgitops.adapters.stats_store.worker_files import (
    DEFAULT_SAMPLE_SIZE,
    FORMAT,
    PREFIX,
    SUFFIX,
    Snapshot,
    WorkerStats,
    empty_frame,
    load_doc,
    merge_samples,
    parse_sample,
    parse_worker,
    sample_file,
)
from mlgitops.core import stats


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
        doc = load_doc(path)
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
            sampled = (parse_sample(item["sample"]) if item.get("sample")
                       else (empty_frame(), None, empty_frame()))
            worker = parse_worker(wdoc, sampled, baseline=baseline, key=key)
            if worker is not None:
                workers[key] = worker
    return Snapshot(workers=workers, sample=merge_samples(list(workers.values()), sample_size),
                    versions=frozenset(versions), read_at=time.time())
