"""The revert commit: path-scoped, quarantining, pushed with compare-and-swap into a real remote.

One module-scoped template repository (two models, each published twice, credit's v2 before
other's v2, all validated by the real pre-receive hook) is copied for every test.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from conftest import make_frame, train

import mlgitops
from mlgitops.adapters import files, git
from mlgitops.authoring import repository, validate
from mlgitops.controller import revert
from mlgitops.controller import source as source_mod
from mlgitops.core import layout, policy, quarantine
from mlgitops.core.manifest import DriftPolicy


@dataclass(frozen=True)
class Repo:
    work: Path
    bare: Path
    credit_v1: str
    credit_v2: str
    other_v2: str

    def remote_head(self) -> str:
        return git.text(self.bare, "rev-parse", "refs/heads/main")


def _publish(work: Path, name: str, *, shift: float, seed: int) -> str:
    frame = make_frame(n=600, shift=shift, seed=seed)
    return str(mlgitops.publish(train(frame, seed=seed), frame, name=name, repo=work,
                                target="label", push=False, quiet=True))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("revert-template")
    work = root / "models-repo"
    bare = repository.init(work)
    credit_v1 = _publish(work, "credit", shift=0.0, seed=1)
    _publish(work, "other", shift=0.0, seed=2)
    credit_v2 = _publish(work, "credit", shift=1.5, seed=3)
    other_v2 = _publish(work, "other", shift=0.5, seed=4)  # a later commit touching another model
    git.push(work)  # one push: the pre-receive hook validates all four commits' models
    return Repo(work, bare, credit_v1, credit_v2, other_v2)


@pytest.fixture()
def remote(template: Repo, tmp_path: Path) -> Repo:
    work, bare = tmp_path / "models-repo", tmp_path / "models-repo.git"
    shutil.copytree(template.bare, bare, symlinks=True)
    shutil.copytree(template.work, work, symlinks=True)
    git.run(work, "remote", "set-url", "origin", str(bare))
    return replace(template, work=work, bare=bare)


def decision() -> policy.Decision:
    ev = policy.Evidence(rows=200, share=0.8, drifted_columns=("f0", "f1", "f2", "f3"),
                         fit_current=0.8, fit_previous=0.0)
    return policy.decide(ev, policy.History(), DriftPolicy(min_rows=100, consecutive_windows=1), now=1000.0)


def plan_for(r: Repo, *, name: str = "credit") -> policy.RevertPlan:
    digest = yaml.safe_load(git.show(r.work, r.credit_v2, layout.manifest_path(name)) or b"")
    return policy.revert_plan(decision(), name=name, reverted=r.credit_v2,
                              digest=digest["spec"]["model"]["digest"], previous=r.credit_v1,
                              report=".mlgitops/reports/credit/r.html", at="2025-01-01T00:00:00Z")


def tree(repo: Path, rev: str, path: str) -> str | None:
    return git.tree_id(repo, rev, path)


def test_path_scoped_revert_restores_only_the_model_and_quarantines(remote: Repo, tmp_path: Path) -> None:
    plan = plan_for(remote)
    out = revert.Writer(tmp_path / "state", url=str(remote.bare)).revert(plan)
    assert out.ok, out.error
    assert out.attempts == 1 and out.previous == remote.credit_v1
    head = remote.remote_head()
    assert head == out.commit
    bare = remote.bare
    # credit's two paths are back to their content before v2 ...
    for path in layout.model_paths("credit"):
        assert tree(bare, head, path) == tree(bare, remote.credit_v1, path)
        assert tree(bare, head, path) != tree(bare, remote.credit_v2, path)
    # ... while the later commit to the other model is untouched
    for path in layout.model_paths("other"):
        assert tree(bare, head, path) == tree(bare, remote.other_v2, path)
    changed = git.text(bare, "diff", "--name-only", f"{head}^", head).splitlines()
    assert {p.split("/")[0] for p in changed} == {"models", "manifests", layout.QUARANTINE}
    assert not any("other" in p for p in changed)
    # the message names the model, the reverted commit and the evidence; trailers link everything
    (entry,) = git.log(bare, head, ["quarantine.yaml"], limit=1)
    assert entry.subject == f"Revert credit to {remote.credit_v1[:12]}: live data drifted from {remote.credit_v2[:12]}"
    body = git.text(bare, "log", "-1", "--format=%B", head)
    assert remote.credit_v2 in body and "Evidence: " in body and "fits the previous version" in body
    assert entry.trailers[layout.TRAILER_REVERTS] == remote.credit_v2
    assert entry.trailers[layout.TRAILER_DIGEST] == plan.entry.digest
    assert entry.trailers[layout.TRAILER_REPORT] == ".mlgitops/reports/credit/r.html"
    # the same commit quarantines the reverted digest
    doc = yaml.safe_load(git.show(bare, head, layout.QUARANTINE) or b"")
    (q,) = quarantine.parse(doc, source=layout.QUARANTINE)
    assert (q.model, q.digest, q.commit) == ("credit", plan.entry.digest, remote.credit_v2)
    # ... and what quarantine matches beyond the bytes: the fitted estimator and its recipe
    assert q.fitted.startswith("sha256:") and q.recipe.startswith("sha256:")
    assert q.report == ".mlgitops/reports/credit/r.html"
    # the controller's view: the model's version is now the revert commit, serving v1's digest
    assert git.last_change(bare, head, layout.model_paths("credit")) == head


def test_quarantine_keys_read_ahead_are_the_ones_the_revert_writes(
    remote: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys remembered for the serving version's verified content (the monitor does it when
    the version starts serving) are what the revert commit's quarantine entry gets, and the
    revert reads nothing of the model itself."""
    plan = plan_for(remote)
    served = tmp_path / "served"  # the serving version's content, as the controller holds it
    git.export(remote.bare, remote.credit_v2, layout.model_path("credit"), served)
    assert files.dir_digest(served) == plan.entry.digest
    validate.remember_identity(served, plan.entry.digest)
    with monkeypatch.context() as m:
        m.setattr(revert.validate, "identity", lambda *a: pytest.fail("read at revert time"))
        assert revert.Writer(tmp_path / "state", url=str(remote.bare)).revert(plan).ok
    entry = _quarantined(remote.bare)
    fresh = validate.identity(served, plan.entry.digest)  # read again, nothing remembered
    assert entry.fitted.startswith("sha256:") and entry.recipe.startswith("sha256:")
    assert (entry.fitted, entry.recipe) == (fresh.fitted, fresh.recipe)


def test_revert_lookups_share_one_recent_fetch_and_the_revert_itself_always_fetches(
    remote: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions starting at once (a controller coming up on a fleet) ask whether each one is
    already reverted: one fetch answers them all within ``fresh_seconds``. A revert never
    trusts that fetch: it sees the other controller's revert and pushes nothing."""
    fetches: list[Path] = []
    real_fetch = git.fetch
    monkeypatch.setattr(revert.git, "fetch", lambda d, *a, **k: (fetches.append(d),
                                                                    real_fetch(d, *a, **k))[1])
    ours = revert.Writer(tmp_path / "ours", url=str(remote.bare), fresh_seconds=3600)
    assert ours.find_revert(remote.credit_v2) is None
    theirs = revert.Writer(tmp_path / "theirs", url=str(remote.bare)).revert(plan_for(remote))
    assert theirs.ok and theirs.commit is not None
    fetches.clear()
    for _ in range(5):  # still the earlier fetch's answer, without asking the remote
        assert ours.find_revert(remote.credit_v2) is None
    assert fetches == []
    out = ours.revert(plan_for(remote))
    assert not out.ok and out.already == theirs.commit and remote.remote_head() == theirs.commit
    assert fetches  # the revert fetched
    ours.fresh_seconds = 0.0
    found = ours.find_revert(remote.credit_v2)
    assert found is not None and found.commit == theirs.commit


def _quarantined(bare: Path) -> quarantine.Entry:
    head = git.text(bare, "rev-parse", "refs/heads/main")
    (entry,) = quarantine.parse(yaml.safe_load(git.show(bare, head, layout.QUARANTINE) or b""),
                                source=layout.QUARANTINE)
    return entry


def test_concurrent_human_push_during_the_revert_loses_nothing(remote: Repo, tmp_path: Path) -> None:
    colleague = tmp_path / "colleague"
    git.clone(str(remote.bare), colleague)
    pushed: list[str] = []

    def human_pushes_first(attempt: int) -> None:
        if attempt == 1:
            (colleague / "NOTES.md").write_text("a colleague's commit, pushed during the revert\n")
            sha = git.commit(colleague, message="colleague notes", paths=["NOTES.md"])
            git.push(colleague)
            assert sha is not None
            pushed.append(sha)

    writer = revert.Writer(tmp_path / "state", url=str(remote.bare), before_push=human_pushes_first)
    out = writer.revert(plan_for(remote))
    assert out.ok, out.error
    assert out.attempts == 2  # rejected once as non-fast-forward, fetched, re-applied, pushed
    head = remote.remote_head()
    assert head == out.commit
    assert git.is_ancestor(remote.bare, pushed[0], head)  # the human commit is kept
    assert git.show(remote.bare, head, "NOTES.md") is not None
    assert git.text(remote.bare, "rev-list", "--count", head) == str(
        int(git.text(remote.bare, "rev-list", "--count", pushed[0])) + 1
    )
    for path in layout.model_paths("credit"):
        assert tree(remote.bare, head, path) == tree(remote.bare, remote.credit_v1, path)


def test_no_revert_when_a_person_moved_the_model_on_meanwhile(remote: Repo, tmp_path: Path) -> None:
    colleague = tmp_path / "colleague"
    git.clone(str(remote.bare), colleague)

    def human_edits_the_model(attempt: int) -> None:
        if attempt == 1:
            path = colleague / layout.manifest_path("credit")
            doc = yaml.safe_load(path.read_text())
            doc["spec"]["serving"]["batching"]["maxBatchSize"] = 16
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            git.commit(colleague, message="tune credit batching", paths=["manifests"])
            git.push(colleague)

    before = remote.remote_head()
    writer = revert.Writer(tmp_path / "state", url=str(remote.bare), before_push=human_edits_the_model)
    out = writer.revert(plan_for(remote))
    assert not out.ok and out.error is None
    assert out.skipped is not None and "moved on" in out.skipped
    head = remote.remote_head()
    assert head != before and git.text(remote.bare, "log", "-1", "--format=%s", head) == "tune credit batching"


def test_remote_refusal_is_reported_with_its_reason_and_nothing_is_pushed(
    remote: Repo, tmp_path: Path
) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'policy: main is frozen for the audit' >&2\nexit 1\n")
    before = remote.remote_head()
    out = revert.Writer(tmp_path / "state", url=str(remote.bare)).revert(plan_for(remote))
    assert not out.ok and out.attempts == 1
    assert out.error is not None and "main is frozen for the audit" in out.error
    assert remote.remote_head() == before


def test_quarantined_digest_is_refused_by_the_remote_and_held_by_the_controller(
    remote: Repo, tmp_path: Path
) -> None:
    out = revert.Writer(tmp_path / "state", url=str(remote.bare)).revert(plan_for(remote))
    assert out.ok, out.error
    work = remote.work
    git.run(work, "pull", "-q", "--ff-only", "origin", "main")
    # a person commits the reverted version again (same content, same digest)
    git.run(work, "checkout", "-q", remote.credit_v2, "--", *layout.model_paths("credit"))
    git.commit(work, message="bring credit v2 back", paths=list(layout.model_paths("credit")))
    with pytest.raises(mlgitops.errors.GitError, match="quarantined"):
        git.push(work)
    assert remote.remote_head() == out.commit
    # if it arrives anyway (a remote without the hook), the controller holds it as quarantined
    hook = remote.bare / "hooks" / "pre-receive"
    hook.rename(hook.with_name("pre-receive.off"))
    git.push(work)
    src = source_mod.Source(tmp_path / "ctl", url=str(remote.bare))
    head = src.sync()
    assert head is not None
    desired = src.desired(head)
    assert desired["credit"].error is not None and "quarantined" in desired["credit"].error
    assert desired["other"].error is None
