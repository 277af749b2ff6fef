"""Git hooks of the embedded remote: pre-receive validates every commit a push brings.

The hook refuses: a non-fast-forward update or deletion of main (history only moves forward,
also enforced by ``receive.denyNonFastForwards``/``receive.denyDeletes``), a ref named like
an option, and any new commit (on any ref, not only the tips) whose models or manifests do not
validate under the remote's trust policy (``mlgitops-trust.yaml`` in the bare repository, set
by its administrator; the pusher's environment is ignored) or that tracks a path outside
`ALLOWED_TOP`. Models load only in `adapters.sandbox`. Every refusal is a sentence, never a
traceback.

Only what a push changes is judged (`judge`): each new commit against its first parent
without loading, and main's new head against its old one in full, loading included, unless
this hook validated that content before under the same trusted types and policy (recorded in
``mlgitops-validated`` in the bare repository; nothing found in history counts). A problem
of a model the push does not touch counts only when the push introduced it. The hook itself (`repository.PRE_RECEIVE`) is a small stdlib
client of the remote's warm validator (``python -m mlgitops.authoring.hooks serve``, see
`adapters.validator`); ``python -m mlgitops.authoring.hooks pre-receive`` is the same check cold.
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

from mlgitops import errors, settings
from mlgitops.adapters import files, git, validator
from mlgitops.authoring import gates, validate
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

    Other model directories get an empty placeholder (they were checked when they landed), and
    any other entry of models/ an empty file (validation names it, unchanged entries are not
    held against a push); a changed entry is exported, so a symbolic link is refused.
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
        mode, kind = meta.split()[:2]
        if sub in models or (kind == "blob" and mode in ("100644", "100755")):
            paths.append(rel)
        elif kind == "tree":
            (dest / layout.MODELS / sub).mkdir(parents=True, exist_ok=True)
        else:
            (dest / layout.MODELS).mkdir(parents=True, exist_ok=True)
            (dest / layout.MODELS / sub).write_bytes(b"")
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


def accepted_before(dep: manifest.ModelDeployment, policy: trust.Policy, done: set[str]) -> bool:
    """True when this hook itself validated ``dep``'s content in full (loading included) under
    the same trusted types and policy, and recorded it (`record_validated`).

    Nothing found in history counts: a manifest can sit in a commit the hook never checked
    (pushed before the hook was installed, or on a host without it). Such content needs only
    the cheap checks, so a revert to it returns in well under a second.
    """
    return validated_key(dep, policy) in done


# what a push may change -------------------------------------------------------------------

#: Top-level paths a model repository may track (a directory ends in "/", "*.md" is any
#: Markdown file at the top); anything else, the controller's state directory ``.mlgitops/``
#: above all, is refused.
ALLOWED_TOP = (f"{layout.MODELS}/", f"{layout.MANIFESTS}/", layout.QUARANTINE, "README.md", "*.md",
               ".gitignore", ".gitattributes")
#: Attributes that make git run a program or rewrite content on checkout: never in a repository.
DRIVER_ATTRIBUTES = ("filter", "ident", "working-tree-encoding", "export-subst")
#: Largest .gitattributes the hook reads.
MAX_ATTRIBUTES_BYTES = 65536
#: New commits one push may bring (each is checked); more: push in parts.
MAX_NEW_COMMITS = 1000


def path_allowed(path: str) -> bool:
    """Whether a model repository may track ``path`` (`ALLOWED_TOP`)."""
    if "/" not in path and path.endswith(".md") and not path.startswith("."):
        return True
    return any(path.startswith(a) if a.endswith("/") else path == a for a in ALLOWED_TOP)


def attribute_problems(raw: bytes) -> list[str]:
    """Sentences about ``.gitattributes`` lines that name a driver git would run (filter, diff
    or merge drivers, ident, encodings): a pushed file must never make a clone run a program."""
    out = []
    for line in raw.decode(errors="replace").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        for token in fields[1:]:
            name, eq, value = token.lstrip("-!").partition("=")
            if name in DRIVER_ATTRIBUTES or (name in ("diff", "merge") and eq and value):
                out.append(
                    f".gitattributes: {token!r} (line {line.strip()[:80]!r}) names a driver or "
                    "rewrite git would run on checkout; a model repository may only use plain "
                    "attributes such as -delta, -diff, binary or text: remove it")
    return out


def _changes(gitdir: Path, base: str | None, commit: str) -> list[tuple[str, str]]:
    """(status letter, path) of each file ``commit`` changes against ``base`` (None: all)."""
    if base is None:
        out = git.run(gitdir, "ls-tree", "-r", "-z", "--name-only", commit, keep_env=True)
        return [("A", p) for p in out.decode().split("\0") if p]
    fields = git.run(gitdir, "diff-tree", "-r", "-z", "--no-renames", "--name-status", base,
                     commit, keep_env=True).decode().split("\0")
    return [(fields[i][:1], fields[i + 1]) for i in range(0, len(fields) - 1, 2) if fields[i]]


def path_problems(gitdir: Path, commit: str, changes: list[tuple[str, str]]) -> list[str]:
    """What the added or modified paths of ``changes`` break: a path outside `ALLOWED_TOP`, a
    driver in ``.gitattributes``, two paths that differ only in case (one file on macOS or
    Windows: a clone there would check out other bytes than the digest covers)."""
    written = [p for s, p in changes if s != "D"]
    problems = []
    outside = sorted({p for p in written if not path_allowed(p)})
    for p in outside[:20]:
        problems.append(
            f"{p}: is outside the paths a model repository may track ({', '.join(ALLOWED_TOP)}); "
            f"nothing else is accepted ({layout.LEGACY_STATE_DIR}/ was the controller's state): "
            f"remove it (git rm -r --cached {p.split('/')[0]}) and push again")
    if len(outside) > 20:
        problems.append(f"and {len(outside) - 20} more paths outside {', '.join(ALLOWED_TOP)}")
    if ".gitattributes" in written:
        size = git.run(gitdir, "cat-file", "-s", f"{commit}:.gitattributes", keep_env=True)
        if int(size.strip() or 0) > MAX_ATTRIBUTES_BYTES:
            problems.append(f".gitattributes: is over {MAX_ATTRIBUTES_BYTES} bytes; a model "
                            "repository needs a few lines there at most: shorten it")
        else:
            raw = git.run(gitdir, "cat-file", "blob", f"{commit}:.gitattributes", keep_env=True)
            problems += attribute_problems(raw)
    if written:
        listing = git.run(gitdir, "ls-tree", "-r", "-t", "-z", "--name-only", commit, keep_env=True)
        folded: dict[str, list[str]] = {}
        for p in listing.decode().split("\0"):
            if p:
                folded.setdefault(p.casefold(), []).append(p)
        touched = {p.casefold() for p in written}
        for key, same in sorted(folded.items()):
            if len(same) > 1 and (key in touched or any(key.startswith(t + "/") or
                                                      t.startswith(key + "/") for t in touched)):
                problems.append(
                    f"{' and '.join(repr(p) for p in same)}: differ only in letter case, so they "
                    "are one file on macOS and Windows; rename or remove one of them")
    return problems


def _tree_problems(gitdir: Path, commit: str, *, only: set[str] | None, load: bool,
                   policy: trust.Policy, done: set[str]) -> tuple[validate.Result, dict[str, str], set[str]]:
    """Validate ``commit`` (models in ``only`` in full, the rest by schema); keys and known."""
    with tempfile.TemporaryDirectory(prefix="mlgitops-pre-receive-") as tmp:
        root = Path(tmp)
        _export(gitdir, commit, root, models=only)
        known: set[str] = set()
        keys: dict[str, str] = {}
        for name in (only or ()) if load else ():
            try:
                dep = validate.read_manifest(root, layout.manifest_path(name))
            except errors.MlgitopsError:
                continue  # validate_tree reports it
            keys[name] = validated_key(dep, policy)
            if accepted_before(dep, policy, done):
                known.add(name)
        result = validate.validate_tree(root, only=only, known_content=known, policy=policy,
                                        remember=load, load=load)
        if only is None:
            keys = {d.name: validated_key(d, policy) for d in result.deployments}
    return result, keys, known


def judge(gitdir: Path, base: str | None, commit: str, *, load: bool, policy: trust.Policy,
          done: set[str]) -> tuple[list[str], list[str]]:
    """Problems ``commit`` brings against ``base`` (None: a first commit, everything counts),
    and the keys of content it validated in full (with ``load``).

    Only what the commit changes is judged: the models whose paths it touches are checked
    (loaded with ``load``); a problem of a model or file it does not touch counts only when
    ``base`` did not have it already, so one broken model on the remote blocks nothing else.
    """
    changes = _changes(gitdir, base, commit)
    problems = path_problems(gitdir, commit, changes)
    changed = [p for _, p in changes]
    only = None if base is None else validate.changed_models(changed)
    result, keys, known = _tree_problems(gitdir, commit, only=only, load=load, policy=policy,
                                         done=done)
    found = list(result.problems)
    if base is not None:
        touched = set(changed)

        def ours(problem: validate.Problem) -> bool:
            names = validate.changed_models([problem.path])
            return bool(names & (only or set())) or problem.path in touched

        before, _, _ = _tree_problems(gitdir, base, only=set(), load=False, policy=policy,
                                      done=done)
        had = {str(p) for p in before.problems}
        found = [p for p in found if ours(p) or str(p) not in had]
    problems += [str(p) for p in found]
    fresh = [keys[n] for n in result.checked_models if n not in known and n in keys
             and keys[n] not in done] if load else []
    return problems, fresh


def new_commits(gitdir: Path, new: str) -> list[str]:
    """Commits ``new`` brings that no ref of the remote holds yet, oldest first."""
    out = git.run(gitdir, "rev-list", "--topo-order", "--reverse", new, "--not", "--all",
                  keep_env=True)
    return out.decode().split()


def check_commits(gitdir: Path, new: str, *, skip: str | None = None,
                  policy: trust.Policy | None = None) -> list[str]:
    """Problems of each commit ``new`` brings (but ``skip``), judged against its first parent
    without loading anything: schema, trust types, digests, paths (`judge`)."""
    commits = new_commits(gitdir, new)
    if len(commits) > MAX_NEW_COMMITS:
        return [f"this push brings {len(commits)} new commits; the remote checks each and takes "
                f"at most {MAX_NEW_COMMITS} at once: push the older part first"]
    policy = policy if policy is not None else remote_policy(gitdir)
    problems: list[str] = []
    for c in commits:
        if c == skip:
            continue
        parent = git.run(gitdir, "rev-parse", "-q", "--verify", f"{c}^1", keep_env=True,
                         check=False).decode().strip() or None
        found, _ = judge(gitdir, parent, c, load=False, policy=policy, done=set())
        problems += [f"commit {c[:12]}: {p}" for p in found]
    return problems


def check_update(gitdir: Path, old: str, new: str) -> list[str]:
    """Problems with moving main from ``old`` to ``new`` (empty when the push may land).

    Every commit the push brings is checked without loading; what ``new`` changes against
    ``old`` is checked in full, loading included, unless this hook validated it before.
    """
    base = git.run(gitdir, "merge-base", old, new, keep_env=True, check=False).decode().strip()
    if old != ZERO and base != old:
        return [
            f"{layout.BRANCH} may only move forward: {new[:12]} does not contain {old[:12]}, so "
            "this push would drop commits (a revert and its quarantine entry among them, maybe); "
            "pull, rebase your work on top and push again (never force-push)"
        ]
    policy = remote_policy(gitdir)
    done = validated(gitdir)
    problems = check_commits(gitdir, new, skip=new, policy=policy)
    if problems and problems[0].startswith("this push brings"):
        return problems
    found, fresh = judge(gitdir, None if old == ZERO else old, new, load=True, policy=policy,
                         done=done)
    record_validated(gitdir, fresh)
    if not problems and not found:  # the gate: a candidate no worse than what serves
        changed = validate.changed_models([p for _, p in _changes(gitdir, None if old == ZERO
                                                                   else old, new)])
        found = gates.hook_problems(gitdir, None if old == ZERO else old, new, changed,
                                    policy=policy, limits=remote_limits(gitdir))
    return problems + found


def ref_problem(ref: str) -> str | None:
    """A ref named like a command-line option (a part starting with "-") is refused."""
    if any(part.startswith("-") for part in ref.split("/")):
        return (f"{ref}: a ref whose name starts with '-' reads as an option to git and other "
                "tools; name it without a leading dash")
    return None


def pre_receive(lines: list[str], gitdir: Path, *, out: IO[str] | None = None) -> int:
    """Check each ref update of ``lines`` (git's stdin); refusals go to ``out``; exit status."""
    err = out if out is not None else sys.stderr
    status = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        old, new, ref = parts
        main = ref == f"refs/heads/{layout.BRANCH}"
        named = ref_problem(ref)
        if named is not None:
            problems = [named]
        elif new == ZERO:
            if not main:
                continue  # deleting another ref changes nothing the controller reads
            problems = [f"{layout.BRANCH} may not be deleted; it is what the controller deploys"]
        else:
            try:
                if main:
                    problems = check_update(gitdir, old, new)
                else:  # other refs bring commits main may merge later: checked the same way
                    commit = git.rev_parse(gitdir, new)
                    problems = [] if commit is None else check_commits(gitdir, commit)
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
        args = [sys.executable, "-I", "-m", "mlgitops.authoring.hooks", "serve", str(gitdir)]
        if idle is not None:
            args.append(str(idle))
        os.execv(sys.executable, args)
    return status


USAGE = "usage: python -m mlgitops.authoring.hooks pre-receive | serve GITDIR [IDLE_SECONDS]"


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
