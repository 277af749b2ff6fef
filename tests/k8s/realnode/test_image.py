"""The image `make image` builds against the Dockerfile: same user, entry point, environment, Python
packages; and small: no build tools, no caches, no tests."""

from __future__ import annotations

import email.parser
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mlgitops.devcluster import image

pytestmark = pytest.mark.realnode

ROOT = Path(__file__).resolve().parents[3]
SITE = "opt/venv/lib/python3.11/site-packages/"


def dockerfile() -> dict[str, object]:
    """USER, ENTRYPOINT, CMD, WORKDIR (last), ENV, EXPOSE and the pip install's extras."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out: dict[str, object] = {"env": {}}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                out["env"][key] = value  # type: ignore[index]
        elif word in ("USER", "WORKDIR", "EXPOSE"):
            out[word.lower()] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            out[word.lower()] = json.loads(rest)
        elif word == "RUN" and "pip install" in rest:
            out["extras"] = re.search(r'pip install "\.\[([a-z,]+)\]"', rest).group(1).split(",")  # type: ignore[union-attr]
    return out


def installed(archive: Path) -> tuple[dict[str, tuple[str, list[str]]], dict[str, str]]:
    """(distribution -> (version, Requires-Dist)) of the image's venv, and the files of note."""
    dists: dict[str, tuple[str, list[str]]] = {}
    files: dict[str, str] = {}
    for layer, info in image.layer_members(archive):
        name = info.name.removeprefix("./")
        if name.startswith(SITE) and name.endswith(".dist-info/METADATA"):
            fh = layer.extractfile(info)
            assert fh is not None
            meta = email.parser.Parser().parsestr(fh.read().decode())
            dists[canonicalize_name(meta["Name"])] = (meta["Version"], meta.get_all("Requires-Dist") or [])
        elif name == "etc/passwd":
            fh = layer.extractfile(info)
            assert fh is not None
            files[name] = fh.read().decode()
        elif info.isfile() or info.isdir():
            files.setdefault(name, "")
    return dists, files


def closure(dists: dict[str, tuple[str, list[str]]], root: str, extras: list[str]) -> set[str]:
    """Every distribution `root[extras]` needs, by the installed distributions' own metadata."""
    env = default_environment()
    need, todo = {canonicalize_name(root)}, [(canonicalize_name(root), set(extras))]
    while todo:
        name, wanted = todo.pop()
        for spec in dists[name][1]:
            req = Requirement(spec)
            if req.marker is not None and not any(
                    req.marker.evaluate({**env, "extra": e}) for e in (wanted or {""})):
                continue
            dep = canonicalize_name(req.name)
            assert dep in dists, f"{name} needs {req}, which the image lacks"
            assert req.specifier.contains(Version(dists[dep][0]), prereleases=True), \
                f"{name} needs {req}; the image has {dists[dep][0]}"
            if dep not in need or req.extras:
                need.add(dep)
                todo.append((dep, set(req.extras)))
    return need


def test_the_built_image_matches_the_dockerfile_and_carries_nothing_extra(realnode_image: Path) -> None:
    want = dockerfile()
    config = image.image_config(realnode_image)
    got = config["config"]
    assert got["User"] == want["user"] == "10001:10001"
    assert got["Entrypoint"] == want["entrypoint"] == ["mlgitops"]
    assert got["Cmd"] == want["cmd"]
    assert got["WorkingDir"] == want["workdir"]
    assert f"{want['expose']}/tcp" in got["ExposedPorts"]
    env = dict(e.split("=", 1) for e in got["Env"])
    for key, value in want["env"].items():  # type: ignore[attr-defined]
        assert env.get(key) == value, f"ENV {key}: the Dockerfile says {value!r}, the image {env.get(key)!r}"
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"  # `mlgitops` is the venv's

    dists, files = installed(realnode_image)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert dists["mlgitops"][0] == version
    need = closure(dists, "mlgitops", list(want["extras"]))  # type: ignore[call-overload]
    assert {"kubernetes", "kopf", "mlflow", "scikit-learn"} <= need
    extra = set(dists) - need - {"pip", "setuptools", "wheel"}
    assert not extra, f"installed but not required by mlgitops[operator]: {sorted(extra)}"
    assert f"{SITE}mlgitops/cli/__init__.py" in files and "opt/venv/bin/mlgitops" in files

    assert "mlgitops:x:10001:10001::/tmp:/usr/sbin/nologin" in files["etc/passwd"].splitlines()
    for tool in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/make", "usr/include/stdio.h"):
        assert tool not in files, f"a build tool in the image: /{tool}"
    assert not [f for f in files if f.startswith(("root/.cache/", "var/lib/apt/lists/", "var/cache/apt/"))
                and not f.endswith("/")]
    assert not [f for f in files if f.startswith(SITE) and "/tests/" in f]
    assert "usr/bin/git" in files and "usr/bin/ssh" in files  # fetch-model needs them
    size = realnode_image.stat().st_size
    print(f"\nimage: {size / 1e6:.0f} MB compressed, {len(config['layers'])} layers")
    assert size < 600e6
