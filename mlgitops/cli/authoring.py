"""Commands that make and check a model repository: init, publish, validate, crd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlgitops import errors, settings, ui
from mlgitops.adapters import git
from mlgitops.authoring import repository, validate
from mlgitops.cli.group import main, model_repo, repo_option


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--remote", help="Git remote URL or bare repo path (default: DIRECTORY.git beside it).")
def init(directory: Path, remote: str | None) -> None:
    """Create a model repository wired to a bare remote with validating hooks."""
    where = repository.init(directory, remote=remote)
    click.echo(f"Initialized model repository {directory.resolve()} (remote {where}).")
    click.echo(f"Next: mlgitops publish NAME --model MLFLOW_MODEL --reference DATA --repo {directory}")


def _read_frame(path: Path) -> Any:
    import pandas as pd

    if path.suffix not in (".parquet", ".csv", ".txt"):
        raise errors.ConfigError(f"{path}: reference data must be .csv or .parquet")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise errors.ConfigError(f"{path} could not be read as {path.suffix[1:]} ({exc}); "
                                 "pass the reference data as .csv or .parquet") from exc


@main.command()
@click.argument("name")
@click.option("--model", "model_source", required=True,
              help="MLflow model directory, or a runs:/ or models:/ URI.")
@click.option("--reference", required=True, type=click.Path(exists=True, path_type=Path),
              help="Reference data (.csv or .parquet) the model was trained or validated on.")
@repo_option
@click.option("--target", help="Label column in the reference data (kept out of the features); "
              "a column the model was not fitted on must be named here.")
@click.option("--message", "-m", help="Commit message.")
@click.option("--trust", multiple=True, help="A type the model needs (optional: the repository's "
              "trust policy decides; `mlgitops trust allow` admits more).")
@click.option("--no-push", is_flag=True, help="Commit only.")
@click.option("--evaluation", type=click.Path(exists=True, path_type=Path),
              help="Labelled evaluation data (.csv or .parquet): committed beside the model "
              "with the version's metrics on it, what spec.performance compares with.")
@click.option("--label-column", help="Label column of the evaluation data (default: --target, "
              "else the one column the model does not take).")
def publish(name: str, model_source: str, reference: Path, repo: Path, target: str | None,
            message: str | None, trust: tuple[str, ...], no_push: bool,
            evaluation: Path | None, label_column: str | None) -> None:
    """Publish an MLflow model as the next version of NAME (commit + push)."""
    from mlgitops.adapters import mlflow_models
    from mlgitops.authoring import publishing as publish_mod

    repo = model_repo(repo)
    estimator = mlflow_models.load_estimator_for_publish(
        model_source, trusted_types=trust, policy=settings.trust_policy(repo=repo))
    sha = publish_mod.publish(estimator, _read_frame(reference), name=name, repo=repo,
                              target=target, message=message, push=not no_push,
                              trusted_types=trust,
                              evaluation_frame=None if evaluation is None else _read_frame(evaluation),
                              label_column=label_column)
    click.echo(sha)


@main.command(name="validate")
@click.argument("directory", default=".", type=click.Path(path_type=Path))
@click.option("--no-load", is_flag=True, help="Skip loading the models (faster).")
def validate_cmd(directory: Path, no_load: bool) -> None:
    """Check manifests, digests, signatures, baselines and trusted types."""
    root = model_repo(directory)
    result = validate.validate_tree(root, load=not no_load, policy=settings.trust_policy(repo=root))
    if git.is_repo(root):
        for warning in repository.protection_problems(root):
            ui.console.print(f"[yellow]![/] {warning}")
    for p in result.problems:
        ui.console.print(f"[red]✗[/] {p}")
    if not result.ok:
        ui.console.print(f"{len(result.problems)} problem(s); nothing is deployable until fixed.")
        raise SystemExit(1)
    names = ", ".join(d.name for d in result.deployments) or "no models yet"
    ui.console.print(f"[green]✓[/] valid: {names}")


@main.command()
def crd() -> None:
    """Print the ModelDeployment CustomResourceDefinition (generated from the schema)."""
    click.echo(repository.crd_yaml(), nl=False)
