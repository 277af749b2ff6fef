"""Content digests of model directories: one hash over relative paths and file hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from mlgitops.core.manifest import Digest


def combine(file_hashes: Mapping[str, str]) -> Digest:
    """``sha256:`` over sorted ``relpath\\0sha256(file)\\n`` lines (paths use ``/``)."""
    h = hashlib.sha256()
    for rel in sorted(file_hashes):
        h.update(f"{rel}\0{file_hashes[rel]}\n".encode())
    return Digest(f"sha256:{h.hexdigest()}")


def short(digest: str) -> str:
    """``sha256:abcdef012345…`` -> ``abcdef012345`` for display."""
    return digest.removeprefix("sha256:")[:12]
