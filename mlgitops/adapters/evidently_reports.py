"""Evidently reports and workspace snapshots: the only module that imports evidently.

Reports are evidence for people (HTML, a snapshot JSON, a local Evidently workspace); verdicts
that act come from `mlgitops.core.drift`, which mirrors the same defaults. Evidently errors are
translated into `mlgitops.errors.ReportError` here, and a report failure never blocks a revert.
Evidently's telemetry is switched off (DO_NOT_TRACK) unless the caller decided otherwise.

Features and prediction are reported the way the drift decision counts them: the share of
drifted columns (DataDriftPreset's ``DriftedColumnsCount``) is over the **features only**, and
the prediction column (``prediction``, when given) is a separate ``ValueDrift`` metric.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlgitops import telemetry
from mlgitops.core import drift as core_drift
from mlgitops.core.stats import ColumnKind
from mlgitops.errors import ReportError

telemetry.off()  # before evidently is imported, whatever the caller set

# Evidently's display names (config "method") -> mlgitops.core.drift method names.
PREDICTION = "prediction"
"""The prediction column's name in live samples and reference frames (`core.stats.PREDICTION`)."""
SHARE_NOTE = ("share of drifted columns counts the features only, as the mlgitops decision "
              "does; the prediction's drift is its own metric")
"""What a report's drift share counts (in its metadata, and on the decision page)."""

_METHOD_NAMES = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
}


@dataclass(frozen=True)
class ReportPaths:
    """Files of one written report."""

    html: Path
    snapshot: Path
    """Full Evidently snapshot (loadable with ``Snapshot.load``; what a workspace stores)."""
    summary: Path
    """Metric values only (``Snapshot.dict()``), small and diff-friendly."""


@contextmanager
def translated(action: str) -> Iterator[None]:
    try:
        yield
    except ReportError:
        raise
    except Exception as exc:  # evidently raises many types; all mean "no report"
        raise ReportError(f"{action} failed ({type(exc).__name__}: {exc}); the drift verdict is unaffected.") from exc


@contextmanager
def workspace_lock(workspace_dir: Path) -> Iterator[None]:
    """Exclusive across processes: the report child and the window-snapshot child both write
    the workspace, and two of them creating the same project would make two projects."""
    workspace_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workspace_dir / ".mlgitops.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    kinds: Mapping[str, ColumnKind] | None,
    name: str | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    timestamp: dt.datetime | None = None,
    prediction: str | None = PREDICTION,
    share: float = 0.5,
) -> Any:
    """A DataDriftPreset snapshot of ``current`` against ``reference`` (evidently's Snapshot):
    drift share over the features, the ``prediction`` column (when in ``kinds``) separately."""
    with translated("Building the Evidently drift snapshot"):
        return _run(reference, current, kinds=kinds, name=name, tag_list=list(tags),
                    metadata=dict(metadata or {}), timestamp=timestamp, prediction=prediction,
                    share=share)


def _run(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    kinds: Mapping[str, ColumnKind] | None,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
    tag_list: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    timestamp: dt.datetime | None = None,
    prediction: str | None = None,
    share: float = 0.5,
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    def dataset(frame: pd.DataFrame) -> Any:
        if kinds is None:
            return frame
        definition = DataDefinition(
            numerical_columns=[c for c, k in kinds.items() if k == "numeric"],
            categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
        )
        return Dataset.from_pandas(frame[list(kinds)], data_definition=definition)

    separate = prediction if kinds is not None and prediction in kinds else None
    if separate is not None and len(kinds or {}) > 1:
        features = [c for c in (kinds or {}) if c != separate]
        report = Report([DataDriftPreset(columns=features, drift_share=share),
                         ValueDrift(column=separate)])
    else:
        report = Report([DataDriftPreset(drift_share=share)])
    return report.run(
        dataset(current),
        dataset(reference),
        name=name,
        tags=tag_list if tag_list is not None else [f"{k}={v}" for k, v in (tags or {}).items()],
        metadata=metadata if metadata is not None else dict(tags or {}),
        timestamp=timestamp,
    )


def write_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    out_dir: Path,
    title: str,
    tags: Mapping[str, str],
    kinds: Mapping[str, ColumnKind] | None = None,
    prediction: str | None = PREDICTION,
    share: float = 0.5,
) -> ReportPaths:
    """Write a DataDriftPreset report as HTML, full snapshot JSON and a metrics summary (drift
    share over the features; the ``prediction`` column separately)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-") or "drift-report"
    paths = ReportPaths(
        html=out_dir / f"{stem}.html",
        snapshot=out_dir / f"{stem}.snapshot.json",
        summary=out_dir / f"{stem}.summary.json",
    )
    with translated("Building the Evidently drift report"):
        out_dir.mkdir(parents=True, exist_ok=True)
        snapshot = _run(reference, current, kinds=kinds, name=title, tags=tags,
                        prediction=prediction, share=share)
        snapshot.save_html(str(paths.html))
        paths.snapshot.write_text(snapshot.dumps(), encoding="utf-8")
        paths.summary.write_text(snapshot.json(), encoding="utf-8")
    return paths


def add_to_workspace(workspace_dir: Path, *, project: str, snapshot_path: Path) -> str:
    """Add a snapshot file to the local Evidently workspace (one project per model); its run id."""
    with translated(f"Adding {snapshot_path} to the Evidently workspace {workspace_dir}"):
        from evidently.core.report import Snapshot
        from evidently.ui.workspace import Workspace

        snapshot = Snapshot.load(str(snapshot_path))
        with workspace_lock(workspace_dir):
            workspace = Workspace(str(workspace_dir))
            found = [p for p in workspace.search_project(project) if p.name == project]
            target = found[0] if found else workspace.create_project(
                project, description=f"Drift reports of {project}")
            ref = workspace.add_run(target.id, snapshot)
        return str(ref.id)


def list_runs(workspace_dir: Path, *, project: str) -> list[str]:
    """Run ids stored for `project` in the workspace ([] when the project does not exist)."""
    with translated(f"Reading the Evidently workspace {workspace_dir}"):
        from evidently.ui.workspace import Workspace

        workspace = Workspace(str(workspace_dir))
        found = [p for p in workspace.search_project(project) if p.name == project]
        return [str(run) for run in workspace.list_runs(found[0].id)] if found else []


def evidently_verdicts(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    kinds: Mapping[str, ColumnKind] | None = None,
    share: float = 0.5,
    prediction: str | None = None,
) -> core_drift.DriftReport:
    """Evidently's own per-column (method, score, threshold, drifted) and dataset share.

    Method names are translated to mlgitops names; `drifted` applies each method's rule (K-S
    p <= t, chi-square/z p < t, distances >= t), exactly as Evidently's stattests decide.
    ``prediction`` (a column of ``kinds``) is measured apart from the features' share.
    """
    with translated("Computing Evidently drift verdicts"):
        snapshot = _run(reference, current, kinds=kinds, prediction=prediction, share=share)
        return verdicts_of(snapshot, kinds=kinds, share=share, rows=len(current),
                           reference_rows=len(reference), prediction=prediction)


def verdicts_of(snapshot: Any, *, kinds: Mapping[str, ColumnKind] | None, share: float,
                rows: int, reference_rows: int,
                prediction: str | None = PREDICTION) -> core_drift.DriftReport:
    """The per-column verdicts and the features' drift share an Evidently snapshot holds."""
    with translated("Reading Evidently drift verdicts"):
        result = snapshot.dict()
        if "metrics" not in result:  # as a workspace stores it (SnapshotModel)
            result = {"metrics": _stored_metrics(result)}
        return _verdicts(result, kinds=kinds, share=share, rows=rows,
                         reference_rows=reference_rows, prediction=prediction)


def _stored_metrics(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A stored snapshot's metric results in the shape `Snapshot.dict()` gives them."""
    out = []
    for result in (model.get("metric_results") or {}).values():
        params = result["metric_value_location"]["metric"]["params"]
        if "share" in result:
            out.append({"config": params, "value": {"share": result["share"]["value"]}})
        elif "value" in result:
            out.append({"config": params, "value": result["value"]})
    return out


def _verdicts(
    result: Mapping[str, Any],
    *,
    kinds: Mapping[str, ColumnKind] | None,
    share: float,
    rows: int,
    reference_rows: int,
    prediction: str | None = None,
) -> core_drift.DriftReport:
    columns: list[core_drift.ColumnDrift] = []
    predicted: core_drift.ColumnDrift | None = None
    evidently_share: float | None = None
    for metric in result["metrics"]:
        config = metric.get("config", {})
        kind_of_metric = str(config.get("type", ""))
        if kind_of_metric.endswith(":DriftedColumnsCount"):
            evidently_share = float(metric["value"]["share"])
        elif kind_of_metric.endswith(":ValueDrift"):
            method = _METHOD_NAMES.get(str(config["method"]))
            if method is None:
                raise ReportError(f"Evidently used an unknown drift method {config['method']!r}.")
            score = float(metric["value"])
            threshold = float(config["threshold"])
            column = str(config["column"])
            kind: ColumnKind = (kinds or {}).get(column) or ("numeric" if method in ("ks", "wasserstein") else "categorical")
            found = core_drift.ColumnDrift(
                column=column,
                method=method,
                score=score,
                threshold=threshold,
                drifted=core_drift.verdict(method, score, threshold),
                kind=kind,
            )
            if prediction is not None and column == prediction and len(kinds or {}) > 1:
                predicted = found
            elif all(c.column != column for c in columns):
                columns.append(found)
    report = core_drift.dataset_verdict(
        tuple(columns), prediction=predicted, share=share, rows=rows, reference_rows=reference_rows
    )
    if evidently_share is not None and abs(evidently_share - report.share) > 1e-9:
        raise ReportError(
            f"Evidently's drifted share {evidently_share} disagrees with its column verdicts ({report.share})."
        )
    return report
