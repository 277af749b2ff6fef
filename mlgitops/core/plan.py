"""Plan before acting: desired versions against live servers -> one step per model.

Pure: the reconciler executes the steps this module produces and nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from mlgitops.core.manifest import ModelDeployment


class Action(enum.Enum):
    DEPLOY = "deploy"  # nothing (or another version) serves; start the desired version
    RESTART = "restart"  # the desired version should serve but its server is gone
    RETIRE = "retire"  # a server runs for a model no manifest names any more
    HOLD = "hold"  # the desired version cannot deploy (invalid, quarantined, failed): keep live
    KEEP = "keep"  # live is what Git says
    CANDIDATE = "candidate"  # start the desired version beside live (a progressive rollout)
    PROGRESS = "progress"  # the desired version is a candidate under analysis: live serves on

    @property
    def changes_live(self) -> bool:
        return self in (Action.DEPLOY, Action.RESTART, Action.RETIRE, Action.CANDIDATE)


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
    candidate: Live | None = None
    """A rollout's candidate beside ``live``: kept when the action is PROGRESS, else dropped."""


def plan(
    desired: Mapping[str, Desired],
    live: Mapping[str, Live],
    failures: Mapping[str, Failure] | None = None,
    candidates: Mapping[str, Live] | None = None,
) -> list[Step]:
    """One step per model named by either side, sorted by name."""
    failures = failures or {}
    candidates = candidates or {}
    steps = []
    for name in sorted(set(desired) | set(live)):
        d, lv = desired.get(name), live.get(name)
        steps.append(step(name, d, lv, failures.get(name), candidates.get(name)))
    return steps


def step(name: str, d: Desired | None, lv: Live | None, failed: Failure | None = None,
         candidate: Live | None = None) -> Step:
    """The one step for model ``name`` (the Kubernetes operator plans a model at a time).

    With a progressive ``spec.rollout`` a new content does not replace a live, alive version:
    it starts beside it (CANDIDATE), then stays a candidate (PROGRESS) while Git names it; a
    candidate Git no longer names is dropped by whatever step comes instead.
    """
    base = _step(name, d, lv, failed)
    if candidate is not None:
        if (d is not None and d.deployment is not None and d.error is None
                and candidate.version == d.version and candidate.digest == d.digest
                and base.action is not Action.HOLD):
            return Step(name, Action.PROGRESS, d, lv,
                        f"{d.version[:12]} is judged beside "
                        f"{lv.version[:12] if lv else 'nothing'} ({d.deployment.rollout.strategy})",
                        candidate)
        base = replace(base, candidate=candidate)
    if (base.action is Action.DEPLOY and d is not None and d.deployment is not None
            and d.deployment.rollout.progressive and lv is not None and lv.alive
            and lv.digest != d.digest):
        return replace(base, action=Action.CANDIDATE,
                       reason=f"{base.reason}; rolled out by {d.deployment.rollout.strategy} "
                              f"beside {lv.version[:12]}")
    return base


def _step(name: str, d: Desired | None, lv: Live | None, failed: Failure | None) -> Step:
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
