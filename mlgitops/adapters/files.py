"""Files on this machine: model directory digests, atomic writes, JSON lines, parquet bounds."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
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


#: A reference sample is a few thousand rows (publish keeps 5000); a parquet file read outside
#: the sandbox may declare at most these (`check_parquet`).
MAX_PARQUET_ROWS = 1_000_000
MAX_PARQUET_UNPACKED_BYTES = 512 * 1024 * 1024
MAX_PARQUET_FOOTER_BYTES = 16 * 1024 * 1024


def check_parquet(source: Path | bytes, *, name: str) -> None:
    """ModelError, before any data is read, unless the parquet file at ``source`` (a path or its
    bytes) declares a bounded table: its footer, its rows (file, row groups and column chunks)
    and its uncompressed size, as its own metadata states them. ``name`` is how it is called."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if isinstance(source, bytes):
            tail, size = source[-8:], len(source)
        else:
            with source.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(size - 8, 0))
                tail = f.read(8)
        if len(tail) < 8 or tail[4:] != b"PAR1":
            raise errors.ModelError(f"{name}: is not a parquet file; republish the model")
        (footer,) = struct.unpack("<I", tail[:4])
        if footer > min(MAX_PARQUET_FOOTER_BYTES, size):
            raise errors.ModelError(
                f"{name}: its parquet footer declares {footer} bytes, over the "
                f"{MAX_PARQUET_FOOTER_BYTES}-byte limit; republish the model"
            )
        reader = pa.BufferReader(source) if isinstance(source, bytes) else str(source)
        meta = pq.ParquetFile(reader).metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        rows = max([meta.num_rows, sum(g.num_rows for g in groups)]
                   + [g.column(j).num_values for g in groups for j in range(g.num_columns)])
        unpacked = sum(g.total_byte_size for g in groups)
    except errors.ModelError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise errors.ModelError(f"{name}: is not a readable parquet file ({exc}); republish the model") from exc
    if rows > MAX_PARQUET_ROWS:
        raise errors.ModelError(
            f"{name}: declares {rows} rows, over the {MAX_PARQUET_ROWS}-row limit for a reference "
            "sample; refusing to read it: republish the model (publish keeps a few thousand rows)"
        )
    if unpacked > MAX_PARQUET_UNPACKED_BYTES:
        raise errors.ModelError(
            f"{name}: declares {unpacked} bytes of uncompressed data, over the "
            f"{MAX_PARQUET_UNPACKED_BYTES // 1024**2} MiB limit for a reference sample; "
            "refusing to read it: republish the model"
        )
