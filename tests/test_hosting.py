"""Many models per process: shared hosts under a real `mlgitops up` (in process), real HTTP.

- small models share one host process, each on its own port, with its own metrics and stats;
- a new version switches in with zero failed requests while the other models keep serving;
- content that does not load is tried in a staging process, never in a host that serves;
- a host killed with SIGKILL: its models serve again (the time is printed and bounded);
- the process-per-model mode (``MLGITOPS_HOSTING=process``) is still there.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from support.data import FEATURES, make_frame
from support.net import free_port, version_at
from support.waits import wait_until

from mlgitops import settings
from mlgitops.adapters import files, git, local_runtime, stats_store
from mlgitops.controller import run

pytestmark = pytest.mark.process

ROWS = make_frame(40, seed=7)[FEATURES].to_dict(orient="records")
NAMES = ("alpha", "beta", "gamma")


@pytest.fixture()
def fleet(repo: Path, publish_version: Callable[..., str]) -> Iterator[tuple[run.Controller, dict[str, str]]]:
    versions = {n: publish_version(name=n, seed=i, kind="forest" if i % 2 else "logistic")
                for i, n in enumerate(NAMES)}
    cfg = settings.controller(repo, port=free_port(), poll_seconds=2.0, monitor=False)
    assert cfg.sync.hosting == "shared"
    with run.running(cfg) as ctl:
        for name, v in versions.items():
            wait_until(lambda n=name, v=v: version_at(ctl.base_url, n) == v,  # type: ignore[misc]
                       what=f"{name} serving", timeout=120)
        yield ctl, versions


def _backends(ctl: run.Controller) -> dict[str, local_runtime.Backend]:
    return {n: b for n in NAMES if (b := ctl.router.get(n)) is not None}


def test_small_models_share_one_host_with_their_own_ports_metrics_and_stats(
    fleet: tuple[run.Controller, dict[str, str]],
) -> None:
    ctl, versions = fleet
    backends = _backends(ctl)
    assert len({b.pid for b in backends.values()}) == 1, "three small models, one host process"
    assert len({b.port for b in backends.values()}) == 3 and all(b.admin for b in backends.values())
    for name in NAMES:
        r = httpx.post(f"{ctl.base_url}/models/{name}/invocations",
                       json={"dataframe_records": ROWS[:5]}, timeout=10)
        assert r.status_code == 200, r.text
    for name in NAMES:
        text = httpx.get(f"{ctl.base_url}/models/{name}/metrics", timeout=5).text
        assert f'name="{name}"' in text and f'version="{versions[name]}"' in text
        others = [o for o in NAMES if o != name]
        assert not any(f'name="{o}"' in text for o in others)
        assert 'route="/invocations",code="200"} 1' in text
    # live statistics per model and version, where the monitor reads them
    source = local_runtime.StatsFiles(ctl.stats_root, runtime=ctl.runtime)
    for name in NAMES:
        def counted(n: str = name) -> bool:
            snap = source.read(n, versions[n])
            return snap.rows == 5 and all(w.pid == backends[n].pid for w in snap.workers.values())
        wait_until(counted, what=f"stats of {name}", timeout=20)
        assert isinstance(source.read(name, versions[name]), stats_store.Snapshot)
        assert source.serves_elsewhere(name, versions[name])


def test_switch_under_load_fails_no_request_and_others_keep_serving(
    fleet: tuple[run.Controller, dict[str, str]], publish_version: Callable[..., str],
) -> None:
    ctl, versions = fleet
    base = ctl.base_url
    host_pid = _backends(ctl)["beta"].pid
    outcomes: dict[str, list[int]] = {n: [] for n in NAMES}
    stop = threading.Event()

    def hammer(name: str) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{base}/models/{name}/invocations",
                                    json={"dataframe_records": ROWS[:4]})
                    outcomes[name].append(r.status_code)
                except httpx.HTTPError:
                    outcomes[name].append(-1)

    clients = [threading.Thread(target=hammer, args=(n,)) for n in NAMES for _ in range(2)]
    for c in clients:
        c.start()
    try:
        v2 = publish_version(name="alpha", seed=11, kind="logistic")
        wait_until(lambda: version_at(base, "alpha") == v2, what="alpha v2", timeout=60)

        def old_unloaded() -> bool:  # traffic keeps coming while the old version drains
            host = next((h for h in ctl.runtime.hosts() if h.pid == host_pid), None)
            return host is not None and ("alpha", versions["alpha"]) not in host.models.values()

        wait_until(old_unloaded, what="the old alpha drained and unloaded", timeout=60)
    finally:
        stop.set()
        for c in clients:
            c.join()
    for name, codes in outcomes.items():
        assert codes and all(c == 200 for c in codes), (name, {c for c in codes if c != 200})
    new = _backends(ctl)["alpha"]
    assert new.pid == host_pid, "a proven small version loads into the running host"
    host = next(h for h in ctl.runtime.hosts() if h.pid == host_pid)
    assert ("alpha", versions["alpha"]) not in host.models.values(), "the old version unloaded"
    assert ("alpha", v2) in host.models.values()


def test_content_that_does_not_load_never_enters_a_serving_host(
    repo: Path, fleet: tuple[run.Controller, dict[str, str]],
) -> None:
    ctl, versions = fleet
    before = {n: (b.pid, b.port) for n, b in _backends(ctl).items()}
    remote = Path(git.remote_url(repo) or "")
    (remote / "hooks" / "pre-receive").unlink()  # the bad commit must reach the controller
    skops = repo / "models/gamma/model.skops"
    content = skops.read_bytes()
    skops.write_bytes(content[: len(content) // 2])
    path = repo / "manifests/gamma.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["model"]["digest"] = files.dir_digest(repo / "models/gamma")
    path.write_text(yaml.safe_dump(doc))
    bad = git.commit(repo, message="broken gamma", paths=["models", "manifests"])
    assert bad is not None
    git.push(repo)
    ctl.trigger("test")
    wait_until(lambda: ctl.store.status("gamma").to_dict()["lastAttemptedCommit"] == bad
               and ctl.store.status("gamma").to_dict()["health"] == "Degraded",
               what=f"the broken version held ({ctl.store.status('gamma').to_dict()}, "
                    f"{list(ctl.store.events('gamma'))})", timeout=60)
    assert version_at(ctl.base_url, "gamma") == versions["gamma"]
    assert {n: (b.pid, b.port) for n, b in _backends(ctl).items()} == before
    host = next(iter(ctl.runtime.hosts()))
    loaded = {m["version"] for m in host.listing() if m["name"] == "gamma"}
    assert loaded == {versions["gamma"]}, "the bad version was never loaded where models serve"
    assert doc["spec"]["model"]["digest"] not in ctl.runtime.proven


def test_a_killed_host_brings_its_models_back(
    fleet: tuple[run.Controller, dict[str, str]], capsys: pytest.CaptureFixture[str],
) -> None:
    ctl, versions = fleet
    host_pid = _backends(ctl)["alpha"].pid
    wait_until(ctl.runtime.warm, what="a warm spare host", timeout=60)
    os.kill(host_pid, signal.SIGKILL)
    killed = time.perf_counter()

    def all_back() -> bool:
        return all(version_at(ctl.base_url, n) == versions[n] for n in NAMES)

    wait_until(all_back, what="every model of the killed host serving again", timeout=60)
    seconds = time.perf_counter() - killed
    with capsys.disabled():
        restarts = [e.get("seconds") for n in NAMES for e in ctl.store.events(n)
                    if e["type"] == "Restarted"]
        print(f"\n{len(NAMES)} models of a SIGKILLed host answer again after {seconds:.2f}s "
              f"(restart of each: {restarts} s)")
    assert {b.pid for b in _backends(ctl).values()} != {host_pid}
    assert seconds < 30
    kinds = [e["type"] for n in NAMES for e in ctl.store.events(n)]
    assert kinds.count("Restarted") >= len(NAMES)


def test_process_per_model_mode_is_kept(
    repo: Path, publish_version: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLGITOPS_HOSTING", "process")
    v1 = publish_version(name="solo")
    cfg = settings.controller(repo, port=free_port(), poll_seconds=2.0, monitor=False)
    assert cfg.sync.hosting == "process"
    with run.running(cfg) as ctl:
        wait_until(lambda: version_at(ctl.base_url, "solo") == v1, what="solo serving")
        backend = ctl.router.get("solo")
        assert backend is not None and backend.admin == 0 and not ctl.runtime.hosts()


@pytest.mark.fast
def test_a_wrong_hosting_mode_is_a_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlgitops import errors

    monkeypatch.setenv("MLGITOPS_HOSTING", "many")
    with pytest.raises(errors.ConfigError, match="MLGITOPS_HOSTING='many' is not one of shared, process"):
        settings.controller(tmp_path)
