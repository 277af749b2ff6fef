"""Bounded blobs: what a push can make mlgitops read from Git, unpack or load is capped.

A model's sizes are read from Git before any content (a sparse gigabyte costs a megabyte to
push and must not cost gigabytes to check), blobs are streamed to disk, and a zip member, an
array header or a parquet footer that declares more than it may is refused unread. The
remote's warm validator runs under the sandbox's memory cap.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_published, make_frame, remote_head, train

import mlgitops
from mlgitops import errors
from mlgitops.adapters import files, git, sandbox, skops_files, validator
from mlgitops.authoring import repository

MODEL = "models/credit"
MANIFEST = "manifests/credit.yaml"
GiB = 1024**3
MiB = 1024**2
CLI = [str(Path(sys.executable).with_name("mlgitops"))]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository (with its hooked bare remote) holding v1 of a RandomForest."""
    work = tmp_path_factory.mktemp("blobs") / "repo"
    repository.init(work)
    frame = make_frame()
    mlgitops.publish(train(frame), frame, name="credit", repo=work, target="label", quiet=True)
    return work


@pytest.fixture()
def repo(published: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the repository and its remote; the remote's validator is stopped at the end."""
    work = copy_published(published, tmp_path)
    bare = work.parent / "repo.git"
    yield work
    try:
        pid = int(validator.ask(bare, {"ping": True}, timeout=5.0)["pid"])
    except (OSError, ValueError, KeyError):
        return
    os.kill(pid, signal.SIGTERM)


def commit(repo: Path, mutate: Callable[[Path], None]) -> None:
    """Apply ``mutate``, recompute the manifest's digest as an attacker would, and commit."""
    mutate(repo)
    doc = yaml.safe_load((repo / MANIFEST).read_text())
    doc["spec"]["model"]["digest"] = files.dir_digest(repo / MODEL)
    (repo / MANIFEST).write_text(yaml.safe_dump(doc))
    subprocess.run(["git", "-C", str(repo), "add", "-A", "--", "models", "manifests"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=eve", "-c", "user.email=eve@x",
                    "commit", "-q", "-m", "attack"], check=True)


def refused_push(repo: Path, **env: str) -> str:
    """Push HEAD to main; assert the hook refused it with a sentence; return what it said."""
    before = remote_head(repo)
    proc = subprocess.run(["git", "-C", str(repo), "push", "origin", "HEAD:main"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert proc.returncode != 0, "the push was accepted"
    assert remote_head(repo) == before
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "mlgitops: refusing" in proc.stderr, proc.stderr
    return proc.stderr


def warm_validator(bare: Path) -> int:
    """Start ``bare``'s validator as a push would and return its pid once it answers."""
    assert validator.warm_remote(bare)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            return int(validator.ask(bare, {"ping": True}, timeout=5.0)["pid"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    raise AssertionError(f"no validator for {bare} within 120s")


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmHWM: the most memory it ever held)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def address_space_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return line.split()[3]
    raise AssertionError("no address space line")


def sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


# the sparse gigabyte --------------------------------------------------------------------------


def test_a_sparse_gigabyte_is_refused_by_its_size_and_the_validator_stays_small(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = repository.remote_of(repo).local
    assert bare is not None
    commit(repo, lambda r: sparse(r / MODEL / "weights.bin", GiB))
    monkeypatch.setenv("MLGITOPS_VALIDATOR_IDLE", "600")  # it lives through the test (stopped after)
    pid = warm_validator(bare)
    assert address_space_limit(pid) == str(sandbox.MEMORY_BYTES)  # the sandbox's cap, on itself
    before = status_kib(pid, "VmHWM")

    err = refused_push(repo)
    assert "models/credit/weights.bin: is 1073741824 bytes (1.0 GiB) at commit" in err
    assert "over the 268435456 bytes (256.0 MiB) cap for one file" in err
    assert f"raise maxFileBytes in {bare}/mlgitops-trust.yaml" in err
    assert validator.ask(bare, {"ping": True})["pid"] == pid  # the warm validator answered
    grew = (status_kib(pid, "VmHWM") - before) * 1024
    assert grew < 64 * MiB, f"the validator's peak memory grew by {grew // MiB} MiB"


def test_the_remote_takes_its_caps_from_its_own_file_never_from_the_pusher(repo: Path) -> None:
    bare = repository.remote_of(repo).local
    assert bare is not None
    commit(repo, lambda r: sparse(r / MODEL / "weights.bin", 2 * MiB))
    (bare / "mlgitops-trust.yaml").write_text(f"maxFileBytes: {MiB}\n")
    for env in ({}, {"MLGITOPS_VALIDATOR": "cold"}):  # warm and cold alike
        err = refused_push(repo, MLGITOPS_MAX_FILE_BYTES=str(GiB), **env)
        assert "models/credit/weights.bin: is 2097152 bytes (2.0 MiB)" in err
        assert "cap for one file; commit smaller files" in err
        assert f"raise maxFileBytes in {bare}/mlgitops-trust.yaml" in err
    (bare / "mlgitops-trust.yaml").write_text(f"maxFileBytes: {4 * MiB}\nmaxModelBytes: {MiB}\n")
    err = refused_push(repo, MLGITOPS_MAX_MODEL_BYTES=str(GiB))
    assert "models/credit: holds 2" in err
    assert "(the largest file, models/credit/weights.bin, is 2097152 bytes (2.0 MiB))" in err
    assert "over the 1048576 bytes (1.0 MiB) cap for a model directory" in err
    assert f"raise maxModelBytes in {bare}/mlgitops-trust.yaml" in err


@pytest.mark.parametrize(("setting", "sentence"), [
    ("MLGITOPS_MAX_FILE_BYTES", "models/credit/weights.bin: is 2097152 bytes (2.0 MiB) at commit"),
    ("MLGITOPS_MAX_MODEL_BYTES", "models/credit: holds 2"),
])
def test_fetch_model_refuses_a_model_over_the_caps_before_reading_it(
    published: Path, tmp_path: Path, setting: str, sentence: str
) -> None:
    work = tmp_path / "repo"  # a plain Git host: no hook stands in the way
    shutil.copytree(published, work, symlinks=True)
    commit(work, lambda r: sparse(r / MODEL / "weights.bin", 2 * MiB))
    sha = git.text(work, "rev-parse", "HEAD")
    digest = yaml.safe_load((work / MANIFEST).read_text())["spec"]["model"]["digest"]
    dest = tmp_path / "pod" / "credit"
    proc = subprocess.run(
        [*CLI, "fetch-model", "--repo-url", str(work), "--commit", sha, "--name", "credit",
         "--digest", digest, "--dest", str(dest)],
        capture_output=True, text=True, timeout=120, env={**os.environ, setting: str(MiB)})
    said = " ".join(proc.stderr.split())  # the CLI wraps its sentences
    assert proc.returncode != 0, proc.stdout
    assert sentence in said, said
    assert f"raise {setting}" in said and "Traceback" not in said
    assert not dest.exists()


def test_an_export_streams_each_blob_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "w"
    git.init_work(work)
    (work / MODEL).mkdir(parents=True)
    blob = 256 * MiB
    sparse(work / MODEL / "weights.bin", blob)
    (work / MODEL / "MLmodel").write_text("x\n")
    sha = git.commit(work, message="big", paths=["models"])
    assert sha is not None
    monkeypatch.setenv("MLGITOPS_MAX_FILE_BYTES", str(GiB))
    tracemalloc.start()
    try:
        git.export(work, sha, MODEL, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out" / "weights.bin").stat().st_size == blob
    assert (tmp_path / "out" / "MLmodel").read_text() == "x\n"
    assert peak < 16 * MiB, f"the export held {peak // MiB} MiB at once"
    with pytest.raises(errors.ModelError, match=r"is 268435456 bytes .* limit for a file read whole"):
        git.show(work, sha, f"{MODEL}/weights.bin", limit=blob - 1)
    assert git.show(work, sha, f"{MODEL}/MLmodel") == b"x\n"
    assert git.show(work, sha, f"{MODEL}/absent") is None


# what a model file declares -------------------------------------------------------------------


def _rewrite(path: Path, change: Callable[[str, bytes], bytes | None],
             extra: Callable[[zipfile.ZipFile], None] | None = None) -> None:
    """Rewrite the zip at ``path``: each member through ``change`` (None keeps it), then ``extra``."""
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in src.infolist():
            data = src.read(info)
            out.writestr(info, change(info.filename, data) or data)
        if extra is not None:
            extra(out)


def zip_bomb(path: Path) -> None:
    """Add an array of 2 GiB of zeros (a couple of MB packed at level 9), written as a stream."""
    def add(out: zipfile.ZipFile) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (2 * GiB // 8,)})
        zeros = bytes(8 * MiB)
        with out.open("99.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for _ in range(2 * GiB // len(zeros)):
                member.write(zeros)

    _rewrite(path, lambda name, data: None, add)


def lying_header(path: Path) -> None:
    """Every array's header claims a trillion rows; the data stays what it was."""
    def change(name: str, data: bytes) -> bytes | None:
        if not name.endswith(".npy"):
            return None
        fp = io.BytesIO(data)
        version = np.lib.format.read_magic(fp)
        assert version == (1, 0)
        _, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        body = data[fp.tell():]
        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                   "fortran_order": fortran, "shape": (10**12,)})
        return out.getvalue() + body

    _rewrite(path, change)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


def huge_rows(path: Path) -> None:
    """Rewrite the parquet footer so the file, its row group and its columns claim 10**12 rows."""
    raw = path.read_bytes()
    rows = len(__import__("pandas").read_parquet(path))
    (length,) = struct.unpack("<I", raw[-8:-4])
    start = len(raw) - 8 - length
    footer = raw[start:-8]
    field = b"\x16" + _varint(rows << 1)  # compact thrift: an i64 field, zigzag varint
    assert footer.count(field) >= 2
    footer = footer.replace(field, b"\x16" + _varint(10**12 << 1))
    path.write_bytes(raw[:start] + footer + struct.pack("<I", len(footer)) + b"PAR1")


@pytest.fixture(scope="module")
def bomb(published: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "model.skops"
    shutil.copy(published / MODEL / "model.skops", path)
    zip_bomb(path)
    assert path.stat().st_size < 16 * MiB
    return path


def test_a_zip_bomb_is_refused_without_being_unpacked(bomb: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(errors.ModelError) as caught:
            skops_files.check_trees(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    said = str(caught.value)
    assert said.startswith("model.skops: member 99.npy unpacks to 2147483776 bytes from ")
    assert "over the 200-times limit" in said and "republish the model" in said
    assert peak < 128 * MiB, f"checking the bomb held {peak // MiB} MiB"


def test_an_array_header_that_claims_a_trillion_rows_is_refused(published: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    shutil.copy(published / MODEL / "model.skops", path)
    lying_header(path)
    with pytest.raises(errors.ModelError, match=r"its header declares shape \(1000000000000,\) of "
                                                r"\S+ \(\d+ bytes\) but it holds \d+ bytes"):
        skops_files.check_trees(path)


def test_a_parquet_file_that_claims_a_trillion_rows_is_refused_unread(
    published: Path, tmp_path: Path
) -> None:
    path = tmp_path / "reference.parquet"
    shutil.copy(published / MODEL / "reference.parquet", path)
    huge_rows(path)
    sentence = "declares 1000000000000 rows, over the 1000000-row limit"
    with pytest.raises(errors.ModelError, match=sentence):
        files.check_parquet(path, name="reference.parquet")
    with pytest.raises(errors.ModelError, match=sentence):  # as the controller reads it from Git
        files.check_parquet(path.read_bytes(), name="reference.parquet")
    files.check_parquet(published / MODEL / "reference.parquet", name="reference.parquet")


@pytest.mark.parametrize(("hostile", "sentence"), [
    ("bomb", "model.skops: member 99.npy unpacks to 2147483776 bytes"),
    ("header", "its header declares shape (1000000000000,)"),
    ("rows", "credit/reference.parquet: declares 1000000000000 rows"),
])
def test_the_hook_refuses_what_declares_too_much(
    repo: Path, bomb: Path, hostile: str, sentence: str
) -> None:
    def mutate(r: Path) -> None:
        if hostile == "bomb":
            shutil.copy(bomb, r / MODEL / "model.skops")
        elif hostile == "header":
            lying_header(r / MODEL / "model.skops")
        else:
            huge_rows(r / MODEL / "reference.parquet")

    commit(repo, mutate)
    err = refused_push(repo)
    assert sentence in err, err
