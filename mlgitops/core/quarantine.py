"""The quarantine file: versions auto-reverted by mlgitops, refused until a person removes them.

A version *matches* an entry of the same model when any of these is equal:
- ``digest``: the bytes of the model directory;
- ``fitted``: the fitted estimator's state (class, parameters and learned arrays), whatever
  MLflow metadata, zip layout or reference sample surrounds it;
- ``recipe``: the estimator's class and hyper-parameters together with the reference data it
  was published with: the same training run again, random seeds aside.
Re-running the notebook cell that published a reverted version therefore matches. Removing
the entry (a commit by a person) is the only way back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlgitops import errors

HEADER = (
    "# Model versions that mlgitops reverted automatically because live data did not fit them.\n"
    "# The controller refuses to deploy a version that matches an entry (same bytes, same fitted\n"
    "# estimator, or same estimator and parameters on the same reference data). To roll one\n"
    "# forward again, review its drift report, delete its entry and commit.\n"
)


@dataclass(frozen=True)
class Entry:
    model: str
    digest: str
    commit: str
    reason: str
    at: str
    fitted: str = ""
    recipe: str = ""
    report: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {
            "model": self.model,
            "digest": self.digest,
            "commit": self.commit,
            "reason": self.reason,
            "at": self.at,
        }
        extra = (("fitted", self.fitted), ("recipe", self.recipe), ("report", self.report))
        out.update({k: v for k, v in extra if v})
        return out


@dataclass(frozen=True)
class Identity:
    """What a version is, for matching: bytes, fitted state, recipe (see the module docstring)."""

    digest: str
    fitted: str = ""
    recipe: str = ""


@dataclass(frozen=True)
class Match:
    entry: Entry
    how: str
    """Which key matched, in words: "the same bytes", "the same fitted estimator", …"""

    def sentence(self, *, name: str) -> str:
        e = self.entry
        report = f"; its drift report: {e.report}" if e.report else ""
        return (
            f"{name} is quarantined: this version has {self.how} as the version reverted "
            f"automatically in commit {e.commit[:12] or '(unknown)'} "
            f"({e.reason or 'live data did not fit it'}){report}. Only a person can allow it "
            "again, by removing its entry from quarantine.yaml"
        )


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
                fitted=str(item.get("fitted") or ""),
                recipe=str(item.get("recipe") or ""),
                report=str(item.get("report") or ""),
            )
        )
    return tuple(out)


def find(entries: Iterable[Entry], *, model: str, digest: str) -> Entry | None:
    """The entry of ``model`` with exactly these bytes."""
    return next((e for e in entries if e.model == model and e.digest == digest), None)


def match(entries: Iterable[Entry], *, model: str, identity: Identity) -> Match | None:
    """The first entry of ``model`` that this version matches, and how."""
    for e in entries:
        if e.model != model:
            continue
        if e.digest == identity.digest:
            return Match(e, "the same bytes")
        if e.fitted and e.fitted == identity.fitted:
            return Match(e, "the same fitted estimator")
        if e.recipe and e.recipe == identity.recipe:
            return Match(e, "the same estimator class, hyper-parameters and reference data")
    return None


def needs_identity(entries: Iterable[Entry], *, model: str, digest: str) -> bool:
    """True when matching ``model`` needs more than its digest (an entry has other keys)."""
    return any(e.model == model and e.digest != digest and (e.fitted or e.recipe) for e in entries)


def add(entries: Iterable[Entry], entry: Entry) -> dict[str, Any]:
    """The document with ``entry`` added once."""
    kept = [e for e in entries if not (e.model == entry.model and e.digest == entry.digest)]
    return {"entries": [e.to_dict() for e in [*kept, entry]]}
