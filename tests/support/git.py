"""Git helpers for tests: copies of a published repository and its remote, the remote's head."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_published(published: Path, dest: Path) -> Path:
    """A copy of the working repository ``published`` and its bare remote beside it, under
    ``dest``, the copy's origin set to the copied remote; returns the working copy."""
    from mlgitops.adapters import git

    work, bare = dest / "repo", dest / "repo.git"
    shutil.copytree(published, work, symlinks=True)
    shutil.copytree(published.parent / f"{published.name}.git", bare, symlinks=True)
    git.run(work, "remote", "set-url", "origin", str(bare))
    return work


def remote_head(repo: Path) -> str:
    """The commit the origin's main names."""
    from mlgitops.adapters import git

    return git.text(repo, "ls-remote", "origin", "refs/heads/main").split()[0]
