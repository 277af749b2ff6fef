"""The remote's warm validator: the same checks as the cold hook, the same sandbox, less waiting."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgitops import errors
from mlgitops.adapters import git, sandbox, validator
from mlgitops.authoring import hooks, repository
from mlgitops.core import layout, trust


def remote_of(repo: Path) -> Path:
    local = repository.remote_of(repo).local
    assert local is not None
    return local


@pytest.fixture()
def stop_validators() -> Iterator[list[Path]]:
    """Remotes whose validator the test started; stopped (by the pid it reports) at the end."""
    remotes: list[Path] = []
    yield remotes
    for remote in remotes:
        try:
            pid = int(validator.ask(remote, {"ping": True}, timeout=5.0)["pid"])
        except (OSError, ValueError, KeyError):
            continue
        os.kill(pid, signal.SIGTERM)


def wait_running(remote: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not validator.running(remote):
        assert time.monotonic() < deadline, f"no validator for {remote} within {timeout}s"
        time.sleep(0.1)


def tamper_digest(repo: Path, name: str = "credit") -> None:
    """Commit a manifest whose digest names other content (push it to see the refusal)."""
    path = repo / layout.manifest_path(name)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["model"]["digest"] = "sha256:" + "0" * 64
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(repo, message="wrong digest", paths=[layout.MANIFESTS])


def push_output(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), "push", "-q", "origin", "HEAD:main"],
                          capture_output=True, text=True, env={**os.environ, **env})


def test_a_publish_is_checked_by_the_warm_validator_and_its_digest_recorded(
    repo: Path, publish_version: Callable[..., str], stop_validators: list[Path]
) -> None:
    remote = remote_of(repo)
    stop_validators.append(remote)
    publish_version()
    assert validator.running(remote)  # the push waited for it: it brought a model to load
    dep = yaml.safe_load((repo / layout.manifest_path("credit")).read_text())
    recorded = (remote / hooks.VALIDATED_FILE).read_text().split()
    assert dep["spec"]["model"]["digest"] in recorded
    assert "ready for" in (remote / validator.LOG).read_text()


def test_warm_and_cold_refuse_the_same_push_with_the_same_sentence(
    repo: Path, publish_version: Callable[..., str], stop_validators: list[Path]
) -> None:
    stop_validators.append(remote_of(repo))
    publish_version()
    tamper_digest(repo)
    warm = push_output(repo)
    cold = push_output(repo, MLGITOPS_VALIDATOR="cold")
    assert warm.returncode != 0 and cold.returncode != 0
    assert "spec.model.digest says sha256:000" in warm.stderr
    sentence = [ln for ln in warm.stderr.splitlines() if "spec.model.digest" in ln]
    assert sentence and sentence[0] in cold.stderr


def test_content_validated_once_is_not_loaded_again(
    repo: Path, publish_version: Callable[..., str], stop_validators: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = remote_of(repo)
    stop_validators.append(remote)
    publish_version(seed=1)
    head = publish_version(seed=2)
    new = publish_version(seed=3, push=False)
    git.run(repo, "push", "-q", "origin", "HEAD:refs/heads/scratch")  # objects only: not main
    assert hooks.check_update(remote, head, new) == []  # loads it in the sandbox, records it
    loads: list[str] = []

    def no_load(model_dir: Path, **_: Any) -> int:
        loads.append(model_dir.name)
        raise errors.ModelError(f"{model_dir.name}: loaded in the test")

    monkeypatch.setattr(sandbox, "load_check", no_load)
    assert hooks.check_update(remote, head, new) == []
    assert loads == []  # the same digest, trusted types and policy: not loaded again
    (remote / hooks.VALIDATED_FILE).write_text("")
    problems = hooks.check_update(remote, head, new)
    assert loads == ["credit"] and "loaded in the test" in problems[0]


def test_only_the_models_a_push_touches_are_exported(
    repo: Path, publish_version: Callable[..., str], stop_validators: list[Path]
) -> None:
    stop_validators.append(remote_of(repo))
    publish_version(name="credit", seed=1)
    publish_version(name="other", seed=2)
    head = git.rev_parse(repo, "HEAD")
    assert head is not None
    with tempfile.TemporaryDirectory() as tmp:
        hooks._export(remote_of(repo), head, Path(tmp), models={"other"})
        assert (Path(tmp) / "models/other/model.skops").is_file()
        assert (Path(tmp) / "models/credit").is_dir()
        assert not any((Path(tmp) / "models/credit").iterdir())
        assert (Path(tmp) / layout.manifest_path("credit")).is_file()


def test_the_validator_reads_objects_only_inside_its_own_repository(tmp_path: Path) -> None:
    gitdir = tmp_path / "r.git"
    git.init_bare(gitdir)
    inside = gitdir / "objects" / "incoming-abc"
    inside.mkdir()
    assert hooks.git_environment(gitdir, {"GIT_OBJECT_DIRECTORY": str(inside)})
    with pytest.raises(errors.ConfigError, match="outside"):
        hooks.git_environment(gitdir, {"GIT_OBJECT_DIRECTORY": str(tmp_path)})
    with pytest.raises(errors.ConfigError, match="outside"):
        hooks.git_environment(gitdir, {"GIT_ALTERNATE_OBJECT_DIRECTORIES":
                                       f"{gitdir / 'objects'}:/etc"})
    with pytest.raises(errors.ConfigError, match="does not take"):
        hooks.git_environment(gitdir, {"GIT_DIR": str(gitdir)})
    answer = hooks.answer(gitdir, {"lines": [], "env": {"PATH": "/tmp"}})
    assert answer["status"] == 1 and "does not take" in answer["stderr"]


def test_the_transport_answers_one_at_a_time_keeps_one_process_and_idles_out(
    tmp_path: Path,
) -> None:
    gitdir = tmp_path / "r.git"
    gitdir.mkdir()
    seen: list[dict[str, Any]] = []

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return {"status": 0, "stderr": f"saw {request['n']}"}

    status: list[int] = []
    thread = threading.Thread(
        target=lambda: status.append(validator.serve(gitdir, handle=handle, idle=1.5)))
    thread.start()
    deadline = time.monotonic() + 10
    while not validator.running(gitdir):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert validator.ask(gitdir, {"n": 1}) == {"status": 0, "stderr": "saw 1"}
    assert validator.serve(gitdir, handle=handle, idle=1.0) == 0  # the lock: one per repository
    sock = validator.socket_path(gitdir)
    assert not sock.stat().st_mode & 0o077
    thread.join(timeout=15)
    assert not thread.is_alive() and status == [0]
    assert not sock.exists() and not validator.running(gitdir)
    assert seen == [{"n": 1}]


def test_a_validator_whose_sources_change_asks_to_be_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gitdir = tmp_path / "r.git"
    gitdir.mkdir()
    source = tmp_path / "module.py"
    source.write_text("x = 1\n")
    monkeypatch.setattr(validator, "sources", lambda: [source])
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(
        validator.serve(gitdir, handle=lambda r: {"status": 0}, idle=60.0)))
    thread.start()
    wait_running(gitdir, timeout=10)
    source.write_text("x = 22\n")  # an upgrade: another size and time
    thread.join(timeout=15)
    assert status == [validator.RESTART] and not validator.running(gitdir)


def test_without_a_validator_a_push_of_validated_content_is_checked_cold_at_once(
    repo: Path, publish_version: Callable[..., str], stop_validators: list[Path],
) -> None:
    remote = remote_of(repo)
    stop_validators.append(remote)
    publish_version(seed=1)
    pid = int(validator.ask(remote, {"ping": True})["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while validator.running(remote) or Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    path = repo / layout.manifest_path("credit")
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["serving"]["workers"] = 2
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(repo, message="two workers", paths=[layout.MANIFESTS])
    assert push_output(repo).returncode == 0  # the model's digest was validated: cold, no wait
    wait_running(remote)  # and a validator started for the next push


def test_the_runtime_directory_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    run = tmp_path / f"mlgitops-{os.getuid()}"
    run.mkdir(mode=0o755)
    run.chmod(0o755)
    with pytest.raises(errors.ConfigError, match="private"):
        validator.runtime_dir()
    assert not validator.running(tmp_path)  # and a client treats that as "no validator"


def _probe(request: dict[str, object]) -> dict[str, object]:
    """Stands in for the model load inside a forked child: reports what the child may do."""
    listing = os.listdir(".")
    try:
        with open("written", "w") as f:
            f.write("x" * 10)
            f.flush()
        wrote = "yes"
    except OSError as exc:
        wrote = type(exc).__name__
    return {"ok": True, "rows": 1, "cwd": listing, "env": sorted(os.environ),
            "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
            "as": resource.getrlimit(resource.RLIMIT_AS)[0],
            "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
            "sid": os.getsid(0) == os.getpid(), "wrote": wrote}


def test_a_forked_check_runs_under_the_sandbox_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_check", _probe)
    with tempfile.TemporaryDirectory() as empty:
        code, out, _ = sandbox._forked({}, empty=empty, timeout=30, name="probe")
    answer = json.loads(out)
    assert code == 0
    assert answer["cwd"] == [] and answer["sid"] is True
    assert answer["fsize"] == 0 and answer["as"] == sandbox.MEMORY_BYTES
    assert answer["cpu"] == sandbox.CPU_SECONDS
    assert answer["wrote"] == "OSError"  # RLIMIT_FSIZE 0: not one byte reaches a file
    assert "MLGITOPS_VALIDATOR_IDLE" not in answer["env"] and "HOME" in answer["env"]


def _hang(request: dict[str, object]) -> dict[str, object]:
    time.sleep(600)
    return {"ok": True}


def _die(request: dict[str, object]) -> dict[str, object]:
    os.kill(os.getpid(), signal.SIGKILL)
    return {"ok": True}


@pytest.mark.parametrize(("probe", "sentence"), [
    (_hang, "took over 1s in the sandbox"),
    (_die, "was killed by SIGKILL"),
])
def test_a_forked_check_that_hangs_or_dies_is_a_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, probe: Any, sentence: str
) -> None:
    monkeypatch.setattr(sandbox, "_check", probe)
    monkeypatch.setattr(sandbox, "_warm", True)
    start = time.monotonic()
    with pytest.raises(errors.ModelError, match=sentence):
        sandbox.load_check(tmp_path, trusted_types=[], policy=trust.DEFAULT, timeout=1.0)
    assert time.monotonic() - start < 10
