"""Signed commits (opt-in, settings not the repository): only allowed keys deploy; reverts are signed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.net import free_port, version_at
from support.status import stalled
from support.waits import wait_until

from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.controller import run

pytestmark = pytest.mark.process


def keypair(where: Path, name: str) -> Path:
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)
    return key


def sign_head(repo: Path, key: Path, email: str) -> str:
    """Re-make HEAD as a commit signed with ``key`` and push it."""
    subprocess.run(["git", "-C", str(repo), *git.signing_args(key), "-c", f"user.email={email}",
                    "commit", "-q", "--amend", "--no-edit", "-S"], check=True)
    git.push(repo)
    return git.text(repo, "rev-parse", "HEAD")


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    alice, mallory = keypair(tmp_path, "alice"), keypair(tmp_path, "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"alice@example.com {(alice.with_suffix('.pub')).read_text()}")
    return alice, mallory, allowed


def test_only_commits_signed_by_an_allowed_key_deploy(
    repo: Path, publish_version: Callable[..., str], keys: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, mallory, allowed = keys
    monkeypatch.setenv("MLGITOPS_ALLOWED_SIGNERS", str(allowed))
    publish_version(push=False)
    v1 = sign_head(repo, alice, "alice@example.com")
    cfg = settings.controller(repo, port=free_port(), poll_seconds=1.0, monitor=False)
    assert cfg.signing.required
    with run.running(cfg) as ctl:
        wait_until(lambda: version_at(ctl.base_url) == v1, what="signed v1 serving")
        unsigned = publish_version(seed=1)
        ctl.trigger("test")

        def held(commit: str) -> str | None:
            st = ctl.store.status("credit").to_dict()
            stalled = next((c for c in st["conditions"] if c["type"] == "Stalled"), None)
            if stalled and stalled["status"] == "True" and commit[:12] in stalled["message"]:
                return str(stalled["message"])
            return None

        wait_until(lambda: held(unsigned) is not None, what="unsigned commit held")
        assert "is not signed" in (held(unsigned) or "")
        assert version_at(ctl.base_url) == v1
        publish_version(seed=2, push=False)
        forged = sign_head(repo, mallory, "alice@example.com")
        ctl.trigger("test")
        wait_until(lambda: held(forged) is not None, what="unknown signer held")
        message = held(forged) or ""
        assert "not an allowed signer" in message and "SHA256:" in message
        assert version_at(ctl.base_url) == v1
        publish_version(seed=3, push=False)
        v4 = sign_head(repo, alice, "alice@example.com")
        ctl.trigger("test")
        wait_until(lambda: version_at(ctl.base_url) == v4, what="signed v4 serving")


def test_revert_commits_are_signed_with_the_controllers_key(
    repo: Path, publish_version: Callable[..., str], keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from mlgitops.controller import revert
    from mlgitops.core import layout, policy
    from mlgitops.core.manifest import DriftPolicy

    alice, _, allowed = keys
    v1 = publish_version()
    v2 = publish_version(seed=5, shift=0.5)
    digest = git.text(repo, "log", "-1", "--format=%(trailers:key=Mlgitops-Digest,valueonly)", v2)
    ev = policy.Evidence(rows=200, share=0.8, drifted_columns=("f0", "f1"), fit_current=0.8,
                         fit_previous=0.0)
    decision = policy.decide(ev, policy.History(), DriftPolicy(min_rows=100, consecutive_windows=1),
                             now=1000.0)
    plan = policy.revert_plan(decision, name="credit", reverted=v2, digest=digest.strip(),
                              previous=v1, report="http://x/reports/credit/r.html",
                              at="2026-01-01T00:00:00Z")
    out = revert.Writer(tmp_path / "state", url=str(git.remote_url(repo)), signing_key=alice).revert(plan)
    assert out.ok, out.error
    bare = Path(git.remote_url(repo) or "")
    sig = git.signature(bare, out.commit or "", allowed_signers=allowed)
    assert sig.trusted and sig.signer == "alice@example.com"
    assert git.last_change(bare, out.commit or "", layout.model_paths("credit")) == out.commit


def test_an_unsigned_merge_that_brings_back_an_old_version_is_held_naming_it(
    repo: Path, publish_version: Callable[..., str], keys: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The merge is the model's version (first-parent history, the merge's own changes), so
    it must be signed: held naming the merge, on a running controller and after a restart."""
    alice, _, allowed = keys
    monkeypatch.setenv("MLGITOPS_ALLOWED_SIGNERS", str(allowed))
    signed = [*git.signing_args(alice), "-c", "user.email=alice@example.com"]
    publish_version(push=False)
    v1 = sign_head(repo, alice, "alice@example.com")
    publish_version(seed=2, shift=0.5, push=False)
    v2 = sign_head(repo, alice, "alice@example.com")
    # a signed side branch from v1 (README only), merged without a signature, v1's model kept
    git.run(repo, "checkout", "-q", "-b", "side", v1)
    (repo / "README.md").write_text("side work\n")
    subprocess.run(["git", "-C", str(repo), *signed, "commit", "-q", "-S", "-am", "side"],
                   check=True)
    git.run(repo, "checkout", "-q", "main")
    git.run(repo, "merge", "-q", "--no-ff", "--no-commit", "-s", "ours", "side")
    git.run(repo, "checkout", "-q", "side", "--", "models/credit", "manifests/credit.yaml")
    git.run(repo, "commit", "-q", "--no-verify", "-m", "merge side")
    merge = git.text(repo, "rev-parse", "HEAD")
    assert git.last_change(repo, merge, ["models/credit"]) == merge
    cfg = settings.controller(repo, port=free_port(), poll_seconds=1.0, monitor=False)

    with run.running(cfg) as ctl:
        wait_until(lambda: version_at(ctl.base_url) == v2, what="signed v2 serving")
        git.push(repo)
        ctl.trigger("test")
        wait_until(lambda: merge[:12] in stalled(ctl), what="the unsigned merge held")
        assert "is not signed (a merge)" in stalled(ctl) and "digest" not in stalled(ctl)
        assert version_at(ctl.base_url) == v2
    with run.running(cfg) as ctl:
        wait_until(lambda: merge[:12] in stalled(ctl), what="the merge held after a restart")
        assert version_at(ctl.base_url) != merge


def test_a_signed_merge_does_not_launder_an_unsigned_side_commit(
    repo: Path, publish_version: Callable[..., str], keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Every commit a merge brings that touches the model must be signed too."""
    import yaml

    from mlgitops.controller import source as source_mod

    alice, _, allowed = keys
    signed = [*git.signing_args(alice), "-c", "user.email=alice@example.com"]
    publish_version(push=False)
    v1 = sign_head(repo, alice, "alice@example.com")
    git.run(repo, "checkout", "-q", "-b", "side", v1)
    path = repo / "manifests" / "credit.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["serving"] = {"replicas": 2}
    path.write_text(yaml.safe_dump(doc))
    git.run(repo, "commit", "-q", "--no-verify", "-am", "unsigned side change")
    side = git.text(repo, "rev-parse", "HEAD")
    git.run(repo, "checkout", "-q", "main")
    (repo / "README.md").write_text("main moved on\n")
    subprocess.run(["git", "-C", str(repo), *signed, "commit", "-q", "-S", "-am", "main"],
                   check=True)
    subprocess.run(["git", "-C", str(repo), *signed, "merge", "-q", "--no-ff", "-S", "-m", "merge",
                    "side"], check=True)
    merge = git.text(repo, "rev-parse", "HEAD")
    src = source_mod.Source(tmp_path / "state", url=str(repo), local=repo / ".git",
                            allowed_signers=allowed)
    got = src.desired(merge)["credit"]
    assert got.version == merge
    assert got.error is not None and f"commit {side[:12]} is not signed" in got.error
    assert git.signature(repo, merge, allowed_signers=allowed).trusted
