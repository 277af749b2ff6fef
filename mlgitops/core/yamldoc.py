"""YAML from a repository, bounded: a size cap, no anchors or aliases, no tags beyond plain data.

A 1 KB "billion laughs" document expands to gigabytes through aliases; mlgitops' files never
need them, so an anchor or alias is refused before anything expands. Error messages quote at
most `QUOTE` characters of the input.
"""

from __future__ import annotations

from typing import Any

import yaml

from mlgitops import errors

MAX_MANIFEST_BYTES = 64 * 1024
QUOTE = 200

_PLAIN_TAGS = frozenset({
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq", "tag:yaml.org,2002:timestamp",
})


class _Refused(yaml.YAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and non-data tags while composing."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _Refused("uses an alias (*name); mlgitops files may not use anchors or aliases")
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(event, "anchor", None):
            raise _Refused("uses an anchor (&name); mlgitops files may not use anchors or aliases")
        node = super().compose_node(parent, index)
        if node is not None and node.tag not in _PLAIN_TAGS:
            raise _Refused(f"uses the tag {_clip(node.tag)}; only plain strings, numbers, "
                           "booleans, lists and mappings are allowed")
        return node


def _clip(text: str) -> str:
    return text if len(text) <= QUOTE else text[:QUOTE] + "…"


def load(raw: bytes | str, *, source: str, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse ``raw``; ManifestError naming ``source`` when it is too large, not YAML, or unsafe."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise errors.ManifestError(
            f"{source}: is {size} bytes, over the {max_bytes}-byte limit for this file; keep data "
            "out of it (models and samples belong under models/)"
        )
    try:
        return yaml.load(raw, Loader=_Loader)
    except _Refused as exc:
        raise errors.ManifestError(f"{source}: {exc}; fix it and commit again") from exc
    except yaml.YAMLError as exc:
        raise errors.ManifestError(
            f"{source}: is not valid YAML ({_clip(str(exc))}); fix it and commit again"
        ) from exc
    except RecursionError as exc:
        raise errors.ManifestError(f"{source}: is nested too deeply; fix it and commit again") from exc
