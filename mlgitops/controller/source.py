"""Desired state from Git: a bare clone of the remote, manifests read at a commit.

Model directories are exported once per digest into ``versions/`` and reused.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml

from mlgitops import errors, validate
from mlgitops.adapters import files, git
from mlgitops.core import layout, manifest, plan, quarantine


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
    ) -> None:
        self.url = url
        self.branch = branch
        self.local = local
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
        raw = git.show(self.clone, commit, layout.QUARANTINE)
        if raw is None:
            return ()
        try:
            return quarantine.parse(yaml.safe_load(raw), source=layout.QUARANTINE)
        except (yaml.YAMLError, errors.ManifestError):
            return ()

    def desired(self, commit: str) -> dict[str, plan.Desired]:
        """Every model the manifests at ``commit`` name, with its version or its error."""
        out: dict[str, plan.Desired] = {}
        entries = self.quarantined(commit)
        for rel in git.ls_files(self.clone, commit, layout.MANIFESTS):
            name = layout.manifest_name(rel)
            if name is None:
                continue
            version = git.last_change(self.clone, commit, layout.model_paths(name)) or commit
            raw = git.show(self.clone, commit, rel) or b""
            try:
                doc = yaml.safe_load(raw)
                dep = manifest.parse(doc, source=rel)
                if dep.name != name:
                    raise errors.ManifestError(
                        f"{rel}: field metadata.name: is {dep.name!r}; the file must be named "
                        f"{layout.manifest_path(dep.name)!r}"
                    )
            except yaml.YAMLError as exc:
                out[name] = plan.Desired(name, version, None, f"{rel}: is not valid YAML ({exc})")
                continue
            except errors.ManifestError as exc:
                out[name] = plan.Desired(name, version, None, str(exc))
                continue
            hit = quarantine.find(entries, model=name, digest=dep.digest)
            error = None
            if hit is not None:
                error = (
                    f"digest {dep.digest[7:19]} is quarantined (auto-reverted in "
                    f"{hit.commit[:12]}); remove its entry from {layout.QUARANTINE} to deploy it"
                )
            out[name] = plan.Desired(name, version, dep, error, quarantined=hit is not None)
        return out

    def materialize(self, commit: str, dep: manifest.ModelDeployment) -> Path:
        """The model directory of ``dep`` at ``commit``, checked against its digest."""
        dest = self.versions / dep.digest.removeprefix("sha256:")
        if dest.is_dir() and files.dir_digest(dest) == dep.digest:
            return dest
        self.versions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.versions, prefix=".export-"))
        try:
            git.export(self.clone, commit, dep.model_path, tmp)
            validate.check_model(tmp, dep, load=False)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest
