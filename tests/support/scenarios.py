"""One scenario table for the reconciler, run against every runtime behind its ports.

`build_template` makes a real repository and bare remote once (v1, v2, an invalid manifest on
v1, v2 quarantined, v2 reverted), each state a branch; a scenario points the remote's main
branch at those commits in turn. A `Driver` is one runtime wired to the controller's own
`Reconciler` and a fetching `Source` (so an outage of the remote is a real `GitError`):
`tests/test_reconciler_fake.py` drives the fakes, `tests/test_scenarios_local.py` the local
runtime's server processes, `tests/k8s/test_scenarios_k8s.py` the Kubernetes runtime on the
test cluster with the kubelet stand-in. Each step says what serves afterwards and why a newer
version is held, if it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

import mlgitops
from mlgitops import errors
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.controller import reconciler as rec
from mlgitops.core import layout, quarantine
from mlgitops.core.status import ConditionType
from support.data import make_frame, train

NAME = "credit"


@dataclass(frozen=True)
class Template:
    work: Path
    bare: Path
    commits: dict[str, str]
    """label -> the commit the remote's branch points at for that state of the repository."""
    digests: dict[str, str]
    """label -> the model digest its manifest names (v1, v2, reverted)."""


def _branch(work: Path, label: str, base: str, change: Callable[[Path], list[str]]) -> str:
    git.run(work, "checkout", "-q", "-b", label, base)
    sha = git.commit(work, message=f"credit: {label}", paths=change(work))
    assert sha is not None
    git.run(work, "push", "-q", "origin", label)
    git.run(work, "checkout", "-q", layout.BRANCH)
    return sha


def _digest(work: Path, commit: str) -> str:
    return str(yaml.safe_load(git.show(work, commit, layout.manifest_path(NAME)) or b"")
               ["spec"]["model"]["digest"])


def build_template(root: Path) -> Template:
    work = root / "models-repo"
    bare = repository.init(work)
    (bare / "hooks" / "pre-receive").unlink()  # bad commits must reach the source here
    a, b = make_frame(seed=1), make_frame(shift=1.0, seed=2)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    v2 = str(mlgitops.publish(train(b, seed=2), b, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    git.push(work)
    v2_digest = _digest(work, v2)

    def invalid(w: Path) -> list[str]:
        path = w / layout.manifest_path(NAME)
        doc = yaml.safe_load(path.read_text())
        doc["kind"] = "NotADeployment"
        path.write_text(yaml.safe_dump(doc))
        return [layout.manifest_path(NAME)]

    def quarantine_v2(w: Path) -> list[str]:
        entry = quarantine.Entry(model=NAME, digest=v2_digest, commit=v2, reason="drifted",
                                 at="2025-01-01T00:00:00Z")
        doc = quarantine.add((), entry)
        (w / layout.QUARANTINE).write_text(quarantine.HEADER + yaml.safe_dump(doc))
        return [layout.QUARANTINE]

    def remove(w: Path) -> list[str]:
        (w / layout.manifest_path(NAME)).unlink()
        return [layout.manifest_path(NAME)]

    def revert_v2(w: Path) -> list[str]:  # what the drift monitor's revert commit does
        git.run(w, "checkout", "-q", v1, "--", *layout.model_paths(NAME))
        return list(layout.model_paths(NAME))

    def shadowed(w: Path) -> list[str]:  # v2's content, rolled out under a shadow
        path = w / layout.manifest_path(NAME)
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["rollout"] = {"strategy": "shadow", "shadow": {"rows": 100}}
        path.write_text(yaml.safe_dump(doc))
        return [layout.manifest_path(NAME)]

    commits = {
        "v1": v1,
        "v2": v2,
        "bad": _branch(work, "bad", v1, invalid),
        "quarantined": _branch(work, "quarantined", v2, quarantine_v2),
        "gone": _branch(work, "gone", v1, remove),
        "reverted": _branch(work, "reverted", v2, revert_v2),
        "shadow": _branch(work, "shadow", v2, shadowed),
    }
    commits["shadow-reverted"] = _branch(work, "shadow-reverted", commits["shadow"], revert_v2)
    digests = {k: _digest(work, commits[k])
               for k in ("v1", "v2", "reverted", "shadow", "shadow-reverted")}
    return Template(work, bare, commits, digests)


class Driver(Protocol):
    """One runtime behind the reconciler, for the table."""

    bare: Path
    reconciler: rec.Reconciler[Any]

    def converge(self) -> None:
        """Reconcile until nothing is under way (a rollout done, a retry made)."""
        ...


def point(bare: Path, commit: str) -> None:
    git.run(bare, "update-ref", f"refs/heads/{layout.BRANCH}", commit)


def converge(reconciler: rec.Reconciler[Any], *, timeout: float = 180.0,
             on_timeout: Callable[[], str] = lambda: "") -> None:
    """Passes until no deploy is under way and no retry is due (a rollout polls itself)."""
    deadline = time.monotonic() + timeout
    while True:
        reconciler.reconcile()
        if reconciler.retry_after is None and not reconciler.retry_wanted:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"still under way after {timeout:.0f} s{on_timeout()}")
        time.sleep(min(reconciler.retry_after or 1.0, 1.0))


@dataclass(frozen=True)
class Step:
    move: str
    """``git:<label>``, ``outage`` (the remote cannot be fetched: the pass fails, Transient),
    ``answer`` (it can again) or ``promote`` (the monitor's analysis passed the rollout's
    last step)."""
    serving: str | None
    """The label of the commit serving afterwards."""
    held: str | None = None
    """The Stalled reason afterwards (None: not Stalled)."""
    candidate: str | None = None
    """The label of a rollout's candidate running beside it afterwards (None: none)."""


SCENARIOS: dict[str, tuple[Step, ...]] = {
    "deploy": (Step("git:v1", "v1"),),
    "hold an invalid version while the old one serves": (
        Step("git:v1", "v1"), Step("git:bad", "v1", held="InvalidVersion")),
    "retry after a transient failure": (
        Step("git:v1", "v1"), Step("outage", "v1"), Step("git:v2", "v1"),
        Step("answer", "v2")),
    "quarantine": (Step("git:v1", "v1"), Step("git:quarantined", "v1", held="Quarantined")),
    "revert": (Step("git:v2", "v2"), Step("git:reverted", "reverted")),
    "shadow, then promote": (
        Step("git:v1", "v1"), Step("git:shadow", "v1", candidate="shadow"),
        Step("promote", "shadow")),
    "shadow, then revert": (
        Step("git:v1", "v1"), Step("git:shadow", "v1", candidate="shadow"),
        Step("git:shadow-reverted", "shadow-reverted")),
}

#: Scenarios a runtime cannot run yet, with the missing piece (an xfail, visible in every run).
NOT_YET: dict[str, dict[str, str]] = {"kubernetes": {}}


def run_scenario(steps: tuple[Step, ...], driver: Driver, template: Template) -> None:
    """Play ``steps`` on ``driver``; after each, what serves and what is held are as said."""
    away = driver.bare.with_name(driver.bare.name + ".away")
    for step in steps:
        verb, _, arg = step.move.partition(":")
        if verb == "git":
            point(away if away.exists() else driver.bare, template.commits[arg])
        elif verb == "outage":
            driver.bare.rename(away)
            with pytest.raises(errors.Transient):
                driver.reconciler.reconcile()
        elif verb == "answer":
            away.rename(driver.bare)
        elif verb == "promote":  # what the monitor does once the last step passed
            policy, state = driver.reconciler.router.rollouts[NAME]
            driver.reconciler.router.rollouts[NAME] = (policy, replace(state, phase="promoted"))
        if not away.exists():
            driver.converge()
        handle = driver.reconciler.router.get(NAME)
        label = None if handle is None else next(
            (k for k, v in template.commits.items() if v == handle.version), handle.version)
        assert label == step.serving, f"after {step.move}: {label} serves, not {step.serving}"
        split = driver.reconciler.router.split(NAME)
        beside = None if split is None else next(
            (k for k, v in template.commits.items() if v == split.candidate.version), "?")
        assert beside == step.candidate, f"after {step.move}: candidate {beside}"
        if step.serving in template.digests:
            assert handle is not None and handle.digest == template.digests[step.serving]
        st = driver.reconciler.store.status(NAME)
        stalled = st.condition(ConditionType.STALLED)
        reason = stalled.reason if stalled is not None and stalled.status else None
        assert reason == step.held, f"after {step.move}: held {reason}, not {step.held}"
        if step.serving is not None:
            ready = st.condition(ConditionType.READY)
            assert ready is not None and ready.status, f"after {step.move}: not Ready"
