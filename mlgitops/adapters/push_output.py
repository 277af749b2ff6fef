"""What ``git push --porcelain`` says: which ref was refused, and whether it moved meanwhile.

Pure text parsing; `git.push` runs the push and turns "moved" into ``errors.PushRejected``.
"""

from __future__ import annotations

from dataclasses import dataclass

# How git (and the hosts in front of it) word "the ref moved under this push". Found by racing
# real pushes against a bare remote whose pre-receive hook sleeps (tests/test_push_race.py):
# the loser of two pushes released at once gets `[remote rejected] (failed to update ref)` with
# `remote: error: cannot lock ref 'refs/heads/main': is at X but expected Y`; a push that
# connects after the winner landed gets `[rejected] (fetch first)`, or `(non-fast-forward)` when
# the clone already has the winner's commit. Newer git says `(incorrect old value provided)` or
# `(reference already exists)`; `(stale info)` is a lease that no longer holds.
_MOVED_CLIENT = ("fetch first", "non-fast-forward", "stale info", "already exists")
_MOVED_REMOTE = (
    "failed to update ref",
    "failed to lock",
    "cannot lock ref",
    "incorrect old value",
    "reference already exists",
    "reference is missing",
    "lock failure",
    "non-fast-forward",
    "but expected",
)
_DECLINED = ("hook declined", "pre-receive hook", "update hook")


@dataclass(frozen=True)
class PushStatus:
    """One ref's line of ``git push --porcelain``: ``!`` (refused) and the reason in brackets."""

    flag: str
    ref: str
    summary: str
    reason: str

    @property
    def refused(self) -> bool:
        return self.flag == "!"


def push_statuses(out: str) -> list[PushStatus]:
    """The per-ref lines of ``git push --porcelain`` output (``<flag>\t<from>:<to>\t<summary>``)."""
    statuses = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or len(parts[0]) != 1:
            continue
        summary = parts[2].strip()
        reason = ""
        if summary.endswith(")") and "(" in summary:
            reason = summary[summary.rindex("(") + 1 : -1]
        statuses.append(PushStatus(parts[0], parts[1], summary, reason))
    return statuses


def ref_moved(out: str) -> bool | None:
    """Whether git's words say the pushed ref moved meanwhile (None: they do not say)."""
    text = out.lower()
    if any(word in text for word in _DECLINED):
        return False  # a hook refused the content: retrying cannot help
    for st in push_statuses(out):
        if not st.refused:
            continue
        summary, reason = st.summary.lower(), st.reason.lower()
        if summary.startswith("[rejected]") and any(w in reason for w in _MOVED_CLIENT):
            return True
        if summary.startswith("[remote rejected]") and any(w in reason for w in _MOVED_REMOTE):
            return True
    remote = "\n".join(ln.lower() for ln in out.splitlines() if ln.startswith("remote:"))
    if "cannot lock ref" in remote and any(
        w in remote for w in ("but expected", "reference already exists", "reference is missing")
    ):
        return True
    if any(st.refused and st.summary.startswith("[remote rejected]") for st in push_statuses(out)):
        return None  # refused for a reason git did not spell out: look at the remote
    return False
