"""The commands a model pod runs: ``fetch-model`` (its init container) and ``serve``."""

from __future__ import annotations

from pathlib import Path

import click

from mlgitops import settings
from mlgitops.cli.group import main


@main.command(name="fetch-model")
@click.option("--repo-url", required=True, help="Git URL of the model repository.")
@click.option("--commit", required=True, help="The full commit id to fetch.")
@click.option("--name", required=True, help="Model name (models/NAME, manifests/NAME.yaml).")
@click.option("--digest", required=True, help="The content digest the pod pins (sha256:…).")
@click.option("--dest", required=True, type=click.Path(path_type=Path),
              help="Directory to write the model to (replaced whole, atomically).")
@click.option("--credentials", type=click.Path(path_type=Path),
              help="Directory with username+password or ssh-privatekey+known_hosts.")
def fetch_model_cmd(repo_url: str, commit: str, name: str, digest: str, dest: Path,
                    credentials: Path | None) -> None:
    """Fetch models/NAME at exactly COMMIT, check it, write it to DEST (a pod's init container)."""
    from mlgitops.core import digest as digest_mod
    from mlgitops.core import layout
    from mlgitops.server import fetch

    where = fetch.fetch_model(repo_url=repo_url, commit=commit, name=name, digest=digest,
                              dest=dest, credentials=credentials, policy=settings.trust_policy())
    click.echo(f"{layout.model_path(name)} at {commit[:12]} ({digest_mod.short(digest)}) -> {where}")


def _register_serve() -> None:
    try:
        from mlgitops.server.cli import serve
    except ImportError:  # pragma: no cover - the server package is part of the distribution
        return
    main.add_command(serve)


_register_serve()
