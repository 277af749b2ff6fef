"""Shared fixtures (real git repositories with a bare remote, real models, live servers) and the
test lanes. Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import lanes
from support.data import FEATURES, make_frame, train
from support.git import copy_published, remote_head
from support.net import free_port
from support.waits import wait_until

# kept importable from conftest for test modules not yet moved to ``support`` imports
__all__ = ["FEATURES", "copy_published", "free_port", "make_frame", "remote_head", "train",
           "wait_until"]

os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# the remotes' warm validators of short-lived test repositories exit soon after their last push
os.environ.setdefault("MLGITOPS_VALIDATOR_IDLE", "30")

HERE = Path(__file__).parent
pytest_plugins = ["pytester"]  # tests/test_lanes.py runs small test files through the lanes


@pytest.hookimpl(tryfirst=True)  # before `-m fast` selects by the lane marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lanes.assign(items, cluster_dir=HERE / "k8s")


# setup and call run in the test's lane: a fast test (its fixtures included) may start no
# process. Not teardown: the last test of a module tears down module fixtures an earlier test of
# another lane set up.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with lanes.running(item.stash.get(lanes.LANE, None)):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with lanes.running(item.stash.get(lanes.LANE, None)):
        return (yield)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    from mlgitops.authoring import repository

    work = tmp_path / "models-repo"
    repository.init(work)
    return work


@pytest.fixture()
def publish_version(repo: Path) -> Callable[..., str]:
    import mlgitops

    def _publish(*, name: str = "credit", shift: float = 0.0, seed: int = 0,
                 kind: str = "forest", push: bool = True) -> str:
        frame = make_frame(shift=shift, seed=seed)
        return str(mlgitops.publish(train(frame, kind=kind, seed=seed), frame, name=name,
                                    repo=repo, target="label", push=push, quiet=True))

    return _publish


@pytest.fixture(scope="session")
def numeric_server() -> Iterator[Any]:
    """A live `mlgitops serve` of a numeric-feature model, shared by the server tests."""
    from support import servers

    yield servers.shared("numeric")
    servers.stop_shared()


@pytest.fixture(scope="session")
def mixed_server() -> Iterator[Any]:
    """A live server of a model whose signature mixes column types."""
    from support import servers

    yield servers.shared("mixed")
    servers.stop_shared()
