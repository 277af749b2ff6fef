"""The automatic revert: a path-scoped revert commit, pushed with compare-and-swap.

Executes a `core.policy.RevertPlan` in the controller's own working clone ``<state>/writer``:
before every attempt the clone is reset to the remote (it belongs to the controller, so nothing
of anyone is lost), the model's two paths return to their content before the reverted commit,
the reverted digest is added to ``quarantine.yaml``, and one commit is pushed fast-forward only.
When someone pushed meanwhile the push is rejected (`errors.PushRejected`, whatever git's
wording): fetch, re-apply, retry (bounded); never a force-push. Any other refusal (the remote's
pre-receive hook) is returned with git's reason. A version that the remote already reverts (a
commit with its ``Mlgitops-Reverts`` trailer, e.g. pushed by a controller that was killed right
after) is never reverted twice.

May NOT: decide whether to revert (core.policy does), deploy anything (the controller
redeploys because Git changed), or touch paths other than the model's two and the quarantine.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlgitops import errors
from mlgitops.adapters import files, git, validator
from mlgitops.authoring import validate
from mlgitops.core import layout, quarantine
from mlgitops.core.policy import RevertPlan


@dataclass(frozen=True)
class Outcome:
    """What became of one revert: a pushed commit, or why there was none."""

    commit: str | None
    """The revert commit on the remote (None when skipped or failed)."""
    attempts: int
    seconds: float
    skipped: str | None = None
    """Why nothing was reverted although nothing failed (the model moved on meanwhile)."""
    error: str | None = None
    """Why the revert failed (a push the remote refused, a git failure, retries exhausted)."""
    previous: str | None = None
    """The version whose content returned (the last change of the paths before the reverted one)."""
    push_seconds: float = 0.0
    """Of `seconds`, the last ``git push`` (the remote's hooks run inside it)."""
    already: str | None = None
    """The revert commit already on the remote for this version (then `skipped` says so)."""

    @property
    def ok(self) -> bool:
        return self.commit is not None


class Writer:
    """Commits reverts in ``<state>/writer`` and pushes them to ``url``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        url: str,
        branch: str = layout.BRANCH,
        attempts: int = 5,
        before_push: Callable[[int], None] | None = None,
        signing_key: Path | None = None,
        fresh_seconds: float = 2.0,
    ) -> None:
        self.signing_key = signing_key
        """The controller's SSH key: revert commits are signed with it (when set)."""
        self.dir = state_dir / "writer"
        self.url = url
        self.branch = branch
        self.attempts = attempts
        self.before_push = before_push
        """Called with the attempt number right before each push (tests race a human here)."""
        self._lock = threading.Lock()
        self._dirty = True
        self._cloned = False  # the clone exists and points at `url` (checked once)
        self.fresh_seconds = fresh_seconds
        """`find_revert` reuses a fetch this recent (many versions starting at once fetch once)."""
        self._fetched_at: float | None = None

    def prepare(self) -> None:
        """Clone the remote now (the monitor does at start, so a revert never waits for it)."""
        self.warm()
        with self._lock:
            self._ready()

    def warm(self) -> bool:
        """Start the remote's warm validator unless it runs (a local bare remote with the
        mlgitops hook): a revert's push then waits for no interpreter start and no imports.
        Returns at once; False when the remote has no validator to warm."""
        return validator.warm_remote(self.url)

    def _ready(self) -> None:
        if self._cloned and (self.dir / ".git").is_dir():
            return
        if (self.dir / ".git").is_dir() and git.remote_url(self.dir) == self.url:
            self._cloned = True
            return
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        git.clone(self.url, self.dir)
        self._cloned = True

    def find_revert(self, reverted: str) -> git.LogEntry | None:
        """The commit on the remote that reverts ``reverted`` (its ``Mlgitops-Reverts`` trailer).

        Fetches first; GitError when the remote cannot be read. The monitor asks when a new
        version starts serving, so the remote's validator is warmed (`warm`) for its watch.
        """
        self.warm()
        with self._lock:
            self._ready()
            self._fetch(max_age=self.fresh_seconds)
            return self._revert_of(reverted)

    def reverts(self, *, limit: int = 200) -> list[git.LogEntry]:
        """The automatic revert commits on the remote's branch, newest first (fetches first)."""
        with self._lock:
            self._ready()
            self._fetch()
            ref = f"origin/{self.branch}"
            if git.rev_parse(self.dir, ref) is None:
                return []
            return [e for e in git.log(self.dir, ref, [], limit=limit)
                    if e.trailers.get(layout.TRAILER_REVERTS)]

    def _fetch(self, *, max_age: float = 0.0) -> None:
        """Fetch the remote unless the last fetch is younger than ``max_age`` seconds."""
        now = time.monotonic()
        if max_age > 0 and self._fetched_at is not None and now - self._fetched_at < max_age:
            return
        git.fetch(self.dir)
        self._fetched_at = now

    def _revert_of(self, reverted: str) -> git.LogEntry | None:
        ref = f"origin/{self.branch}"
        if git.rev_parse(self.dir, ref) is None:
            return None
        # only commits after the reverted one can revert it (all of them when it is unknown here)
        since = f"{reverted}..{ref}" if git.rev_parse(self.dir, reverted) is not None else ref
        for entry in git.log(self.dir, since, [], limit=500):
            if entry.trailers.get(layout.TRAILER_REVERTS) == reverted:
                return entry
        return None

    def _sync(self) -> None:
        """Make the clone's branch, index and files exactly the remote's branch."""
        self._fetch()
        git.run(self.dir, "checkout", "-q", "-f", "-B", self.branch, f"origin/{self.branch}")
        if self._dirty:  # an earlier attempt stopped half way: drop what it left
            git.run(self.dir, "clean", "-q", "-fdx")
            self._dirty = False

    def revert(self, plan: RevertPlan) -> Outcome:
        """Commit and push ``plan``; never raises for git trouble (see `Outcome.error`)."""
        with self._lock:
            start = time.perf_counter()
            attempt = 0
            try:
                self._ready()
                while attempt < self.attempts:
                    attempt += 1
                    self._sync()
                    done = self._revert_of(plan.reverted)
                    if done is not None:
                        return Outcome(
                            None, attempt, time.perf_counter() - start, already=done.commit,
                            skipped=(f"{plan.reverted[:12]} is already reverted on the remote by "
                                     f"{done.commit[:12]}; it is not reverted twice"),
                        )
                    current = git.last_change(self.dir, "HEAD", plan.paths)
                    if current != plan.reverted:
                        return Outcome(
                            None, attempt, time.perf_counter() - start,
                            skipped=(f"{plan.name} moved on to {str(current)[:12]} meanwhile; "
                                     f"{plan.reverted[:12]} is no longer its version"),
                        )
                    self._dirty = True
                    self._apply(plan)
                    sha = self._commit(plan)
                    self._dirty = False
                    if self.before_push is not None:
                        self.before_push(attempt)
                    pushing = time.perf_counter()
                    try:
                        git.push(self.dir, branch=self.branch)
                    except errors.PushRejected:
                        time.sleep(min(0.05 * attempt, 0.5))
                        continue
                    now = time.perf_counter()
                    return Outcome(sha, attempt, now - start, previous=plan.previous,
                                   push_seconds=now - pushing)
                return Outcome(
                    None, attempt, time.perf_counter() - start,
                    error=(f"the remote kept moving: {attempt} pushes were rejected as "
                           "non-fast-forward; the monitor will try again on the next breach"),
                )
            except errors.MlgitopsError as exc:
                return Outcome(None, attempt, time.perf_counter() - start, error=str(exc))

    def _apply(self, plan: RevertPlan) -> None:
        """Restore the paths from ``plan.restore_from`` and add the quarantine entry."""
        listed = git.run(self.dir, "ls-tree", "--name-only", plan.restore_from, "--", *plan.paths,
                         check=False).decode().splitlines()
        present = [p for p in plan.paths if p in listed]
        if not present:
            raise errors.GitError(
                f"{plan.name} did not exist before {plan.reverted[:12]}; there is nothing to return to"
            )
        # what quarantine will match besides the bytes, read before the content goes: HEAD
        # holds the reverted version's content (`revert` checked that the model did not move),
        # which served, so its digest was verified and its keys may be remembered already
        ident = validate.remembered(plan.entry.digest) or validate.identity(
            self.dir / layout.model_path(plan.name), plan.entry.digest)
        entry = dataclasses.replace(
            plan.entry, fitted=ident.fitted, recipe=ident.recipe,
            report=plan.trailers.get(layout.TRAILER_REPORT, plan.entry.report),
        )
        git.run(self.dir, "rm", "-r", "-q", "--ignore-unmatch", "--", *plan.paths)
        for path in plan.paths:
            target = self.dir / path
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        git.run(self.dir, "checkout", "-q", plan.restore_from, "--", *present)
        entries = validate.read_quarantine(self.dir)
        text = quarantine.HEADER + yaml.safe_dump(quarantine.add(entries, entry),
                                                  sort_keys=False, width=100)
        files.write_atomic(self.dir / layout.QUARANTINE, text.encode())

    def _commit(self, plan: RevertPlan) -> str:
        """Commit the index and the quarantine file (the paths are staged by `_apply`)."""
        body = plan.message.rstrip() + "\n\n" + "".join(f"{k}: {v}\n" for k, v in plan.trailers.items())
        git.run(self.dir, *git.signing_args(self.signing_key), "commit", "-q", "--no-verify", "-F", "-", "--", *plan.commit_paths,
                input=body.encode())
        sha = git.rev_parse(self.dir, "HEAD")
        if sha is None:
            raise errors.GitError("the revert commit was not created")
        return sha
