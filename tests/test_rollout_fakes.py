"""The reconciler's rollouts against the fake runtime (real repository and source)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import scenarios

from mlgitops.controller import fakes
from mlgitops.controller import reconciler as rec
from mlgitops.controller import source as source_mod

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> scenarios.Template:
    return scenarios.build_template(tmp_path_factory.mktemp("rollout-fakes"))


def _reconciler(template: scenarios.Template, tmp_path: Path, *, progressive: bool,
                store: fakes.FakeStatus | None = None,
                workloads: fakes.FakeWorkloads | None = None,
                ) -> rec.Reconciler[fakes.FakeHandle]:
    bare = tmp_path / "remote.git"
    if not bare.exists():
        shutil.copytree(template.bare, bare, symlinks=True)
    return rec.Reconciler(source=source_mod.Source(tmp_path / "state", url=f"file://{bare}"),
                          workloads=workloads or fakes.FakeWorkloads(),
                          store=store or fakes.FakeStatus(), router=rec.Router(),
                          endpoint=lambda n: f"http://gw.invalid/{n}", drain_seconds=0.0,
                          progressive=progressive)


def test_a_runtime_without_candidates_deploys_a_shadowed_version_directly(
        template: scenarios.Template, tmp_path: Path) -> None:
    store = fakes.FakeStatus()
    reconciler = _reconciler(template, tmp_path, progressive=False, store=store)
    scenarios.point(tmp_path / "remote.git", template.commits["v1"])
    reconciler.reconcile()
    scenarios.point(tmp_path / "remote.git", template.commits["shadow"])
    out = reconciler.reconcile()
    assert [s.action.value for s in out.steps] == ["candidate"]  # what the plan says ...
    handle = reconciler.router.get(scenarios.NAME)
    assert handle is not None and handle.version == template.commits["shadow"]  # ... not done
    assert reconciler.router.split(scenarios.NAME) is None
    assert store.kinds().count("Deployed") == 2


def test_a_restarted_controller_with_nothing_serving_restores_the_stable_version_first(
        template: scenarios.Template, tmp_path: Path) -> None:
    store = fakes.FakeStatus()
    first = _reconciler(template, tmp_path, progressive=True, store=store)
    scenarios.point(tmp_path / "remote.git", template.commits["v1"])
    first.reconcile()
    scenarios.point(tmp_path / "remote.git", template.commits["shadow"])
    first.reconcile()
    assert first.router.split(scenarios.NAME) is not None
    first.stop_all()  # everything stopped; the status keeps the rollout
    second = _reconciler(template, tmp_path, progressive=True, store=store)
    second.reconcile()
    stable = second.router.get(scenarios.NAME)
    split = second.router.split(scenarios.NAME)
    assert stable is not None and stable.digest == template.digests["v1"]
    assert split is not None and split.candidate.version == template.commits["shadow"]
    assert store.kinds()[-1] == "RolloutResumed"


def test_a_dead_candidate_starts_again_at_its_step(template: scenarios.Template,
                                                   tmp_path: Path) -> None:
    workloads, store = fakes.FakeWorkloads(), fakes.FakeStatus()
    reconciler = _reconciler(template, tmp_path, progressive=True, workloads=workloads,
                             store=store)
    scenarios.point(tmp_path / "remote.git", template.commits["v1"])
    reconciler.reconcile()
    scenarios.point(tmp_path / "remote.git", template.commits["shadow"])
    reconciler.reconcile()
    split = reconciler.router.split(scenarios.NAME)
    assert split is not None
    workloads.kill(split.candidate)
    reconciler.reconcile()
    again = reconciler.router.split(scenarios.NAME)
    assert again is not None and again.candidate.key != split.candidate.key
    assert store.kinds()[-2:] == ["CandidateLost", "RolloutResumed"]


def test_a_dead_stable_version_is_started_again_while_its_candidate_is_judged(
        template: scenarios.Template, tmp_path: Path) -> None:
    workloads, store = fakes.FakeWorkloads(), fakes.FakeStatus()
    reconciler = _reconciler(template, tmp_path, progressive=True, workloads=workloads,
                             store=store)
    scenarios.point(tmp_path / "remote.git", template.commits["v1"])
    reconciler.reconcile()
    scenarios.point(tmp_path / "remote.git", template.commits["shadow"])
    reconciler.reconcile()
    stable = reconciler.router.get(scenarios.NAME)
    assert stable is not None
    workloads.kill(stable)
    reconciler.reconcile()
    again = reconciler.router.get(scenarios.NAME)
    assert again is not None and again.key != stable.key and workloads.alive(again)
    assert again.version == stable.version
    assert reconciler.router.split(scenarios.NAME) is not None  # the rollout goes on
