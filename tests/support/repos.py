"""Model repositories for tests: v1 published with a bare remote, a manifest's spec amended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import mlgitops
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.core import layout
from support.data import make_frame, train


def with_v1(root: Path, spec: dict[str, Any], *, name: str = "credit",
            message: str = "amend the manifest") -> tuple[Path, Path, str, pd.DataFrame]:
    """``root/models-repo`` with a bare remote: v1 (a forest on population A) published, then
    each key of ``spec`` merged into ``spec`` of its manifest and committed (nothing pushed).
    Returns the work tree, the bare remote, v1's commit and population A."""
    work = root / "models-repo"
    bare = repository.init(work)
    a = make_frame(1500, seed=1)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=name, repo=work, target="label",
                              push=False, quiet=True, message=f"{name} v1"))
    amend(work, name, spec, message=message)
    return work, bare, v1, a


def amend(work: Path, name: str, spec: dict[str, Any], *, message: str) -> None:
    """Each key of ``spec`` merged into ``spec`` of ``name``'s manifest in ``work`` (a mapping
    into the mapping there, anything else replacing it), committed as ``<name>: <message>``
    (nothing pushed)."""
    path = work / layout.manifest_path(name)
    doc = yaml.safe_load(path.read_text())
    for key, value in spec.items():
        merged = doc["spec"].get(key)
        doc["spec"][key] = {**merged, **value} if isinstance(merged, dict) else value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(work, message=f"{name}: {message}", paths=[layout.MANIFESTS])
