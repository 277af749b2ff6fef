"""Desired state from Git: a bare clone of the remote, manifests read at a commit.

Model directories are exported once per digest into ``versions/`` and reused. Nothing here
loads a model but the deployment gate (`Source._gate`, in the sandbox, for a manifest that sets
``spec.performance.gate``): the export is checked as data (digest over regular files only, the paths MLmodel
names, the manifest's trusted types against the controller's policy, quarantine by content),
and the server process checks the file's types again before it unpickles anything. A model's
version is the last commit of first-parent history that changes its paths, a merge included
(with what it changes against its first parent). Under a signing policy a model is held, the
hold naming the commit, when its version or a commit that version brought (a merge's side)
that touches its paths is not signed by an allowed key.

A pass costs a fixed number of git calls, not some per model (100 models: one ``ls-tree``,
one ``log`` over the commits since the last pass, one ``cat-file --batch`` for manifests
not seen before): parsed manifests are cached by blob id, model versions are carried
forward from the previous head for models the new commits do not touch, and the whole
answer is cached for the head it was computed at.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from mlgitops import errors
from mlgitops.adapters import files, git
from mlgitops.authoring import gates, validate
from mlgitops.core import layout, manifest, plan, quarantine, trust, yamldoc


class _Entry(NamedTuple):
    rel: str
    blob: str
    size: int


class Source:
    """Reads Git at the remote's branch head.

    A remote that is a bare repository on this machine is read in place (no fetch: a push is
    visible the moment its post-receive hook fires); any other remote is fetched into a bare
    clone under the state directory.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        url: str,
        branch: str = layout.BRANCH,
        local: Path | None = None,
        policy: trust.Policy = trust.DEFAULT,
        allowed_signers: Path | None = None,
        paths: tuple[str, ...] = (),
        git_options: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        #: ``git -c`` options of every fetch (credentials: `fetch.credential_options`)
        self.git_options = git_options
        #: globs of the manifest paths to deploy (``manifests/credit-*.yaml``); empty: all
        self.paths = paths
        self.branch = branch
        self.local = local
        self.policy = policy
        self.allowed_signers = allowed_signers
        self.clone = local if local is not None else state_dir / "source.git"
        self.versions = state_dir / "versions"
        #: parsed manifests by (blob id, path); model versions at a commit; the last answer
        self._parsed: dict[tuple[str, str], manifest.ModelDeployment | errors.ManifestError] = {}
        self._versions_at: tuple[str, dict[str, str]] | None = None
        self._answer: tuple[str, dict[str, plan.Desired]] | None = None
        #: signatures by commit, and the commits a model's version brought (neither changes)
        self._signed: dict[str, git.Signature] = {}
        self._brought: dict[tuple[str, str], list[str]] = {}
        #: the last (commit, digest, policy) `materialize` checked: a deploy looked at again
        #: while it rolls out is not exported and checked again
        self._checked: set[tuple[str, str, trust.Policy]] = set()
        #: the deployment gate's verdicts by (digest, parent commit, policy); None: it passed
        self._gated: dict[tuple[str, str, trust.Policy], str | None] = {}

    def sync(self) -> str | None:
        """Fetch the remote; the commit its branch points to (None for an empty remote)."""
        if self.local is not None:
            return git.rev_parse(self.clone, f"refs/heads/{self.branch}")
        if not (self.clone / "HEAD").exists():
            self.clone.parent.mkdir(parents=True, exist_ok=True)
            git.run(None, "init", "-q", "--bare", str(self.clone))
            git.run(self.clone, "remote", "add", "origin", self.url)
        git.run(
            self.clone,
            *self.git_options,
            "fetch",
            "-q",
            "--prune",
            "origin",
            f"+refs/heads/{self.branch}:refs/heads/{self.branch}",
        )
        return git.rev_parse(self.clone, f"refs/heads/{self.branch}")

    def quarantined(self, commit: str) -> tuple[quarantine.Entry, ...]:
        try:
            return validate.parse_quarantine(git.show(self.clone, commit, layout.QUARANTINE))
        except errors.ManifestError:
            return ()

    def _signature_problem(self, name: str, version: str) -> str | None:
        """Under a signing policy, the first commit of ``name``'s version that is not signed by
        an allowed key, as a sentence: the version itself, and for a merge every commit it
        brought (its other parents' side) that touches ``name``'s paths. The same commits are
        checked on every pass and after a restart."""
        if self.allowed_signers is None:
            return None
        commits = self._brought.get((name, version))
        if commits is None:
            parent = git.rev_parse(self.clone, f"{version}^1")
            out = git.text(self.clone, "log", "--full-history", "--diff-merges=first-parent",
                           "--name-only", "--format=%x00%H", version,
                           *([f"^{parent}"] if parent else []), "--", *layout.model_paths(name))
            shas = [chunk.split()[0] for chunk in out.split("\0") if chunk.strip()]
            commits = [version] + [c for c in shas if c != version]
            self._brought[(name, version)] = commits
        for c in commits:
            if c not in self._signed:
                self._signed[c] = git.signature(self.clone, c,
                                                allowed_signers=self.allowed_signers)
            sig = self._signed[c]
            if not sig.trusted:
                merge = " (a merge)" if git.rev_parse(self.clone, f"{c}^2") else ""
                return (f"{sig.describe(c)}{merge}; it changes {name}'s paths and the signing "
                        f"policy deploys only model commits signed by a key in "
                        f"{self.allowed_signers}: sign the commit (git commit -S) or add the key")
        return None

    def _manifests(self, commit: str) -> dict[str, _Entry]:
        """The manifests at ``commit`` by model name (one ``ls-tree``)."""
        out = git.run(self.clone, "ls-tree", "-r", "-l", "-z", commit, "--", layout.MANIFESTS)
        found: dict[str, _Entry] = {}
        for line in out.decode().split("\0"):
            meta, _, rel = line.partition("\t")
            parts = meta.split()
            if len(parts) != 4 or parts[1] != "blob":
                continue
            name = layout.manifest_name(rel)
            if name is not None and (not self.paths
                                     or any(fnmatch.fnmatch(rel, p) for p in self.paths)):
                size = int(parts[3]) if parts[3].isdigit() else 0
                found[name] = _Entry(rel, parts[2], size)
        return found

    def _parse(self, entries: list[_Entry]) -> None:
        """Parse the manifests not cached yet (their blobs read in one ``cat-file --batch``)."""
        todo = [e for e in entries if (e.blob, e.rel) not in self._parsed]
        small = [e for e in todo if e.size <= yamldoc.MAX_MANIFEST_BYTES]
        for e in todo:
            if e.size > yamldoc.MAX_MANIFEST_BYTES:
                self._parsed[(e.blob, e.rel)] = errors.ManifestError(
                    f"{e.rel}: is {e.size} bytes, over the {yamldoc.MAX_MANIFEST_BYTES}-byte limit "
                    "for a manifest; keep data out of it")
        if not small:
            return
        out = git.run(self.clone, "cat-file", "--batch",
                      input="".join(f"{e.blob}\n" for e in small).encode())
        at = 0
        for e in small:
            header_end = out.index(b"\n", at)
            size = int(out[at:header_end].split()[2])
            raw = out[header_end + 1:header_end + 1 + size]
            at = header_end + 1 + size + 1
            try:
                self._parsed[(e.blob, e.rel)] = validate.parse_manifest(raw, rel=e.rel)
            except errors.ManifestError as exc:
                self._parsed[(e.blob, e.rel)] = exc

    def _model_versions(self, commit: str, names: list[str]) -> dict[str, str]:
        """The commit that last changed each model's paths up to ``commit``.

        From the versions at the previous head when ``commit`` descends from it (only the
        models the commits in between touch are looked up, in one ``git log``), else from one
        walk of the history; what that cannot tell is asked of git per model.
        """
        known: dict[str, str] = {}
        since = None
        if self._versions_at is not None:
            prev, prev_versions = self._versions_at
            if prev == commit:
                known = dict(prev_versions)
            elif git.is_ancestor(self.clone, prev, commit):
                known, since = dict(prev_versions), prev
        if since is not None or not known:
            rng = f"{since}..{commit}" if since else commit
            # first-parent history, where a merge counts with what it changes against its first
            # parent (plain `--name-only` lists no paths for a merge and follows the side whose
            # tree the merge kept, crediting an old commit with what the merge brought back)
            out = git.text(self.clone, "log", "--no-renames", "--first-parent",
                           "--diff-merges=first-parent", "--format=%x00%H", "--name-only", rng,
                           "--", layout.MODELS, layout.MANIFESTS)
            fresh: dict[str, str] = {}
            for chunk in out.split("\0"):
                lines = [ln for ln in chunk.splitlines() if ln.strip()]
                if not lines:
                    continue
                sha, paths = lines[0].strip(), lines[1:]
                for path in paths:
                    top, _, rest = path.partition("/")
                    if top == layout.MODELS:
                        name = rest.split("/", 1)[0]
                    elif top == layout.MANIFESTS:
                        name = layout.manifest_name(path) or ""
                    else:
                        continue
                    if name and name not in fresh:
                        fresh[name] = sha
            known.update(fresh)
        for name in names:
            if name not in known:
                known[name] = git.last_change(self.clone, commit, layout.model_paths(name)) or commit
        self._versions_at = (commit, known)
        return {name: known[name] for name in names}

    def desired(self, commit: str) -> dict[str, plan.Desired]:
        """Every model the manifests at ``commit`` name, with its version or its error."""
        if (self._answer is not None and self._answer[0] == commit
                and self.allowed_signers is None):
            return dict(self._answer[1])
        out: dict[str, plan.Desired] = {}
        entries = self.quarantined(commit)
        found = self._manifests(commit)
        self._parse(list(found.values()))
        versions = self._model_versions(commit, sorted(found))
        for name in sorted(found):
            version = versions[name]
            parsed = self._parsed[(found[name].blob, found[name].rel)]
            if isinstance(parsed, errors.ManifestError):
                out[name] = plan.Desired(name, version, None, str(parsed))
                continue
            dep = parsed
            unsigned = self._signature_problem(name, version)
            if unsigned is not None:
                out[name] = plan.Desired(name, version, None, unsigned)
                continue
            hit = quarantine.find(entries, model=name, digest=dep.digest)
            error = None
            if hit is not None:
                error = quarantine.Match(hit, "the same bytes").sentence(name=name)
            out[name] = plan.Desired(name, version, dep, error, quarantined=hit is not None)
        self._answer = (commit, dict(out))
        return out

    def remember_quarantine_keys(self, dep: manifest.ModelDeployment) -> bool:
        """Read ahead what quarantine matches of ``dep``'s content when it is on disk here
        (`validate.remember_identity`): a revert of it, or a redeploy of it after one, then
        does not read the model. False when it is not here."""
        dest = self.versions / dep.digest.removeprefix("sha256:")
        if not dest.is_dir() or files.dir_digest(dest) != dep.digest:
            return False
        validate.remember_identity(dest, dep.digest)
        return True

    def materialize(self, commit: str, dep: manifest.ModelDeployment, *,
                    gated: bool = True) -> Path:
        """The model directory of ``dep`` at ``commit``, checked as data (see the docstring).

        QuarantinedError when its content matches a quarantined version (not just its bytes);
        ModelError naming the metric and both values when ``spec.performance.gate`` holds it
        (`_gate`: the one check here that loads models, in the sandbox).
        """
        dest = self.versions / dep.digest.removeprefix("sha256:")
        checked = (commit, dep.digest, self.policy)
        if checked in self._checked and dest.is_dir():
            return dest  # checked under the same commit (quarantine) and policy a moment ago
        entries = self.quarantined(commit)
        if dest.is_dir() and files.dir_digest(dest) == dep.digest:
            validate.check_model(dest, dep, load=False, policy=self.policy)
            validate.check_quarantine(dest, dep, entries, verified=True)
            if gated:
                self._gate(commit, dep, dest)
            self._checked = {checked}
            return dest
        self.versions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.versions, prefix=".export-"))
        try:
            git.export(self.clone, commit, dep.model_path, tmp)
            validate.check_model(tmp, dep, load=False, policy=self.policy)  # digest included
            validate.check_quarantine(tmp, dep, entries, verified=True)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        if gated:
            self._gate(commit, dep, dest)
        self._checked = {checked}
        return dest

    def _gate(self, commit: str, dep: manifest.ModelDeployment, dest: Path) -> None:
        """Hold ``dep`` (ModelError) when its gate fails against the version it replaces: the
        model's version at ``commit``'s first parent, both scored in the sandbox on ``dep``'s
        evaluation data (`authoring.gates`). Content that was a version of this model before
        (a revert, a rollback) is not gated. Verdicts are kept per (digest, parent)."""
        if not dep.performance.gate:
            return
        parent = git.rev_parse(self.clone, f"{commit}^1")
        key = (dep.digest, parent or "", self.policy)
        if key not in self._gated:
            self._gated[key] = self._verdict(parent, dep, dest)
        why = self._gated[key]
        if why is not None:
            raise errors.ModelError(why)

    def _verdict(self, parent: str | None, dep: manifest.ModelDeployment, dest: Path) -> str | None:
        serving = None
        if parent is not None:
            raw = git.show(self.clone, parent, layout.manifest_path(dep.name))
            try:
                serving = None if raw is None else validate.parse_manifest(
                    raw, rel=layout.manifest_path(dep.name))
            except errors.ManifestError:
                serving = None
        if serving is not None and (serving.digest == dep.digest
                                    or gates.was_version_before(self.clone, parent, dep)):
            return None
        try:
            serving_dir = (None if serving is None or parent is None
                           else self.materialize(parent, serving, gated=False))
            return gates.verdict(dest, dep, serving_dir, serving, policy=self.policy)
        except errors.MlgitopsError as exc:
            return f"{dep.model_path}: the deployment gate could not score it: {exc}"
