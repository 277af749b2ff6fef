"""Model repositories: create one wired to a bare remote, and find its parts."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlgitops import errors
from mlgitops.adapters import git, validator
from mlgitops.core import layout, manifest, quarantine

NOTIFY_FILE = "mlgitops-controllers"
CRD_PATH = f"{layout.MANIFESTS}/crd/modeldeployments.mlgitops.io.yaml"

GITIGNORE = """\
# mlgitops runtime state (controller clone, server logs, stats, reports)
.mlgitops/
__pycache__/
*.pyc
.ipynb_checkpoints/
"""

#: Model files are binary and change wholesale: delta search on them only costs time
#: (seconds per fetch of a few-MB model), so git stores and sends them whole.
ATTRIBUTES = """\
*.skops -delta -diff
*.pkl -delta -diff
*.parquet -delta -diff
*.npy -delta -diff
"""

README = """\
# Model repository

Managed with [mlgitops](https://pypi.org/project/mlgitops/): every model version is a commit.

- `models/<name>/` — MLflow model (skops), `baseline.json`, `reference.parquet`
- `manifests/<name>.yaml` — its `ModelDeployment` (digest, trusted types, serving, drift policy)
- `quarantine.yaml` — versions reverted automatically; remove an entry to allow it again

Publish with `mlgitops publish` or `mlgitops.publish(...)`; check with `mlgitops validate`;
serve with `mlgitops up --repo .`.
"""

POST_RECEIVE = '''\
#!{python} -S
"""mlgitops post-receive: tell running controllers that refs moved (stdlib only, fast)."""
import os, socket, sys
from urllib.parse import urlsplit
updates = sys.stdin.buffer.read()
try:
    with open(os.path.join(os.environ.get("GIT_DIR", "."), "{notify}")) as f:
        urls = [line.strip() for line in f if line.strip()]
except OSError:
    urls = []
for url in urls:
    try:
        u = urlsplit(url)
        head = ("POST %s HTTP/1.0\\r\\nHost: %s\\r\\nContent-Type: text/plain\\r\\n"
                "Content-Length: %d\\r\\n\\r\\n" % (u.path or "/", u.netloc, len(updates)))
        with socket.create_connection((u.hostname, u.port or 80), timeout=1.0) as conn:
            conn.sendall(head.encode() + updates)
            conn.recv(16)
    except OSError:
        pass
'''

PRE_RECEIVE = '''\
#!{python} -S
"""mlgitops pre-receive: refuse a push whose models or manifests do not validate.

Asks this remote's warm validator (`python -m mlgitops.authoring.hooks serve`) and exits with its
verdict. When none runs, one is started: the push waits for it when it brings model content
this remote never validated (an interpreter start and a scikit-learn import once, instead of
per push), else (a manifest change, a revert to validated content) it is checked cold (`python -m mlgitops.authoring.hooks pre-receive`) while the validator starts for the next
push. MLGITOPS_VALIDATOR=cold always checks cold. `--warm` only starts the validator.
Stdlib only: this script starts in milliseconds.
"""
import fcntl, hashlib, json, os, re, socket, stat, subprocess, sys, time
PYTHON = {python!r}
ZERO = "0" * 40
GITDIR = os.path.abspath(os.environ.get("GIT_DIR", "."))
KEYS = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")
RUN = os.path.join(os.environ.get("TMPDIR") or "/tmp", "mlgitops-%d" % os.getuid())
BASE = os.path.join(RUN, hashlib.sha256(os.path.realpath(GITDIR).encode()).hexdigest()[:24])
SOCK = BASE + ".sock"  # the same as mlgitops.adapters.validator.socket_path

def private():
    try:
        os.mkdir(RUN, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(RUN)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077

def ask(request, timeout):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(2.0)
        conn.connect(SOCK)
        conn.settimeout(timeout)
        conn.sendall(json.dumps(request).encode() + b"\\n")
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer = json.loads(b"".join(chunks))
    if not isinstance(answer, dict):
        raise ValueError("not an answer")
    return answer

def starting():
    """True while a validator holds its lock (it runs, or imports before it listens)."""
    try:
        fd = os.open(BASE + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)

def start():
    env = {{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    with open(os.path.join(GITDIR, "{log}"), "ab") as log:
        return subprocess.Popen([PYTHON, "-I", "-m", "mlgitops.authoring.hooks", "serve", GITDIR],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                                env=env, start_new_session=True)

def git(*args):
    return subprocess.run(["git", *args], capture_output=True).stdout

DIGEST = re.compile(rb"digest:\\s*['\\"]?(sha256:[0-9a-f]{{64}})")

def brings_models(lines):
    """True when the push names model content this remote has not validated before."""
    try:
        with open(os.path.join(GITDIR, "{validated}")) as f:
            done = {{line.split()[0] for line in f if line.startswith("sha256:")}}
    except OSError:
        done = set()
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[2] != "refs/heads/{branch}" or parts[1] == ZERO:
            continue
        if parts[0] == ZERO:
            paths = git("ls-tree", "-r", "--name-only", parts[1], "--", "{models}").split()
        else:
            paths = git("diff", "--name-only", parts[0], parts[1], "--", "{models}",
                        "{manifests}").split()
        names = set()
        for path in paths:
            bits = path.decode(errors="replace").split("/")
            if bits[0] == "{models}" and len(bits) > 2:
                names.add(bits[1])
            elif bits[0] == "{manifests}" and len(bits) == 2 and bits[1].endswith(".yaml"):
                names.add(bits[1][:-5])
        for name in names:
            spec = "%s:{manifests}/%s.yaml" % (parts[1], name)
            size = git("cat-file", "-s", spec).strip()
            if not size.isdigit() or int(size) > 1048576:  # the validator judges (and caps) it
                return True
            found = DIGEST.search(git("cat-file", "blob", spec))
            if found and found.group(1).decode() not in done:
                return True
    return False

def warm(request, timeout, lines=None):
    for _ in range(2):
        try:
            answer = ask(request, timeout)
            if not answer.get("restart"):
                return answer
        except (OSError, ValueError):
            pass
        if lines is not None and not starting() and not brings_models(lines):
            start()  # for the next push; this one has nothing to load
            return None
        proc = start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if ask({{"ping": True}}, 5.0).get("pong"):
                    break
            except (OSError, ValueError):
                pass
            if proc.poll() not in (None, 0):
                return None  # it cannot start: check cold
            time.sleep(0.05)
    return None

if sys.argv[1:] == ["--warm"]:
    if private() and not starting():
        try:
            ask({{"ping": True}}, 5.0)
        except (OSError, ValueError):
            start()
    sys.exit(0)
lines = sys.stdin.read().splitlines()
if os.environ.get("MLGITOPS_VALIDATOR", "").lower() != "cold" and private():
    env = {{k: os.environ[k] for k in KEYS if k in os.environ}}
    answer = warm({{"lines": lines, "env": env}}, 900.0, lines)
    if answer is not None and isinstance(answer.get("status"), int):
        sys.stderr.write(str(answer.get("stderr", "")))
        sys.exit(answer["status"])
sys.exit(subprocess.run([PYTHON, "-m", "mlgitops.authoring.hooks", "pre-receive"],
                        input="\\n".join(lines).encode()).returncode)
'''


def crd_yaml() -> str:
    return (
        "# Generated by `mlgitops crd` from mlgitops.core.manifest.SCHEMA; do not edit.\n"
        + yaml.safe_dump(manifest.crd(), sort_keys=False)
    )


def default_remote(work: Path) -> Path:
    return work.parent / f"{work.name}.git"


def install_hooks(bare: Path) -> None:
    """Install the validating pre-receive and notifying post-receive hooks in a bare remote."""
    info = bare / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "attributes").write_text(ATTRIBUTES)  # a bare repo reads attributes only here
    hooks = bare / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    for name, template in (("pre-receive", PRE_RECEIVE), ("post-receive", POST_RECEIVE)):
        path = hooks / name
        path.write_text(template.format(python=sys.executable, notify=NOTIFY_FILE,
                                        log=validator.LOG, branch=layout.BRANCH,
                                        models=layout.MODELS, manifests=layout.MANIFESTS,
                                        validated=validator.VALIDATED))
        path.chmod(0o755)


#: Settings of a bare remote that keep history moving forward only.
PROTECTION = {"receive.denyNonFastForwards": "true", "receive.denyDeletes": "true"}


def protect(bare: Path) -> None:
    """Refuse force-pushes and branch deletions on a bare remote (git's own settings)."""
    for key, value in PROTECTION.items():
        git.run(bare, "config", key, value)


def protection_problems(work: Path) -> list[str]:
    """Sentences about how ``work``'s remote could lose history (empty when it cannot)."""
    url = git.remote_url(work)
    if url is None:
        return []
    local = remote_of(work).local
    if local is None:
        return [
            f"origin is hosted ({url}): mlgitops cannot see its settings; protect branch "
            f"{layout.BRANCH} there: forbid force pushes and deletion (GitHub: a branch "
            "protection rule or ruleset with 'Block force pushes' and 'Restrict deletions'; "
            "GitLab: a protected branch with 'Allowed to force push' off), and require signed "
            "commits if the controller enforces signing"
        ]
    missing = [k for k, v in PROTECTION.items()
               if git.run(local, "config", "--get", k, check=False).decode().strip() != v]
    return [f"{local}: {k} is not true, so history on the remote can be rewritten; run "
            f"`git -C {local} config {k} true`" for k in missing]


def init(work: Path, *, remote: str | None = None) -> Path:
    """Create a model repository at ``work`` wired to ``remote`` (default: a bare repo beside it).

    Returns the remote's location. A local bare remote gets the mlgitops hooks.
    """
    work = work.resolve()
    if work.exists() and any(work.iterdir()):
        raise errors.ConfigError(
            f"{work} exists and is not empty; pick a new directory (mlgitops init creates it)"
        )
    bare: Path | None = None
    if remote is None:
        bare = default_remote(work)
        remote = str(bare)
    elif Path(remote).exists() or ("://" not in remote and ":" not in remote):
        bare = Path(remote).resolve()
        remote = str(bare)
    if bare is not None:
        if bare.exists() and any(bare.iterdir()):
            raise errors.ConfigError(
                f"{bare} already exists; pass --remote to use an existing remote or pick another DIR"
            )
        git.init_bare(bare, branch=layout.BRANCH)
        protect(bare)
    git.init_work(work, branch=layout.BRANCH)
    (work / ".gitignore").write_text(GITIGNORE)
    (work / ".gitattributes").write_text(ATTRIBUTES)
    (work / "README.md").write_text(README)
    (work / layout.MODELS).mkdir()
    (work / layout.MODELS / ".gitkeep").write_text("")
    crd = work / CRD_PATH
    crd.parent.mkdir(parents=True)
    crd.write_text(crd_yaml())
    (work / layout.QUARANTINE).write_text(quarantine.HEADER + "entries: []\n")
    git.commit(
        work,
        message="Initialize model repository",
        paths=[".gitignore", ".gitattributes", "README.md", layout.MODELS, layout.MANIFESTS, layout.QUARANTINE],
    )
    git.run(work, "remote", "add", "origin", remote)
    if bare is not None:
        install_hooks(bare)
    git.push(work)
    git.run(work, "branch", "-q", f"--set-upstream-to=origin/{layout.BRANCH}")
    return bare if bare is not None else Path(remote)


def require(path: Path) -> Path:
    """``path`` resolved when it is a model repository (a git work tree with ``models/`` and
    ``manifests/`` at its top, as ``mlgitops init`` makes it); else ConfigError, one sentence."""
    root = Path(path).expanduser().resolve()
    fresh = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    create = f"create one with `mlgitops init {path if fresh else 'NEW_DIR'}`"
    if not root.exists():
        raise errors.ConfigError(f"{path} does not exist; pass the directory of a model "
                                 f"repository, or {create}")
    if not root.is_dir():
        raise errors.ConfigError(f"{path} is a file, not a model repository; pass the directory "
                                 "`mlgitops init` created")
    if not git.is_repo(root):
        raise errors.ConfigError(f"{path} is not a model repository (not even a git repository); "
                                 f"pass the directory `mlgitops init` created, or {create}")
    inside = git.run(root, "rev-parse", "--show-toplevel", check=False).decode().strip()
    if not inside:
        raise errors.ConfigError(f"{path} is a bare git repository (a remote), not a model "
                                 "repository; pass the working clone `mlgitops init` created")
    top = Path(inside).resolve()
    missing = [d for d in (layout.MODELS, layout.MANIFESTS) if not (top / d).is_dir()]
    if missing:
        raise errors.ConfigError(
            f"{path} is a git repository but not a model repository (it has no "
            f"{' and no '.join(d + '/' for d in missing)}); pass the directory `mlgitops init` "
            f"created, or {create}")
    return top


@dataclass(frozen=True)
class Remote:
    """Where a controller reads desired state: a URL, and the local bare path when it is one."""

    url: str
    local: Path | None

    @property
    def notify_file(self) -> Path | None:
        return self.local / NOTIFY_FILE if self.local is not None else None


def remote_of(work: Path) -> Remote:
    url = git.remote_url(work)
    if url is None:
        raise errors.ConfigError(
            f"{work} has no 'origin' remote; create the repository with `mlgitops init`"
        )
    path = Path(url)
    local = path if path.is_dir() and (path / "HEAD").exists() else None
    return Remote(url=url, local=local)
