"""The router's split (shared by both runtimes' gateways): who answers, who gets a copy."""

from __future__ import annotations

import pytest

from mlgitops.controller import fakes
from mlgitops.controller.router import Router, Split

pytestmark = pytest.mark.fast

STABLE = fakes.FakeHandle("credit", "v1", "sha256:a", 1)
CANDIDATE = fakes.FakeHandle("credit", "v2", "sha256:b", 2)


def _router(split: Split[fakes.FakeHandle] | None) -> Router[fakes.FakeHandle]:
    router: Router[fakes.FakeHandle] = Router()
    router.set("credit", STABLE)
    if split is not None:
        router.set_split("credit", split)
    return router


def test_without_a_split_the_stable_version_answers_and_nothing_is_copied() -> None:
    assert _router(None).choose("credit", "anyone") == (STABLE, "stable", None, None)


def test_a_shadow_answers_every_user_from_stable_and_copies_to_the_candidate() -> None:
    router = _router(Split(CANDIDATE, "shadow", 0, 0))
    for key in (None, "a", "b"):
        backend, role, copy, counters = router.choose("credit", key)
        assert (backend, role, copy) == (STABLE, "stable", CANDIDATE) and counters is not None


def test_a_canary_splits_by_weight_and_keeps_one_key_on_one_version() -> None:
    router = _router(Split(CANDIDATE, "canary", 30, 1, key="x-user"))
    picks = {f"user-{i}": router.choose("credit", f"user-{i}")[0] for i in range(2000)}
    assert all(router.choose("credit", k)[0] is v for k, v in list(picks.items())[:200])
    share = sum(v is CANDIDATE for v in picks.values()) / len(picks)
    assert 0.25 < share < 0.35
    _, role, copy, _ = next(router.choose("credit", k) for k, v in picks.items()
                                  if v is CANDIDATE)
    assert role == "candidate" and copy is STABLE  # compared with the stable version's answer


def test_a_frozen_split_sends_nothing_to_the_candidate_and_a_new_step_new_counters() -> None:
    router = _router(Split(CANDIDATE, "canary", 100, 1))
    first = router.counters["credit"]
    assert router.choose("credit")[0] is CANDIDATE
    router.freeze("credit")
    assert router.choose("credit") == (STABLE, "stable", None, None)
    router.set_split("credit", Split(CANDIDATE, "canary", 50, 2))
    assert router.counters["credit"] is not first
    router.end_split("credit")
    assert router.split("credit") is None and "credit" not in router.counters
