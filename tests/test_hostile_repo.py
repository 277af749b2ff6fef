"""A hostile repository: every attack is pushed with plain git and hand-made files.

Each case asserts the push is refused with a sentence (never a traceback), nothing ran, and the
remote still holds the version that serves. The controller-side cases push past the hook (a
plain Git host) and assert the controller holds the commit while the old version answers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.data import make_frame, train
from support.git import copy_published, remote_head

import mlgitops
from mlgitops import errors
from mlgitops.adapters import files, git
from mlgitops.authoring import validate
from mlgitops.core import quarantine

pytestmark = pytest.mark.process

MODEL = "models/credit"
MANIFEST = "manifests/credit.yaml"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository with v1 of a RandomForest, copied for each test."""
    from mlgitops.authoring import repository

    base = tmp_path_factory.mktemp("hostile")
    work = base / "repo"
    repository.init(work)
    frame = make_frame()
    mlgitops.publish(train(frame), frame, name="credit", repo=work, target="label", quiet=True)
    return work


@pytest.fixture()
def repo(published: Path, tmp_path: Path) -> Iterator[Path]:
    work = copy_published(published, tmp_path)
    yield work


def plain_push(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), "push", "origin", *args],
                          capture_output=True, text=True, timeout=300)


def attack(repo: Path, mutate: Callable[[Path], None], *, paths: tuple[str, ...] = ("models", "manifests")) -> str:
    """Apply ``mutate`` to the working tree, commit it, push it; return git's refusal."""
    before = remote_head(repo)
    mutate(repo)
    subprocess.run(["git", "-C", str(repo), "add", "-A", "--", *paths], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=eve", "-c", "user.email=eve@x",
                    "commit", "-q", "-m", "attack"], check=True)
    proc = plain_push(repo, "HEAD:main")
    assert proc.returncode != 0, "the push was accepted"
    assert remote_head(repo) == before
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "mlgitops: refusing" in proc.stderr, proc.stderr
    return proc.stderr


def set_manifest(repo: Path, change: Callable[[dict], None], *, redigest: bool = True) -> None:  # type: ignore[type-arg]
    path = repo / MANIFEST
    doc = yaml.safe_load(path.read_text())
    change(doc)
    if redigest:  # the attacker computes the digest as mlgitops would
        doc["spec"]["model"]["digest"] = files.dir_digest(repo / MODEL)
    path.write_text(yaml.safe_dump(doc))


def set_mlmodel(repo: Path, change: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    path = repo / MODEL / "MLmodel"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc))


def test_a_model_that_runs_code_on_load_is_refused_and_nothing_runs(repo: Path, tmp_path: Path) -> None:
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    marker = tmp_path / "pwned"
    payload = Pipeline([("a", FunctionTransformer(iter)), ("b", FunctionTransformer(next)),
                        ("c", FunctionTransformer(exec))])
    evil_types = ["builtins.exec", "builtins.iter", "builtins.next", "builtins.eval", "posix.system"]

    def mutate(r: Path) -> None:
        skops.io.dump(payload, r / MODEL / "model.skops")
        set_mlmodel(r, lambda d: d["signature"].update(inputs=json.dumps(
            [{"type": "double", "name": f"open({str(marker)!r}, 'w')", "required": True}])))
        set_manifest(r, lambda d: d["spec"]["model"].update(trustedTypes=evil_types))

    err = attack(repo, mutate)
    assert "lists builtins.exec, which can run code or reach the system" in err
    assert "posix.system" in err
    assert not marker.exists()


@pytest.mark.parametrize("where", ["absolute", "pycache"])
def test_pickled_model_must_be_a_plain_file_inside_the_model(repo: Path, tmp_path: Path, where: str) -> None:
    outside = tmp_path / "outside.skops"
    shutil.copy(repo / MODEL / "model.skops", outside)

    def mutate(r: Path) -> None:
        if where == "absolute":
            target = str(outside)
        else:
            (r / MODEL / "__pycache__").mkdir()
            shutil.move(r / MODEL / "model.skops", r / MODEL / "__pycache__" / "model.skops")
            subprocess.run(["git", "-C", str(r), "add", "-f", MODEL], check=True)  # it is ignored
            target = "__pycache__/model.skops"
        set_mlmodel(r, lambda d: d["flavors"]["sklearn"].update(pickled_model=target))
        set_manifest(r, lambda d: None)

    err = attack(repo, mutate)
    assert "must be a plain file name inside its directory" in err


def test_the_digest_covers_every_file_pycache_included(repo: Path) -> None:
    def mutate(r: Path) -> None:
        (r / MODEL / "__pycache__").mkdir()
        (r / MODEL / "__pycache__" / "weights.bin").write_bytes(b"\0" * 64)
        subprocess.run(["git", "-C", str(r), "add", "-f", MODEL], check=True)

    assert "content digest is" in attack(repo, mutate)


@pytest.mark.parametrize("link", ["/etc/passwd", "model.skops"])
def test_symlinks_in_a_model_are_refused_with_a_sentence(repo: Path, link: str) -> None:
    def mutate(r: Path) -> None:
        os.symlink(link, r / MODEL / "extra")
        set_manifest(r, lambda d: None, redigest=False)

    assert "is a symbolic link" in attack(repo, mutate)


def test_yaml_alias_bomb_is_refused_at_once_with_a_short_message(repo: Path) -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))

    def mutate(r: Path) -> None:
        (r / MANIFEST).write_text(bomb)

    start = time.monotonic()
    err = attack(repo, mutate)
    assert time.monotonic() - start < 30
    assert "anchors or aliases" in err
    assert len(err) < 2000


def test_oversized_manifest_and_yaml_tags_are_refused(repo: Path, tmp_path: Path) -> None:
    def big(r: Path) -> None:
        set_manifest(r, lambda d: d["metadata"].update(annotations={"x": "y" * 6_000_000}), redigest=False)

    assert "over the 65536-byte limit" in attack(repo, big)
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard", "origin/main"], check=True)
    marker = tmp_path / "tagged"

    def tagged(r: Path) -> None:
        (r / MANIFEST).write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")

    assert "only plain strings, numbers" in attack(repo, tagged)
    assert not marker.exists()


def test_a_look_alike_model_name_is_refused(repo: Path) -> None:
    def mutate(r: Path) -> None:
        shutil.copy(r / MANIFEST, r / "manifests" / "\u0441redit.yaml")  # Cyrillic 'с'

    err = attack(repo, mutate)
    assert "\u0441redit.yaml" in err and "must be named 'manifests/credit.yaml'" in err


def test_a_crafted_tree_is_refused_before_it_loads(repo: Path) -> None:
    def mutate(r: Path) -> None:
        path = r / MODEL / "model.skops"
        src = zipfile.ZipFile(path)
        schema = json.loads(src.read("schema.json"))
        tree_nodes = []

        def walk(n: object) -> None:
            if isinstance(n, dict):
                if n.get("__class__") == "Tree":
                    tree_nodes.append(n["content"]["content"]["nodes"]["file"])
                for v in n.values():
                    walk(v)
            elif isinstance(n, list):
                for v in n:
                    walk(v)

        walk(schema)
        nodes = np.load(io.BytesIO(src.read(tree_nodes[0])))
        nodes["left_child"][0] = 10_000_000  # scikit-learn would read far outside the array
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename == tree_nodes[0]:
                    buf = io.BytesIO()
                    np.save(buf, nodes)
                    data = buf.getvalue()
                dst.writestr(info, data)
        path.write_bytes(out.getvalue())
        set_manifest(r, lambda d: None)

    assert "points outside the tree" in attack(repo, mutate)


def test_code_shipped_with_a_model_is_refused(repo: Path) -> None:
    def mutate(r: Path) -> None:
        set_mlmodel(r, lambda d: d["flavors"]["sklearn"].update(code="code"))
        set_manifest(r, lambda d: None)

    assert "never loads code shipped with a model" in attack(repo, mutate)


def test_history_only_moves_forward(repo: Path) -> None:
    bare = Path(git.remote_url(repo) or "")
    head = git.text(repo, "rev-parse", "HEAD")
    first = git.text(repo, "rev-list", "--max-parents=0", "HEAD")
    forced = plain_push(repo, "--force", f"{first}:main")
    assert forced.returncode != 0 and "may only move forward" in forced.stderr
    deleted = plain_push(repo, ":main")
    assert deleted.returncode != 0
    assert remote_head(repo) == head
    # git's own settings hold too, should the hook be removed
    (bare / "hooks" / "pre-receive").unlink()
    assert git.text(bare, "config", "receive.denyNonFastForwards") == "true"
    forced = plain_push(repo, "--force", f"{first}:main")
    assert forced.returncode != 0 and "non-fast-forward" in forced.stderr
    deleted = plain_push(repo, ":main")
    assert deleted.returncode != 0 and "deletion prohibited" in deleted.stderr
    assert remote_head(repo) == head


V2 = make_frame(shift=0.5, seed=2)


def publish_and_revert_v2(repo: Path) -> str:
    """Publish v2, then revert it as the monitor's writer does: v1's paths back, v2 quarantined."""
    v1 = git.text(repo, "rev-parse", "HEAD")
    mlgitops.publish(train(V2, seed=2), V2, name="credit", repo=repo, target="label", quiet=True)
    dep = validate.read_manifest(repo, MANIFEST)
    ident = validate.identity(repo / MODEL, dep.digest)
    entry = quarantine.Entry(model="credit", digest=dep.digest, commit="c0ffee" * 6 + "beef",
                             reason="live data fits the previous baseline", at="2026-11-28T00:00:00Z",
                             fitted=ident.fitted, recipe=ident.recipe,
                             report="http://controller.example/reports/credit/r1.html")
    git.run(repo, "rm", "-r", "-q", MODEL)
    git.run(repo, "checkout", "-q", v1, "--", MODEL, MANIFEST)
    (repo / "quarantine.yaml").write_text(quarantine.HEADER + yaml.safe_dump({"entries": [entry.to_dict()]}))
    assert git.commit(repo, message="Revert credit v2", paths=["models", "manifests", "quarantine.yaml"])
    git.push(repo)
    return dep.digest


def test_republishing_a_reverted_model_is_refused_naming_the_revert(repo: Path) -> None:
    publish_and_revert_v2(repo)
    head = remote_head(repo)
    # the same notebook cell again: the same estimator and data (new MLflow ids, new timestamps)
    with pytest.raises(errors.QuarantinedError, match=r"c0ffeec0ffee.*reports/credit/r1\.html"):
        mlgitops.publish(train(V2, seed=2), V2, name="credit", repo=repo, target="label", quiet=True)
    # retrained with another seed: the same recipe on the same data
    with pytest.raises(errors.QuarantinedError, match="hyper-parameters and reference data"):
        mlgitops.publish(train(V2, seed=2).set_params(random_state=7), V2, name="credit",
                         repo=repo, target="label", quiet=True)
    assert remote_head(repo) == head


def test_the_hook_refuses_a_quarantined_estimator_saved_again(repo: Path, tmp_path: Path) -> None:
    publish_and_revert_v2(repo)
    # v2's estimator saved again by hand, with new MLflow ids: other bytes, the same content
    again = tmp_path / "again"
    mlgitops.authoring.publishing.write_version(train(V2, seed=2), V2, dest=again, target="label",
                                      trusted_types=(), key="k")

    def mutate(r: Path) -> None:
        shutil.rmtree(r / MODEL)
        shutil.copytree(again, r / MODEL)
        set_mlmodel(r, lambda d: d.update(model_uuid="0" * 32, utc_time_created="2030-01-01"))
        set_manifest(r, lambda d: None)

    err = attack(repo, mutate)
    assert "is quarantined" in err and "the same fitted estimator" in err


def test_remembered_quarantine_keys_serve_only_content_whose_digest_was_checked(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revert's push and redeploy match quarantine from keys remembered by digest; a caller
    that did not check the digest (a manifest may lie) reads the content itself."""
    publish_and_revert_v2(repo)
    entries = validate.read_quarantine(repo)
    again = tmp_path / "again"  # v2's estimator saved again: other bytes, the same content
    mlgitops.authoring.publishing.write_version(train(V2, seed=2), V2, dest=again, target="label",
                                      trusted_types=(), key="k")
    digest = files.dir_digest(again)
    dep = dataclasses.replace(validate.read_manifest(repo, MANIFEST), digest=digest)
    assert validate.remember_identity(again, digest) == validate.identity(again, digest)
    with pytest.raises(errors.QuarantinedError, match="the same fitted estimator"):
        validate.check_quarantine(again, dep, entries, verified=True)
    # keys remembered wrongly for that digest: an unverified check does not use them
    monkeypatch.setitem(validate._IDENTITIES, digest, quarantine.Identity(digest))
    with pytest.raises(errors.QuarantinedError, match="the same fitted estimator"):
        validate.check_quarantine(again, dep, entries)


def test_the_digest_is_stable_across_publishes(repo: Path, tmp_path: Path) -> None:
    frame = make_frame(seed=4)
    digests = []
    for i in range(2):
        dest = tmp_path / f"v{i}"
        mlgitops.authoring.publishing.write_version(train(frame, seed=4), frame, dest=dest, target="label",
                                          trusted_types=(), key="k")
        digests.append(files.dir_digest(dest))
    assert digests[0] == digests[1]


def test_the_controller_holds_what_a_plain_git_host_let_through(repo: Path, tmp_path: Path) -> None:
    """No validating hook (a hosted remote): the controller refuses the same commits itself,
    runs nothing, and the serving version keeps answering."""
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    from support.net import free_port, version_at
    from support.status import stalled
    from support.waits import wait_until

    from mlgitops import settings
    from mlgitops.controller import run

    bare = Path(git.remote_url(repo) or "")
    (bare / "hooks" / "pre-receive").unlink()
    v1 = git.text(repo, "rev-parse", "HEAD")
    cfg = settings.controller(repo, port=free_port(), poll_seconds=1.0, monitor=False)
    marker = tmp_path / "pwned"

    def push(mutate: Callable[[Path], None]) -> str:
        mutate(repo)
        subprocess.run(["git", "-C", str(repo), "add", "-A", "models", "manifests"], check=True)
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=eve", "-c", "user.email=eve@x",
                        "commit", "-q", "-m", "attack"], check=True)
        assert plain_push(repo, "HEAD:main").returncode == 0
        ctl.trigger("test")
        return git.text(repo, "rev-parse", "HEAD")

    with run.running(cfg) as ctl:
        wait_until(lambda: version_at(ctl.base_url) == v1, what="v1 serving")

        def evil(r: Path) -> None:
            payload = Pipeline([("a", FunctionTransformer(iter)), ("b", FunctionTransformer(next)),
                                ("c", FunctionTransformer(exec))])
            skops.io.dump(payload, r / MODEL / "model.skops")
            set_mlmodel(r, lambda d: d["signature"].update(inputs=json.dumps(
                [{"type": "double", "name": f"open({str(marker)!r}, 'w')", "required": True}])))
            set_manifest(r, lambda d: d["spec"]["model"].update(
                trustedTypes=["builtins.exec", "builtins.iter", "builtins.next"]))

        push(evil)
        wait_until(lambda: "builtins.exec" in stalled(ctl), what="the code-running model held")
        assert "can run code" in stalled(ctl)
        assert version_at(ctl.base_url) == v1 and not marker.exists()

        def linked(r: Path) -> None:
            set_manifest(r, lambda d: d["spec"]["model"].update(trustedTypes=["sklearn.tree._tree.Tree"]))
            os.symlink("/etc/passwd", r / MODEL / "extra")
            set_manifest(r, lambda d: None, redigest=False)

        push(linked)
        wait_until(lambda: "symbolic link" in stalled(ctl), what="the symlinked model held")
        assert version_at(ctl.base_url) == v1
