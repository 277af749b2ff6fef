"""The scenario table (`scenarios`) against the local runtime: real server processes.

The same `Reconciler` as ``mlgitops up``, with `adapters.local_runtime.LocalRuntime` as its
``Workloads`` and the state files as its store; each deploy starts a real server process that
loads the real model, and what serves is asked over HTTP.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support import scenarios

from mlgitops.adapters import local_runtime
from mlgitops.controller import reconciler as rec
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> scenarios.Template:
    return scenarios.build_template(tmp_path_factory.mktemp("scenarios-local"))


@dataclass
class LocalDriver:
    bare: Path
    reconciler: rec.Reconciler[local_runtime.Backend]

    def converge(self) -> None:
        scenarios.converge(self.reconciler, timeout=120.0)
        handle = self.reconciler.router.get(scenarios.NAME)
        if handle is not None:  # the process answers with the version it was told to serve
            answer = httpx.get(f"{handle.url}/v2/models/{scenarios.NAME}", timeout=10).json()
            assert answer["version"] == handle.version


@pytest.fixture()
def driver(template: scenarios.Template, tmp_path: Path) -> Iterator[LocalDriver]:
    bare = tmp_path / "remote.git"
    shutil.copytree(template.bare, bare, symlinks=True)
    state = tmp_path / "state"
    runtime = local_runtime.LocalRuntime(state, standby=0, stats_root=state / "stats")
    reconciler: rec.Reconciler[local_runtime.Backend] = rec.Reconciler(
        source=source_mod.Source(state, url=f"file://{bare}"), workloads=runtime,
        store=state_mod.Store(state), router=rec.Router(),
        endpoint=lambda n: f"http://127.0.0.1/v2/models/{n}", drain_seconds=0.0,
        progressive=True)
    try:
        yield LocalDriver(bare, reconciler)
    finally:
        reconciler.stop_all()
        runtime.close()
        assert not runtime.sweep(), "a server process outlived the scenario"


@pytest.mark.parametrize("scenario", sorted(scenarios.SCENARIOS))
def test_scenario_on_the_local_runtime(scenario: str, driver: LocalDriver,
                                       template: scenarios.Template) -> None:
    scenarios.run_scenario(scenarios.SCENARIOS[scenario], driver, template)
