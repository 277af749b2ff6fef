"""Shared fixtures: real git repositories with a bare remote, real models, free ports."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# the remotes' warm validators of short-lived test repositories exit soon after their last push
os.environ.setdefault("MLGITOPS_VALIDATOR_IDLE", "30")

FEATURES = [f"f{i}" for i in range(5)]


def make_frame(n: int = 1500, *, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A population: five numeric features and a label that depends on two of them."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(loc=shift, size=(n, len(FEATURES))), columns=FEATURES)
    x["label"] = ((x.f0 - shift) + (x.f1 - shift) > 0).astype(int)
    return x


def train(frame: pd.DataFrame, *, kind: str = "forest", seed: int = 0) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = frame[FEATURES], frame["label"]
    if kind == "forest":
        return RandomForestClassifier(n_estimators=10, max_depth=6, random_state=seed).fit(x, y)
    return LogisticRegression(C=1.0 + seed).fit(x, y)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    from mlgitops.authoring import repository

    work = tmp_path / "models-repo"
    repository.init(work)
    return work


@pytest.fixture()
def publish_version(repo: Path) -> Callable[..., str]:
    import mlgitops

    def _publish(*, name: str = "credit", shift: float = 0.0, seed: int = 0,
                 kind: str = "forest", push: bool = True) -> str:
        frame = make_frame(shift=shift, seed=seed)
        return str(mlgitops.publish(train(frame, kind=kind, seed=seed), frame, name=name,
                                    repo=repo, target="label", push=push, quiet=True))

    return _publish


def copy_published(published: Path, dest: Path) -> Path:
    """A copy of the working repository ``published`` and its bare remote beside it, under
    ``dest``, the copy's origin set to the copied remote; returns the working copy."""
    import shutil

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float = 60, what: str = "condition") -> None:
    """Poll ``check`` every 50 ms; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def numeric_server() -> Iterator[Any]:
    """A live `mlgitops serve` of a numeric-feature model, shared by the server tests."""
    import test_server_support as support

    yield support.shared("numeric")
    support.stop_shared()


@pytest.fixture(scope="session")
def mixed_server() -> Iterator[Any]:
    """A live server of a model whose signature mixes column types."""
    import test_server_support as support

    yield support.shared("mixed")
    support.stop_shared()
