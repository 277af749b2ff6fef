"""``mlgitops feedback``: labels for served predictions, from a Parquet or CSV file."""

from __future__ import annotations

from pathlib import Path

import click

from mlgitops import errors, ui
from mlgitops.cli.group import main


@main.command()
@click.argument("name")
@click.option("--labels", "labels_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A Parquet (or .csv) file with one row per labelled prediction.")
@click.option("--id-column", default="id", show_default=True,
              help="The column holding the ids the inference responses carried.")
@click.option("--label-column", default="label", show_default=True,
              help="The column holding the true label (class or value).")
@click.option("--repo", default=".", type=click.Path(path_type=Path), show_default=True,
              help="The model repository whose running controller receives the labels.")
@click.option("--url", default=None, help="The gateway's URL (default: the running controller's).")
def feedback(name: str, labels_file: Path, id_column: str, label_column: str, repo: Path,
             url: str | None) -> None:
    """Send the true labels of served predictions of model NAME (by their ids)."""
    import pandas as pd

    from mlgitops.controller import feedback as feedback_mod

    try:
        frame = (pd.read_csv(labels_file) if labels_file.suffix.lower() == ".csv"
                 else pd.read_parquet(labels_file))
    except (OSError, ValueError) as exc:
        raise errors.ConfigError(f"cannot read {labels_file} as a "
                                 f"{'CSV' if labels_file.suffix.lower() == '.csv' else 'Parquet'}"
                                 f" file ({exc})") from exc
    missing = [c for c in (id_column, label_column) if c not in frame.columns]
    if missing:
        raise errors.ConfigError(f"{labels_file} has no column {missing[0]!r} (it has "
                                 f"{', '.join(map(str, frame.columns[:10]))}); name the columns "
                                 "with --id-column and --label-column")
    frame = frame[frame[label_column].notna()]
    counts = feedback_mod.send(name, frame[id_column].astype(str), frame[label_column],
                               repo=repo, url=url)
    ui.out.print(
        f"{name}: {counts.get('received', 0)} labels sent; {counts.get('new', 0)} new, "
        f"{counts.get('updated', 0)} updated, {counts.get('unknown', 0)} for ids no kept "
        "prediction has (stored; counted as unmatched)", highlight=False, soft_wrap=True)
