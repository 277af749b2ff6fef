"""Racing pushes: whoever loses the race for the ref fetches, re-applies and pushes again.

Git words a lost race in several ways (found by racing real pushes against a bare remote whose
pre-receive hook sleeps): the loser of two pushes that pass the hook together gets
``[remote rejected] (failed to update ref)`` with ``cannot lock ref ...: is at X but expected
Y``; a push that connects after the winner landed gets ``[rejected] (fetch first)`` or
``(non-fast-forward)``. Every one of them is `errors.PushRejected`, retried by the monitor's
revert writer and by ``publish``; a refusal by a hook is not.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from pathlib import Path

import pytest
import yaml
from conftest import make_frame, train

import mlgitops
from mlgitops import errors, ui
from mlgitops.adapters import git
from mlgitops.authoring import publishing, repository
from mlgitops.controller import revert
from mlgitops.core import layout, policy
from mlgitops.core.manifest import DriftPolicy

ROUNDS = 20
SLOW_HOOK = "#!/bin/sh\ncat >/dev/null\nsleep 0.3\nexit 0\n"

# what git 2.39 printed for the races of this file, and what newer git and hosts print
MOVED = [
    "To /r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (failed to update ref)\nDone\n"
    "remote: error: cannot lock ref 'refs/heads/main': is at 1111111 but expected 2222222\n"
    "error: failed to push some refs to '/r.git'\n",
    "To /r.git\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone\n"
    "error: failed to push some refs to '/r.git'\nhint: Updates were rejected because the "
    "remote contains work that you do\n",
    "To /r.git\n!\tHEAD:refs/heads/main\t[rejected] (non-fast-forward)\nDone\n",
    "To /r.git\n!\tHEAD:refs/heads/main\t[rejected] (stale info)\nDone\n",
    "To /r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (incorrect old value provided)\nDone\n",
    "To /r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (reference already exists)\nDone\n",
    "To https://h/r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (cannot lock ref "
    "'refs/heads/main': is at 7dc98ee but expected 1bdf96c)\nDone\n",
]
REFUSED = [
    "To /r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone\n"
    "remote: models/credit: digest sha256:abc is quarantined\n",
    "To /r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (hook declined)\nDone\n",
    "fatal: '/nowhere.git' does not appear to be a git repository\n",
]


@pytest.mark.parametrize("out", MOVED)
def test_every_wording_of_a_moved_ref_is_a_race(out: str) -> None:
    assert git.ref_moved(out) is True


@pytest.mark.parametrize("out", REFUSED)
def test_a_refusal_is_not_a_race(out: str) -> None:
    assert git.ref_moved(out) is False


def test_an_unexplained_remote_refusal_asks_the_remote() -> None:
    out = "To /r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (something new)\nDone\n"
    assert git.ref_moved(out) is None


# ---------------------------------------------------------------------------------------------
# A human push and the monitor's revert, released at the same instant, many times


def _publish(work: Path, *, shift: float, seed: int) -> str:
    frame = make_frame(n=400, shift=shift, seed=seed)
    return str(mlgitops.publish(train(frame, seed=seed), frame, name="credit", repo=work,
                                target="label", push=False, quiet=True))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("race-template")
    work = root / "models-repo"
    bare = repository.init(work)
    _publish(work, shift=0.0, seed=1)
    _publish(work, shift=1.5, seed=2)
    git.push(work)
    return work, bare


def _decision(at: float) -> policy.Decision:
    ev = policy.Evidence(rows=200, share=0.8, drifted_columns=("f0", "f1"), fit_current=0.8,
                         fit_previous=0.0)
    return policy.decide(ev, policy.History(), DriftPolicy(min_rows=100, consecutive_windows=1),
                         now=at)


def _plan_now(bare: Path, at: float) -> policy.RevertPlan:
    """A revert of credit's version at the remote's head (it alternates between two contents)."""
    head = git.text(bare, "rev-parse", "refs/heads/main")
    version = git.last_change(bare, head, layout.model_paths("credit"))
    assert version is not None
    doc = yaml.safe_load(git.show(bare, version, layout.manifest_path("credit")) or b"")
    previous = git.last_change(bare, f"{version}^", layout.model_paths("credit"))
    return policy.revert_plan(_decision(at), name="credit", reverted=version,
                              digest=doc["spec"]["model"]["digest"], previous=previous,
                              report=f"http://127.0.0.1:1/reports/credit/r{at:.0f}.html",
                              at=f"2025-01-01T00:00:{int(at) % 60:02d}Z")


def test_human_push_and_revert_at_the_same_instant_both_land(
    template: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "models-repo.git"
    shutil.copytree(template[1], bare, symlinks=True)
    # a slow remote: both pushes pass pre-receive together, then race for the ref
    (bare / "hooks" / "pre-receive").write_text(SLOW_HOOK)
    git.run(bare, "config", "core.logAllRefUpdates", "always")
    git.run(bare, "config", "receive.denyNonFastForwards", "true")
    human = tmp_path / "colleague"
    git.clone(str(bare), human)
    start = git.text(bare, "rev-parse", "refs/heads/main")
    base_count = int(git.text(bare, "rev-list", "--count", start))

    tally = {"ok": 0, "moved": 0}
    real_push = git.push

    def counting_push(repo: Path, **kwargs: str) -> None:
        try:
            real_push(repo, **kwargs)
        except errors.PushRejected:
            tally["moved"] += 1
            raise
        tally["ok"] += 1

    monkeypatch.setattr(git, "push", counting_push)
    writer_state = tmp_path / "state"
    reverts: list[str] = []
    subjects: list[str] = []
    for rnd in range(ROUNDS):
        barrier = threading.Barrier(2, timeout=60)
        failure: list[BaseException] = []

        def at_the_barrier(attempt: int, barrier: threading.Barrier = barrier) -> None:
            if attempt == 1:
                barrier.wait()

        writer = revert.Writer(writer_state, url=str(bare), before_push=at_the_barrier)
        plan = _plan_now(bare, 1000.0 + rnd)
        git.run(human, "pull", "-q", "--ff-only", "origin", "main")
        (human / "NOTES.md").write_text(f"round {rnd}\n")
        subject = f"notes, round {rnd}"
        assert git.commit(human, message=subject, paths=["NOTES.md"]) is not None
        subjects.append(subject)

        def person(barrier: threading.Barrier = barrier,
                   failure: list[BaseException] = failure) -> None:
            try:
                barrier.wait()
                publishing._push(human, ui.Steps("publish", quiet=True))  # publish's own retry
            except BaseException as exc:
                failure.append(exc)

        t = threading.Thread(target=person)
        t.start()
        outcome = writer.revert(plan)
        t.join(timeout=120)
        assert not failure, f"round {rnd}: the human push failed: {failure[0]}"
        assert outcome.ok, f"round {rnd}: the revert failed: {outcome.error or outcome.skipped}"
        assert outcome.commit is not None
        reverts.append(outcome.commit)

    head = git.text(bare, "rev-parse", "refs/heads/main")
    # no commit lost: every revert and every human commit is in the remote's history
    for sha in reverts:
        assert git.is_ancestor(bare, sha, head), sha
    landed = git.text(bare, "log", "--format=%s", f"{start}..{head}").splitlines()
    for subject in subjects:
        assert landed.count(subject) == 1, subject
    assert int(git.text(bare, "rev-list", "--count", head)) == base_count + 2 * ROUNDS
    # nothing forced: every update of main moved it forward from what it was
    moves = git.text(bare, "reflog", "show", "--format=%H", "refs/heads/main").splitlines()
    assert len(moves) >= 2 * ROUNDS
    for newer, older in itertools.pairwise(moves):
        assert git.is_ancestor(bare, older, newer), (older, newer)
    # and the race was real: pushes lost it (and were retried), as many as there were rounds
    assert tally["moved"] >= ROUNDS // 2, tally
    assert tally["ok"] == 2 * ROUNDS, tally


def test_publish_retries_a_push_that_lost_the_race(
    template: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two people publish at the same instant: both versions land, one after the other."""
    bare = tmp_path / "models-repo.git"
    shutil.copytree(template[1], bare, symlinks=True)
    (bare / "hooks" / "pre-receive").write_text(SLOW_HOOK)
    clones = [tmp_path / "a", tmp_path / "b"]
    for c in clones:
        git.clone(str(bare), c)
    barrier = threading.Barrier(2, timeout=60)
    errors_seen: list[BaseException] = []

    def person(clone: Path, i: int) -> None:
        (clone / f"notes-{i}.md").write_text("x\n")
        git.commit(clone, message=f"person {i}", paths=[f"notes-{i}.md"])
        barrier.wait()
        try:
            publishing._push(clone, ui.Steps("publish", quiet=True))
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=person, args=(c, i)) for i, c in enumerate(clones)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors_seen, errors_seen
    subjects = git.text(bare, "log", "-2", "--format=%s", "refs/heads/main").splitlines()
    assert sorted(subjects) == ["person 0", "person 1"]


def test_a_hook_refusal_is_reported_not_retried(template: tuple[Path, Path], tmp_path: Path) -> None:
    bare = tmp_path / "models-repo.git"
    shutil.copytree(template[1], bare, symlinks=True)
    (bare / "hooks" / "pre-receive").write_text("#!/bin/sh\necho 'frozen for the audit' >&2\nexit 1\n")
    clone = tmp_path / "c"
    git.clone(str(bare), clone)
    (clone / "x.md").write_text("x\n")
    git.commit(clone, message="x", paths=["x.md"])
    with pytest.raises(errors.GitError, match="frozen for the audit") as caught:
        git.push(clone)
    assert not isinstance(caught.value, errors.PushRejected)
