"""Git hooks of the embedded remote: pre-receive validates every pushed commit of main.

The hook refuses: a non-fast-forward update or deletion of main (history only moves forward,
also enforced by ``receive.denyNonFastForwards``/``receive.denyDeletes``), and any commit whose
models or manifests do not validate under the remote's trust policy (``mlgitops-trust.yaml``
in the bare repository, set by its administrator; the pusher's environment is ignored).
Models load only in `adapters.sandbox`. Every refusal is a sentence, never a traceback.

Only what the pushed commits change is checked in full (the models whose paths they touch),
and content whose digest this remote validated before under the same trusted types and policy
(recorded in ``mlgitops-validated`` in the bare repository) is not loaded again: its digest
and the quarantine are checked. The hook itself (`repository.PRE_RECEIVE`) is a small stdlib
client of the remote's warm validator (``python -m mlgitops.hooks serve``, see
`adapters.validator`); ``python -m mlgitops.hooks pre-receive`` is the same check cold.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from mlgitops import errors, settings, validate
from mlgitops.adapters import files, git, validator
from mlgitops.core import layout, manifest, trust

ZERO = "0" * 40
#: What validation reads of a commit: nothing else is written to disk.
VALIDATED_PATHS = (layout.MODELS, layout.MANIFESTS, layout.QUARANTINE)


#: Digests this remote validated (load included), one ``<digest> <key>`` line each.
VALIDATED_FILE = validator.VALIDATED
#: Lines kept in `VALIDATED_FILE` (the newest).
VALIDATED_KEEP = 5000
#: The environment git gives a pre-receive hook to read the pushed, not yet accepted, objects.
QUARANTINE_ENV = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")


def _export(gitdir: Path, commit: str, dest: Path, *, models: set[str] | None) -> None:
    """Write what validation reads of ``commit``: every model, or only ``models``' directories.

    Other model directories get an empty placeholder (they were checked when they landed);
    an entry of models/ that is not a directory is exported so validation refuses it.
    """
    limits = remote_limits(gitdir)
    if models is None:
        git.export_paths(gitdir, commit, VALIDATED_PATHS, dest, limits=limits)
        return
    listing = git.run(gitdir, "ls-tree", "-z", commit, f"{layout.MODELS}/", keep_env=True).decode()
    paths = [layout.MANIFESTS, layout.QUARANTINE]
    for record in listing.split("\0"):
        meta, _, rel = record.partition("\t")
        if not rel:
            continue
        sub = rel.split("/", 1)[1] if "/" in rel else rel
        if sub in models or meta.split()[1] != "tree":
            paths.append(rel)
        else:
            (dest / layout.MODELS / sub).mkdir(parents=True, exist_ok=True)
    git.export_paths(gitdir, commit, paths, dest, limits=limits)


def validated_key(dep: manifest.ModelDeployment, policy: trust.Policy) -> str:
    """What a full check of ``dep``'s content depended on: digest, trusted types, policy."""
    rest = json.dumps([sorted(dep.trusted_types), sorted(policy.allow)]).encode()
    return f"{dep.digest} {hashlib.sha256(rest).hexdigest()[:32]}"


def validated(gitdir: Path) -> set[str]:
    """The keys (`validated_key`) of content this remote validated in full before."""
    try:
        text = (gitdir / VALIDATED_FILE).read_text()
    except OSError:
        return set()
    return {line.strip() for line in text.splitlines() if line.startswith("sha256:")}


def record_validated(gitdir: Path, keys: list[str]) -> None:
    """Add ``keys`` to `VALIDATED_FILE` (atomically, the newest `VALIDATED_KEEP` kept)."""
    if not keys:
        return
    path = gitdir / VALIDATED_FILE
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    kept = [ln for ln in lines if ln not in keys] + keys
    files.write_atomic(path, ("\n".join(kept[-VALIDATED_KEEP:]) + "\n").encode())


def remote_policy(gitdir: Path) -> trust.Policy:
    """The trust policy of this remote: the defaults and its own file (``mlgitops trust allow
    TYPE --repo GITDIR`` writes it, as publish, validate and ``up`` read it), never the
    pusher's environment. Refusals name that command."""
    return settings.trust_policy(repo=gitdir, environment=False)


def remote_limits(gitdir: Path) -> settings.BlobLimits:
    """This remote's size caps: its own file, never the pusher's environment."""
    return settings.blob_limits(file=gitdir / settings.REMOTE_TRUST_FILE, environment=False)


def accepted_before(gitdir: Path, old: str, dep: manifest.ModelDeployment) -> bool:
    """True when main already held this exact model spec (digest and trusted types) before.

    That content was validated, loading included, when it was pushed; a revert to it (or a
    republish of it) needs only the cheap checks, so the push returns in well under a second.
    """
    if old == ZERO:
        return False
    rel = layout.manifest_path(dep.name)
    shas = git.run(gitdir, "log", "--format=%H", f"-S{dep.digest}", old, "--", rel,
                   keep_env=True).decode().split()
    for sha in shas:
        raw = git.run(gitdir, "cat-file", "-p", f"{sha}:{rel}", keep_env=True, check=False)
        try:
            earlier = validate.parse_manifest(raw, rel=rel)
        except errors.ManifestError:
            continue
        if earlier.digest == dep.digest and earlier.trusted_types == dep.trusted_types:
            return True
    return False


def check_update(gitdir: Path, old: str, new: str) -> list[str]:
    """Problems with moving main from ``old`` to ``new`` (empty when the push may land)."""
    base = git.run(gitdir, "merge-base", old, new, keep_env=True, check=False).decode().strip()
    if old != ZERO and base != old:
        return [
            f"{layout.BRANCH} may only move forward: {new[:12]} does not contain {old[:12]}, so "
            "this push would drop commits (a revert and its quarantine entry among them, maybe); "
            "pull, rebase your work on top and push again (never force-push)"
        ]
    if old == ZERO:
        changed = None
    else:
        out = git.run(gitdir, "diff", "--name-only", "-z", old, new, keep_env=True).decode()
        changed = [p for p in out.split("\0") if p]
    policy = remote_policy(gitdir)
    done = validated(gitdir)
    with tempfile.TemporaryDirectory(prefix="mlgitops-pre-receive-") as tmp:
        root = Path(tmp)
        only = None if changed is None else validate.changed_models(changed)
        _export(gitdir, new, root, models=only)
        known: set[str] = set()
        keys: dict[str, str] = {}
        for name in only or ():
            try:
                dep = validate.read_manifest(root, layout.manifest_path(name))
            except errors.MlgitopsError:
                continue  # validate_tree reports it
            keys[name] = validated_key(dep, policy)
            if keys[name] in done or accepted_before(gitdir, old, dep):
                known.add(name)
        result = validate.validate_tree(root, only=only, known_content=known, policy=policy,
                                        remember=True)
        if only is None:
            keys = {d.name: validated_key(d, policy) for d in result.deployments}
    record_validated(gitdir, [keys[n] for n in result.checked_models
                              if n not in known and n in keys and keys[n] not in done])
    return [str(p) for p in result.problems]


def pre_receive(lines: list[str], gitdir: Path, *, out: IO[str] | None = None) -> int:
    """Check each ref update of ``lines`` (git's stdin); refusals go to ``out``; exit status."""
    err = out if out is not None else sys.stderr
    status = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        old, new, ref = parts
        if ref != f"refs/heads/{layout.BRANCH}":
            continue
        if new == ZERO:
            problems = [f"{layout.BRANCH} may not be deleted; it is what the controller deploys"]
        else:
            try:
                problems = check_update(gitdir, old, new)
            except errors.MlgitopsError as exc:
                problems = [str(exc)]
            except Exception as exc:  # never a traceback at the pusher; the reason, shortened
                last = traceback.format_exception_only(exc)[-1].strip()[:300]
                problems = [f"the check itself failed ({last}); nothing was changed, tell the "
                            "remote's administrator"]
        if problems:
            status = 1
            print(f"mlgitops: refusing {new[:12]} on {ref}:", file=err)
            for p in problems:
                print(f"  - {p}", file=err)
            print("mlgitops: nothing was changed on the remote; fix and push again.", file=err)
    return status


def _inside(path: str, parent: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(parent)


def git_environment(gitdir: Path, env: Mapping[str, Any]) -> dict[str, str]:
    """The push's object-quarantine variables, each checked to point inside ``gitdir``'s objects.

    ConfigError otherwise: a warm validator reads only its own repository.
    """
    objects = Path(os.path.realpath(gitdir / "objects"))
    out: dict[str, str] = {}
    for key, value in env.items():
        if key not in QUARANTINE_ENV or not isinstance(value, str):
            raise errors.ConfigError(f"the validator does not take {key!r} from a hook")
        parts = value.split(os.pathsep) if key == "GIT_ALTERNATE_OBJECT_DIRECTORIES" else [value]
        if not all(_inside(p, objects) for p in parts if p):
            raise errors.ConfigError(f"{key} points outside {objects}; the validator reads only "
                                     "its own repository")
        out[key] = value
    return out


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ (git runs with it) for one request, then restore it."""
    saved = {k: os.environ.get(k) for k in QUARANTINE_ENV}
    for key in QUARANTINE_ENV:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def answer(gitdir: Path, request: Mapping[str, Any]) -> dict[str, Any]:
    """A warm validator's answer to one hook: ``{"status": <exit status>, "stderr": <text>}``."""
    lines = request.get("lines")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        return {"status": 1, "stderr": "mlgitops: the hook sent no ref updates; reinstall the "
                                       "remote's hooks with mlgitops\n"}
    try:
        env = git_environment(gitdir, request.get("env") or {})
    except errors.ConfigError as exc:
        return {"status": 1, "stderr": f"mlgitops: {exc}\n"}
    out = io.StringIO()
    with _environment(env):
        status = pre_receive(lines, gitdir, out=out)
    return {"status": status, "stderr": out.getvalue()}


def serve(gitdir: Path, *, idle: float | None = None) -> int:
    """Run ``gitdir``'s warm validator: import once, then answer hooks (`adapters.validator`).

    When mlgitops' sources change it executes itself again, so the new code checks.
    """
    from mlgitops.adapters import sandbox

    for key in (*QUARANTINE_ENV, "GIT_DIR"):
        os.environ.pop(key, None)
    status = validator.serve(gitdir, handle=lambda request: answer(gitdir, request),
                             idle=validator.idle_seconds() if idle is None else idle,
                             warm=sandbox.warm)
    if status == validator.RESTART:
        args = [sys.executable, "-I", "-m", "mlgitops.hooks", "serve", str(gitdir)]
        if idle is not None:
            args.append(str(idle))
        os.execv(sys.executable, args)
    return status


USAGE = "usage: python -m mlgitops.hooks pre-receive | serve GITDIR [IDLE_SECONDS]"


def main(argv: list[str]) -> int:
    settings.telemetry_off()
    if argv[:1] == ["pre-receive"]:
        gitdir = Path(os.environ.get("GIT_DIR", ".")).resolve()
        return pre_receive(sys.stdin.read().splitlines(), gitdir)
    if argv[:1] == ["serve"] and len(argv) in (2, 3):
        try:
            idle = float(argv[2]) if len(argv) == 3 else None
        except ValueError:
            print(USAGE, file=sys.stderr)
            return 2
        return serve(Path(argv[1]).resolve(), idle=idle)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
