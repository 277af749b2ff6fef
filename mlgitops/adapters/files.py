"""Files on this machine: model directory digests, atomic writes, JSON lines."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlgitops import errors
from mlgitops.core import digest
from mlgitops.core.manifest import Digest


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def regular_files(path: Path) -> dict[str, Path]:
    """Every file under ``path`` by relative path; ModelError for anything but files and folders.

    Symbolic links (inside or outside), devices, sockets and pipes are refused: what a digest
    covers must be exactly what a loader reads. Nothing is skipped.
    """
    out: dict[str, Path] = {}
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise errors.ModelError(f"{folder}: cannot be listed ({exc.strerror})") from exc
        for entry in entries:
            mode = entry.stat(follow_symlinks=False).st_mode
            rel = Path(entry.path).relative_to(path).as_posix()
            if stat.S_ISDIR(mode):
                pending.append(Path(entry.path))
            elif stat.S_ISREG(mode):
                out[rel] = Path(entry.path)
            else:
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise errors.ModelError(
                    f"{path.name}/{rel}: is {kind}; a model directory holds regular files only "
                    "(commit the file itself)"
                )
    return dict(sorted(out.items()))


def dir_digest(path: Path) -> Digest:
    """Digest of every file under ``path`` (see ``core.digest.combine``); see `regular_files`."""
    return digest.combine({rel: hash_file(p) for rel, p in regular_files(path).items()})


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def append_jsonl(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(value, sort_keys=True) + "\n"
    with path.open("a") as f:
        f.write(line)


def read_jsonl(path: Path) -> Iterator[Any]:
    try:
        with path.open() as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
    except FileNotFoundError:
        return
