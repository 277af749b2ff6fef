"""Test lanes: every test runs in exactly one of four, declared by a marker.

- ``fast``: in-process and quick: no server processes, no subprocesses but local git, no browser,
  no cluster. ``make test-fast`` runs this lane.
- ``process``: real server processes, ``mlgitops up`` and the CLI in subprocesses, pushes that go
  through the remote's hook and validator as what the test is about, forked sandboxes.
- ``browser``: headless Chromium.
- ``cluster``: a real kube-apiserver (everything under tests/k8s is in it).

A module declares its lane with ``pytestmark = pytest.mark.<lane>``; a class or a test may declare
another one for itself (the closest declaration wins). Collection fails for a test with no lane,
with two lanes declared at one level, or with a fixture its lane may not use (a server fixture in
the fast lane, say). At run time a fast test (its fixtures included) that forks, or starts a
child process other than git, fails, naming what it started, so "fast" stays true.
"""

from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# the lanes, registered as markers in pyproject.toml ([tool.pytest.ini_options] markers)
LANES = ("fast", "process", "browser", "cluster")

# fixtures that decide the lane of the tests using them: fixture -> the lanes allowed
FIXTURE_LANES: dict[str, frozenset[str]] = {
    "numeric_server": frozenset({"process", "browser"}),
    "mixed_server": frozenset({"process", "browser"}),
    "chromium_page": frozenset({"browser"}),
    "k8s_bin_dir": frozenset({"cluster"}),
    "k8s_cluster": frozenset({"cluster"}),
    "k8s_api": frozenset({"cluster"}),
    "k8s_namespace": frozenset({"cluster"}),
}

# git subcommands that serve: not for a fast test (a push to a local bare remote is fine)
_SLOW_GIT = frozenset({"daemon", "http-backend"})

# probes libraries run on their own, quickly: loky (scikit-learn's joblib) counts cores with
# lscpu, platform.processor() asks uname -p
_QUICK_TOOLS = frozenset({"lscpu", "uname"})

LANE = pytest.StashKey[str]()
current: str | None = None
"""The lane of the test running now (None outside a test)."""


def _declared(node: pytest.Item | pytest.Collector) -> set[str]:
    return {m.name for m in node.own_markers if m.name in LANES}


def _resolve(item: pytest.Item, cluster_dir: Path) -> tuple[str | None, str | None]:
    """(lane, problem) of one test: the closest declaration, or the cluster directory's."""
    in_cluster_dir = cluster_dir in Path(str(item.path)).parents
    lane: str | None = None
    for node in reversed(item.listchain()):
        names = _declared(node)
        if len(names) > 1:
            return None, f"{node.name} declares the lanes {', '.join(sorted(names))}: give one"
        if names:
            lane = names.pop()
            break
    if in_cluster_dir:
        if lane not in (None, "cluster"):
            return None, f"it is under {cluster_dir.name}/ (the cluster lane) but marked {lane}"
        lane = "cluster"
    if lane is None:
        return None, (
            "it has no lane: add `pytestmark = pytest.mark.fast` (or process, browser, cluster) "
            "to its module, or mark the test"
        )
    for fixture in getattr(item, "fixturenames", ()):
        allowed = FIXTURE_LANES.get(fixture)
        if allowed is not None and lane not in allowed:
            return None, (
                f"it is in the {lane} lane but uses the fixture {fixture} "
                f"(lanes {', '.join(sorted(allowed))}): mark it {sorted(allowed)[-1]}"
            )
    return lane, None


def assign(items: list[pytest.Item], cluster_dir: Path) -> None:
    """Give every test exactly one lane marker (on the test itself, so that ``-m fast`` selects
    by the resolved lane, not by a module mark a test overrides); fail collection, naming each
    test without a lane or with a contradictory one."""
    problems: list[str] = []
    for item in items:
        lane, problem = _resolve(item, cluster_dir)
        if problem is not None:
            problems.append(f"  {item.nodeid}: {problem}")
        elif lane is not None:
            item.stash[LANE] = lane
    if problems:
        raise pytest.UsageError(
            "every test needs exactly one lane (see tests/support/lanes.py):\n" + "\n".join(problems)
        )
    for item in items:
        for node in item.listchain()[:-1]:
            node.own_markers[:] = [m for m in node.own_markers if m.name not in LANES]
        lane = item.stash[LANE]
        item.own_markers[:] = [m for m in item.own_markers if m.name not in LANES]
        item.add_marker(lane)


def _program(args: Any, shell: bool) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        return shlex.split(text) if shell else [text]
    return [os.fsdecode(a) for a in args]


def _git_subcommand(argv: list[str]) -> str | None:
    rest = iter(argv[1:])
    for arg in rest:
        if arg in ("-C", "-c", "--git-dir", "--work-tree", "--namespace"):
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def refusal(args: Any, shell: bool = False) -> str | None:
    """Why a fast test may not start this process, or None when it may."""
    argv = _program(args, shell)
    if not argv:
        return None
    program = Path(argv[0]).name
    if program == "git" and _git_subcommand(argv) not in _SLOW_GIT:
        return None
    if program in _QUICK_TOOLS:
        return None
    return f"started `{shlex.join(argv)[:200]}`"


@contextlib.contextmanager
def running(lane: str | None) -> Iterator[None]:
    """Run one phase of a test (setup, call, teardown) in ``lane``; in the fast lane refuse any
    child process other than a local git command, and fail the phase naming what it started."""
    global current
    previous, current = current, lane
    if lane != "fast":
        try:
            yield
        finally:
            current = previous
        return
    refused: list[str] = []
    popen, fork, spawnv = subprocess.Popen, os.fork, multiprocessing.util.spawnv_passfds

    def refuse(why: str) -> AssertionError:
        refused.append(why)
        return AssertionError(f"a fast test {why}: mark it process (tests/support/lanes.py)")

    class FastLanePopen(popen):  # type: ignore[valid-type,misc]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            why = refusal(args, bool(kwargs.get("shell", False)))
            if why is not None:
                raise refuse(why)
            super().__init__(args, *rest, **kwargs)

    def no_fork() -> int:
        raise refuse("forked a process")

    def no_spawn(path: Any, args: Any, passfds: Any) -> int:
        raise refuse(f"spawned `{shlex.join(_program(args, False))[:200]}`")

    subprocess.Popen = FastLanePopen  # type: ignore[misc]
    os.fork = no_fork
    multiprocessing.util.spawnv_passfds = no_spawn
    try:
        yield
    except BaseException as exc:
        if refused and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            _fail(refused, exc)
        raise
    finally:
        subprocess.Popen = popen  # type: ignore[misc]
        os.fork = fork
        multiprocessing.util.spawnv_passfds = spawnv
        current = previous
    if refused:
        _fail(refused, None)


def _fail(refused: list[str], cause: BaseException | None) -> None:
    try:
        pytest.fail(
            "this test is in the fast lane but " + "; ".join(dict.fromkeys(refused))
            + ": mark it process (`@pytest.mark.process`, or the module's pytestmark)",
            pytrace=False,
        )
    except BaseException as failed:
        raise failed from cause


def require(lane: str, what: str) -> None:
    """Fail a test that needs ``what`` (e.g. Chromium) unless it runs in ``lane``."""
    if current is not None and current != lane:
        pytest.fail(f"{what} is for the {lane} lane, but this test is in {current}: mark it {lane}",
                    pytrace=False)
