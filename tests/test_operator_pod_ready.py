"""The operator's pod watch: a model pod turning Ready wakes the loops deploying to its namespace
once (a rollout waiting for it is marked Ready at once, not at its next look)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from mlgitops.controller.loop import Loop
from mlgitops.operator import handlers

pytestmark = pytest.mark.fast

READY = {"conditions": [{"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "True"}]}
NOT_READY = {"conditions": [{"type": "Ready", "status": "False"}]}


@pytest.fixture()
def loops() -> Iterator[dict[str, Loop]]:
    """One waiting loop per namespace, registered as the operator's runtimes are."""
    made: dict[str, Loop] = {}
    for ns in ("models", "elsewhere"):
        loop = Loop(None, poll_seconds=30.0)  # type: ignore[arg-type]  # only its trigger is used
        loop.pending_fetch = False
        made[ns] = loop
        runtime = SimpleNamespace(repo=SimpleNamespace(namespace=ns), loop=loop)
        handlers._runtimes[f"test.{ns}"] = (runtime, threading.Event(), threading.Thread())  # type: ignore[assignment]
    yield made
    for ns in made:
        handlers._runtimes.pop(f"test.{ns}", None)
    handlers._ready_pods.clear()


def woken(loop: Loop) -> bool:
    was = loop.wake.is_set() and loop.pending_fetch
    loop.wake.clear()
    loop.pending_fetch = False
    return was


def test_a_pod_turning_ready_wakes_the_loops_of_its_namespace_once(loops: dict[str, Loop]) -> None:
    handlers.pod_ready(uid="a", namespace="models", status=NOT_READY, type="ADDED")
    assert not woken(loops["models"])
    handlers.pod_ready(uid="a", namespace="models", status=READY, type="MODIFIED")
    assert woken(loops["models"]) and not woken(loops["elsewhere"])
    handlers.pod_ready(uid="a", namespace="models", status=READY, type="MODIFIED")
    assert not woken(loops["models"])  # still ready: already told
    handlers.pod_ready(uid="a", namespace="models", status=NOT_READY, type="MODIFIED")
    handlers.pod_ready(uid="a", namespace="models", status=READY, type="MODIFIED")
    assert woken(loops["models"])  # ready again after a failed readiness probe


def test_a_deleted_pod_is_forgotten(loops: dict[str, Loop]) -> None:
    handlers.pod_ready(uid="b", namespace="elsewhere", status=READY, type="ADDED")
    assert woken(loops["elsewhere"]) and not woken(loops["models"])
    handlers.pod_ready(uid="b", namespace="elsewhere", status=READY, type="DELETED")
    assert not woken(loops["elsewhere"])
    assert "b" not in handlers._ready_pods
