"""Plan before acting: desired versions against live servers -> one step per model.

Pure: the reconciler executes the steps this module produces and nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from mlgitops.core.manifest import ModelDeployment


class Action(enum.Enum):
    DEPLOY = "deploy"  # nothing (or another version) serves; start the desired version
    RESTART = "restart"  # the desired version should serve but its server is gone
    RETIRE = "retire"  # a server runs for a model no manifest names any more
    HOLD = "hold"  # the desired version cannot deploy (invalid, quarantined, failed): keep live
    KEEP = "keep"  # live is what Git says

    @property
    def changes_live(self) -> bool:
        return self in (Action.DEPLOY, Action.RESTART, Action.RETIRE)


@dataclass(frozen=True)
class Desired:
    """What Git says about one model at the commit being reconciled."""

    name: str
    version: str  # the commit that last changed the model's paths
    deployment: ModelDeployment | None  # None when the manifest is invalid
    error: str | None = None  # why it cannot deploy (manifest error, quarantine)
    quarantined: bool = False  # the error is that its digest is in quarantine.yaml

    @property
    def digest(self) -> str | None:
        return self.deployment.digest if self.deployment else None


@dataclass(frozen=True)
class Live:
    """What serves now for one model."""

    name: str
    version: str
    digest: str
    alive: bool


@dataclass(frozen=True)
class Failure:
    """A version that failed to deploy for a reason retrying the same inputs cannot cure."""

    digest: str
    version: str
    reason: str
    inputs: str = ""
    """A fingerprint of what else decided it (trust and signing policy, settings, the
    controller's run): the reconciler tries the version again when its own differs."""


@dataclass(frozen=True)
class Step:
    name: str
    action: Action
    desired: Desired | None
    live: Live | None
    reason: str


def plan(
    desired: Mapping[str, Desired],
    live: Mapping[str, Live],
    failures: Mapping[str, Failure] | None = None,
) -> list[Step]:
    """One step per model named by either side, sorted by name."""
    failures = failures or {}
    steps = []
    for name in sorted(set(desired) | set(live)):
        d, lv = desired.get(name), live.get(name)
        steps.append(step(name, d, lv, failures.get(name)))
    return steps


def step(name: str, d: Desired | None, lv: Live | None, failed: Failure | None = None) -> Step:
    """The one step for model ``name`` (the Kubernetes operator plans a model at a time)."""
    if d is None:
        assert lv is not None
        return Step(name, Action.RETIRE, None, lv, "no manifest names this model any more")
    if d.deployment is None or d.error is not None:
        return Step(name, Action.HOLD, d, lv, d.error or "the manifest is invalid")
    if failed is not None and failed.digest == d.digest and failed.version == d.version:
        return Step(name, Action.HOLD, d, lv, failed.reason)
    if lv is None:
        return Step(name, Action.DEPLOY, d, None, f"version {d.version[:12]} is not serving yet")
    if lv.version != d.version and lv.digest == d.digest:
        return Step(
            name,
            Action.DEPLOY,
            d,
            lv,
            f"the manifest changed at {d.version[:12]} (same model content): apply its settings",
        )
    if lv.digest != d.digest:
        return Step(
            name,
            Action.DEPLOY,
            d,
            lv,
            f"Git names {d.digest[7:19] if d.digest else '?'} at {d.version[:12]}; "
            f"{lv.digest[7:19]} serves",
        )
    if not lv.alive:
        return Step(name, Action.RESTART, d, lv, "the server process is gone")
    return Step(name, Action.KEEP, d, lv, "serving what Git says")
