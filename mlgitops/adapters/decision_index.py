"""The decision log's index: SQLite beside the log, so a page of decisions costs a page.

The log (`decision_segments`) is the truth; ``<reports>/decisions.index.sqlite`` is derived from
it and holds, per decision id, where its latest line is (segment, offset, length) and what pages
filter and sort on (model, kind, time, version), plus a count per model and kind. Per segment
file (known by device and inode, so a rename is followed) it records how many bytes it indexed.

`sync` brings the index in step with the log, in one transaction: it indexes the lines past each
segment's mark (after a crash between the log write and the index write, the next reader or
writer indexes that line, once: the id is the key and a line never moves the mark twice),
follows a rotated segment, drops the rows of a deleted one and indexes a rewritten one again.
An index that is missing, of another format or unreadable is rebuilt from the log; when none
can be written (a read-only directory) the whole log is read as before (`decision_segments.read_all`).

Pages are newest first (time, then first appearance), by offset (``page``) or after a cursor
(``before``: the last row of the previous page), and read only their own lines.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlgitops.adapters import decision_index_db as db
from mlgitops.adapters import decision_segments as segments
from mlgitops.adapters.decision_index_db import INDEX_FILE as INDEX_FILE
from mlgitops.adapters.decision_index_db import UPSERT
from mlgitops.adapters.decision_index_db import Unavailable as Unavailable
from mlgitops.core import decisions
from mlgitops.core.decisions import Kind

SHIFT = 1 << 32
"""A line's place in the log: ``ordinal * SHIFT + offset`` (a later line supersedes)."""
ACTED = frozenset(Kind) - {Kind.PASS}
"""Every kind but the quiet window (what ``/reports/`` lists by default)."""

@dataclass(frozen=True)
class Filter:
    """Which decisions: of ``model`` (None: every model), of ``kinds`` (None: every kind)."""

    model: str | None = None
    kinds: frozenset[Kind] | None = None


@dataclass(frozen=True)
class Page:
    decisions: list[decisions.Decision]
    """Newest first."""
    total: int
    """How many decisions the filter matches in all."""
    next: str | None
    """The cursor of the next (older) page; None on the last page."""


def linked(d: decisions.Decision) -> bool:
    """Whether a commit links this decision's page (a revert): retention keeps it until it
    ages out, whatever the count."""
    return d.kind is Kind.REVERT or d.commit is not None


def cursor(d: decisions.Decision, seq: int) -> str:
    return f"{d.at!r}_{seq}"


def parse_cursor(text: str) -> tuple[float, int]:
    """``<time>_<n>`` as `Page.next` gives it; ValueError with a sentence otherwise."""
    at, _, seq = text.partition("_")
    try:
        return float(at), int(seq)
    except ValueError:
        raise ValueError(f"before={text!r} is not a cursor of this index; follow the `next` "
                         "link of the previous page") from None


# ---------------------------------------------------------------------------------------------
# Opening and syncing


def _in_step(con: sqlite3.Connection, files: list[segments.Segment]) -> bool:
    known = {(r[0], r[1]): (r[2], r[3], r[4])
             for r in con.execute("SELECT dev, ino, name, ordinal, indexed FROM segments")}
    if len(known) != len(files):
        return False
    for s in files:
        k = known.get((s.dev, s.ino))
        if k is None or k != (s.name, s.ordinal, s.size):
            return False
    return True


def _sync(con: sqlite3.Connection, root: Path) -> None:
    files = segments.segments(root)
    if _in_step(con, files):
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        files = segments.segments(root)
        known = {(r[1], r[2]): (r[0], r[3], r[4], r[5]) for r in con.execute(
            "SELECT seg, dev, ino, name, ordinal, indexed FROM segments")}
        present = {(s.dev, s.ino) for s in files}
        gone = [v[0] for k, v in known.items() if k not in present]
        marked = bool(gone)
        work: list[tuple[int, segments.Segment, int]] = []
        for s in files:
            k = known.get((s.dev, s.ino))
            if k is None:
                cur = con.execute("INSERT INTO segments(dev, ino, name, ordinal, indexed) "
                                  "VALUES (?, ?, ?, ?, 0)", (s.dev, s.ino, s.name, s.ordinal))
                work.append((int(cur.lastrowid or 0), s, 0))
                continue
            seg, name, ordinal, indexed = k
            if (name, ordinal) != (s.name, s.ordinal):  # rotated: its lines now sort by the new name
                con.execute("UPDATE segments SET name = ?, ordinal = ? WHERE seg = ?",
                            (s.name, s.ordinal, seg))
                con.execute("UPDATE decisions SET pos = ? + off WHERE seg = ?",
                            (s.ordinal * SHIFT, seg))
            if s.size < indexed:  # shorter than what was read: read it again, from the start
                con.execute("UPDATE decisions SET pos = -1 WHERE seg = ?", (seg,))
                marked = True
                indexed = 0
            if s.size > indexed:
                work.append((seg, s, indexed))
        for seg in gone:
            con.execute("UPDATE decisions SET pos = -1 WHERE seg = ?", (seg,))
            con.execute("DELETE FROM segments WHERE seg = ?", (seg,))
        for seg, s, start in work:
            mark = [start]

            def rows(seg: int = seg, s: segments.Segment = s, start: int = start,
                     mark: list[int] = mark) -> Iterator[tuple[Any, ...]]:
                for off, line in segments.lines(root / s.name, start):
                    mark[0] = off + len(line)
                    h = segments.head(line)
                    if h is not None:
                        yield (h.id, h.model, h.kind.value, h.at, h.version,
                               int(h.kind is Kind.REVERT or h.commit is not None), seg,
                               off, len(line), s.ordinal * SHIFT + off)

            con.executemany(UPSERT, rows())
            con.execute("UPDATE segments SET indexed = ? WHERE seg = ?", (mark[0], seg))
        if marked:  # rows of a deleted or rewritten segment that no line of the log has now
            con.execute("DELETE FROM decisions WHERE pos = -1")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


T = TypeVar("T")


_local = threading.local()
"""Each thread keeps its connection per index file open: closing the last connection
checkpoints the write-ahead log, which would cost every append and every page."""


KEEP_OPEN = 4
"""Index files a thread keeps a connection to (the least recently used one is closed)."""


def _connection(root: Path) -> sqlite3.Connection:
    cache: dict[str, tuple[tuple[int, int], sqlite3.Connection]] = _local.__dict__.setdefault(
        "connections", {})
    key = str(root)
    cached = cache.pop(key, None)
    try:
        info = os.stat(root / INDEX_FILE)
        ident: tuple[int, int] | None = (info.st_dev, info.st_ino)
    except OSError:
        ident = None
    if cached is not None:
        if cached[0] == ident:
            cache[key] = cached  # the most recently used last
            return cached[1]
        cached[1].close()  # the file was deleted or replaced: open what is there now
    while len(cache) >= KEEP_OPEN:
        cache.pop(next(iter(cache)))[1].close()
    con = db.connect(root)
    info = os.stat(root / INDEX_FILE)
    cache[key] = ((info.st_dev, info.st_ino), con)
    return con


def _forget(root: Path) -> None:
    cache = _local.__dict__.get("connections", {})
    cached = cache.pop(str(root), None)
    if cached is not None:
        with contextlib.suppress(sqlite3.Error):
            cached[1].close()


def using(root: Path, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` on an index in step with the log under ``root``; Unavailable when there is none."""
    if not root.is_dir():
        raise Unavailable(f"{root} does not exist")
    try:
        con = _connection(root)
    except OSError as exc:
        raise Unavailable(str(exc)) from exc
    try:
        _sync(con, root)
        return work(con)
    except (sqlite3.Error, OSError) as exc:
        _forget(root)
        raise Unavailable(str(exc)) from exc


def sync(root: Path) -> bool:
    """Index what the log under ``root`` has that the index has not; False when no index can
    be kept there."""
    try:
        using(root, lambda con: None)
    except Unavailable:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Reading


def _kind_clause(kinds: frozenset[Kind] | None) -> tuple[str, list[Any]]:
    if kinds is None:
        return "", []
    if kinds == ACTED:
        return "kind != 'pass'", []  # as the partial indexes say it
    if not kinds:
        return "0", []
    values = sorted(k.value for k in kinds)
    return f"kind IN ({', '.join('?' * len(values))})", list(values)


def _where(flt: Filter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.model is not None:
        clauses.append("model = ?")
        params.append(flt.model)
    kind, kparams = _kind_clause(flt.kinds)
    if kind:
        clauses.append(kind)
        params += kparams
    return clauses, params


def _load(con: sqlite3.Connection, root: Path, rows: list[tuple[int, str, int, int, int]],
          summary: bool = False) -> list[tuple[int, decisions.Decision]]:
    """The records at ``rows`` (seq, id, seg, off, len), in order; a line that is not the
    record the index says (the file changed since) raises LookupError."""
    names = dict(con.execute("SELECT seg, name FROM segments").fetchall())
    by_seg: dict[int, list[int]] = {}
    for i, (_, _, seg, _, _) in enumerate(rows):
        by_seg.setdefault(seg, []).append(i)
    out: list[tuple[int, decisions.Decision] | None] = [None] * len(rows)
    for seg, idx in by_seg.items():
        name = names.get(seg)
        if name is None:
            raise LookupError(seg)
        blobs = segments.read_at(root / name, [(rows[i][3], rows[i][4]) for i in idx])
        for i, blob in zip(idx, blobs, strict=True):
            if segments.id_of(blob) != rows[i][1]:
                raise LookupError(rows[i][1])  # the file is not what was indexed: sync again
            d = segments.parse(blob, summary=summary)
            if d is not None:  # else a record this version cannot read: left out, as before
                out[i] = (rows[i][0], d)
    return [o for o in out if o is not None]


def _retrying(root: Path, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` in one read transaction; once more when a segment was rewritten under it."""
    def once(con: sqlite3.Connection) -> T:
        con.execute("BEGIN")
        try:
            return work(con)
        finally:
            con.execute("COMMIT")

    try:
        return using(root, once)
    except (LookupError, FileNotFoundError):
        return using(root, once)


def _rows(con: sqlite3.Connection, root: Path, sql: str, params: list[Any],
          summary: bool = False) -> list[tuple[int, decisions.Decision]]:
    return _load(con, root, con.execute(sql, params).fetchall(), summary)


def _count(con: sqlite3.Connection, flt: Filter) -> int:
    clauses, params = _where(flt)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    row = con.execute(f"SELECT COALESCE(SUM(n), 0) FROM counts{where}", params).fetchone()
    return int(row[0])


def _matches(d: decisions.Decision, flt: Filter) -> bool:
    return ((flt.model is None or d.model == flt.model)
            and (flt.kinds is None or d.kind in flt.kinds))


def _numbered(root: Path) -> list[tuple[int, decisions.Decision]]:
    """The fallback: the whole log, numbered oldest first."""
    return list(enumerate(segments.read_all(root), 1))


COLUMNS = "SELECT seq, id, seg, off, len FROM decisions"


def page(root: Path, flt: Filter = Filter(), *, limit: int = 100, offset: int = 0,
         before: str | None = None, summary: bool = False) -> Page:
    """A page of the decisions ``flt`` matches, newest first (ValueError: a bad cursor);
    ``summary``: without the per-feature evidence (`decision_segments.DETAIL`)."""
    clauses, params = _where(flt)
    after = parse_cursor(before) if before is not None else None
    if after is not None:
        clauses.append("at <= ? AND (at < ? OR seq < ?)")  # a range on the index's time
        params += [after[0], after[0], after[1]]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""

    def work(con: sqlite3.Connection) -> tuple[list[tuple[int, decisions.Decision]], int]:
        got = _rows(con, root, f"{COLUMNS}{where} ORDER BY at DESC, seq DESC LIMIT ? OFFSET ?",
                    [*params, limit + 1, offset], summary)
        return got, _count(con, flt)

    try:
        got, count = _retrying(root, work)
    except Unavailable:
        every = [(n, d) for n, d in _numbered(root) if _matches(d, flt)]
        count = len(every)
        every.sort(key=lambda nd: (nd[1].at, nd[0]), reverse=True)
        if after is not None:
            every = [(n, d) for n, d in every if (d.at, n) < after]
        got = every[offset:offset + limit + 1]
    more = len(got) > limit
    got = got[:limit]
    return Page([d for _, d in got], count, cursor(got[-1][1], got[-1][0]) if more and got else None)


def total(root: Path, flt: Filter = Filter()) -> int:
    """How many decisions ``flt`` matches."""
    try:
        return using(root, lambda con: _count(con, flt))
    except Unavailable:
        return sum(1 for _, d in _numbered(root) if _matches(d, flt))


def each(root: Path, flt: Filter = Filter(), *, batch: int = 2000) -> Iterator[decisions.Decision]:
    """Every decision ``flt`` matches, oldest first, read a batch at a time."""
    clauses, params = _where(flt)
    after: tuple[float, int] | None = None
    while True:
        extra = ["at >= ? AND (at > ? OR seq > ?)"] if after else []
        where = " AND ".join(clauses + extra)
        sql = f"{COLUMNS}{' WHERE ' + where if where else ''} ORDER BY at, seq LIMIT ?"
        args = [*params, *([after[0], after[0], after[1]] if after else []), batch]
        def work(con: sqlite3.Connection, sql: str = sql,
                 args: list[Any] = args) -> list[tuple[int, decisions.Decision]]:
            return _rows(con, root, sql, args)

        try:
            got = _retrying(root, work)
        except Unavailable:
            if after is None:
                yield from (d for _, d in _numbered(root) if _matches(d, flt))
            return
        for _, d in got:
            yield d
        if len(got) < batch:
            return
        after = (got[-1][1].at, got[-1][0])


def find(root: Path, ident: str) -> decisions.Decision | None:
    try:
        got = _retrying(root, lambda con: _rows(con, root, f"{COLUMNS} WHERE id = ?", [ident]))
    except Unavailable:
        got = [(n, d) for n, d in _numbered(root) if d.id == ident]
    return got[0][1] if got else None


def windows(root: Path, *, model: str, version: str | None, until: float,
            limit: int) -> list[decisions.Decision]:
    """The closed windows of ``model`` at ``version`` up to ``until``, the newest ``limit``,
    oldest first."""
    kinds = sorted(k.value for k in Kind if k.window)
    sql = (f"{COLUMNS} WHERE model = ? AND version IS ? AND at <= ? AND kind IN "
           f"({', '.join('?' * len(kinds))}) ORDER BY at DESC, seq DESC LIMIT ?")
    try:
        got = _retrying(root, lambda con: _rows(con, root, sql,
                                                [model, version, until, *kinds, limit]))
        return [d for _, d in reversed(got)]
    except Unavailable:
        out = [d for _, d in _numbered(root) if d.model == model and d.version == version
               and d.at <= until and d.kind.window]
        return out[-limit:]


def latest_of_kind(root: Path, kind: Kind) -> dict[str, decisions.Decision]:
    """The latest decision of ``kind`` of each model."""
    def work(con: sqlite3.Connection) -> dict[str, decisions.Decision]:
        out: dict[str, decisions.Decision] = {}
        for (model,) in con.execute("SELECT model FROM counts WHERE kind = ? AND n > 0",
                                    (kind.value,)).fetchall():
            got = _rows(con, root, f"{COLUMNS} WHERE model = ? AND kind = ? "
                                   "ORDER BY at DESC, seq DESC LIMIT 1", [model, kind.value])
            if got:
                out[model] = got[0][1]
        return out

    try:
        return _retrying(root, work)
    except Unavailable:
        return {d.model: d for _, d in _numbered(root) if d.kind is kind}
