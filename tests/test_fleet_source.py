"""The reconcile pass at fleet size: a fixed number of git calls, the same answer as per-model git.

`source.Source.desired` caches parsed manifests by blob id and carries model versions forward
from the previous head; these tests hold it to what ``git log -1 -- <model paths>`` says for
every model at every commit (including content that changes and changes back), cold and
incremental, and count the git calls of a pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import make_frame, train

import mlgitops
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.controller import source as source_mod
from mlgitops.core import layout


def _publish(repo: Path, name: str, seed: int) -> str:
    frame = make_frame(n=300, seed=seed)
    return str(mlgitops.publish(train(frame, kind="logistic", seed=seed), frame, name=name,
                                repo=repo, target="label", push=False, quiet=True))


def _truth(clone: Path, commit: str) -> dict[str, str]:
    names = [layout.manifest_name(p) for p in git.ls_files(clone, commit, layout.MANIFESTS)]
    return {n: git.last_change(clone, commit, layout.model_paths(n)) or commit
            for n in names if n}


def test_versions_match_git_at_every_commit_cold_and_incremental(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repository.init(repo)
    commits = [_publish(repo, "a", 1), _publish(repo, "b", 2), _publish(repo, "c", 3)]
    commits.append(_publish(repo, "b", 4))  # b changes ...
    commits.append(_publish(repo, "a", 5))
    commits.append(_publish(repo, "b", 2))  # ... and changes back to the bytes it had
    path = repo / layout.manifest_path("c")
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["serving"]["workers"] = 2
    path.write_text(yaml.safe_dump(doc))
    sha = git.commit(repo, message="c: two workers", paths=[layout.manifest_path("c")])
    assert sha is not None
    commits.append(sha)
    assert len(set(commits)) == len(commits)
    incremental = source_mod.Source(tmp_path / "state", url=str(repo), local=repo)
    for commit in commits:
        want = _truth(repo, commit)
        cold = source_mod.Source(tmp_path / "cold", url=str(repo), local=repo)
        for src in (incremental, cold):
            got = {n: d.version for n, d in src.desired(commit).items()}
            assert got == want, commit
    # going back in history (not a descendant of the last head) is answered right too
    assert {n: d.version for n, d in incremental.desired(commits[2]).items()} == \
        _truth(repo, commits[2])
    assert incremental.desired(commits[-1])["c"].deployment.serving.workers == 2  # type: ignore[union-attr]


def test_a_pass_costs_a_fixed_number_of_git_calls(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repository.init(repo)
    for i in range(6):
        _publish(repo, f"m{i}", i)
    head = git.rev_parse(repo, "HEAD")
    assert head is not None
    calls: list[str] = []
    real_run = git.run

    def counting(where: Path | None, *args: str, **kw: object) -> bytes:
        calls.append(args[0])
        return real_run(where, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(git, "run", counting)
    src = source_mod.Source(tmp_path / "state", url=str(repo), local=repo)
    assert len(src.desired(head)) == 6
    first = len(calls)
    assert first <= 5, calls  # ls-tree, cat-file --batch, log, quarantine: not 3 per model
    calls.clear()
    src.desired(head)
    assert calls == []  # no change: the answer for this head is kept
    sha = _publish(repo, "m3", 10)
    calls.clear()
    desired = src.desired(sha)
    assert desired["m3"].version == sha and desired["m0"].version != sha
    assert len(calls) <= first, calls
