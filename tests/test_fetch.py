"""`mlgitops fetch-model` (a model pod's init container) against real repositories.

Each case runs the real command: a published version lands in DEST with its digest; what the
controller would refuse (a stale digest, a quarantined or symlinked version, an unknown commit,
bad input) exits non-zero with one sentence and leaves DEST as it was. Credentials are used
through a real HTTP Git server (`git http-backend`) that demands Basic authentication.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import git_http
import pytest
import yaml
from conftest import make_frame, train

import mlgitops
from mlgitops import errors
from mlgitops.adapters import files, git
from mlgitops.core import quarantine
from mlgitops.server import fetch

NAME = "credit"
CLI = [str(Path(sys.executable).with_name("mlgitops"))]


def fetch_model(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "fetch-model", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A working repo + bare remote with v1 of `credit` pushed: (work, commit, digest)."""
    from mlgitops.authoring import repository

    work = tmp_path_factory.mktemp("fetch") / "repo"
    repository.init(work)
    frame = make_frame()
    sha = str(mlgitops.publish(train(frame), frame, name=NAME, repo=work, target="label", quiet=True))
    doc = yaml.safe_load((work / "manifests" / f"{NAME}.yaml").read_text())
    return work, sha, doc["spec"]["model"]["digest"]


@pytest.fixture()
def scratch_repo(published: tuple[Path, str, str], tmp_path: Path) -> Path:
    """A copy of the working repository, for commits the remote's hook would refuse."""
    work = tmp_path / "repo"
    shutil.copytree(published[0], work, symlinks=True)
    return work


def remote_url(work: Path) -> str:
    url = git.remote_url(work)
    assert url is not None
    return url


def args(url: str, commit: str, digest: str, dest: Path, *extra: str) -> list[str]:
    return ["--repo-url", url, "--commit", commit, "--name", NAME, "--digest", digest,
            "--dest", str(dest), *extra]


def test_a_published_version_lands_in_dest_with_its_digest(
    published: tuple[Path, str, str], tmp_path: Path
) -> None:
    work, sha, digest = published
    dest = tmp_path / "models" / NAME
    done = fetch_model(*args(remote_url(work), sha, digest, dest))
    assert done.returncode == 0, done.stdout + done.stderr
    assert files.dir_digest(dest) == digest
    assert (dest / "MLmodel").is_file() and (dest / "baseline.json").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == [NAME], "no scratch left behind"
    # A restarted init container finds the same content and succeeds again without fetching.
    again = fetch_model(*args("/nonexistent/remote.git", sha, digest, dest))
    assert again.returncode == 0, again.stderr
    # file:// URLs fetch the same way (a shallow fetch of the one commit).
    other = tmp_path / "other" / NAME
    assert fetch_model(*args(f"file://{remote_url(work)}", sha, digest, other)).returncode == 0
    assert files.dir_digest(other) == digest


def test_the_commit_must_be_the_version_and_the_digest_the_manifests(
    published: tuple[Path, str, str], tmp_path: Path
) -> None:
    work, sha, digest = published
    dest = tmp_path / "models" / NAME
    cases = {
        "short commit": (args(remote_url(work), sha[:12], digest, dest), "not a full commit id"),
        "unknown commit": (args(remote_url(work), "ab" * 20, digest, dest), "is not on any branch"),
        "stale digest": (args(remote_url(work), sha, "sha256:" + "0" * 64, dest),
                         "the pod spec is stale"),
        "unreachable remote": (args("/nonexistent/remote.git", sha, digest, dest),
                               "cannot fetch /nonexistent/remote.git"),
        "bad name": (["--repo-url", remote_url(work), "--commit", sha, "--name", "Credit_1",
                      "--digest", digest, "--dest", str(dest)], "is not a model name"),
    }  # fmt: skip
    for label, (argv, words) in cases.items():
        done = fetch_model(*argv)
        assert done.returncode == 1, label
        said = " ".join((done.stdout + done.stderr).split())
        assert words in said, f"{label}: {said}"
        assert "Traceback" not in said, label
        assert not dest.exists(), label


def test_a_commit_without_the_model_is_refused(published: tuple[Path, str, str], tmp_path: Path) -> None:
    work, sha, digest = published
    first = git.text(work, "rev-list", "--max-parents=0", "HEAD")
    assert first != sha
    with pytest.raises(errors.ManifestError, match="does not exist at commit"):
        fetch.fetch_model(repo_url=remote_url(work), commit=first, name=NAME, digest=digest,
                          dest=tmp_path / "m" / NAME)


def test_a_version_quarantined_at_that_commit_is_refused(
    published: tuple[Path, str, str], scratch_repo: Path, tmp_path: Path
) -> None:
    _, _, digest = published
    entry = quarantine.Entry(model=NAME, digest=digest, commit="c" * 40, reason="drift in test",
                             at="2026-01-01T00:00:00Z")
    (scratch_repo / "quarantine.yaml").write_text(
        quarantine.HEADER + yaml.safe_dump(quarantine.add((), entry)))
    sha = git.commit(scratch_repo, message="quarantine credit", paths=["quarantine.yaml"])
    assert sha is not None
    dest = tmp_path / "models" / NAME
    done = fetch_model(*args(str(scratch_repo), sha, digest, dest))
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "credit is quarantined" in said and "cccccccccccc" in said, said
    assert not dest.exists()


def test_a_symlink_in_the_model_is_refused(
    published: tuple[Path, str, str], scratch_repo: Path, tmp_path: Path
) -> None:
    _, _, digest = published
    os.symlink("/etc/passwd", scratch_repo / "models" / NAME / "extra")
    sha = git.commit(scratch_repo, message="sneak a link", paths=["models"])
    assert sha is not None
    with pytest.raises(errors.ModelError, match="is a symbolic link"):
        fetch.fetch_model(repo_url=str(scratch_repo), commit=sha, name=NAME, digest=digest,
                          dest=tmp_path / "models" / NAME)
    assert not (tmp_path / "models" / NAME).exists()


def test_an_older_copy_in_dest_is_replaced_whole(published: tuple[Path, str, str], tmp_path: Path) -> None:
    work, sha, digest = published
    dest = tmp_path / "models" / NAME
    dest.mkdir(parents=True)
    (dest / "leftover").write_text("from another version")
    fetch.fetch_model(repo_url=remote_url(work), commit=sha, name=NAME, digest=digest, dest=dest)
    assert files.dir_digest(dest) == digest
    assert not (dest / "leftover").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == [NAME]


# -- credentials ---------------------------------------------------------------------------


@pytest.fixture()
def http_remote(published: tuple[Path, str, str]) -> Iterator[tuple[str, list[str]]]:
    work, _, _ = published
    with git_http.serve(Path(remote_url(work)), user="reader", password="s3cret pass") as remote:
        yield remote


def test_basic_auth_credentials_come_from_the_mounted_secret(
    published: tuple[Path, str, str], http_remote: tuple[str, list[str]], tmp_path: Path
) -> None:
    _, sha, digest = published
    url, seen = http_remote
    dest = tmp_path / "models" / NAME
    without = fetch_model(*args(url, sha, digest, dest))
    assert without.returncode == 1 and "cannot fetch" in without.stderr
    assert not dest.exists()

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "username").write_text("reader")
    (secret / "password").write_text("s3cret pass\n")  # trailing newline as `kubectl create` leaves it
    done = fetch_model(*args(url, sha, digest, dest, "--credentials", str(secret)))
    assert done.returncode == 0, done.stderr
    assert files.dir_digest(dest) == digest
    assert "Basic" in seen
    assert "s3cret" not in done.stdout + done.stderr


def test_a_url_with_a_password_is_never_repeated(published: tuple[Path, str, str], tmp_path: Path) -> None:
    _, sha, digest = published
    done = fetch_model(*args("http://user:hunter2@127.0.0.1:9/x.git", sha, digest, tmp_path / "m"))
    assert done.returncode == 1
    assert "hunter2" not in done.stdout + done.stderr
    assert "user:***@127.0.0.1:9" in done.stderr


def test_ssh_credentials_need_known_hosts(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "ssh-privatekey").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(errors.ConfigError, match="no known_hosts"):
        fetch.credential_options(secret, tmp_path)
    (secret / "known_hosts").write_text("git.example.com ssh-ed25519 AAAA\n")
    options = fetch.credential_options(secret, tmp_path)
    assert options[0] == "-c" and options[1].startswith("core.sshCommand=ssh -i ")
    assert "StrictHostKeyChecking=yes" in options[1]
    assert (tmp_path / "ssh-key").stat().st_mode & 0o777 == 0o600
    (secret / "ssh-privatekey").unlink()
    with pytest.raises(errors.ConfigError, match="holds neither"):
        fetch.credential_options(secret, tmp_path)
