"""The quarantine file: digests auto-reverted by mlgitops, refused until a person removes them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlgitops import errors

HEADER = (
    "# Model versions that mlgitops reverted automatically because live data did not fit them.\n"
    "# The controller refuses to deploy a digest listed here. To roll one forward again, review\n"
    "# its drift report, delete its entry and commit.\n"
)


@dataclass(frozen=True)
class Entry:
    model: str
    digest: str
    commit: str
    reason: str
    at: str

    def to_dict(self) -> dict[str, str]:
        return {
            "model": self.model,
            "digest": self.digest,
            "commit": self.commit,
            "reason": self.reason,
            "at": self.at,
        }


def parse(document: Any, *, source: str) -> tuple[Entry, ...]:
    """Entries of a parsed quarantine file (None = empty); ManifestError names the bad entry."""
    if document is None:
        return ()
    items = document.get("entries") if isinstance(document, dict) else None
    if items is None:
        return ()
    if not isinstance(items, list):
        raise errors.ManifestError(f"{source}: field entries: must be a list; fix and commit")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("model") or not item.get("digest"):
            raise errors.ManifestError(
                f"{source}: field entries[{i}]: needs 'model' and 'digest'; fix and commit"
            )
        out.append(
            Entry(
                model=str(item["model"]),
                digest=str(item["digest"]),
                commit=str(item.get("commit", "")),
                reason=str(item.get("reason", "")),
                at=str(item.get("at", "")),
            )
        )
    return tuple(out)


def find(entries: Iterable[Entry], *, model: str, digest: str) -> Entry | None:
    return next((e for e in entries if e.model == model and e.digest == digest), None)


def add(entries: Iterable[Entry], entry: Entry) -> dict[str, Any]:
    """The document with ``entry`` added once."""
    kept = [e for e in entries if not (e.model == entry.model and e.digest == entry.digest)]
    return {"entries": [e.to_dict() for e in [*kept, entry]]}
