"""A rollback routes to the previous version's workload kept warm instead of loading it again.

Real repository and source (v1, v2, then a revert commit restoring v1's content), the fake
`Workloads` port: what was started, drained and stopped is recorded, in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_frame, train

import mlgitops
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.controller import fakes
from mlgitops.controller import reconciler as rec
from mlgitops.controller import source as source_mod
from mlgitops.core import layout

NAME = "credit"


@pytest.fixture(scope="module")
def commits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("rollback-warm")
    work = root / "models-repo"
    bare = repository.init(work)
    a, b = make_frame(seed=1), make_frame(shift=1.0, seed=2)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    v2 = str(mlgitops.publish(train(b, seed=2), b, name=NAME, repo=work, target="label",
                              push=False, quiet=True))
    paths = list(layout.model_paths(NAME))
    git.run(work, "rm", "-r", "-q", "--", *paths)
    git.run(work, "checkout", "-q", v1, "--", *paths)
    revert = git.commit(work, message="revert v2", paths=paths)
    assert revert is not None
    git.push(work)
    return bare, {"v1": v1, "v2": v2, "revert": revert}


def world(bare: Path, tmp_path: Path, *, keep: float) -> tuple[
        rec.Reconciler[fakes.FakeHandle], fakes.FakeWorkloads, rec.Router[fakes.FakeHandle]]:
    source = source_mod.Source(tmp_path / "state", url=str(bare), local=bare)
    workloads = fakes.FakeWorkloads()
    router: rec.Router[fakes.FakeHandle] = rec.Router()
    reconciler = rec.Reconciler(source=source, workloads=workloads, store=fakes.FakeStatus(),
                                router=router, endpoint=lambda n: f"http://gw.invalid/{n}",
                                drain_seconds=0.0, keep_previous_seconds=keep)
    return reconciler, workloads, router


def at(bare: Path, commit: str) -> None:
    git.run(bare, "update-ref", f"refs/heads/{layout.BRANCH}", commit)


def wait(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_rollback_routes_to_the_kept_version_without_loading_it(
    commits: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bare, c = commits
    reconciler, workloads, router = world(bare, tmp_path, keep=60.0)
    at(bare, c["v1"])
    reconciler.reconcile()
    first = router.get(NAME)
    assert first is not None
    at(bare, c["v2"])
    reconciler.reconcile()
    assert first in workloads.running.values()  # replaced, but kept warm
    assert NAME in reconciler.parked and workloads.stopped == []
    at(bare, c["revert"])
    reconciler.reconcile()
    assert router.get(NAME) is first  # the same workload: nothing loaded
    assert [h.version for h in workloads.deployed] == [c["v1"], c["v2"]]
    wait(lambda: workloads.stopped)  # the bad version is not kept: it drains and stops
    assert [h.version for h in workloads.stopped] == [c["v2"]]
    assert NAME not in reconciler.parked
    # the content serves at once; the next pass serves it under the revert's commit
    reconciler.reconcile()
    current = router.get(NAME)
    assert current is not None and current.version == c["revert"]
    assert current.digest == first.digest
    wait(lambda: first.key not in workloads.running)
    reconciler.stop_all()


def test_without_keeping_the_rollback_loads_the_previous_version_again(
    commits: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bare, c = commits
    reconciler, workloads, _ = world(bare, tmp_path, keep=0.0)
    for label in ("v1", "v2", "revert"):
        at(bare, c[label])
        reconciler.reconcile()
    assert [h.version for h in workloads.deployed] == [c["v1"], c["v2"], c["revert"]]
    wait(lambda: len(workloads.stopped) == 2)
    assert reconciler.parked == {}
    reconciler.stop_all()


def test_a_kept_version_stops_when_its_time_is_up_or_the_controller_stops(
    commits: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bare, c = commits
    reconciler, workloads, _ = world(bare, tmp_path, keep=0.3)
    at(bare, c["v1"])
    reconciler.reconcile()
    at(bare, c["v2"])
    reconciler.reconcile()
    kept = reconciler.parked[NAME][0]
    assert kept.version == c["v1"] and kept in workloads.drained
    wait(lambda: kept in workloads.stopped)
    assert NAME not in reconciler.parked
    reconciler2, workloads2, _ = world(bare, tmp_path / "second", keep=600.0)
    at(bare, c["v1"])
    reconciler2.reconcile()
    at(bare, c["v2"])
    reconciler2.reconcile()
    reconciler2.stop_all()
    assert workloads2.running == {}
