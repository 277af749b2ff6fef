"""Deploy and hold decisions, from the reconciler's events: the same records on both runtimes.

A ``Deployed`` event becomes a deploy decision (once per model and version: a restart that
starts the same commit again is not another decision), a ``Held`` event a hold decision naming
what still serves. `RolloutRecorder` is a `state.Store` listener.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reports as reports_mod
from mlgitops.controller.router import Router
from mlgitops.core import decisions


class RolloutRecorder:
    """Turns ``Deployed``/``Held`` events into decision records given to ``dispatcher``."""

    def __init__(self, state_dir: Path, dispatcher: decision_log.Dispatcher,
                 router: Router[Any], *, base_url: Callable[[], str | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.dispatcher = dispatcher
        self.router = router
        self.base_url = base_url
        self.clock = clock
        self.rollouts = decision_log.Rollouts(state_dir / reports_mod.REPORTS)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = {"Deployed": decisions.Kind.DEPLOY, "Held": decisions.Kind.HOLD}.get(
            str(event.get("type")))
        name = str(event.get("model") or "")
        if kind is None or not name:
            return
        version = event.get("commit")
        if kind is decisions.Kind.DEPLOY and not self.rollouts.new_deploy(name, version):
            return  # the same commit started again (a restart): not another decision
        previous = event.get("previous")
        if kind is decisions.Kind.HOLD:
            serving = self.router.get(name)
            previous = serving.version if serving is not None else None
        self.dispatcher.submit(decisions.of_rollout(
            kind=kind, model=name, at=self.clock(), version=version,
            previous_version=str(previous) if previous else None,
            verdict=str(event.get("message") or ""), digest=event.get("digest"),
            base_url=self.base_url()))
