"""The decision index's SQLite file: its schema, and opening it (made, or made again, as needed).

`decision_index` keeps it in step with the log and reads it. A file of another format, or one
that is not a database, is replaced by an empty index of this one (it is derived from the log).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

INDEX_FILE = "decisions.index.sqlite"
FORMAT = "1"
SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments(seg INTEGER PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
  name TEXT NOT NULL, ordinal INTEGER NOT NULL, indexed INTEGER NOT NULL);
CREATE TABLE decisions(seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
  kind TEXT NOT NULL, at REAL NOT NULL, version TEXT, linked INTEGER NOT NULL,
  seg INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, pos INTEGER NOT NULL);
CREATE INDEX by_at ON decisions(at);
CREATE INDEX by_model ON decisions(model, at);
CREATE INDEX by_kind ON decisions(kind, at);
CREATE INDEX by_model_kind ON decisions(model, kind, at);
CREATE INDEX acted ON decisions(at) WHERE kind != 'pass';
CREATE INDEX acted_model ON decisions(model, at) WHERE kind != 'pass';
CREATE INDEX by_version ON decisions(model, version, at);
CREATE INDEX by_seg ON decisions(seg);
CREATE TABLE counts(model TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
  PRIMARY KEY (model, kind)) WITHOUT ROWID;
CREATE TRIGGER counts_in AFTER INSERT ON decisions BEGIN
  INSERT INTO counts VALUES (new.model, new.kind, 1)
    ON CONFLICT (model, kind) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER counts_out AFTER DELETE ON decisions BEGIN
  UPDATE counts SET n = n - 1 WHERE model = old.model AND kind = old.kind; END;
CREATE TRIGGER counts_moved AFTER UPDATE OF model, kind ON decisions
  WHEN old.model != new.model OR old.kind != new.kind BEGIN
  UPDATE counts SET n = n - 1 WHERE model = old.model AND kind = old.kind;
  INSERT INTO counts VALUES (new.model, new.kind, 1)
    ON CONFLICT (model, kind) DO UPDATE SET n = n + 1; END;
"""

UPSERT = """
INSERT INTO decisions(id, model, kind, at, version, linked, seg, off, len, pos)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET model = excluded.model, kind = excluded.kind, at = excluded.at,
  version = excluded.version, linked = excluded.linked, seg = excluded.seg, off = excluded.off,
  len = excluded.len, pos = excluded.pos
WHERE excluded.pos >= decisions.pos
"""


class Unavailable(Exception):
    """No index can be used here (the caller reads the whole log instead)."""


def statements(script: str) -> list[str]:
    """``script`` cut into statements (a trigger's body is one with its own ``;``)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return [s for s in out if s]


def connect(root: Path) -> sqlite3.Connection:
    path = root / INDEX_FILE
    for attempt in (1, 2):
        try:
            con = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from exc
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # the log is the truth; the index follows
            row = None
            with contextlib.suppress(sqlite3.OperationalError):
                row = con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is not None and row[0] == FORMAT:
                return con
            con.execute("BEGIN IMMEDIATE")
            with contextlib.suppress(sqlite3.OperationalError):
                row = con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is not None and row[0] == FORMAT:  # another process made it meanwhile
                con.execute("COMMIT")
                return con
            for (kind, name) in con.execute(
                    "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger') "
                    "AND name NOT LIKE 'sqlite_%'").fetchall():
                con.execute(f"DROP {kind} IF EXISTS {name}")
            for statement in statements(SCHEMA):
                con.execute(statement)
            con.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
            con.execute("COMMIT")
            return con
        except sqlite3.DatabaseError as exc:
            con.close()
            if attempt == 2 or isinstance(exc, sqlite3.OperationalError):
                raise Unavailable(str(exc)) from exc
            for suffix in ("", "-wal", "-shm"):  # not a database (or a broken one): built again
                with contextlib.suppress(OSError):
                    (root / f"{INDEX_FILE}{suffix}").unlink()
    raise Unavailable("unreachable")
