"""Shared hosts are forked from a zygote: they share the imported libraries' memory.

A real `mlgitops up` (in process) serving two small models: their host is a child of the
runtime's zygote, carries its own ledger token in the environment the kernel shows (so a
controller restarted after a crash finds and adopts it by that token), holds most of its pages
shared, and a host killed with SIGKILL is replaced by a fresh fork.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from support.net import free_port, version_at
from support.waits import wait_until

from mlgitops import settings
from mlgitops.adapters import local_runtime
from mlgitops.controller import run

pytestmark = pytest.mark.process

NAMES = ("alpha", "beta")


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def _zygotes(state: Path) -> list[int]:
    records = local_runtime.Ledger(state / local_runtime.LEDGER).records().values()
    return [int(r["pid"]) for r in records if r.get("role") == "zygote" and r.get("pid")]


def test_hosts_are_forks_of_the_zygote_with_their_own_token_and_shared_pages(
        repo: Path, publish_version: Callable[..., str]) -> None:
    versions = {n: publish_version(name=n, seed=i, kind="logistic") for i, n in enumerate(NAMES)}
    cfg = settings.controller(repo, port=free_port(), poll_seconds=2.0, monitor=False)
    with run.running(cfg) as ctl:
        for name, v in versions.items():
            wait_until(lambda n=name, v=v: version_at(ctl.base_url, n) == v,  # type: ignore[misc]
                       what=f"{name} serving", timeout=120)
        state = ctl.runtime.state_dir
        backends = [b for n in NAMES if (b := ctl.router.get(n)) is not None]
        (pid,) = {b.pid for b in backends}
        (zygote,) = _zygotes(state)
        assert _ppid(zygote) == os.getpid() and _ppid(pid) == zygote
        # the token the kernel shows is the host's own: recovery finds it by that
        tokens = local_runtime.server_tokens(state)
        assert tokens[pid] == backends[0].token != tokens[zygote]
        mem = _memory(pid)
        assert mem["Pss"] < 0.6 * mem["Rss"], f"most of a forked host's pages are shared: {mem}"

        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all(version_at(ctl.base_url, n) == versions[n] for n in NAMES)
                   and {b.pid for n in NAMES if (b := ctl.router.get(n))} - {pid},
                   what="both models back in a new host", timeout=90)
        (new,) = {b.pid for n in NAMES if (b := ctl.router.get(n)) is not None}
        assert _ppid(new) == zygote, "the replacement host is a fork of the same zygote"
    assert not local_runtime.pid_alive(zygote), "the zygote stops with its runtime"
