"""The test lanes (tests/support/lanes.py) hold: a test without a lane stops collection, a test
overriding its module's lane is selected by its own, and a fast test that starts a process fails.
An inner pytest session (pytester, in this process) runs small test files through the same hooks."""

from __future__ import annotations

import sys

import pytest
from support import lanes

pytestmark = pytest.mark.fast

CONFTEST = '''
from pathlib import Path

import pytest
from support import lanes


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    lanes.assign(items, cluster_dir=Path(__file__).parent / "k8s")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with lanes.running(item.stash.get(lanes.LANE, None)):
        return (yield)


@pytest.fixture()
def numeric_server():
    return None
'''


@pytest.fixture()
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {lane}: lane\n" for lane in lanes.LANES))
    pytester.makeconftest(CONFTEST)
    return pytester


def test_a_test_without_a_lane_stops_collection_naming_it(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_orphan="def test_nothing():\n    pass\n")
    result = inner.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_orphan.py::test_nothing: it has no lane*pytestmark*"])


def test_two_lanes_at_one_level_or_a_server_fixture_in_the_fast_lane_are_refused(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(test_two="import pytest\n\n@pytest.mark.fast\n@pytest.mark.process\n"
                              "def test_both():\n    pass\n")
    inner.makepyfile(test_server="import pytest\n\npytestmark = pytest.mark.fast\n\n"
                                 "def test_uses(numeric_server):\n    pass\n")
    result = inner.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines_random([
        "*test_both: test_both declares the lanes fast, process: give one*",
        "*test_uses: it is in the fast lane but uses the fixture numeric_server*",
    ])


def test_the_closest_lane_wins_and_m_selects_by_it(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_mixed="import pytest\n\npytestmark = pytest.mark.fast\n\n"
                                "def test_quick():\n    pass\n\n"
                                "@pytest.mark.process\ndef test_slow():\n    pass\n")
    fast = inner.runpytest_inprocess("-m", "fast", "-v")
    fast.assert_outcomes(passed=1, deselected=1)
    fast.stdout.fnmatch_lines(["*test_quick PASSED*"])
    process = inner.runpytest_inprocess("-m", "process", "-v")
    process.assert_outcomes(passed=1, deselected=1)
    process.stdout.fnmatch_lines(["*test_slow PASSED*"])


def test_a_fast_test_may_run_git_but_no_other_process(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_procs=f"""
import subprocess
import pytest

pytestmark = pytest.mark.fast

def test_git():
    subprocess.run(["git", "--version"], check=True, capture_output=True)

def test_python():
    subprocess.run([{sys.executable!r}, "-c", "pass"], check=True)

@pytest.mark.process
def test_in_the_process_lane():
    from support import lanes
    assert lanes.current == "process"  # unguarded (this outer fast test cannot start one)
""")
    result = inner.runpytest_inprocess()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*fast lane but started `*python -c pass`: mark it process*"])


@pytest.mark.parametrize(("argv", "refused"), [
    (["git", "-C", "/r", "push", "origin"], False),
    (["git", "-c", "user.name=x", "daemon"], True),
    (["/usr/bin/git", "status"], False),
    (["lscpu"], False),
    ([sys.executable, "-m", "mlgitops.server"], True),
    ("git status", False),
])
def test_refusal_reads_the_program_and_the_git_subcommand(argv: object, refused: bool) -> None:
    assert (lanes.refusal(argv, shell=isinstance(argv, str)) is not None) is refused
