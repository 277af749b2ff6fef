"""Hostile pushes, second round: plain git against a real bare remote with the hook installed.

Every commit a push brings is checked (not only the tip); "validated before" means this hook
validated it; a broken model already on the remote blocks no other push; only the paths a
model repository holds are accepted; refs named like options, case-colliding paths, filter
drivers and a 10,000-feature model are refused or contained.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.data import make_frame, train
from test_hostile_repo import (  # noqa: F401  (fixtures)
    MANIFEST,
    MODEL,
    plain_push,
    published,
    remote_head,
    repo,
    set_manifest,
)

import mlgitops
from mlgitops.adapters import files, git

pytestmark = pytest.mark.process

EVIL_TYPES = ["builtins.exec", "builtins.iter", "builtins.next"]


def commit(work: Path, message: str, *paths: str, force: bool = False) -> str:
    subprocess.run(["git", "-C", str(work), "add", "-A", *(["-f"] if force else []), "--", *paths],
                   check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=eve", "-c", "user.email=eve@x",
                    "commit", "-q", "-m", message], check=True)
    return git.text(work, "rev-parse", "HEAD")


def refused(work: Path, *args: str) -> str:
    before = remote_head(work)
    proc = plain_push(work, *args)
    assert proc.returncode != 0, "the push was accepted"
    assert remote_head(work) == before
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "mlgitops: refusing" in proc.stderr, proc.stderr
    return proc.stderr


@pytest.fixture()
def bare(repo: Path) -> Path:  # noqa: F811
    return Path(git.remote_url(repo) or "")


@pytest.fixture()
def unhooked(bare: Path) -> Iterator[Path]:
    """The hook off while the test pushes what a host without it would take; back after."""
    hook = bare / "hooks" / "pre-receive"
    off = hook.with_name("pre-receive.off")
    hook.rename(off)
    yield hook
    if off.exists():
        off.rename(hook)


def hook_on(hook: Path) -> None:
    hook.with_name("pre-receive.off").rename(hook)


def hostile_model(work: Path, where: Path) -> Path:
    """The credit model with a pipeline that runs exec on load, written to ``where``."""
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    shutil.copytree(work / MODEL, where)
    payload = Pipeline([("a", FunctionTransformer(iter)), ("b", FunctionTransformer(next)),
                        ("c", FunctionTransformer(exec))])
    skops.io.dump(payload, where / "model.skops")
    return where


def hostile_manifest(work: Path, model: Path) -> None:
    doc = yaml.safe_load((work / MANIFEST).read_text())
    doc["spec"]["model"].update(trustedTypes=EVIL_TYPES, digest=files.dir_digest(model))
    (work / MANIFEST).write_text(yaml.safe_dump(doc))


# item 1: every new commit, and "validated before" means validated by this hook -------------


def test_the_two_push_bypass_is_refused(repo: Path, tmp_path: Path, unhooked: Path) -> None:  # noqa: F811
    hook_on(unhooked)
    evil = hostile_model(repo, tmp_path / "evil")
    clean = (repo / MANIFEST).read_text()
    # push 1: a manifest trusting builtins.exec, then a commit that takes it back out
    hostile_manifest(repo, evil)
    first = commit(repo, "trust exec", "manifests")
    (repo / MANIFEST).write_text(clean)
    commit(repo, "undo", "manifests")
    err = refused(repo, "HEAD:main")
    assert f"commit {first[:12]}:" in err and "spec.model.digest" in err
    # the same on a branch: it would be merged into main later
    assert f"commit {first[:12]}:" in refused(repo, "HEAD:refs/heads/side")
    assert git.run(repo, "ls-remote", "origin", "refs/heads/side").strip() == b""
    # push 1 landed where no hook ran: finding that manifest in history proves nothing
    unhooked.rename(unhooked.with_name("pre-receive.off"))
    assert plain_push(repo, "HEAD:main").returncode == 0
    hook_on(unhooked)
    shutil.rmtree(repo / MODEL)
    shutil.copytree(evil, repo / MODEL)
    hostile_manifest(repo, evil)
    commit(repo, "the hostile model", "models", "manifests")
    err = refused(repo, "HEAD:main")
    assert "builtins.exec" in err


# item 8: one broken model blocks nothing else -------------------------------------------------


def test_a_broken_model_on_the_remote_blocks_no_other_push(repo: Path, unhooked: Path) -> None:  # noqa: F811
    doc = yaml.safe_load((repo / MANIFEST).read_text())
    doc["metadata"]["name"] = "other"
    doc["spec"]["model"]["path"] = "models/other"  # no such directory
    doc["spec"]["serving"] = {"replicas": 1000}  # over the schema's maximum
    (repo / "manifests" / "other.yaml").write_text(yaml.safe_dump(doc))
    commit(repo, "broken other, pushed where no hook ran", "manifests")
    assert plain_push(repo, "HEAD:main").returncode == 0
    hook_on(unhooked)
    # a new version of credit, then the controller's kind of revert of it: both land
    frame = make_frame(shift=0.5, seed=2)
    v1 = git.text(repo, "rev-parse", "HEAD")
    mlgitops.publish(train(frame, seed=2), frame, name="credit", repo=repo, target="label",
                     quiet=True)
    assert remote_head(repo) == git.text(repo, "rev-parse", "HEAD") != v1
    git.run(repo, "rm", "-r", "-q", MODEL)
    git.run(repo, "checkout", "-q", v1, "--", MODEL, MANIFEST)
    assert git.commit(repo, message="Revert credit", paths=["models", "manifests"])
    git.push(repo)
    assert remote_head(repo) == git.text(repo, "rev-parse", "HEAD")
    # a push that touches the broken model is judged: it is still broken
    doc["spec"]["serving"] = {"replicas": 2}
    (repo / "manifests" / "other.yaml").write_text(yaml.safe_dump(doc))
    commit(repo, "touch other", "manifests")
    assert "models/other: does not exist" in refused(repo, "HEAD:main")
    # a broken entry of models/ on the remote (a symbolic link) does not block either
    git.run(repo, "reset", "-q", "--hard", "origin/main")
    unhooked.rename(unhooked.with_name("pre-receive.off"))
    (repo / "models" / "link").symlink_to("/etc/passwd")
    commit(repo, "a link", "models")
    assert plain_push(repo, "HEAD:main").returncode == 0
    hook_on(unhooked)
    (repo / "README.md").write_text("notes\n")
    commit(repo, "notes", "README.md")
    assert plain_push(repo, "HEAD:main").returncode == 0


# item 3: only the paths a model repository holds ---------------------------------------------


def test_state_paths_and_other_top_level_paths_are_refused(repo: Path) -> None:  # noqa: F811
    planted = repo / ".mlgitops" / "reports" / "base" / "incident-2026.html"
    planted.parent.mkdir(parents=True)
    planted.write_text("<h1>forged</h1>")
    commit(repo, "plant a report", ".mlgitops", force=True)
    err = refused(repo, "HEAD:main")
    assert ".mlgitops/reports/base/incident-2026.html: is outside the paths" in err
    assert "models/, manifests/, quarantine.yaml" in err
    git.run(repo, "reset", "-q", "--hard", "origin/main")
    (repo / "decisions.jsonl").write_text("{}\n")
    commit(repo, "a file at the top", "decisions.jsonl")
    assert "decisions.jsonl: is outside the paths" in refused(repo, "HEAD:main")


# item 10: refs named like options, case collisions, filter drivers, 10,000 features ------------


@pytest.mark.parametrize("ref", ["refs/heads/-x", "refs/tags/--upload-pack=touch", "refs/heads/a/-b"])
def test_a_ref_named_like_an_option_is_refused(repo: Path, ref: str) -> None:  # noqa: F811
    err = refused(repo, f"HEAD:{ref}")
    assert "reads as an option" in err
    assert git.run(repo, "ls-remote", "origin", ref).strip() == b""


@pytest.mark.parametrize("collide", ["file", "directory"])
def test_case_colliding_paths_are_refused(repo: Path, collide: str) -> None:  # noqa: F811
    if collide == "file":
        shutil.copy(repo / MODEL / "MLmodel", repo / MODEL / "mlmodel")
        set_manifest(repo, lambda d: None)
    else:
        shutil.copytree(repo / MODEL, repo / "models" / "Credit")
    commit(repo, "collide", "models", "manifests")
    assert "differ only in letter case" in refused(repo, "HEAD:main")


def test_a_filter_driver_is_refused_and_never_runs(
    repo: Path, tmp_path: Path, unhooked: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    hook_on(unhooked)
    (repo / ".gitattributes").write_text("* filter=evil diff=evil\n")
    commit(repo, "a filter", ".gitattributes")
    marker = tmp_path / "ran"
    config = tmp_path / "gitconfig"  # a host whose git knows that driver (as with git-lfs)
    config.write_text(f'[filter "evil"]\n\tclean = touch {marker}; cat\n'
                      f'\tsmudge = touch {marker}; cat\n\tprocess = touch {marker}\n'
                      f'[diff "evil"]\n\ttextconv = touch {marker}; cat\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    err = refused(repo, "HEAD:main")
    assert "'filter=evil'" in err and "'diff=evil'" in err
    # on a host without the hook the controller reads blobs, never through a filter
    unhooked.rename(unhooked.with_name("pre-receive.off"))
    assert plain_push(repo, "HEAD:main").returncode == 0
    bare = Path(git.remote_url(repo) or "")
    git.export(bare, "main", MODEL, tmp_path / "export")
    assert files.dir_digest(tmp_path / "export") == files.dir_digest(repo / MODEL)
    assert not marker.exists()


def test_a_model_with_10000_features_is_refused_quickly(repo: Path) -> None:  # noqa: F811
    mlmodel = repo / MODEL / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    doc["signature"]["inputs"] = json.dumps(
        [{"type": "double", "name": f"f{i}", "required": True} for i in range(10_000)])
    mlmodel.write_text(yaml.safe_dump(doc))
    set_manifest(repo, lambda d: None)
    commit(repo, "wide", "models", "manifests")
    start = time.monotonic()
    err = refused(repo, "HEAD:main")
    assert time.monotonic() - start < 60
    assert "MLmodel: is" in err and "over the 65536-byte limit" in err
    assert len(err) < 2000


def test_a_remote_with_hooks_from_before_the_authoring_package_still_refuses(
    repo: Path, bare: Path,  # noqa: F811
) -> None:
    """Hook scripts written by older versions run `-m mlgitops.hooks`: it still validates."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(hook.read_text().replace("mlgitops.authoring.hooks", "mlgitops.hooks"))
    assert '"mlgitops.hooks"' in hook.read_text()
    planted = repo / ".mlgitops" / "proven.json"
    planted.parent.mkdir(parents=True)
    planted.write_text("{}")
    commit(repo, "plant a state file", ".mlgitops", force=True)
    assert ".mlgitops/proven.json: is outside the paths" in refused(repo, "HEAD:main")
