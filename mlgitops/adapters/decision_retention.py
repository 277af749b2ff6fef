"""Retention of the decision log: decisions older than an age, or past a count, leave it.

The count spares the decisions a commit links (`decision_index.linked`: a revert's page is in
its commit message) until they age out. Whole segments go (deleted, or written again without
the dropped lines); the index follows (`decision_index.sync`). The caller removes the pages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlgitops.adapters import decision_index
from mlgitops.adapters import decision_segments as segments


@dataclass(frozen=True)
class Pruned:
    dropped: list[tuple[str, str]]
    """``(model, id)`` of the decisions no longer in the log."""
    deleted: int
    """Segment files deleted."""
    rewritten: int
    """Segment files written again without the dropped lines."""


def prune(root: Path, *, keep: int | None, keep_seconds: float | None, now: float,
          rotate: Callable[[], None]) -> Pruned:
    """Drop the decisions older than ``keep_seconds`` and, past the newest ``keep``, those no
    commit links (`linked`: a revert stays until it ages out). Whole segments are deleted or
    written again; ``rotate`` (the writer's, under its lock) first closes the appended segment
    when it holds something to drop. Unavailable without an index."""
    def plan(con: sqlite3.Connection) -> tuple[dict[str, tuple[str, int]], int | None]:
        drop: dict[str, tuple[str, int]] = {}
        if keep_seconds is not None:
            for ident, model, seg in con.execute(
                    "SELECT id, model, seg FROM decisions WHERE at < ?", (now - keep_seconds,)):
                drop[ident] = (model, seg)
        if keep is not None:
            for ident, model, seg in con.execute(
                    "SELECT id, model, seg FROM decisions WHERE linked = 0 "
                    "ORDER BY at DESC, seq DESC LIMIT -1 OFFSET ?", (keep,)):
                drop[ident] = (model, seg)
        row = con.execute("SELECT seg FROM segments WHERE ordinal = ?",
                          (segments.ACTIVE_ORDINAL,)).fetchone()
        return drop, (None if row is None else int(row[0]))

    drop, active = decision_index.using(root, plan)
    if not drop:
        return Pruned([], 0, 0)
    if active is not None and any(seg == active for _, seg in drop.values()):
        rotate()

    def layout(con: sqlite3.Connection) -> dict[int, tuple[str, int]]:
        return {int(seg): (str(name), int(n)) for seg, name, n in con.execute(
            "SELECT s.seg, s.name, COUNT(d.seq) FROM segments s "
            "LEFT JOIN decisions d ON d.seg = s.seg GROUP BY s.seg")}

    files = decision_index.using(root, layout)
    by_seg: dict[int, set[str]] = {}
    for ident, (_, seg) in drop.items():
        by_seg.setdefault(seg, set()).add(ident)
    deleted = rewritten = 0
    dropped: list[tuple[str, str]] = []
    for seg, ids in by_seg.items():
        if seg not in files or files[seg][0] == segments.ACTIVE:
            continue  # appended to again meanwhile: the next prune
        dropped += [(drop[i][0], i) for i in ids]
        path = root / files[seg][0]
        if len(ids) >= files[seg][1]:
            path.unlink(missing_ok=True)
            deleted += 1
        else:
            segments.rewrite(path, ids)
            rewritten += 1
    decision_index.sync(root)
    return Pruned(sorted(dropped), deleted, rewritten)
