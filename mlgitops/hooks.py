"""Git hooks of the embedded remote: pre-receive validates every pushed commit of main."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from mlgitops import errors, settings, validate
from mlgitops.adapters import git
from mlgitops.core import layout

ZERO = "0" * 40


def _export(gitdir: Path, commit: str, dest: Path) -> None:
    import io
    import tarfile

    data = git.run(gitdir, "archive", "--format=tar", commit, keep_env=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def check_update(gitdir: Path, old: str, new: str) -> list[str]:
    """Problems with moving main from ``old`` to ``new`` (empty when the push may land)."""
    if old == ZERO:
        changed = None
    else:
        out = git.run(gitdir, "diff", "--name-only", "-z", old, new, keep_env=True).decode()
        changed = [p for p in out.split("\0") if p]
    with tempfile.TemporaryDirectory(prefix="mlgitops-pre-receive-") as tmp:
        root = Path(tmp)
        _export(gitdir, new, root)
        only = None if changed is None else validate.changed_models(changed)
        result = validate.validate_tree(root, only=only)
    return [str(p) for p in result.problems]


def pre_receive(lines: list[str], gitdir: Path) -> int:
    status = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        old, new, ref = parts
        if ref != f"refs/heads/{layout.BRANCH}" or new == ZERO:
            continue
        try:
            problems = check_update(gitdir, old, new)
        except errors.MlgitopsError as exc:
            problems = [str(exc)]
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
