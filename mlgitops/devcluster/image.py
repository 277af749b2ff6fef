"""Build the mlgitops OCI image with no container engine and no registry (`make image`).

The `Dockerfile`'s equivalent, built from Debian's packages and PyPI only:

- base layer: a Debian bookworm root filesystem (`debootstrap --variant=minbase` with python3,
  python3-venv, git, openssh-client, ca-certificates), a virtual environment at /opt/venv holding
  the dependencies of `mlgitops[operator]` (wheels resolved by the host's pip, installed offline
  in the chroot), the non-root user 10001:10001; no apt lists, docs, caches or test directories;
- app layer: the mlgitops wheel built from this checkout, installed into /opt/venv;
- config: entry point `mlgitops`, cmd `--help`, user 10001:10001, workdir /tmp, telemetry off.

Both layers are cached outside the clone, under ~/.cache/mlgitops/image: `base-<key>/` by a hash of the Debian
suite and packages, the dependency list in pyproject.toml and this recipe; `<key>/mlgitops.oci.tar`
by the base key plus every packaged source file. A second build with nothing changed is a no-op;
a source change rebuilds only the app layer (seconds).

    python -m mlgitops.devcluster.image            # build (or reuse) and print the archive's path
    python -m mlgitops.devcluster.image --print-path   # the path a build would produce; no build

Needs root (chroot), debootstrap, umoci, tar and the network to Debian's mirror and PyPI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RECIPE_VERSION = "1"
SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "git", "openssh-client", "ca-certificates")
VENV = "/opt/venv"
TAG = "0.1.0"
USER = "10001:10001"
ENTRYPOINT = ["mlgitops"]
CMD = ["--help"]
WORKDIR = "/tmp"
# The Dockerfile's ENV, with PATH leading to the venv (the python image's PATH leads to /usr/local).
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PIP_NO_CACHE_DIR": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HOME": "/tmp",
}
EXPOSED_PORT = "8080/tcp"
ARCHIVE_NAME = "mlgitops.oci.tar"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROOT_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
              "PYTHONDONTWRITEBYTECODE=1", "PIP_NO_CACHE_DIR=1", "PIP_DISABLE_PIP_VERSION_CHECK=1"]


class ImageBuildError(RuntimeError):
    """A build step failed or a prerequisite is missing; the message says which and what to do."""


def cache_root() -> Path:
    return Path.home() / ".cache" / "mlgitops" / "image"


def _sha(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def requirements(pyproject: Path) -> list[str]:
    """The image's Python requirements: the project's dependencies plus the `operator` extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    deps: list[str] = list(project["dependencies"])
    deps += list(project.get("optional-dependencies", {}).get("operator", []))
    return deps


def debian_mirror() -> str:
    """The Debian mirror apt already uses here (deb822 or one-line sources), else deb.debian.org."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "deb" and "security" not in fields[1]:
                return fields[1]
    return "http://deb.debian.org/debian"


def base_key(root: Path = REPO_ROOT) -> str:
    recipe = {"recipe": RECIPE_VERSION, "suite": SUITE, "packages": DEBIAN_PACKAGES,
              "requirements": requirements(root / "pyproject.toml"), "venv": VENV}
    return _sha([json.dumps(recipe, sort_keys=True).encode()])


def _source_files(root: Path) -> list[Path]:
    files = [root / "pyproject.toml", root / "README.md"]
    for path in sorted((root / "mlgitops").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path)
    return files


def image_key(root: Path = REPO_ROOT) -> str:
    config = {"user": USER, "entrypoint": ENTRYPOINT, "cmd": CMD, "env": ENV, "workdir": WORKDIR}
    parts = [base_key(root).encode(), json.dumps(config, sort_keys=True).encode()]
    for path in _source_files(root):
        parts += [str(path.relative_to(root)).encode(), path.read_bytes()]
    return _sha(parts)


def archive_path(root: Path = REPO_ROOT) -> Path:
    """Where the image of the sources under `root` is (or would be) cached."""
    return cache_root() / image_key(root) / ARCHIVE_NAME


def _run(argv: list[str], log: Path, **kwargs: Any) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise ImageBuildError(f"`{' '.join(argv[:3])} ...` exited {proc.returncode}; "
                              f"the log is {log}:\n" + "\n".join(tail))


def check_prerequisites() -> None:
    missing = [tool for tool in ("debootstrap", "umoci", "tar", "chroot") if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(f"building the image needs {', '.join(missing)} on PATH: "
                              "apt-get install -y debootstrap umoci")
    if os.geteuid() != 0:
        raise ImageBuildError("building the image needs root (debootstrap and chroot); run it as root")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _prune(rootfs: Path) -> None:
    """What the image does not need at run time: apt lists and caches, docs, tests, logs."""
    for rel in ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf", "usr/share/doc",
                "usr/share/man", "usr/share/info", "usr/share/locale", "var/log", "tmp", "root/.cache"):
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for site in rootfs.glob("opt/venv/lib/python3*/site-packages"):
        for tests in sorted(site.rglob("tests"), key=lambda p: -len(p.parts)):
            if tests.is_dir() and not tests.is_symlink():
                shutil.rmtree(tests)
    (rootfs / "etc" / "resolv.conf").write_text("")


def _tar_layer(src: Path, dest: Path, log: Path) -> None:
    _run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "--mtime=@0", "-C", str(src),
          "-cf", str(dest), "."], log)


def _build_base(key: str, src: Path, log: Path) -> Path:
    """debootstrap + the venv with the dependencies + the user, as an OCI layout `base:<tag>`."""
    base = cache_root() / f"base-{key}"
    if (base / "done").exists():
        return base
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    rootfs, wheels = base / "rootfs", base / "wheels"
    debootstrap = subprocess.Popen(
        ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", SUITE,
         str(rootfs), debian_mirror()],
        stdout=(base / "debootstrap.log").open("wb"), stderr=subprocess.STDOUT)
    # Wheels resolve on the host (same CPython minor, manylinux) while debootstrap runs: the
    # chroot then installs offline, so it needs neither DNS nor the host's CA bundle.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels),
          *requirements(src / "pyproject.toml")], log)
    if debootstrap.wait() != 0:
        raise ImageBuildError(f"debootstrap failed; see {base / 'debootstrap.log'}")
    shutil.copytree(wheels, rootfs / "tmp" / "wheels")
    chroot = ["chroot", str(rootfs), *CHROOT_ENV]
    _run([*chroot, "python3", "-m", "venv", VENV], log)
    wheel_files = sorted(f"/tmp/wheels/{w.name}" for w in wheels.glob("*.whl"))
    _run([*chroot, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--no-deps", *wheel_files], log)
    _run([*chroot, "groupadd", "--gid", "10001", "mlgitops"], log)
    _run([*chroot, "useradd", "--uid", "10001", "--gid", "10001", "--no-create-home",
          "--home-dir", "/tmp", "--shell", "/usr/sbin/nologin", "mlgitops"], log)
    _prune(rootfs)
    (rootfs / "tmp").chmod(0o1777)
    shutil.rmtree(wheels)
    _tar_layer(rootfs, base / "layer.tar", log)
    layout = f"{base / 'oci'}:base"
    _run(["umoci", "init", "--layout", str(base / "oci")], log)
    _run(["umoci", "new", "--image", layout], log)
    _run(["umoci", "raw", "add-layer", "--image", layout, str(base / "layer.tar")], log)
    (base / "layer.tar").unlink()
    (base / "done").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return base


def _snapshot_sources(dest: Path) -> Path:
    """A copy of what the image packages, so that edits during a build cannot change it."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    shutil.copytree(REPO_ROOT / "mlgitops", dest / "mlgitops",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _app_layer(src: Path, base: Path, work: Path, log: Path) -> Path:
    """The mlgitops wheel from `src`, installed by the image's own pip into /opt/venv."""
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(work / "dist"), str(src)], log)
    (wheel,) = (work / "dist").glob("mlgitops-*.whl")
    rootfs = base / "rootfs"
    staging = rootfs / "tmp" / "app"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copy2(wheel, staging / wheel.name)
    _run(["chroot", str(rootfs), *CHROOT_ENV, f"{VENV}/bin/pip", "install", "-q", "--no-index",
          "--no-deps", "--root", "/tmp/app/root", "--no-warn-script-location",
          f"/tmp/app/{wheel.name}"], log)
    tree = work / "app"
    shutil.move(staging / "root", tree)
    shutil.rmtree(staging)
    _tar_layer(tree, work / "app.tar", log)
    return work / "app.tar"


def _prune_images(keep: Path, newest: int = 2) -> None:
    """Each source change makes a new archive (the base blob included): keep the newest few."""
    built = sorted((d for d in cache_root().iterdir() if (d / "build.json").exists() and d != keep),
                   key=lambda d: d.stat().st_mtime, reverse=True)
    for old in built[newest - 1:]:
        shutil.rmtree(old, ignore_errors=True)
        (cache_root() / f"build-{old.name}.log").unlink(missing_ok=True)


def build(*, quiet: bool = False) -> Path:
    """Build the image (or find it cached) and return the OCI archive's path."""
    if archive_path().exists():
        return archive_path()
    check_prerequisites()
    if not (REPO_ROOT / "pyproject.toml").exists():
        raise ImageBuildError(f"no pyproject.toml in {REPO_ROOT}: the image builds from a checkout "
                              "of mlgitops (git clone, then make image)")
    with _locked(cache_root() / ".lock"), \
            tempfile.TemporaryDirectory(dir=cache_root(), prefix="work-") as tmp:
        work = Path(tmp)
        src = _snapshot_sources(work / "src")
        key = image_key(src)
        out = cache_root() / key / ARCHIVE_NAME
        if out.exists():
            return out
        start = time.monotonic()
        log = cache_root() / f"build-{key}.log"
        log.unlink(missing_ok=True)
        bkey = base_key(src)
        base_cached = (cache_root() / f"base-{bkey}" / "done").exists()
        base = _build_base(bkey, src, log)
        base_seconds = time.monotonic() - start
        app_tar = _app_layer(src, base, work, log)
        layout = work / "oci"
        shutil.copytree(base / "oci", layout, copy_function=os.link)
        for name in ("index.json", "oci-layout"):  # rewritten by umoci: never share them
            data = (layout / name).read_bytes()
            (layout / name).unlink()
            (layout / name).write_bytes(data)
        image = f"{layout}:{TAG}"
        _run(["umoci", "tag", "--image", f"{layout}:base", TAG], log)
        _run(["umoci", "rm", "--image", f"{layout}:base"], log)
        _run(["umoci", "raw", "add-layer", "--image", image, str(app_tar)], log)
        config = ["umoci", "config", "--image", image, "--config.user", USER,
                  "--config.workingdir", WORKDIR, "--config.exposedports", EXPOSED_PORT,
                  "--config.cmd", *CMD]
        for entry in ENTRYPOINT:
            config += ["--config.entrypoint", entry]
        for name, value in ENV.items():
            config += ["--config.env", f"{name}={value}"]
        _run(config, log)
        _run(["umoci", "gc", "--layout", str(layout)], log)
        final = work / "final"
        final.mkdir()
        _run(["tar", "-C", str(layout), "-cf", str(final / ARCHIVE_NAME), "."], log)
        meta: dict[str, Any] = {"key": key, "base": bkey, "base_cached": base_cached,
                "base_seconds": round(base_seconds, 1),
                "seconds": round(time.monotonic() - start, 1),
                "bytes": (final / ARCHIVE_NAME).stat().st_size}
        (final / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
        final.rename(out.parent)
        _prune_images(keep=out.parent)
    if not quiet:
        print(f"built {out} ({meta['bytes'] / 1e6:.0f} MB) in {meta['seconds']:.0f} s"
              f" (base layer {'cached' if base_cached else f'built in {base_seconds:.0f} s'})")
    return out


def image_config(archive: Path) -> dict[str, Any]:
    """The OCI image config (`config` holds User, Entrypoint, Env, ...) of a built archive."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> Any:
            member = tar.extractfile(f"./blobs/{digest.replace(':', '/')}")
            assert member is not None
            return json.loads(member.read())

        index_member = tar.extractfile("./index.json")
        assert index_member is not None
        index = json.loads(index_member.read())
        manifest = blob(index["manifests"][0]["digest"])
        config: dict[str, Any] = blob(manifest["config"]["digest"])
        config["layers"] = [layer["digest"] for layer in manifest["layers"]]
        return config


def layer_members(archive: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every file of every layer of a built archive, lowest layer first (gzip layers)."""
    layers = image_config(archive)["layers"]
    with tarfile.open(archive) as outer:
        for digest in layers:
            member = outer.extractfile(f"./blobs/{digest.replace(':', '/')}")
            assert member is not None
            with tarfile.open(fileobj=member, mode="r|gz") as layer:
                for info in layer:
                    yield layer, info


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--print-path"]:
        print(archive_path())
        return 0
    if args:
        print("usage: python -m mlgitops.devcluster.image [--print-path]", file=sys.stderr)
        return 2
    try:
        print(build())
    except ImageBuildError as exc:
        print(f"image build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
