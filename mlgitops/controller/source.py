"""Desired state from Git: a bare clone of the remote, manifests read at a commit.

Model directories are exported once per digest into ``versions/`` and reused. Nothing here
loads a model: the export is checked as data (digest over regular files only, the paths MLmodel
names, the manifest's trusted types against the controller's policy, quarantine by content),
and the server process checks the file's types again before it unpickles anything. Under a
signing policy, a model version whose commit is not signed by an allowed key is held.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mlgitops import errors, validate
from mlgitops.adapters import files, git
from mlgitops.core import layout, manifest, plan, quarantine, trust, yamldoc


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
    ) -> None:
        self.url = url
        self.branch = branch
        self.local = local
        self.policy = policy
        self.allowed_signers = allowed_signers
        self.clone = local if local is not None else state_dir / "source.git"
        self.versions = state_dir / "versions"

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

    def _signature_problem(self, version: str) -> str | None:
        if self.allowed_signers is None:
            return None
        sig = git.signature(self.clone, version, allowed_signers=self.allowed_signers)
        if sig.trusted:
            return None
        return (f"{sig.describe(version)}; the signing policy deploys only model commits signed by "
                f"a key in {self.allowed_signers}: sign the commit (git commit -S) or add the key")

    def desired(self, commit: str) -> dict[str, plan.Desired]:
        """Every model the manifests at ``commit`` name, with its version or its error."""
        out: dict[str, plan.Desired] = {}
        entries = self.quarantined(commit)
        for rel in git.ls_files(self.clone, commit, layout.MANIFESTS):
            name = layout.manifest_name(rel)
            if name is None:
                continue
            version = git.last_change(self.clone, commit, layout.model_paths(name)) or commit
            try:
                size = git.blob_size(self.clone, commit, rel)
                if size > yamldoc.MAX_MANIFEST_BYTES:
                    raise errors.ManifestError(
                        f"{rel}: is {size} bytes, over the {yamldoc.MAX_MANIFEST_BYTES}-byte limit "
                        "for a manifest; keep data out of it"
                    )
                dep = validate.parse_manifest(git.show(self.clone, commit, rel) or b"", rel=rel)
            except errors.ManifestError as exc:
                out[name] = plan.Desired(name, version, None, str(exc))
                continue
            unsigned = self._signature_problem(version)
            if unsigned is not None:
                out[name] = plan.Desired(name, version, None, unsigned)
                continue
            hit = quarantine.find(entries, model=name, digest=dep.digest)
            error = None
            if hit is not None:
                error = quarantine.Match(hit, "the same bytes").sentence(name=name)
            out[name] = plan.Desired(name, version, dep, error, quarantined=hit is not None)
        return out

    def materialize(self, commit: str, dep: manifest.ModelDeployment) -> Path:
        """The model directory of ``dep`` at ``commit``, checked as data (see the docstring).

        QuarantinedError when its content matches a quarantined version (not just its bytes).
        """
        dest = self.versions / dep.digest.removeprefix("sha256:")
        entries = self.quarantined(commit)
        if dest.is_dir() and files.dir_digest(dest) == dep.digest:
            validate.check_model(dest, dep, load=False, policy=self.policy)
            validate.check_quarantine(dest, dep, entries)
            return dest
        self.versions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.versions, prefix=".export-"))
        try:
            git.export(self.clone, commit, dep.model_path, tmp)
            validate.check_model(tmp, dep, load=False, policy=self.policy)
            validate.check_quarantine(tmp, dep, entries)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest
