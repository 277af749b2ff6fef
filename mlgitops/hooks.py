"""Git hooks of the embedded remote: pre-receive validates every pushed commit of main.

The hook refuses: a non-fast-forward update or deletion of main (history only moves forward,
also enforced by ``receive.denyNonFastForwards``/``receive.denyDeletes``), and any commit whose
models or manifests do not validate under the remote's trust policy (``mlgitops-trust.yaml``
in the bare repository, set by its administrator; the pusher's environment is ignored).
Models load only in `adapters.sandbox`. Every refusal is a sentence, never a traceback.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path

from mlgitops import errors, settings, validate
from mlgitops.adapters import git
from mlgitops.core import layout, manifest, trust

ZERO = "0" * 40
#: What validation reads of a commit: nothing else is written to disk.
VALIDATED_PATHS = (layout.MODELS, layout.MANIFESTS, layout.QUARANTINE)


def _export(gitdir: Path, commit: str, dest: Path) -> None:
    git.export_paths(gitdir, commit, VALIDATED_PATHS, dest)


def remote_policy(gitdir: Path) -> trust.Policy:
    """The trust policy of this remote: its own file, never the pusher's environment."""
    path = gitdir / settings.REMOTE_TRUST_FILE
    return settings.trust_policy(file=path if path.is_file() else None, environment=False)


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
    with tempfile.TemporaryDirectory(prefix="mlgitops-pre-receive-") as tmp:
        root = Path(tmp)
        _export(gitdir, new, root)
        only = None if changed is None else validate.changed_models(changed)
        known: set[str] = set()
        for name in only or ():
            try:
                dep = validate.read_manifest(root, layout.manifest_path(name))
            except errors.MlgitopsError:
                continue  # validate_tree reports it
            if accepted_before(gitdir, old, dep):
                known.add(name)
        result = validate.validate_tree(root, only=only, known_content=known,
                                        policy=remote_policy(gitdir))
    return [str(p) for p in result.problems]


def pre_receive(lines: list[str], gitdir: Path) -> int:
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
            print(f"mlgitops: refusing {new[:12]} on {ref}:", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            print("mlgitops: nothing was changed on the remote; fix and push again.", file=sys.stderr)
    return status


def main(argv: list[str]) -> int:
    settings.telemetry_off()
    if argv[:1] == ["pre-receive"]:
        gitdir = Path(os.environ.get("GIT_DIR", ".")).resolve()
        return pre_receive(sys.stdin.read().splitlines(), gitdir)
    print("usage: python -m mlgitops.hooks pre-receive", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
