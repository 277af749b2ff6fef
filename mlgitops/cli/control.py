"""Commands that run or steer the controller of a model repository: up, retry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from mlgitops import settings, ui
from mlgitops.cli.group import main, model_repo, repo_option
from mlgitops.core import layout, manifest


@main.command()
@repo_option
@click.option("--port", type=int, help="Gateway port (default 8700 or MLGITOPS_PORT).")
@click.option("--host", help="Gateway address (default 127.0.0.1).")
@click.option("--grpc-port", type=int, help="Also serve the v2 gRPC API of every model on this "
              "port (0: a free one; default off, or MLGITOPS_GRPC_PORT).")
@click.option("--poll", "poll_seconds", type=float, help="Poll interval in seconds (default 10).")
@click.option("--no-monitor", is_flag=True, help="Do not watch drift.")
@click.option("--tracking-uri", help="MLflow tracking URI for decisions, versions and the "
              "production alias (default sqlite:///<repo>/.git/mlgitops/mlflow.db; MLGITOPS_TRACKING_URI).")
@click.option("--public-url", help="Where people reach the gateway (e.g. behind an ingress): "
              "revert commits and notifications link decision pages there (MLGITOPS_PUBLIC_URL).")
@click.option("--notify-url", help="POST every deploy, hold, alert and revert to this webhook; "
              "signed with MLGITOPS_NOTIFY_SECRET (MLGITOPS_NOTIFY_URL).")
@click.option("--notify-format", type=click.Choice(["json", "slack"]),
              help="Webhook body: json (default) or slack ({text, blocks}).")
def up(repo: Path, port: int | None, host: str | None, grpc_port: int | None,
       poll_seconds: float | None, no_monitor: bool, tracking_uri: str | None,
       public_url: str | None, notify_url: str | None, notify_format: str | None) -> None:
    """Run the controller, the model servers and the drift monitor (foreground)."""
    from mlgitops.controller import run

    cfg = settings.controller(repo, port=port, host=host, grpc_port=grpc_port,
                              poll_seconds=poll_seconds,
                              monitor=not no_monitor, tracking_uri=tracking_uri,
                              public=public_url, notify_url=notify_url,
                              notify_format=notify_format)
    cfg = dataclasses.replace(cfg, repo=model_repo(repo))  # after the settings: a wrong flag first
    run.up(cfg)


@main.command()
@click.argument("name")
@repo_option
def retry(name: str, repo: Path) -> None:
    """Try NAME's held version again now (after fixing what held it)."""
    from mlgitops.controller import run, state

    root = model_repo(repo)
    store = state.Store(settings.state_dir(root))
    if not manifest.valid_name(name) or (
            name not in store.models and not (root / layout.manifest_path(name)).is_file()):
        raise click.ClickException(f"{root} has no model named {name!r} (no "
                                   f"{layout.manifest_path(name)} and no status of it); check "
                                   "the name with `mlgitops status`")
    store.request_retry(name)
    info = run.read_controller(root)
    if info and run.controller_alive(root, info):
        ui.console.print(f"asked the controller (pid {info['pid']}) to try {name} again; "
                         f"`mlgitops status --repo {repo}` shows the outcome", highlight=False)
    else:
        ui.console.print(f"no controller runs for {root}; `mlgitops up --repo {repo}` tries "
                         f"{name} again when it starts", highlight=False)
