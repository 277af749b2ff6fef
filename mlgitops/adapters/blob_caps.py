"""Size caps on the files a commit may make the controller (or the remote's hook) read.

A file over ``file_bytes``, or a model directory over ``model_bytes``, is refused with a
sentence naming it before its content is read (`git.export_paths` asks `check_sizes` with
the sizes of ``git cat-file --batch-check``).
"""

from __future__ import annotations

from collections.abc import Mapping

from mlgitops import errors, settings
from mlgitops.core import layout

#: what a refusal asks for (followed by the setting to raise)
RAISE = "commit smaller files (large data does not belong in a model directory), or raise"


def size_text(n: int) -> str:
    """``1073741824 bytes (1.0 GiB)``: exact, and readable."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n} bytes ({n / scale:.1f} {unit})"
    return f"{n} bytes"


def model_dir_of(path: str) -> str | None:
    """``models/<name>`` for a path inside a model directory, else None."""
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) >= 3 and parts[0] == layout.MODELS else None


def check_sizes(sizes: Mapping[str, int], caps: settings.BlobLimits, *, commit: str) -> None:
    """ModelError for the first file over ``caps.file_bytes`` or model directory over
    ``caps.model_bytes`` (``sizes``: repository path -> bytes); a sentence naming it."""
    totals: dict[str, int] = {}
    largest: dict[str, str] = {}
    for name, size in sizes.items():
        if size > caps.file_bytes:
            raise errors.ModelError(
                f"{name}: is {size_text(size)} at commit {commit[:12]}, over the "
                f"{size_text(caps.file_bytes)} cap for one file; {RAISE} {caps.file_setting}"
            )
        group = model_dir_of(name)
        if group is not None:
            totals[group] = totals.get(group, 0) + size
            if size >= sizes.get(largest.get(group, name), 0):
                largest[group] = name
    for group, total in totals.items():
        if total > caps.model_bytes:
            big = largest[group]
            raise errors.ModelError(
                f"{group}: holds {size_text(total)} at commit {commit[:12]} (the largest file, "
                f"{big}, is {size_text(sizes[big])}), over the {size_text(caps.model_bytes)} cap for a "
                f"model directory; {RAISE} {caps.model_setting}"
            )
