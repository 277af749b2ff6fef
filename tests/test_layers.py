"""Every module sits in an import-linter layer: a module a layers contract leaves out is unchecked.

import-linter only checks the modules a layers contract names, so a new root module (or a new
module inside a layered package) would silently escape the layering. These tests read the
contracts in pyproject.toml and the modules on disk.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import mlgitops

ROOT = Path(mlgitops.__file__).resolve().parents[1]


def contracts() -> list[dict[str, Any]]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, Any]] = doc["tool"]["importlinter"]["contracts"]
    return found


def named(layers: list[str]) -> set[str]:
    return {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}


def children(package: str) -> set[str]:
    module = __import__(package, fromlist=["__path__"])
    return {m.name for m in pkgutil.iter_modules(module.__path__)}


def test_every_root_module_and_package_is_in_the_top_level_layers() -> None:
    top = [c for c in contracts() if c["type"] == "layers" and not c.get("containers")]
    assert len(top) == 1
    layered = named(top[0]["layers"])
    on_disk = {f"mlgitops.{name}" for name in children("mlgitops")}
    assert on_disk - layered == set(), "add these to the layers contract in pyproject.toml"
    assert layered - on_disk == set(), "these layers name modules that do not exist"


def test_every_module_of_a_layered_package_is_in_its_layers() -> None:
    inner = [c for c in contracts() if c["type"] == "layers" and c.get("containers")]
    assert {c["containers"][0] for c in inner} >= {
        "mlgitops.controller", "mlgitops.server", "mlgitops.cli", "mlgitops.authoring", "mlgitops.demo"}
    for contract in inner:
        (container,) = contract["containers"]
        left_out = children(container) - named(contract["layers"])
        assert left_out == set(), f"{container}: {sorted(left_out)} are in no layer"
