"""``mlgitops trust``: which types and functions models may load (one policy per repository)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from mlgitops import errors, settings, ui
from mlgitops.cli.group import main


@main.group()
def trust() -> None:
    """Which types and functions models may load (one policy per repository)."""


@trust.command(name="allow")
@click.argument("types", nargs=-1, required=True)
@click.option("--repo", default=".", type=click.Path(exists=True, path_type=Path), show_default=True)
@click.option("--reason", default="", help="Why it is safe (kept in the policy file).")
def trust_allow(types: tuple[str, ...], repo: Path, reason: str) -> None:
    """Admit TYPES (exact names a refusal printed) for the repository at --repo."""
    from mlgitops.adapters import files
    from mlgitops.core import trust as trust_mod

    where = settings.trust_file(repo)
    if where is None:
        raise errors.ConfigError(f"{repo.resolve()} is not a model repository (no .git); pass "
                                 "--repo the directory `mlgitops init` created, or its bare remote")
    for t in types:
        if not trust_mod.valid_name(t):
            raise errors.ConfigError(f"{t!r} is not a type name; give the exact dotted name a "
                                     "refusal printed, e.g. sklearn.preprocessing.MyScaler")
        if trust_mod.never_loadable(t):
            raise errors.ConfigError(f"{t}, {trust_mod.never_reason(t)}")
    entries = settings.read_trust_file(where.path) if where.path.is_file() else {}
    for t in types:
        if trust_mod.by_default(t):
            click.echo(f"{t} is admitted by default; nothing to add")
        else:
            entries[t] = reason or entries.get(t, "")
    files.write_atomic(where.path, trust_mod.render_file(entries).encode())
    click.echo(f"{where.path}: admits {', '.join(sorted(entries)) or 'nothing beyond the defaults'}")
    if where.hosted is not None:
        click.echo(f"origin is {where.hosted}, not on this machine: this is a local copy that "
                   "publish, validate and `mlgitops up` here read. Install the same file as "
                   f"{settings.REMOTE_TRUST_FILE} in the bare repository on the Git host (the "
                   "directory with HEAD and hooks/), where the mlgitops pre-receive hook reads "
                   "it; a controller elsewhere reads it with MLGITOPS_TRUST_POLICY=FILE.")


@trust.command(name="list")
@click.option("--repo", default=".", type=click.Path(exists=True, path_type=Path), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trust_list(repo: Path, as_json: bool) -> None:
    """Show the effective trust policy of --repo: defaults, the team's file, the environment."""
    from mlgitops.core import trust as trust_mod

    rows = [(t, "default (tree storage, bounds-checked)", "") for t in sorted(trust_mod.CHECKED_TYPES)]
    rows += [(t, "default (no code)", "") for t in sorted(trust_mod.DEFAULT_TYPES)]
    rows += [(t, src, why) for t, (src, why) in sorted(settings.trust_sources(repo=repo).items())]
    where = settings.trust_file(repo)
    if as_json:
        click.echo(json.dumps({"file": str(where.path) if where else None,
                               "admitted": [{"type": t, "source": s, "reason": r} for t, s, r in rows],
                               "never": sorted(trust_mod.NEVER_MODULES)}, indent=2))
        return
    table = Table("type", "admitted by", "reason", box=None)
    for row in rows:
        table.add_row(*row)
    ui.console.print(table)
    if where is not None:
        ui.console.print(f"team file: {where.path}" + ("" if where.path.is_file() else " (none yet)"))
    ui.console.print("never admitted: builtins, os, subprocess, importlib and other modules that "
                     "run code or reach the system; lambdas and notebook (__main__) functions")
