"""The root ``mlgitops`` group and what every command shares: errors as one sentence, ``--repo``.

Every command module registers itself on `main` (``@main.command()``); the package's
``__init__`` imports them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mlgitops import errors, settings, ui

#: Exit codes (README, "Exit codes"): 0 done, 1 failed (a sentence says why), 2 usage.
EXIT_FAILED = 1


def fail(message: object) -> None:
    ui.console.print(f"[red]error:[/] {message}", soft_wrap=True)
    raise SystemExit(EXIT_FAILED)


class Group(click.Group):
    """Every error a user can cause ends as one sentence and exit 1; ``--debug`` shows the
    traceback instead. Click's own usage errors exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except errors.MlgitopsError as exc:
            if ctx.params.get("debug"):
                raise
            fail(exc)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            fail(f"{type(exc).__name__}: {exc} (unexpected; run the command again with "
                  "`mlgitops --debug ...` for the traceback, and report it)")


@click.group(cls=Group)
@click.version_option(package_name="mlgitops")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of a sentence.")
def main(debug: bool) -> None:
    """GitOps for machine-learning models: Git says which model version serves.

    Exit codes: 0 done, 1 failed (a sentence on stderr says why), 2 usage error.
    """
    del debug  # read by Group.invoke
    settings.telemetry_off()


def model_repo(path: Path) -> Path:
    """``path`` as a model repository, or exit 1 with the sentence saying what it is instead."""
    from mlgitops.authoring import repository  # not on a pod's start (`mlgitops serve`)

    return repository.require(path)


#: ``--repo`` of every command that reads a model repository (checked by model_repo).
repo_option = click.option("--repo", default=".", type=click.Path(path_type=Path),
                           show_default=True, help="The model repository (its working clone).")
wide_option = click.option("--wide", is_flag=True,
                           help="One row per line at full width (URLs and messages in the table).")


def print_table(table: Table, *, wide: bool) -> None:
    """A table on stdout: at the terminal's width, or at its natural width under --wide."""
    if wide:
        from rich.console import Console

        Console(file=ui.out.file, width=100_000, highlight=False,
                color_system="auto" if ui.out.color_system else None).print(table)
    else:
        ui.out.print(table)


def short(commit: object) -> str:
    return str(commit)[:12] if commit else "-"
