"""The decision log's files: append-only JSON lines in segments, and reading them back.

Under ``<state>/reports``: ``decisions.jsonl`` is the segment appended to (one
`core.decisions.Decision` per line; a later line with the same id supersedes an earlier one).
Past a size it is renamed ``decisions.<n>.jsonl`` (``n`` one more than the newest; the
``decisions.1.jsonl`` of earlier versions is the first) and a new one begins. Segments are never
edited in place: retention (`decision_index.prune`) deletes a whole segment, or writes the lines
it keeps to a new file renamed over the old one.

A line is whole once its ``\\n`` is written; a torn last line (a crash mid-write) is closed by the
next append and then skipped by every reader, as is any line that does not parse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlgitops.core import decisions

ACTIVE = "decisions.jsonl"
ROTATED = re.compile(r"decisions\.([1-9][0-9]{0,8})\.jsonl")
ACTIVE_ORDINAL = 1 << 30
"""The appended segment sorts after every rotated one."""
READ_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Segment:
    """One segment file as it is now: where, which file (device and inode), how big."""

    name: str
    ordinal: int
    dev: int
    ino: int
    size: int


def ordinal_of(name: str) -> int | None:
    if name == ACTIVE:
        return ACTIVE_ORDINAL
    m = ROTATED.fullmatch(name)
    return int(m.group(1)) if m else None


def segments(root: Path) -> list[Segment]:
    """The segment files under ``root``, oldest first (the appended one last)."""
    out: list[Segment] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        ordinal = ordinal_of(entry.name)
        if ordinal is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if entry.is_file(follow_symlinks=False):
            out.append(Segment(entry.name, ordinal, info.st_dev, info.st_ino, info.st_size))
    return sorted(out, key=lambda s: s.ordinal)


def append(root: Path, line: bytes, *, max_bytes: int) -> bool:
    """Append one record line (ending ``\\n``); rotate first when it would pass ``max_bytes``.

    True when the appended segment was rotated. The caller serialises appends."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ACTIVE
    rotated = False
    with contextlib.suppress(OSError):
        if path.stat().st_size + len(line) > max_bytes:
            rotate(root)
            rotated = True
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a torn last line (a crash mid-write) stays alone
        os.write(fd, line)
    finally:
        os.close(fd)
    return rotated


def rotate(root: Path) -> Path | None:
    """Rename the appended segment to the next ``decisions.<n>.jsonl`` (None: nothing to rename)."""
    path = root / ACTIVE
    try:
        if path.stat().st_size == 0:
            return None
    except OSError:
        return None
    rotated = [s.ordinal for s in segments(root) if s.ordinal != ACTIVE_ORDINAL]
    target = root / f"decisions.{max(rotated, default=0) + 1}.jsonl"
    os.replace(path, target)
    return target


def lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of every whole line from byte ``start`` (a last line without its
    ``\\n`` is not whole yet: not given)."""
    try:
        f = path.open("rb")
    except OSError:
        return
    with f:
        f.seek(start)
        offset = start
        rest = b""
        while True:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                return
            data = rest + chunk
            at = 0
            while True:
                end = data.find(b"\n", at)
                if end < 0:
                    break
                yield offset, data[at:end + 1]
                offset += end + 1 - at
                at = end + 1
            rest = data[at:]


DETAIL = ("features", "prediction", "distributions", "thresholds")
"""What a summary (`parse` with ``summary``) leaves out: the per-feature evidence."""


def parse(line: bytes, *, summary: bool = False) -> decisions.Decision | None:
    """The record on ``line`` (without its `DETAIL` when ``summary``: a row of an index page);
    None for a blank, torn or unknown line."""
    if not line.strip():
        return None
    try:
        if not summary:
            return decisions.Decision.from_json(line)
        data = json.loads(line)
        if not isinstance(data, dict):
            return None
        return decisions.Decision.from_dict({k: v for k, v in data.items() if k not in DETAIL})
    except ValueError:
        return None


_ID = re.compile(rb'\{"id":"([^"\\]{1,200})"')


def id_of(line: bytes) -> str | None:
    """The id of the record on ``line`` (records are written id first), else by parsing it."""
    m = _ID.match(line)
    if m:
        return m.group(1).decode()
    d = parse(line)
    return None if d is None else d.id


@dataclass(frozen=True)
class Head:
    """What the index keeps of a record: read without building the whole `Decision`."""

    id: str
    model: str
    kind: decisions.Kind
    at: float
    version: str | None
    commit: str | None


_KINDS = {k.value: k for k in decisions.Kind}


def head(line: bytes) -> Head | None:
    """The indexed fields of the record on ``line``; None for a blank, torn or unknown line."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
        kind = _KINDS[data["kind"]]
        version, commit = data.get("version"), data.get("commit")
        return Head(str(data["id"]), str(data["model"]), kind, float(data["at"]),
                    None if version is None else str(version),
                    None if commit is None else str(commit))
    except (ValueError, KeyError, TypeError):
        return None


def read_at(path: Path, spans: Iterable[tuple[int, int]]) -> list[bytes]:
    """The bytes at each ``(offset, length)`` of ``path`` (b"" where the file ends sooner)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return [os.pread(fd, length, offset) for offset, length in spans]
    finally:
        os.close(fd)


def read_all(root: Path) -> list[decisions.Decision]:
    """Every record under ``root``, later lines superseding by id, oldest first: the whole log
    read (what the index avoids; the fallback when there is no index to use)."""
    raw = (line for seg in segments(root) for _, line in lines(root / seg.name) if line.strip())
    return decisions.latest(raw)


def rewrite(path: Path, drop: set[str]) -> tuple[int, int]:
    """Write ``path`` again without the lines of the ids in ``drop`` (aside, then renamed over
    it); ``(kept, dropped)`` lines. Lines that do not parse go too."""
    tmp = path.with_name(f".{path.name}.prune")
    kept = dropped = 0
    with tmp.open("wb") as out:
        for _, line in lines(path):
            ident = id_of(line)
            if ident is None or ident in drop:
                dropped += 1
                continue
            out.write(line)
            kept += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return kept, dropped
